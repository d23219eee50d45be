"""`anchors`: the reference boxes of the RPN (paper, Sec. 3.1.1, "Anchors"; Fig. 1 c, the
"pyramid of anchors").

At each sliding-window position the RPN predicts k proposals relative to k anchors, "3
scales and 3 aspect ratios, yielding k = 9 anchors at each sliding position. For a
convolutional feature map of a size W x H (typically ~2,400), there are WHk anchors in total."
The picture shows the model's k base anchors centred at one position, the anchor centres
tiled at the model's stride 16 (and at stride 8 for comparison), and how well the anchors
cover the image's ground-truth objects: the best IoU any anchor reaches with each object
(positive for training above 0.7, Sec. 3.1.2).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fasterrcnn.anchors import generate_base_anchors, grid_anchors
from fasterrcnn.explain import _model
from fasterrcnn.explain._common import (
    COLOURS,
    Context,
    Output,
    Result,
    draw_boxes,
    footnote,
    pyplot,
    save,
    scaled,
    show_image,
)
from fasterrcnn.ops import box_iou

FILES = ("anchors.png",)


def shapes(base: torch.Tensor) -> list[tuple[int, int]]:
    """(width, height) of each base anchor in the +1 pixel convention they are generated in."""
    return [(round(x2 - x1 + 1), round(y2 - y1 + 1)) for x1, y1, x2, y2 in base.tolist()]


def best_ious(anchors: torch.Tensor, gt: torch.Tensor, legacy: bool) -> tuple[list[float], list[int]]:
    """For each ground-truth box, the highest IoU of any anchor and that anchor's index."""
    if gt.numel() == 0:
        return [], []
    best, idx = box_iou(gt, anchors, legacy_plus_one=legacy).max(dim=1)
    return [round(float(v), 4) for v in best], [int(i) for i in idx]


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    model = ctx.model
    prep = _model.prepare(model, ctx.image)
    h, w = prep.size
    stride = _model.stride(model)
    base = _model.base_anchors(model)
    legacy = _model.legacy_plus_one(model)
    feat = (math.ceil(prep.tensor.shape[-2] / stride), math.ceil(prep.tensor.shape[-1] / stride))
    anchors16 = _model.grid(model, feat)
    ratios, scales = _model.anchor_settings(model)
    # the same anchor shapes at stride 8: base size 8, scales doubled (same areas)
    base8 = generate_base_anchors(stride // 2, ratios, [s * 2 for s in scales])
    feat8 = (math.ceil(prep.tensor.shape[-2] / (stride // 2)), math.ceil(prep.tensor.shape[-1] / (stride // 2)))
    anchors8 = grid_anchors(base8, feat8, stride // 2)
    gt = scaled(ctx.gt_boxes, prep.scale)
    iou16, idx16 = best_ious(anchors16, gt, legacy)
    iou8, _ = best_ious(anchors8, gt, legacy)

    fig, axes = plt.subplots(2, 2, figsize=(12, 9.5), layout="constrained")
    # (a) the k base anchors, centred at the middle position of the map
    cy, cx = feat[0] // 2, feat[1] // 2
    shift = torch.tensor([cx * stride, cy * stride] * 2, dtype=torch.float32)
    centred = base + shift
    ax = axes[0, 0]
    show_image(ax, prep.rgb)
    sizes = [s * stride for s in scales]  # nominal sides: sqrt(area) = scale x stride
    cmap = plt.get_cmap("viridis", len(sizes) + 1)
    for box, (bw, bh) in zip(centred, shapes(base)):
        s = min(range(len(sizes)), key=lambda i: abs(math.log(math.sqrt(bw * bh) / sizes[i])))
        style = "-" if abs(bw - bh) <= 1 else ("--" if bw > bh else ":")
        draw_boxes(ax, box[None], cmap(s), lw=1.8, style=style, label=f"{bw}x{bh} ({_ratio(bh, bw)})")
    c = centred[0]
    ax.plot([(c[0] + c[2]) / 2], [(c[1] + c[3]) / 2], "r+", ms=12, mew=2)
    ax.set_xlim(min(-0.5, float(centred[:, 0].min()) - 10), max(w, float(centred[:, 2].max()) + 10))
    ax.set_ylim(max(h, float(centred[:, 3].max()) + 10), min(-0.5, float(centred[:, 1].min()) - 10))
    ax.legend(fontsize=7, loc="lower right", ncol=1, framealpha=0.8, title="w x h (h:w)", title_fontsize=7)
    ax.set_title(f"the model's k = {len(base)} base anchors at map position ({cx}, {cy}):\n"
                 f"areas {', '.join(f'{s:g}²' for s in sizes)} x h:w {', '.join(_ratio(r, 1) for r in ratios)}\n"
                 "(paper: 128², 256², 512² x 1:2, 1:1, 2:1)", fontsize=9)

    # (b) anchor centres at stride 16 and 8 over the whole image, and a zoom on 12 x 12 cells
    ax = axes[0, 1]
    show_image(ax, prep.rgb)
    zoom = ax.inset_axes([0.56, 0.56, 0.43, 0.43])
    show_image(zoom, prep.rgb)
    for anc, k, s, colour, ms in ((anchors8, len(base8), stride // 2, "#2b83ba", 1.5), (anchors16, len(base), stride, "#d7191c", 3)):
        ctr = ((anc[::k, :2] + anc[::k, 2:]) / 2).numpy()
        n = anc.shape[0] // k
        ax.plot(ctr[:, 0], ctr[:, 1], "o", ms=ms, color=colour, alpha=0.85, mew=0,
                label=f"stride {s}: {n:,} positions x {k} = {anc.shape[0]:,} anchors")
        zoom.plot(ctr[:, 0], ctr[:, 1], "o", ms=2 * ms, color=colour, mec="white", mew=0.5)
    zx, zy = float((c[0] + c[2]) / 2), float((c[1] + c[3]) / 2)
    zoom.set_xlim(zx - 6 * stride, zx + 6 * stride)
    zoom.set_ylim(zy + 6 * stride, zy - 6 * stride)
    zoom.set_xticks([])
    zoom.set_yticks([])
    zoom.set_xlabel("")
    zoom.set_ylabel("")
    ax.indicate_inset_zoom(zoom, edgecolor="white")
    ax.legend(fontsize=7, loc="lower left", framealpha=0.9)
    ax.set_title(f"anchor centres over the {w}x{h} network input (zoom: {12 * stride}x{12 * stride} px)\n"
                 "(the paper: a ~60x40 map, ~2,400 positions, ~20,000 anchors)")

    # (c) each object's best anchor; (d) the best IoUs
    ax = axes[1, 0]
    show_image(ax, prep.rgb, "ground truth (yellow) and its best stride-16 anchor (dashed)")
    if ctx.has_gt:
        draw_boxes(ax, gt, COLOURS["gt"], lw=2, label="ground truth")
        draw_boxes(ax, anchors16[idx16], "#e7298a", lw=1.5, style="--", label="best anchor")
        for i, (box, v) in enumerate(zip(gt.tolist(), iou16)):
            ax.text(box[0] + 2, box[1] + 10, f"#{i + 1} IoU {v:.2f}", color="black", fontsize=7,
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "lw": 0})
        ax.legend(fontsize=7, loc="lower right")
    ax = axes[1, 1]
    if ctx.has_gt:
        x = torch.arange(len(iou16)).numpy()
        ax.bar(x - 0.2, iou16, 0.4, label=f"stride {stride} (the model's)", color="#d7191c")
        ax.bar(x + 0.2, iou8, 0.4, label=f"stride {stride // 2}", color="#2b83ba")
        ax.axhline(0.7, color=COLOURS["positive"], ls="--", lw=1, label="0.7: positive above (Sec. 3.1.2)")
        ax.axhline(0.3, color=COLOURS["negative"], ls=":", lw=1, label="0.3: negative below")
        ax.set_xticks(x, [f"#{i + 1}\n{n}\n{int(b[2] - b[0])}x{int(b[3] - b[1])}" for i, (n, b) in
                          enumerate(zip(ctx.gt_names, gt.tolist()))], fontsize=7)
        ax.set_ylim(0, 1.2)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.legend(fontsize=7, loc="upper center", ncol=2)
    else:
        ax.text(0.5, 0.5, "no ground truth: give --boxes or an image with a VOC XML", ha="center", va="center")
    ax.set_ylabel("best IoU of any anchor")
    ax.set_xlabel("ground-truth object (network-input size, px)")
    ax.set_title("how well the anchors cover the objects")
    fig.suptitle("Anchors (Sec. 3.1.1): k reference boxes at every position of the stride-16 map")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}; ground truth: {ctx.gt_note}; image resized by {prep.scale[1]:.3f}")
    save(fig, out / FILES[0])
    data = {"base_anchors": base.tolist(), "position": [cx, cy], "stride": stride, "feature_size": list(feat),
            "num_anchors": {"stride16": int(anchors16.shape[0]), "stride8": int(anchors8.shape[0])},
            "best_iou": {"stride16": iou16, "stride8": iou8}}
    caption = (f"the {len(base)} base anchors centred at one position, the anchor centres at stride {stride} and "
               f"{stride // 2}, and each object's best-anchor IoU" + (f" ({', '.join(f'{v:.2f}' for v in iou16)})" if iou16 else ""))
    return Result([Output(FILES[0], caption)], data)


def _ratio(h: float, w: float) -> str:
    """h:w written as small whole numbers (1:2, 1:1, 2:1)."""
    r = h / w
    return "1:1" if abs(r - 1) < 0.1 else (f"1:{w / h:.3g}" if r < 1 else f"{r:.3g}:1")
