"""`multiscale`: an image pyramid against one scale with the pyramid of anchors (paper,
Sec. 3.1.1 "Multi-Scale Anchors as Regression References", Fig. 1; Sec. 3.3).

"There have been two popular ways for multi-scale predictions. The first way is based on
image/feature pyramids [...] The images are resized at multiple scales, and feature maps are
computed for each scale. This way is often useful but is time-consuming. [...] our anchor-based
method is built on a pyramid of anchors, which is more cost-efficient." and "multi-scale
feature extraction (using an image pyramid) may improve accuracy but does not exhibit a good
speed-accuracy trade-off". The same model runs once at its own scale, and on a pyramid of
scales (Fast R-CNN's 480, 576, 688, 864, 1200 for a 600 px model, scaled alike otherwise)
whose detections are merged by the detector's own per-class NMS; both timed on this machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fasterrcnn.explain import _model
from fasterrcnn.explain._common import Context, Output, Result, draw_boxes, footnote, pyplot, save, show_image
from fasterrcnn.ops import batched_nms
from fasterrcnn.visualize import class_colour

FILES = ("multiscale.png",)
FAST_RCNN_PYRAMID = (480, 576, 688, 864, 1200)  # for a model of shorter side 600
SHOW_THRESH = 0.5


def _timed(model, image: torch.Tensor, repeat: int) -> tuple[dict, float]:
    _model.detect(model, image)  # warm-up at this size
    times, det = [], None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        det = _model.detect(model, image)
        times.append(time.perf_counter() - start)
    return det, sorted(times)[len(times) // 2]


def pyramid_scales(model, scales: list[int] | None) -> list[int]:
    lo, _ = _model.size_setting(model)
    return list(scales) if scales else [max(16, round(s * lo / 600)) for s in FAST_RCNN_PYRAMID]


def _draw(ax, rgb, det, names, title):
    show_image(ax, rgb)
    keep = det["scores"] >= SHOW_THRESH
    note = f"{int(keep.sum())} with score >= {SHOW_THRESH}"
    if not bool(keep.any()):
        keep = torch.arange(len(det["scores"])) < 5
        note = f"none >= {SHOW_THRESH}: the top {int(keep.sum())} shown"
    for b, lab, s in zip(det["boxes"][keep], det["labels"][keep], det["scores"][keep]):
        colour = tuple(c / 255 for c in class_colour(int(lab)))
        draw_boxes(ax, b[None], colour, lw=2)
        ax.text(float(b[0]), float(b[1]) - 2, f"{names[int(lab) - 1]} {float(s):.2f}", fontsize=7, color="black",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0})
    ax.set_title(f"{title}\n{len(det['scores'])} detections, {note}")


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    model = ctx.model
    lo, hi = _model.size_setting(model)
    single, t_single = _timed(model, ctx.image, ctx.repeat)
    scales = pyramid_scales(model, ctx.scales)
    per_scale, dets = [], []
    for s in scales:
        with _model.test_size(model, s):
            det, t = _timed(model, ctx.image, ctx.repeat)
        per_scale.append(t)
        dets.append(det)
    t_single = min(t_single, _timed(model, ctx.image, ctx.repeat)[1])  # again, after the pyramid: the faster of two
    nms_thresh, top = _model.detection_nms(model)
    boxes = torch.cat([d["boxes"] for d in dets])
    scores = torch.cat([d["scores"] for d in dets])
    labels = torch.cat([d["labels"] for d in dets])
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:top]
    merged = {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
    names = _model.class_names(model)

    fig = plt.figure(figsize=(15, 5.8), layout="constrained")
    grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 0.9))
    _draw(fig.add_subplot(grid[0]), ctx.image, single,
          names, f"one scale ({lo} px) + the pyramid of anchors: {t_single * 1000:,.0f} ms")
    _draw(fig.add_subplot(grid[1]), ctx.image, merged, names,
          f"image pyramid {', '.join(map(str, scales))} px, merged by NMS {nms_thresh:g}: {sum(per_scale) * 1000:,.0f} ms")
    ax = fig.add_subplot(grid[2])
    labels_ = [f"{s} px" for s in scales]
    ax.bar(labels_, [t * 1000 for t in per_scale], color="#4c72b0", label="one pass per pyramid scale")
    ax.bar([f"{lo} px\nalone"], [t_single * 1000], color="#dd8452", label="the model's single scale")
    ax.bar(["pyramid\ntotal"], [sum(per_scale) * 1000], color="#c44e52", label="the whole pyramid")
    for i, v in enumerate([*per_scale, t_single, sum(per_scale)]):
        ax.text(i, v * 1000, f"{v * 1000:,.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("ms per image (this CPU)")
    ax.set_title(f"the pyramid costs {sum(per_scale) / t_single:.1f}x one scale")
    ax.legend(fontsize=7)
    fig.suptitle("Multi-scale detection (Sec. 3.1.1): an image pyramid computes features at every scale; "
                 "anchors of several sizes on one scale do not")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}; median of {ctx.repeat} run(s) after a warm-up; longer side "
                  f"limit scaled with the shorter ({hi} px at {lo})")
    save(fig, out / FILES[0])
    caption = (f"one scale with anchors ({t_single * 1000:,.0f} ms, {len(single['scores'])} detections) against an image "
               f"pyramid of {len(scales)} scales ({sum(per_scale) * 1000:,.0f} ms, {len(keep)} detections)")
    return Result([Output(FILES[0], caption)],
                  {"single": {"size": lo, "ms": t_single * 1000, "detections": len(single["scores"])},
                   "pyramid": {"sizes": scales, "ms": [t * 1000 for t in per_scale], "detections": int(len(keep))}})
