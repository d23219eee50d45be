"""`rpn`: what the (trained) Region Proposal Network outputs on one image (paper, Sec. 3.1
and Fig. 3; Sec. 3.3 for the proposal layer).

A 3x3 window slides over the shared feature map; at each position a 1x1 `cls` layer scores
the k anchors' objectness and a 1x1 `reg` layer regresses their boxes. "For a 3x3 window on
the conv5 feature map, the effective receptive field on the input image is large (171 and
228 pixels for ZF and VGG, respectively)." At test time the proposal layer decodes every
anchor's box, keeps the top 6,000 by score, runs NMS at IoU 0.7 and keeps 300.

Two files: the objectness maps (one per anchor shape) with the window's receptive field
drawn on the image, and the proposals before NMS, after NMS, and the 300 kept.
"""

from __future__ import annotations

from pathlib import Path

from fasterrcnn.explain import _model
from fasterrcnn.explain._common import Context, Output, Result, draw_boxes, footnote, pyplot, save, show_image

FILES = ("rpn_objectness.png", "rpn_proposals.png")
TOP = 50  # proposals drawn before and after NMS


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    model = ctx.model
    prep = _model.prepare(model, ctx.image)
    raw = _model.rpn_raw(model, _model.features(model, prep.tensor))
    fh, fw = raw.feature_size
    k, stride = raw.k, _model.stride(model)
    probs = raw.probs.view(fh, fw, k)
    rf = _model.receptive_field(model)
    base = _model.base_anchors(model)
    # the position of the most confident anchor among those inside the image (the anchors that
    # training labels: cross-boundary ones are ignored, Sec. 3.3), else among all
    inside = _model.anchors_inside(model, raw.anchors, prep.size).view(fh, fw, k)
    masked = probs.masked_fill(~inside, -1.0) if bool(inside.any()) else probs
    best = masked.max(dim=2).values
    py, px = divmod(int(best.argmax()), fw)
    cx, cy = float(base[:, 0::2].mean()) + px * stride, float(base[:, 1::2].mean()) + py * stride

    fig = plt.figure(figsize=(15, 7.5), layout="constrained")
    cols = -(-k // 3)
    grid = fig.add_gridspec(3, 2 + cols, width_ratios=[2.2, 2.2] + [1] * cols)
    ax = fig.add_subplot(grid[:, :2])
    show_image(ax, prep.rgb)
    for size, style, name in ((rf["trunk"], "--", "one cell"), (rf["window"], "-", "the 3x3 window")):
        if size:
            draw_boxes(ax, [[cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]], "#ff00ff", lw=2, style=style,
                       label=f"receptive field of {name}: {size} px")
    cells = [[cx + (i - 1.5) * stride, cy + (j - 1.5) * stride, cx + (i - 0.5) * stride, cy + (j - 0.5) * stride]
             for i in range(3) for j in range(3)]
    draw_boxes(ax, cells, "white", lw=1, label=f"the 3x3 window ({stride} px cells)")
    anchors_here = raw.anchors.view(fh, fw, k, 4)[py, px]
    draw_boxes(ax, anchors_here, "#00e5ff", lw=0.8, alpha=0.7, style=":", label=f"its {k} anchors")
    if rf["window"]:  # show the whole receptive field, also where it extends past the image
        half = rf["window"] / 2 + 4
        ax.set_xlim(min(-0.5, cx - half), max(prep.size[1] - 0.5, cx + half))
        ax.set_ylim(max(prep.size[0] - 0.5, cy + half), min(-0.5, cy - half))
    ax.legend(fontsize=8, loc="lower right", framealpha=0.85)
    paper = f" (paper: {rf['paper']} px for this network)" if rf["paper"] else " (paper: ZF 171 px, VGG-16 228 px)"
    ax.set_title(f"the sliding window at the most confident position ({px}, {py}) of an anchor inside the image\nreceptive field {rf['how']}{paper}",
                 fontsize=9)
    shapes = [(round(x2 - x1 + 1), round(y2 - y1 + 1)) for x1, y1, x2, y2 in base.tolist()]
    for a in range(k):
        ax = fig.add_subplot(grid[a % 3, 2 + a // 3])
        im = ax.imshow(probs[:, :, a].numpy(), cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.plot([px], [py], "c+", ms=8)
        ax.set_title(f"{shapes[a][0]}x{shapes[a][1]}: max {float(probs[:, :, a].max()):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=fig.axes[-min(k, 3):], shrink=0.8, label="objectness (softmax object probability)")
    levels = _model.feature_levels(model)
    of_level = f" (the first of {levels} pyramid levels)" if levels > 1 else ""
    fig.suptitle(f"RPN objectness (Sec. 3.1): one score per anchor shape at each of the {fw}x{fh} positions of the "
                 f"stride-{stride} map{of_level}")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}")
    save(fig, out / FILES[0])

    pre, post, thresh = _model.proposal_counts(model)
    before, before_s = _model.proposals(model, raw, prep, nms=False)
    after, after_s = _model.proposals(model, raw, prep)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), layout="constrained")
    cmap = plt.get_cmap("viridis")
    for ax, boxes, scores, title in (
        (axes[0], before[:TOP], before_s[:TOP], f"top {min(TOP, len(before))} of the {len(before):,} top-scored boxes, before NMS"),
        (axes[1], after[:TOP], after_s[:TOP], f"top {min(TOP, len(after))} after NMS at IoU {thresh:g}"),
        (axes[2], after, after_s, f"all {len(after)} kept (top-{post} after NMS)"),
    ):
        show_image(ax, prep.rgb, title)
        for b, s in zip(boxes.flip(0), scores.flip(0)):  # best drawn last (on top)
            draw_boxes(ax, b[None], cmap(float(s)), lw=1.2 if ax is not axes[2] else 0.6, alpha=0.9)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes, shrink=0.8, label="objectness")
    fig.suptitle(f"The proposal layer (Sec. 3.3): decode all {raw.anchors.shape[0]:,} anchors, clip, drop small boxes, "
                 f"top {pre:,}, NMS {thresh:g}, keep {post}")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}")
    save(fig, out / FILES[1])
    return Result(
        [Output(FILES[0], f"objectness heat-maps of the {k} anchor shapes{of_level} and the 3x3 window's receptive field "
                          + (f"({rf['window']} px, {rf['how']})" if rf["window"] else f"({rf['how']})")),
         Output(FILES[1], f"proposals: top {TOP} of {len(before):,} before NMS, top {TOP} after NMS {thresh:g}, "
                          f"the {len(after)} kept{of_level}")],
        {"feature_size": [fh, fw], "k": k, "position": [px, py], "receptive_field": rf,
         "num_before_nms": len(before), "num_kept": len(after), "max_objectness": float(probs.max())},
    )
