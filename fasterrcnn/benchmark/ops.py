"""The ops benchmark of issue 2: NMS and RoI pooling on a realistic RPN workload.

Workload (fixed seeds, so every run and every library sees the same inputs):

* NMS: 6,000 boxes of an 800x600 image, centres uniform, sides log-uniform in 16..512 px,
  random scores; IoU threshold 0.7; all kept, and stopping at the first 300 kept (the RPN's
  test-time setting: 6,000 before NMS, 300 after).
* RoI ops: 300 RoIs from the same distribution (seed 1) on a 1x512x38x50 feature map (VGG-16
  conv5_3 of an 600x800 image, seed 2); 7x7 output, spatial_scale 1/16; roi_align with
  sampling_ratio 2 and aligned=True; forward, and forward + backward.

Reference figures (torchvision 0.29 CPU kernels, this machine kind, median of 7) are in
BENCHMARKS.md; `fasterrcnn bench ops` prints ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from fasterrcnn.benchmark.timing import measure

# torchvision 0.29's CPU kernels on this machine kind (issue 2), milliseconds.
TORCHVISION_MS: dict[str, float] = {
    "nms": 288.0,
    "roi_pool_fwd": 232.0,
    "roi_pool_fwd_bwd": 285.0,
    "roi_align_fwd": 146.0,
    "roi_align_fwd_bwd": 854.0,
}


def random_boxes(n: int, W: float = 800, H: float = 600, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A realistic box soup: centres uniform, sides log-uniform 16..512 px, clipped; + scores."""
    g = torch.Generator().manual_seed(seed)
    cx = torch.rand(n, generator=g) * W
    cy = torch.rand(n, generator=g) * H
    lo, hi = math.log(16), math.log(512)
    w = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    h = torch.exp(lo + (hi - lo) * torch.rand(n, generator=g))
    b = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    b[:, 0::2] = b[:, 0::2].clamp(0, W)
    b[:, 1::2] = b[:, 1::2].clamp(0, H)
    return b, torch.rand(n, generator=g)


def roi_cases(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, tuple[Callable[[], object], str]]:
    """The RoI-op cases of the workload: {case: (function to time, note)}, in table order."""
    from fasterrcnn.ops import roi_align, roi_pool

    dev = torch.device(device)
    rois, _ = random_boxes(300, seed=1)
    rois = torch.cat([torch.zeros(300, 1), rois], 1).to(dev, dtype)
    feats = torch.randn(1, 512, 38, 50, generator=torch.Generator().manual_seed(2)).to(dev, dtype)
    feats_g = feats.clone().requires_grad_(True)

    def pool_fwd() -> None:
        with torch.no_grad():
            roi_pool(feats, rois, (7, 7), 1 / 16)

    def pool_fwd_bwd() -> None:
        feats_g.grad = None
        roi_pool(feats_g, rois, (7, 7), 1 / 16).sum().backward()

    def align_fwd() -> None:
        with torch.no_grad():
            roi_align(feats, rois, (7, 7), 1 / 16, sampling_ratio=2, aligned=True)

    def align_fwd_bwd() -> None:
        feats_g.grad = None
        roi_align(feats_g, rois, (7, 7), 1 / 16, sampling_ratio=2, aligned=True).sum().backward()

    return {
        "roi_pool_fwd": (pool_fwd, "300 RoIs, 1x512x38x50, 7x7, scale 1/16"),
        "roi_pool_fwd_bwd": (pool_fwd_bwd, "forward + backward"),
        "roi_align_fwd": (align_fwd, "300 RoIs, 7x7, sampling_ratio 2, aligned"),
        "roi_align_fwd_bwd": (align_fwd_bwd, "forward + backward"),
    }


def run_ops_benchmark(
    repeat: int = 7, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> list[dict[str, object]]:
    """Time every case; returns rows {case, ms, torchvision_ms, ratio, note}."""
    from fasterrcnn.ops import nms

    dev = torch.device(device)
    boxes, scores = random_boxes(6000)
    boxes, scores = boxes.to(dev, dtype), scores.to(dev, dtype)

    rows: list[dict[str, object]] = []

    def add(case: str, fn: Callable[[], object], note: str = "", ref: str | None = None) -> None:
        t = measure(fn, repeat=repeat, device=dev)
        tv = TORCHVISION_MS.get(ref or case)
        rows.append(
            {
                "case": case,
                "ms": round(t.ms, 3),
                "torchvision_ms": tv,
                "ratio_to_torchvision": None if tv is None else round(t.ms / tv, 3),
                "note": note,
            }
        )

    kept = nms(boxes, scores, 0.7)
    add("nms", lambda: nms(boxes, scores, 0.7), f"6000 boxes, IoU 0.7, {kept.numel()} kept")
    add(
        "nms_max_keep_300",
        lambda: nms(boxes, scores, 0.7, max_keep=300),
        "6000 boxes, IoU 0.7, stop at 300 kept (RPN test setting)",
        ref="nms",
    )
    for case, (fn, note) in roi_cases(dev, dtype).items():
        add(case, fn, note)
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    lines = [
        f"{'case':<20} {'ours ms':>10} {'tv ms':>8} {'ratio':>7}  note",
        "-" * 78,
    ]
    for r in rows:
        tv = "" if r["torchvision_ms"] is None else f"{r['torchvision_ms']:.0f}"
        ratio = "" if r["ratio_to_torchvision"] is None else f"{r['ratio_to_torchvision']:.3f}"
        lines.append(f"{r['case']:<20} {r['ms']:>10.2f} {tv:>8} {ratio:>7}  {r['note']}")
    return "\n".join(lines)
