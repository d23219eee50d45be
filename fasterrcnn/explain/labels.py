"""`labels`: how the RPN's training rule labels one image's anchors (paper, Sec. 3.1.2,
"Training RPNs"; Sec. 3.3 for the border rule).

"We assign a positive label to two kinds of anchors: (i) the anchor/anchors with the highest
IoU overlap with a ground-truth box, or (ii) an anchor that has an IoU overlap higher than
0.7 with any ground-truth box. [...] We assign a negative label to a non-positive anchor if
its IoU ratio is lower than 0.3 for all ground-truth boxes. Anchors that are neither
positive nor negative do not contribute to the training objective." Cross-boundary anchors
are ignored in training, and "we randomly sample 256 anchors in an image [...] where the
sampled positive and negative anchors have a ratio of up to 1:1."

Everything drawn comes from the library's own target function (`rpn_anchor_targets`): once
with an unlimited sample (which returns every positive and every negative anchor) for the
labelling, once with the model's rule (256, <= 50% positive) for the sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fasterrcnn.errors import ConfigError
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

FILES = ("labels.png",)
CROSS, IGNORED, POSITIVE, NEGATIVE = 0, 1, 2, 3


def labelling(model, anchors: torch.Tensor, gt: torch.Tensor, size: tuple[int, int], seed: int) -> dict:
    """Per-anchor label (CROSS, IGNORED, POSITIVE, NEGATIVE) and the sampled mini-batch, all
    from the library's target function; the sample is drawn after `torch.manual_seed(seed)`."""
    everything = _model.anchor_targets(model, anchors, gt, size, batch_size_per_image=10**12, positive_fraction=1.0)
    label = torch.full((anchors.shape[0],), IGNORED, dtype=torch.long)
    label[~_model.anchors_inside(model, anchors, size)] = CROSS
    label[everything.sampled[everything.labels == 0]] = NEGATIVE
    label[everything.sampled[everything.labels == 1]] = POSITIVE
    torch.manual_seed(seed)
    sample = _model.anchor_targets(model, anchors, gt, size)
    return {"label": label, "sampled": sample.sampled, "sampled_labels": sample.labels}


def check(ctx: Context) -> None:
    """ConfigError unless the image has ground-truth boxes."""
    if not ctx.has_gt:
        raise ConfigError("explain labels needs ground-truth boxes: give --boxes X1,Y1,X2,Y2 ... or an image with a VOC XML")


def make(ctx: Context, out: Path) -> Result:
    check(ctx)
    plt = pyplot()
    model = ctx.model
    prep = _model.prepare(model, ctx.image)
    feats = _model.features(model, prep.tensor)
    fh, fw = feats.shape[-2:]
    anchors = _model.grid(model, (fh, fw))
    k = anchors.shape[0] // (fh * fw)
    gt = scaled(ctx.gt_boxes, prep.scale)
    lab = labelling(model, anchors, gt, prep.size, ctx.seed)
    label, sampled, sampled_labels = lab["label"], lab["sampled"], lab["sampled_labels"]
    rule = _model.sampling_rule(model)
    max_iou = box_iou(gt, anchors, legacy_plus_one=_model.legacy_plus_one(model)).max(dim=0).values
    pos = label == POSITIVE
    counts = {
        "anchors": int(anchors.shape[0]), "cross_boundary": int((label == CROSS).sum()),
        "positive": int(pos.sum()), "negative": int((label == NEGATIVE).sum()), "ignored": int((label == IGNORED).sum()),
        "positive_by_threshold": int((pos & (max_iou > rule.pos_iou_thresh)).sum()),
        "sampled": int(sampled.numel()), "sampled_positive": int((sampled_labels == 1).sum()),
        "sampled_negative": int((sampled_labels == 0).sum()),
    }
    counts["positive_by_highest_iou_only"] = counts["positive"] - counts["positive_by_threshold"]

    fig = plt.figure(figsize=(15, 10), layout="constrained")
    grid = fig.add_gridspec(2, max(k, 3) * 2, height_ratios=(2.2, 1))
    third = max(k, 3) * 2 // 3
    ax = fig.add_subplot(grid[0, :third])
    show_image(ax, prep.rgb, f"all {counts['positive']} positive anchors (green),\nground truth (yellow)")
    draw_boxes(ax, anchors[pos], COLOURS["positive"], lw=0.8, alpha=0.8)
    draw_boxes(ax, gt, COLOURS["gt"], lw=2)
    ax = fig.add_subplot(grid[0, third:2 * third])
    show_image(ax, prep.rgb, f"the {counts['sampled']} sampled anchors:\n{counts['sampled_positive']} positive (green), "
                             f"{counts['sampled_negative']} negative (blue)")
    draw_boxes(ax, anchors[sampled[sampled_labels == 0]], COLOURS["negative"], lw=0.5, alpha=0.45)
    draw_boxes(ax, anchors[sampled[sampled_labels == 1]], COLOURS["positive"], lw=1.0)
    draw_boxes(ax, gt, COLOURS["gt"], lw=2)
    ax = fig.add_subplot(grid[0, 2 * third:])
    names = ["cross-boundary\n(ignored)", "ignored\n(IoU 0.3-0.7)", "positive", "negative\nIoU < 0.3",
             "sampled\npositive", "sampled\nnegative"]
    values = [counts["cross_boundary"], counts["ignored"], counts["positive"], counts["negative"],
              counts["sampled_positive"], counts["sampled_negative"]]
    colours = [COLOURS["cross"], COLOURS["ignored"], COLOURS["positive"], COLOURS["negative"], COLOURS["positive"], COLOURS["negative"]]
    bars = ax.barh(range(len(values))[::-1], values, color=colours, alpha=0.9)
    for b in bars[4:]:
        b.set_hatch("//")
    for y, v in zip(range(len(values))[::-1], values):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_yticks(range(len(values))[::-1], names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(0.8, counts["anchors"] * 4)
    ax.set_xlabel("anchors (log scale)")
    ax.set_title(f"{counts['anchors']:,} anchors ({fw}x{fh} positions x {k})\npositives: {counts['positive_by_threshold']} "
                 f"by IoU > {rule.pos_iou_thresh:g}, {counts['positive_by_highest_iou_only']} only as a box's best anchor")
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([COLOURS["cross"], COLOURS["ignored"], COLOURS["positive"], COLOURS["negative"]])
    maps = label.view(fh, fw, k)
    shapes = [(round(x2 - x1 + 1), round(y2 - y1 + 1)) for x1, y1, x2, y2 in _model.base_anchors(model).tolist()]
    for a in range(k):
        ax = fig.add_subplot(grid[1, 2 * a:2 * a + 2])
        ax.imshow(maps[:, :, a].numpy(), cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
        ax.set_title(f"anchor {shapes[a][0]}x{shapes[a][1]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if a == 0:
            ax.set_ylabel("label of each map position\n(red cross-boundary, orange\nignored, green positive,\nblue negative)", fontsize=7)
    fig.suptitle(f"RPN training labels (Sec. 3.1.2): positive IoU > {rule.pos_iou_thresh:g} or a box's best, negative "
                 f"< {rule.neg_iou_thresh:g}, cross-boundary ignored; {rule.batch_size_per_image} sampled "
                 f"(<= {rule.positive_fraction:.0%} positive)")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}; ground truth: {ctx.gt_note}; sample seed {ctx.seed}")
    save(fig, out / FILES[0])
    caption = (f"anchor labels of the RPN's training rule: {counts['positive']} positive, {counts['negative']:,} negative, "
               f"{counts['ignored']:,} ignored, {counts['cross_boundary']:,} cross-boundary; {counts['sampled']} sampled "
               f"({counts['sampled_positive']} positive)")
    return Result([Output(FILES[0], caption)], {"counts": counts, "feature_size": [int(fh), int(fw)], "k": k,
                                                "sampled": sampled.tolist(), "seed": ctx.seed,
                                                "position_labels": int(math.prod(maps.shape))})
