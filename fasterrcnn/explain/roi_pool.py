"""`roi-pool`: one proposal through RoI pooling and RoIAlign (paper, Sec. 3.2 and Fast R-CNN,
Sec. 2.1; RoIAlign from Mask R-CNN, Sec. 3).

"RoI max pooling works by dividing the h x w RoI window into an H x W grid of sub-windows of
approximate size h/H x w/W and then max-pooling the values in each sub-window into the
corresponding output grid cell." The proposal is projected onto the stride-16 feature map
(x 1/16), its corners rounded to cells, split into the model's p x p grid (7 x 7 for VGG-16,
6 x 6 for ZF) and each bin max-pooled. RoIAlign keeps the projection unrounded and averages
bilinear samples in each bin. Both outputs come from the library's ops (`ops.roi_pool`,
`ops.roi_align`) on the model's own feature map; the bins drawn follow `roi_pool`'s rule
(corners rounded half away from zero, bin p of n covering cells floor(p s / n) to
ceil((p + 1) s / n)), and their maxima are checked against the op's output.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from fasterrcnn.errors import ConfigError
from fasterrcnn.explain import _model
from fasterrcnn.explain._common import Context, Output, Result, draw_boxes, footnote, pyplot, save, show_image
from fasterrcnn.ops import roi_align, roi_pool

FILES = ("roi_pool.png",)


def _round_half_away(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def pool_bins(box: list[float], scale: float, n: int, height: int, width: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """RoI pooling's bins of one box: ([row start, row end) per bin row, [col start, col end)
    per bin column), in feature-map cells."""
    x1, y1, x2, y2 = (_round_half_away(v * scale) for v in box)
    rows, cols = [], []
    for start, end, limit, out in ((y1, y2, height, rows), (x1, x2, width, cols)):
        size = max(end - start + 1, 1)
        for p in range(n):
            lo = min(max(math.floor(p * size / n) + start, 0), limit)
            hi = min(max(math.ceil((p + 1) * size / n) + start, 0), limit)
            out.append((lo, hi))
    return rows, cols


def check(ctx: Context) -> None:
    """ConfigError unless the model pools from one feature map (the paper's case)."""
    pl = _model.pooler(ctx.model)
    if pl.levels > 1:
        raise ConfigError(f"explain roi-pool shows the paper's RoI pooling of one feature map; this model pools each RoI "
                          f"from one of {pl.levels} pyramid levels ({pl.kind})")


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    model = ctx.model
    prep = _model.prepare(model, ctx.image)
    feats = _model.features(model, prep.tensor)
    raw = _model.rpn_raw(model, feats)
    props, scores = _model.proposals(model, raw, prep)
    check(ctx)
    pl = _model.pooler(model)
    n, scale = pl.output_size, pl.spatial_scale
    big = ((props[:, 2] - props[:, 0]) * scale >= n) & ((props[:, 3] - props[:, 1]) * scale >= n)
    i = int(torch.where(big)[0][0]) if bool(big.any()) else 0  # the best proposal at least p cells wide
    box = props[i].tolist()
    fmap = _model.pool_input(model, feats)[0]  # [C, H, W]
    rows, cols = pool_bins(box, scale, n, fmap.shape[1], fmap.shape[2])
    r0, r1, c0, c1 = rows[0][0], max(rows[-1][1], rows[0][0] + 1), cols[0][0], max(cols[-1][1], cols[0][0] + 1)
    region = fmap[:, r0:r1, c0:c1].reshape(fmap.shape[0], -1)
    ch = int(region.max(dim=1).values.argmax())  # the channel most active in the RoI
    x = fmap[ch][None, None].float()
    pooled = roi_pool(x, [torch.tensor([box])], n, scale)[0, 0]
    sr, aligned = (pl.sampling_ratio, pl.aligned) if pl.kind == "roi_align" else (2, True)
    aligned_out = roi_align(x, [torch.tensor([box])], n, scale, sr, aligned)[0, 0]
    drawn_max = torch.tensor([[float(x[0, 0, a:b, c:d].max()) if b > a and d > c else 0.0 for c, d in cols] for a, b in rows])

    fig, axes = plt.subplots(2, 3, figsize=(14, 9), layout="constrained")
    show_image(axes[0, 0], prep.rgb, f"proposal #{i + 1} (objectness {float(scores[i]):.2f})\non the network input")
    draw_boxes(axes[0, 0], [box], "#00e5ff", lw=2)
    fm = x[0, 0].numpy()
    vmin, vmax = float(fm.min()), float(fm.max())
    ax = axes[1, 0]
    ax.imshow(fm, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    off = 0.5 if aligned else 0.0
    proj = [v * scale - 0.5 for v in box]  # continuous projection, in the image's cell-centre axes
    draw_boxes(ax, [proj], "#00e5ff", lw=1.5, label=f"projected: x {scale:g}")
    draw_boxes(ax, [[c0 - 0.5, r0 - 0.5, c1 - 0.5, r1 - 0.5]], "red", lw=1.5, style="--", label="rounded to cells")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"channel {ch} of the {fmap.shape[0]}-channel {fmap.shape[1]}x{fmap.shape[2]} map the head pools")
    zoom = (c0 - 1.5, c1 + 0.5, r1 + 0.5, r0 - 1.5)
    for ax, title in ((axes[0, 1], f"RoI pooling: {n}x{n} bins of whole cells\n(neighbours may share a cell), max of each"),
                      (axes[1, 1], f"RoIAlign: {n}x{n} bins, {sr}x{sr} bilinear samples each, averaged")):
        ax.imshow(fm, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_xlim(zoom[0], zoom[1])
        ax.set_ylim(zoom[2], zoom[3])
        ax.set_title(title)
        ax.set_xlabel("feature-map x (cells)")
        ax.set_ylabel("feature-map y (cells)")
    for p, (a, b) in enumerate(rows):  # bins may share cells: each drawn inset, checkerboard colours
        for q, (c, d) in enumerate(cols):
            draw_boxes(axes[0, 1], [[c - 0.4, a - 0.4, d - 0.6, b - 0.6]], "white" if (p + q) % 2 else "#ff7f00", lw=1)
            if b > a and d > c:
                cell = x[0, 0, a:b, c:d]
                yy, xx = divmod(int(cell.argmax()), cell.shape[1])
                axes[0, 1].plot([c + xx], [a + yy], "r.", ms=6)
    u1, v1, u2, v2 = (v * scale - off for v in box)
    bw, bh = (u2 - u1) / n, (v2 - v1) / n
    if not aligned:
        bw, bh = max(u2 - u1, 1.0) / n, max(v2 - v1, 1.0) / n
    for p in range(n):
        for q in range(n):
            draw_boxes(axes[1, 1], [[u1 + q * bw, v1 + p * bh, u1 + (q + 1) * bw, v1 + (p + 1) * bh]], "white", lw=0.8)
    pts = [(u1 + (q + (s + 0.5) / sr) * bw, v1 + (p + (t + 0.5) / sr) * bh) for p in range(n) for q in range(n)
           for s in range(sr) for t in range(sr)]
    axes[1, 1].plot([a for a, _ in pts], [b for _, b in pts], "r.", ms=2)
    for ax, values, title in ((axes[0, 2], pooled, "ops.roi_pool output"), (axes[1, 2], aligned_out, "ops.roi_align output")):
        ax.imshow(values.numpy(), cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        for (p, q), v in zip(((p, q) for p in range(n) for q in range(n)), values.flatten().tolist()):
            ax.text(q, p, f"{v:.2g}", ha="center", va="center", fontsize=6, color="white")
        ax.set_title(f"{title}: {n}x{n} (channel {ch})")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
    fig.suptitle(f"RoI pooling vs RoIAlign (Sec. 3.2): a {box[2] - box[0]:.0f}x{box[3] - box[1]:.0f} px proposal -> a fixed "
                 f"{n}x{n} grid; the model uses {pl.kind}")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}; red dots: each bin's max (top), the sampling points (bottom)")
    save(fig, out / FILES[0])
    caption = (f"one {box[2] - box[0]:.0f}x{box[3] - box[1]:.0f} px proposal projected on the feature map, its {n}x{n} "
               "sub-windows and the max-pooled output, RoI pooling and RoIAlign side by side")
    return Result([Output(FILES[0], caption)],
                  {"box": box, "channel": ch, "bins": {"rows": rows, "cols": cols}, "pooled": pooled.tolist(),
                   "bin_max": drawn_max.tolist(), "roi_align": aligned_out.tolist(), "output_size": n})
