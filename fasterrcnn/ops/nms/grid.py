"""Block-wise greedy NMS with a spatial hash (`_Grid`): exact IoUs only for the pairs that can
overlap above the threshold (similar size, nearby centre, same category)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .blocks import _edges, _resolve_block

_GRID_BLOCK = 512  # first block, then doubling
_GRID_MAX_BLOCK = 4096
# The hash is built for the threshold minus this margin (covers rounding of the IoU).
_GRID_MARGIN = 0.01
# Guards under which the dtype's IoU is within 1e-3 relative of the exact IoU of the boxes
# (no overflow / underflow of areas; with +1, no cancellation in x2 - x1 + 1).
_MAX_ABS_COORD = 1e15
_MIN_SIDE = 1e-15
_MIN_SIDE_LEGACY = 1e-3


def _greedy_grid(
    coords: Tensor, cls: Tensor | None, grid: _Grid, thr: float, plus_one: bool, limit: int
) -> Tensor:
    """Like `_greedy_dense`, with exact IoUs only for the pairs the grid enumerates.

    Degenerate boxes (zero or negative width or height, as computed) have IoU 0 or NaN with
    every box, so (threshold > 0) they are kept and never suppress: they are left out of
    the hash. Blocks grow geometrically: few blocks (few, large tensor ops) when most boxes
    are kept, small first blocks when boxes cluster (pairs within a block are enumerated
    before the block's boxes are suppressed by earlier ones).
    """
    n = coords.shape[0]
    device = coords.device
    nondeg = grid.nondeg
    kept = torch.empty(n, dtype=torch.int64, device=device)
    kept_nd = torch.empty(n, dtype=torch.int64, device=device)  # the non-degenerate ones
    num = num_nd = 0
    s = 0
    block = _GRID_BLOCK
    while s < n and num < limit:
        e = min(s + block, n)
        rows = s + nondeg[s:e].nonzero().squeeze(1)
        suppressed = torch.zeros(e - s, dtype=torch.bool, device=device)
        # 1. suppression by the boxes kept before the block
        if num_nd and rows.numel():
            i, j = grid.candidates(rows, kept_nd[:num_nd])
            suppressed[i[_edges(coords, cls, i, j, thr, plus_one)] - s] = True
            rows = rows[~suppressed[rows - s]]
        # 2. edges among the block's survivors, resolved in order
        src = dst = rows[:0]
        if rows.numel() > 1:
            i, j = grid.candidates(rows, rows)
            sup = _edges(coords, cls, i, j, thr, plus_one)
            src, dst = j[sup] - s, i[sup] - s
        keep = _resolve_block(suppressed, src, dst)
        pos = s + keep.nonzero().squeeze(1)
        k = pos.numel()
        kept[num : num + k] = pos
        num += k
        pos_nd = pos[nondeg[pos]]
        kept_nd[num_nd : num_nd + pos_nd.numel()] = pos_nd
        num_nd += pos_nd.numel()
        s = e
        block = min(2 * block, _GRID_MAX_BLOCK)
    return kept[: min(num, limit)]


@dataclass(frozen=True)
class _Grid:
    """Spatial hash of the sorted boxes: candidate pairs for a threshold t >= 0.1.

    Geometry (exact arithmetic, boxes with positive sides): IoU <= inter / area_i <=
    inter_w / w_i and likewise for j, so IoU > t' implies inter_w > t' max(w_i, w_j), hence

    * ratio: min(w_i, w_j) > t' max(w_i, w_j), i.e. |log w_i - log w_j| < log(1 / t');
    * near: |cx_i - cx_j| <= (|dx1| + |dx2|) / 2 = (w_i + w_j) / 2 - inter_w
      < (1 - t') max(w_i, w_j);

    and the same for heights and y. Boxes are hashed by (category, floor(log w / lambda),
    floor(log h / lambda)) -- a size bucket, lambda slightly above log(1 / t') -- and by a
    cell of that bucket's g x g grid. A pair that can overlap above t' lies in one of the
    3 x 3 neighbouring buckets, within reach (1 - t') max(w) of the centre: a range of cells
    of that bucket's grid (cells are at least that wide, so it spans <= 3 x 3 cells). With
    boxes sorted by (bucket, y cell, x cell) and a table of where each cell starts, each
    (box, neighbouring bucket, y cell) is one contiguous range: the candidates are
    enumerated without visiting the other pairs.

    t' = min(t, 1) - `_GRID_MARGIN`, and every bound carries slack far above its rounding
    error (coordinates are ~1e-16 relative), so every pair whose IoU, as computed in the
    boxes' dtype, exceeds t is among the candidates: under the guards of `build`, that IoU
    is within 1e-3 relative of the exact IoU of the boxes. The caller then evaluates the
    exact IoU of the candidates only.
    """

    nondeg: Tensor  # [N] bool: positive width and height, as computed
    cell: Tensor  # [N] int64: (bucket * g + y cell) * g + x cell
    cid: Tensor  # [N] int64: bucket (dense id)
    box: Tensor  # [N, 4] float64: cx, cy, w, h (the +1 convention's geometry with +1)
    ncid: Tensor  # [buckets, 9] int64: the neighbouring buckets (-1: none)
    nbw: Tensor  # [buckets, 9] int64: their width bucket
    nbh: Tensor  # [buckets, 9] int64: their height bucket
    wmax: Tensor  # [width buckets] float64: widest box of the bucket
    hmax: Tensor  # [height buckets] float64
    inv_cx: Tensor  # [width buckets] float64: 1 / cell width of the bucket's grids
    inv_cy: Tensor  # [height buckets] float64
    x0: float  # grid origin
    y0: float
    g: int  # cells per side of each bucket's grid
    num_cells: int
    ext: float  # reach per unit of side: (1 - t') with slack
    slack: float  # absolute slack of distances

    @staticmethod
    def build(
        b: Tensor, w: Tensor, h: Tensor, cls: Tensor | None, t: float, plus_one: bool
    ) -> _Grid | None:
        """The hash of boxes `b` (sorted, compute dtype) with sides w, h as computed; None
        when the guards of the error analysis fail (the caller evaluates every IoU then)."""
        n = b.shape[0]
        device = b.device
        nondeg = (w > 0) & (h > 0)
        z = b.to(torch.float64, copy=True)
        if plus_one:
            z[:, 2:] += 1  # the +1 convention's geometry: a box covers [x1, x2 + 1)
        side = torch.where(nondeg, torch.minimum(w, h), torch.full_like(w, math.inf)).min()
        cx = (z[:, 0] + z[:, 2]) * 0.5
        cy = (z[:, 1] + z[:, 3]) * 0.5
        lims = torch.stack([z.abs().max(), side.double(), cx.min(), cx.max(), cy.min(), cy.max()])
        big, side_min, x0, x1, y0, y1 = lims.tolist()
        if big > _MAX_ABS_COORD or side_min < max(
            _MIN_SIDE_LEGACY if plus_one else _MIN_SIDE, 1e-9 * big
        ):
            return None

        te = min(t, 1.0) - _GRID_MARGIN
        ext = (1.0 - te) * (1.0 + 1e-9)
        slack = 1e-9 * (big + 1.0)
        lam = math.log(1.0 / te) + 1e-9  # size bucket width, log scale
        one = torch.ones_like(cx)
        wd = torch.where(nondeg, z[:, 2] - z[:, 0], one)
        hd = torch.where(nondeg, z[:, 3] - z[:, 1], one)

        def buckets(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            k = torch.floor(torch.log(v) / lam).long()
            k = (k - k.min()).clamp_(max=8191)  # clamping merges buckets: still a superset
            vmax = torch.zeros(int(k.max()) + 1, dtype=v.dtype, device=device)
            vmax.scatter_reduce_(0, k, v, "amax")
            # the longest reach of a box of this or a neighbouring bucket
            reach = torch.nn.functional.max_pool1d(vmax[None, None], 3, 1, 1)[0, 0]
            return k, vmax, reach * (ext * (1.0 + 1e-6)) + slack

        bw, wmax, reach_w = buckets(wd)
        bh, hmax, reach_h = buckets(hd)
        nbw, nbh = wmax.numel(), hmax.numel()
        crank = torch.zeros_like(bw) if cls is None else torch.unique(cls, return_inverse=True)[1]
        combos, cid = torch.unique((crank * nbw + bw) * nbh + bh, return_inverse=True)
        nc = combos.numel()
        # g x g cells per bucket, g a power of two, nc * g^2 <= max(4 n, 1024) cells in all;
        # cells at least the reach of the bucket's boxes and its neighbours'
        g = 1
        while g < 64 and nc * (2 * g) ** 2 <= max(4 * n, 1024):
            g *= 2
        inv_cx = 1.0 / torch.clamp(reach_w, min=(x1 - x0 + 2.0) / g)
        inv_cy = 1.0 / torch.clamp(reach_h, min=(y1 - y0 + 2.0) / g)
        x0, y0 = x0 - 1.0, y0 - 1.0
        gx = ((cx - x0) * inv_cx[bw]).clamp_(0, g - 1).long()  # floor (values >= 0)
        gy = ((cy - y0) * inv_cy[bh]).clamp_(0, g - 1).long()
        # the 3 x 3 neighbouring buckets of each bucket (same category)
        cw, ch = (combos // nbh) % nbw, combos % nbh
        d = torch.tensor([-1, 0, 1], device=device)
        nw, nh = cw[:, None] + d.repeat_interleave(3), ch[:, None] + d.repeat(3)
        ok = (nw >= 0) & (nw < nbw) & (nh >= 0) & (nh < nbh)
        ncombo = (combos[:, None] // (nbw * nbh) * nbw + nw) * nbh + nh
        ncid = torch.searchsorted(combos, ncombo).clamp_(max=nc - 1)
        ok &= combos[ncid] == ncombo
        return _Grid(
            nondeg=nondeg,
            cell=(cid * g + gy) * g + gx,
            cid=cid,
            box=torch.stack([cx, cy, wd, hd], 1),
            ncid=torch.where(ok, ncid, -1),
            nbw=nw.clamp(0, nbw - 1),
            nbh=nh.clamp(0, nbh - 1),
            wmax=wmax,
            hmax=hmax,
            inv_cx=inv_cx,
            inv_cy=inv_cy,
            x0=x0,
            y0=y0,
            g=g,
            num_cells=nc * g * g,
            ext=ext,
            slack=slack,
        )

    def candidates(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs (i, j), i in `rows`, j in `cols` (non-degenerate boxes), j < i (sorted
        positions): a superset of the pairs with IoU > t."""
        device = rows.device
        g = self.g
        cells, perm = torch.sort(self.cell[cols])
        cols = cols[perm]
        ends = torch.cumsum(torch.bincount(cells, minlength=self.num_cells), 0)
        starts = torch.cat([ends.new_zeros(1), ends[:-1]])
        # each row box's neighbouring buckets [R, 9] and the cells within reach in each
        r = rows.numel()
        c = self.cid.index_select(0, rows)
        nid = self.ncid.index_select(0, c)
        nbw = self.nbw.index_select(0, c).view(-1)
        nbh = self.nbh.index_select(0, c).view(-1)
        box = self.box.index_select(0, rows)[:, None, :]
        rx = torch.maximum(box[..., 2], self.wmax.index_select(0, nbw).view(r, 9))
        ry = torch.maximum(box[..., 3], self.hmax.index_select(0, nbh).view(r, 9))
        rx = rx * self.ext + self.slack
        ry = ry * self.ext + self.slack
        ix = self.inv_cx.index_select(0, nbw).view(r, 9)
        iy = self.inv_cy.index_select(0, nbh).view(r, 9)
        cx = box[..., 0] - self.x0
        cy = box[..., 1] - self.y0
        # (clamp, then truncate: floor, clamped to the grid)
        gx0 = ((cx - rx) * ix).clamp_(0, g - 1).long()
        gx1 = ((cx + rx) * ix).clamp_(0, g - 1).long()
        gy0 = ((cy - ry) * iy).clamp_(0, g - 1).long()
        gy1 = ((cy + ry) * iy).clamp_(0, g - 1).long()
        # per y cell, the cells gx0..gx1 are consecutive in the sorted order: one range each
        span = int((gy1 - gy0).max()) + 1  # <= 3
        gy = gy0[..., None] + torch.arange(span, device=device)  # [R, 9, span]
        base = (nid[..., None] * g + gy.clamp(max=g - 1)) * g
        lo = starts.index_select(0, (base + gx0[..., None]).clamp_(min=0).view(-1))
        hi = ends.index_select(0, (base + gx1[..., None]).clamp_(min=0).view(-1))
        valid = ((nid[..., None] >= 0) & (gy <= gy1[..., None])).view(-1)
        count = torch.where(valid, hi - lo, 0)
        total = int(count.sum())
        query = torch.repeat_interleave(
            torch.arange(count.numel(), device=device), count, output_size=total
        )
        start = lo - (torch.cumsum(count, 0) - count)  # sorted index - output index
        j = cols.index_select(0, start.index_select(0, query) + torch.arange(total, device=device))
        i = rows.index_select(0, query // (9 * span))
        sel = j < i
        return i[sel], j[sel]
