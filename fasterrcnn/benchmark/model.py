"""Per-stage profile of a detector: `fasterrcnn bench model`.

Inference: one image of a given size (600x800 by default, the paper's scale), 300 proposals,
timed stage by stage through the model's stage clock (see fasterrcnn.modeling.clock):
transform, backbone, RPN head, proposal layer (the paper's "proposal time": decode, clip,
top-N, NMS, top-M), RoI pooling, detection head, post-processing; plus the total, images/s and
peak memory. Training: one step (forward + backward + SGD step) on a batch with random
ground-truth boxes, s/iteration, with the forward's stages.

Weights are random (the ImageNet files are not available offline): stage times do not depend
on the values, except that NMS does less work when few boxes overlap; the RPN keeps exactly
300 proposals either way (6000 candidates, NMS 0.7, top 300).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from fasterrcnn.engine.optim import build_optimizer
from fasterrcnn.engine.precision import autocast, autocast_dtype
from fasterrcnn.modeling.faster_rcnn import build_model

__all__ = ["INFERENCE_STAGES", "TRAIN_STAGES", "StageTimer", "format_profile", "peak_rss_mb", "profile_model"]

INFERENCE_STAGES = ("transform", "backbone", "rpn_head", "proposals", "roi_pool", "det_head", "postprocess")
TRAIN_STAGES = ("transform", "backbone", "rpn_head", "proposals", "rpn_loss", "roi_targets", "roi_pool", "det_head", "det_loss",
                "backward", "optimizer")


@dataclass
class StageTimer:
    """A stage clock recording wall time per stage and run (CUDA synchronised at each
    boundary). A stage entered several times in one run (e.g. post-processing of the head and
    the mapping back to input coordinates) counts once, summed."""

    device: torch.device
    runs: list[dict[str, float]] = field(default_factory=list)
    enabled: bool = False

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start_run(self) -> None:
        self.enabled = True
        self.runs.append(defaultdict(float))

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.runs[-1][stage] += time.perf_counter() - start

    def medians_ms(self, stages: tuple[str, ...]) -> dict[str, float]:
        return {s: 1000 * statistics.median(r.get(s, 0.0) for r in self.runs) for s in stages if any(s in r for r in self.runs)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since the last `reset_peak_rss()` (Linux), MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _images(n: int, size: tuple[int, int], device: torch.device, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, *size, generator=g).to(device) for _ in range(n)]


def _targets(n: int, size: tuple[int, int], num_classes: int, device: torch.device, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """A few random boxes of 40..300 px per image."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for _ in range(n):
        k = 5
        wh = 40 + torch.rand(k, 2, generator=g) * 260
        xy = torch.rand(k, 2, generator=g) * (torch.tensor([w, h]) - wh)
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, num_classes + 1, (k,), generator=g)
        out.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return out


def profile_model(
    preset: str = "vgg16",
    *,
    image_size: tuple[int, int] = (600, 800),
    mode: str = "inference",
    precision: str = "fp32",
    channels_last: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    repeat: int = 7,
    warmup: int = 2,
    num_classes: int = 20,
    proposals: int = 300,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Median per-stage times (ms) of `preset` at `image_size`, in `mode` "inference" or "train"."""
    dev = torch.device(device)
    h, w = image_size
    torch.manual_seed(0)
    over = {"min_size": min(h, w), "max_size": max(h, w), "post_nms_top_n_test": proposals, **(overrides or {})}
    model = build_model(preset, num_classes, **over).to(dev)
    timer = StageTimer(dev)
    images = _images(batch_size, image_size, dev)
    if mode == "inference":
        model.prepare_for_inference(channels_last=channels_last, autocast_dtype=autocast_dtype(precision))

        def run() -> None:
            with torch.inference_mode(), autocast(dev, precision):
                model(images)

    elif mode == "train":
        model.train()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        targets = _targets(batch_size, image_size, num_classes, dev)
        # the trainer's optimiser: the paper's SGD (momentum 0.9, decay 0.0005, bias rules), fused where torch has it
        opt = build_optimizer(model, lr=1e-4)

        def run() -> None:
            with autocast(dev, precision):
                losses = model(images, targets)
            loss = sum(losses.values())
            with timer("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with timer("optimizer"):
                opt.step()

    else:
        raise ValueError(f"mode must be 'inference' or 'train', got {mode!r}")
    model.clock = timer
    for _ in range(warmup):
        run()
    reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    totals = []
    for _ in range(repeat):
        timer.start_run()
        start = time.perf_counter()
        run()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        totals.append(time.perf_counter() - start)
    per_stage = timer.medians_ms(INFERENCE_STAGES if mode == "inference" else TRAIN_STAGES)
    total = statistics.median(totals)
    memory = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()
    return {
        "preset": preset,
        "mode": mode,
        "image_size": [h, w],
        "batch_size": batch_size,
        "precision": precision,
        "channels_last": channels_last,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeat": repeat,
        "stages_ms": {k: round(v, 2) for k, v in per_stage.items()},
        "total_ms": round(1000 * total, 2),
        "images_per_s": round(batch_size / total, 3),
        "peak_memory_mb": round(memory, 1),
        "memory_kind": "cuda max allocated" if dev.type == "cuda" else "process peak RSS",
    }


def format_profile(p: dict[str, Any]) -> str:
    unit = "s/iteration" if p["mode"] == "train" else "s/image"
    head = (f"{p['preset']} {p['mode']} {p['image_size'][0]}x{p['image_size'][1]} batch {p['batch_size']} "
            f"{p['precision']}{' channels_last' if p['channels_last'] else ''} on {p['device']} "
            f"({p['threads']} threads, median of {p['repeat']})")
    lines = [head, "-" * len(head)]
    for k, v in p["stages_ms"].items():
        lines.append(f"  {k:<12} {v:10.2f} ms")
    lines.append(f"  {'total':<12} {p['total_ms']:10.2f} ms   ({p['total_ms'] / 1000:.3f} {unit}, {p['images_per_s']:.2f} images/s)")
    lines.append(f"  peak memory  {p['peak_memory_mb']:10.1f} MiB ({p['memory_kind']})")
    return "\n".join(lines)
