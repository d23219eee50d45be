"""`timing`: where the time of a detection goes, Selective Search + Fast R-CNN against RPN +
Fast R-CNN (paper, Table 5 and Sec. 4.1, "Selective Search (SS) [...] takes 1-2 seconds per
image in a CPU implementation" vs "10ms for computing proposals" on a GPU).

Measured here on the same image: OpenCV's Selective Search (fast mode; the optional `explain`
extra installs it) and the detector on its first 2,000 boxes, against the same detector with
its own RPN and 300 proposals, stage by stage through the model's stage clock, for each preset
asked for (fresh models with random weights: the stage times do not depend on the values,
except that NMS does less work when few boxes overlap). Beside them, the paper's Table 5 (K40
GPU): conv, proposal, region-wise and total milliseconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fasterrcnn.explain import _model
from fasterrcnn.explain._common import PAPER_TABLE5, Context, Output, Result, footnote, pyplot, save

FILES = ("timing.png",)
STAGES = ("conv", "proposals", "region-wise", "total")
SS_PROPOSALS = 2000


def selective_search(image: torch.Tensor, limit: int = SS_PROPOSALS) -> tuple[torch.Tensor, float] | None:
    """(the first `limit` Selective Search boxes as Tensor[P, 4], seconds), or None when
    OpenCV's contrib modules are not installed."""
    try:
        import cv2
        segmentation = cv2.ximgproc.segmentation
    except (ImportError, AttributeError):
        return None
    bgr = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()[:, :, ::-1].copy()
    ss = segmentation.createSelectiveSearchSegmentation()
    start = time.perf_counter()
    ss.setBaseImage(bgr)
    ss.switchToSelectiveSearchFast()
    rects = ss.process()
    seconds = time.perf_counter() - start
    xywh = torch.as_tensor(rects[:limit], dtype=torch.float32).reshape(-1, 4)
    return torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1), seconds


def _grouped(stages: dict[str, float], proposals_s: float | None = None) -> dict[str, float]:
    """Stage seconds -> the paper's columns, in ms."""
    conv = stages.get("transform", 0.0) + stages.get("backbone", 0.0)
    prop = stages.get("rpn_head", 0.0) + stages.get("proposals", 0.0) if proposals_s is None else proposals_s
    region = stages.get("roi_pool", 0.0) + stages.get("det_head", 0.0) + stages.get("postprocess", 0.0)
    ms = {"conv": conv * 1000, "proposals": prop * 1000, "region-wise": region * 1000}
    ms["total"] = sum(ms.values())
    return {k: round(v, 2) for k, v in ms.items()}


def measure(ctx: Context) -> dict:
    """{"systems": {name: {stage: ms}}, "selective_search": note or seconds, "threads": n}."""
    ss = selective_search(ctx.image)
    systems: dict[str, dict[str, float]] = {}
    for preset in ctx.presets:
        model = _model.build(preset, 20, ctx.seed)
        if ctx.min_size is not None:
            _model.set_size(model, ctx.min_size)
        rpn = _model.stage_times(model, ctx.image, repeat=ctx.repeat)
        post = _model.proposal_counts(model)[1]
        systems[f"RPN + Fast R-CNN ({preset}, {post} proposals)"] = _grouped(rpn)
        if ss is not None:
            fast = _model.stage_times(model, ctx.image, proposals=ss[0], repeat=ctx.repeat, warmup=False)
            systems[f"SS + Fast R-CNN ({preset}, {len(ss[0])} proposals)"] = _grouped(fast, ss[1])
        del model
    note = (f"Selective Search (OpenCV, fast mode): {ss[1]:.2f} s for {len(ss[0])} boxes" if ss is not None else
            "Selective Search skipped: OpenCV's contrib modules are not installed (pip install \"fasterrcnn[explain]\")")
    return {"systems": systems, "selective_search": note, "ss_seconds": ss[1] if ss else None,
            "threads": torch.get_num_threads(), "image": list(ctx.image.shape[-2:])}


def _bars(ax, systems: dict[str, dict[str, float]], title: str, legend: bool) -> None:
    colours = {"conv": "#4c72b0", "proposals": "#dd8452", "region-wise": "#55a868", "total": "#333333"}
    names = list(systems)
    h = 0.8 / len(STAGES)
    for j, stage in enumerate(STAGES):
        ys = [len(names) - 1 - i + (1.5 - j) * h for i in range(len(names))]
        vals = [max(systems[n][stage], 1e-3) for n in names]
        ax.barh(ys, vals, h, color=colours[stage], label=stage)
        for y, v in zip(ys, vals):
            ax.text(v, y, f" {v:,.0f}" if v >= 10 else f" {v:.2g}", va="center", fontsize=6.5)
    ax.set_yticks(range(len(names))[::-1], [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (log scale)")
    ax.set_title(title)
    if legend:
        ax.legend(fontsize=8, loc="upper right")


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    m = measure(ctx)
    fig, axes = plt.subplots(1, 2, figsize=(15, 1.8 + 1.1 * max(len(m["systems"]), 3)), layout="constrained")
    _bars(axes[0], PAPER_TABLE5, "the paper, K40 GPU (Table 5)", legend=True)
    _bars(axes[1], m["systems"], f"measured here, CPU ({m['threads']} threads), {m['image'][1]}x{m['image'][0]} image",
          legend=False)
    lo = min(min(v for v in s.values() if v > 0) for s in (*PAPER_TABLE5.values(), *m["systems"].values()))
    hi = max(max(s.values()) for s in (*PAPER_TABLE5.values(), *m["systems"].values()))
    for ax in axes:
        ax.set_xlim(lo / 2, hi * 6)
    fig.suptitle("Where the time goes (Table 5): proposals dominate with Selective Search; the RPN makes them nearly free")
    footnote(fig, f"{m['selective_search']}; fresh models with random weights (timing does not depend on them); "
                  f"median of {ctx.repeat} run(s) after a warm-up; {ctx.image_note}")
    save(fig, out / FILES[0])
    parts = [f"{name}: {s['total']:,.0f} ms (proposals {s['proposals']:,.0f})" for name, s in m["systems"].items()]
    return Result([Output(FILES[0], "per-stage times, measured here on the CPU vs the paper's K40 GPU: " + "; ".join(parts))], m)
