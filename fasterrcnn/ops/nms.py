"""Non-maximum suppression: greedy NMS and per-category (batched) NMS.

Faster R-CNN uses NMS twice (Ren et al. 2015):

* the RPN's proposal layer (Sec. 3.3): "we adopt non-maximum suppression (NMS) on the
  proposal regions based on their cls scores. We fix the IoU threshold for NMS at 0.7" --
  at test time the top N = 6000 proposals by score go in and the top M = 300 survivors come
  out, so `nms(..., 0.7, max_keep=300)` stops as soon as 300 boxes are kept;
* the detector's post-processing: per-class NMS at IoU 0.3 (py-faster-rcnn's
  ``test.py``, ``cfg.TEST.NMS = 0.3``), i.e. `batched_nms(boxes, scores, labels, 0.3)`.

Semantics are exactly those of torchvision's CPU kernel (``torchvision.ops.nms``): boxes are
visited by decreasing score with a *stable* sort (equal scores: lower index first); a box is
kept unless its IoU with an already kept box is strictly greater than the threshold;
IoU = inter / ((area_i + area_j) - inter) is evaluated in the boxes' dtype (float32/float64;
float16/bfloat16 and integers are upcast to float32) and compared with the threshold as a
double, so 0/0 (two empty boxes) is NaN and never suppresses. ``legacy_plus_one=True``
measures with the paper code's pixel-index convention (width = x2 - x1 + 1), as
py-faster-rcnn's ``nms`` does.

Algorithm (plain PyTorch, no loop over boxes): sort once, then visit the sorted boxes in
blocks. A box can only be suppressed by an earlier *kept* box, so each block is compared
with the boxes kept so far (not with all earlier boxes), then its survivors with each other;
the block's own greedy order is resolved exactly by a fixpoint iteration (keep_i = not
suppressed by an earlier kept box and no kept j < i in the block overlaps it; entry i depends
only on j < i, so the fixpoint is unique, equals the sequential greedy result and is reached
after at most (longest suppression chain + 1) rounds, usually 1-3). With `max_keep` the loop
stops as soon as enough boxes are kept.

When at most 2,048 boxes can be kept (an early stop such as the RPN's top-300 at test time, its
2,000 in training and for recall curves, or no more boxes than that; `_LOOP_MAX_KEEP`), with no
categories, CPU tensors, an IoU threshold >= 0 and numba installed (a core dependency), the
greedy loop runs compiled instead (`_greedy_loop`: the textbook sequential scan with
torchvision's arithmetic, each candidate against the boxes kept so far): on a trained RPN's clustered top-6000 it takes 1.5 ms where the block loop below takes
14 ms for 300 kept (the block loop's ~90 rounds of small tensor ops are overhead-bound), and
15 ms against 48-54 ms for up to 2,000 kept (the hash). Its cost grows with candidates x kept
boxes, so without an early stop, or beyond 2,048, the hash answers (6,000 spread boxes all kept:
25 ms against the loop's 40 ms; 20,000: 95 against 393 ms). Results are identical (tests run
both paths).

Which pairs get an exact IoU: for thresholds >= 0.3 (>= 0.1 in `batched_nms`) a spatial
hash (`_Grid`) enumerates a provable superset of the pairs that can overlap above the
threshold -- similar size, nearby centre, same category -- and the exact IoU (the arithmetic
above) is evaluated on those only: < 1% of the (candidate, kept box) pairs on the ops
benchmark's boxes. Below those thresholds, with max_keep <= 512, or for coordinates outside
the hash's error analysis (`_Grid.build`), every (candidate, kept box) pair is evaluated
(`_greedy_dense`).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fasterrcnn.ops._utils import NonFiniteError, check_boxes, upcast

__all__ = ["batched_nms", "nms"]

# Block sizes (candidates visited together), tuned on the ops benchmark workload and on a
# trained RPN's top-6000 boxes (benchmarks/proposal_time.py).
_DENSE_BLOCK = 256
# Early stop at up to this many kept boxes (the RPN's top-300 at test time): every pair is
# evaluated, in small blocks. A trained RPN's boxes cluster on the objects, so the scan goes
# deep into the candidates; small blocks keep the pairs within a block few, and the pairs
# with the <= 512 kept boxes are cheaper to evaluate than to enumerate with the hash
# (measured: 10 ms against 27 ms with the hash on those boxes, 1.6 ms against 3.3 ms on the
# ops benchmark's). With more boxes to keep the hash wins.
_DENSE_MAX_KEEP = 512
_DENSE_SMALL_BLOCK = 64
# At most this many boxes to keep (CPU, no categories, numba installed): the compiled
# sequential loop, whose cost is ~ candidates x kept boxes (see the module docstring).
_LOOP_MAX_KEEP = 2048
_GRID_BLOCK = 512  # first block, then doubling
_GRID_MAX_BLOCK = 4096
# The spatial hash is used from these thresholds up; below, it passes most pairs anyway.
_GRID_MIN_THRESHOLD = 0.3
_GRID_MIN_THRESHOLD_BATCHED = 0.1  # (categories are part of the hash)
# The hash is built for the threshold minus this margin (covers rounding of the IoU).
_GRID_MARGIN = 0.01
# Guards under which the dtype's IoU is within 1e-3 relative of the exact IoU of the boxes
# (no overflow / underflow of areas; with +1, no cancellation in x2 - x1 + 1).
_MAX_ABS_COORD = 1e15
_MIN_SIDE = 1e-15
_MIN_SIDE_LEGACY = 1e-3


def nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
    legacy_plus_one: bool = False,
) -> Tensor:
    """Greedy non-maximum suppression; returns the indices (int64) of the kept boxes.

    Args:
        boxes: Tensor[N, 4] of (x1, y1, x2, y2), float32/float64/float16/bfloat16 (reduced
            precision is upcast to float32 for the IoU) or integer; finite.
        scores: Tensor[N] of scores (real, finite), on the same device.
        iou_threshold: a box is discarded when its IoU with a kept, higher-scored box is
            strictly greater than this (the RPN uses 0.7, paper Sec. 3.3).
        max_keep: stop after this many kept boxes (the RPN keeps 300 at test time) without
            examining the rest; the result equals the first `max_keep` entries of the full
            result. None keeps all.
        legacy_plus_one: measure boxes with the paper code's +1 convention
            (width = x2 - x1 + 1), as py-faster-rcnn's ``nms`` does (only the measure:
            boxes are still visited by decreasing score, ties by index).

    Returns:
        Tensor[K] int64 on the boxes' device: indices into `boxes`, by decreasing score
        (equal scores: lower index first), exactly as ``torchvision.ops.nms``.
    """
    boxes, scores, thr, max_keep = _check_args(boxes, scores, iou_threshold, max_keep)
    return _nms(boxes, scores, None, thr, max_keep, bool(legacy_plus_one))


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    *,
    max_keep: int | None = None,
    legacy_plus_one: bool = False,
) -> Tensor:
    """NMS independently within each category of `idxs`; boxes of different categories
    never suppress each other (the detector's per-class NMS, 0.3 in the paper's code).

    Exactly per category (no coordinate-offset trick, so no change to float results): pairs
    of different categories are masked inside the algorithm. Returns the kept indices
    (int64) sorted by decreasing score (equal scores: lower index first) -- the same set as
    running `nms` per category -- and with `max_keep` the first `max_keep` of them.

    Args:
        boxes, scores, iou_threshold, max_keep, legacy_plus_one: as in `nms`.
        idxs: Tensor[N] of integer category ids (any values), on the boxes' device.
    """
    boxes, scores, thr, max_keep = _check_args(boxes, scores, iou_threshold, max_keep)
    if not isinstance(idxs, Tensor):
        raise TypeError(f"idxs must be a torch.Tensor, got {type(idxs).__name__}")
    if idxs.dim() != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"idxs must have shape [N] with N = {boxes.shape[0]} (one category per box), "
            f"got {tuple(idxs.shape)}"
        )
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
    if idxs.device != boxes.device:
        raise ValueError(f"idxs is on {idxs.device} but boxes are on {boxes.device}")
    return _nms(boxes, scores, idxs, thr, max_keep, bool(legacy_plus_one))


# --------------------------------------------------------------------------------------------
# argument checks


def _check_args(
    boxes: Tensor, scores: Tensor, iou_threshold: float, max_keep: int | None
) -> tuple[Tensor, Tensor, float, int | None]:
    check_boxes(boxes, "boxes")
    if boxes.dim() != 2:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if not isinstance(scores, Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    if scores.dim() != 1:
        raise ValueError(f"scores must have shape [N], got {tuple(scores.shape)}")
    if scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"boxes and scores must have the same length, got {boxes.shape[0]} boxes and "
            f"{scores.shape[0]} scores"
        )
    if scores.is_complex() or scores.dtype == torch.bool:
        raise TypeError(f"scores must be a real-valued tensor, got {scores.dtype}")
    if scores.device != boxes.device:
        raise ValueError(f"scores is on {scores.device} but boxes are on {boxes.device}")
    if scores.is_floating_point() and scores.numel() and not bool(torch.isfinite(scores).all()):
        bad = (~torch.isfinite(scores)).nonzero()[0].item()
        raise NonFiniteError(f"scores contains non-finite values (first at index {bad})")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise TypeError(f"iou_threshold must be a real number, got {type(iou_threshold).__name__}")
    thr = float(iou_threshold)
    if math.isnan(thr):
        raise ValueError("iou_threshold is NaN")
    if max_keep is not None:
        if isinstance(max_keep, bool) or not isinstance(max_keep, numbers.Integral):
            raise TypeError(f"max_keep must be an int or None, got {type(max_keep).__name__}")
        if max_keep < 0:
            raise ValueError(f"max_keep must be >= 0, got {max_keep}")
        max_keep = int(max_keep)
    return boxes, scores, thr, max_keep


# --------------------------------------------------------------------------------------------
# the algorithm


# --------------------------------------------------------------------------------------------
# the algorithm


def _nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor | None,
    t: float,
    max_keep: int | None,
    plus_one: bool,
) -> Tensor:
    device = boxes.device
    n = boxes.shape[0]
    if n == 0 or max_keep == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    limit = n if max_keep is None else min(max_keep, n)

    order = torch.sort(scores, descending=True, stable=True).indices
    b = upcast(boxes)[order]  # [N, 4] by decreasing score, float32 or float64
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    if plus_one:
        w += 1
        h += 1
    coords = torch.cat([b, (w * h)[:, None]], 1)  # [N, 5]: x1, y1, x2, y2, area
    thr = _threshold_in(b.dtype, t)
    cls = None if idxs is None else idxs[order]

    # (the loop skips non-overlapping pairs, IoU 0: exact for thresholds >= 0 only)
    if cls is None and limit <= _LOOP_MAX_KEEP and t >= 0 and b.device.type == "cpu":
        loop = _compiled_greedy_loop()
        if loop is not None:
            bn = b.detach().contiguous().numpy()
            one = bn.dtype.type(1 if plus_one else 0)  # a scalar of the boxes' dtype
            kept = loop(bn, coords[:, 4].detach().contiguous().numpy(), thr, limit, one)
            return order[torch.from_numpy(kept)]
    # the hash pays off unless the threshold is low or only a few boxes are to be kept
    min_t = _GRID_MIN_THRESHOLD if cls is None else _GRID_MIN_THRESHOLD_BATCHED
    if t >= min_t and limit > _DENSE_MAX_KEEP:
        grid = _Grid.build(b, w, h, cls, t, plus_one)
        if grid is not None:  # (None: outside the hash's error analysis)
            return order[_greedy_grid(coords, cls, grid, thr, plus_one, limit)]
    block = _DENSE_SMALL_BLOCK if limit <= _DENSE_MAX_KEEP else _DENSE_BLOCK
    return order[_greedy_dense(coords, cls, thr, plus_one, limit, block)]


def _greedy_loop(b, area, thr: float, limit: int, one):  # numpy arrays in, compiled by numba
    """Sorted positions of the first `limit` kept boxes: each box (sorted by score) against the
    boxes kept so far, with torchvision's arithmetic in the boxes' dtype (`one` is 0 or 1 of
    that dtype: the +1 convention); an IoU that is NaN (0/0) never suppresses. Pairs that do
    not overlap are skipped (IoU 0), so the threshold must be >= 0."""
    n = b.shape[0]
    kept = np.empty(min(limit, n), np.int64)
    nk = 0
    for i in range(n):
        if nk >= limit:
            break
        ok = True
        for k in range(nk):
            j = kept[k]
            iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + one
            ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + one
            if iw > 0 and ih > 0:
                inter = iw * ih
                if inter / ((area[i] + area[j]) - inter) > thr:
                    ok = False
                    break
        if ok:
            kept[nk] = i
            nk += 1
    return kept[:nk]


@functools.cache
def _compiled_greedy_loop():
    """`_greedy_loop` compiled by numba (cached on disk next to this module), or None without
    numba."""
    from fasterrcnn._optional import optional_import

    numba = optional_import("numba")  # without it: the PyTorch code, same results, no message
    if numba is None:
        return None
    return numba.njit(cache=True, nogil=True)(_greedy_loop)


def _threshold_in(dtype: torch.dtype, t: float) -> float:
    """A threshold t' exactly representable in `dtype` with (x > t') == (x > t) for every x
    of `dtype`: t rounded down to `dtype`.

    torchvision compares the float IoU with the threshold as a double, while torch casts a
    Python scalar to the tensor's dtype: 0.3 -> 0.30000001f, so an IoU of exactly
    0.30000001f (3 / 10 in float32) would not suppress, while it does in torchvision.
    """
    if dtype == torch.float64 or math.isinf(t):
        return t
    down = torch.tensor(t, dtype=dtype)  # rounded to nearest
    if down.item() > t:
        down = torch.nextafter(down, torch.tensor(-math.inf, dtype=dtype))
    return down.item()


def _pair_suppresses(a: Tensor, b: Tensor, thr: float, plus_one: bool) -> Tensor:
    """Elementwise over pairs: IoU(a, b) > thr, with torchvision's arithmetic.

    a, b: Tensor[..., 5] (x1, y1, x2, y2, area), broadcastable against each other.
    """
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    if plus_one:
        iw += 1
        ih += 1
    inter = iw.clamp_(min=0) * ih.clamp_(min=0)
    union = (a[..., 4] + b[..., 4]) - inter
    return (inter / union) > thr


def _edges(
    coords: Tensor, cls: Tensor | None, i: Tensor, j: Tensor, thr: float, plus_one: bool
) -> Tensor:
    """For pairs (i, j) of sorted positions: does j suppress i if kept (IoU > thr, and the
    same category)?"""
    sup = _pair_suppresses(coords.index_select(0, j), coords.index_select(0, i), thr, plus_one)
    if cls is not None:
        sup &= cls.index_select(0, j) == cls.index_select(0, i)
    return sup


def _resolve_block(suppressed: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """Greedy keep mask of one block: keep[i] = not suppressed[i] and no kept j with an edge
    j -> i (src < dst, indices in the block). Jacobi iteration to the unique fixpoint (entry
    i depends only on j < i), reached after at most (longest edge chain + 1) rounds."""
    keep = ~suppressed
    if src.numel() == 0:
        return keep
    while True:
        hit = torch.zeros_like(suppressed)
        hit[dst[keep[src]]] = True
        new = ~suppressed & ~hit
        if torch.equal(new, keep):
            return keep
        keep = new


def _greedy_dense(
    coords: Tensor, cls: Tensor | None, thr: float, plus_one: bool, limit: int, block: int = _DENSE_BLOCK
) -> Tensor:
    """Sorted positions of the first `limit` kept boxes, every IoU evaluated: each block of
    candidates against the boxes kept so far and against itself."""
    n = coords.shape[0]
    device = coords.device
    kept = torch.empty(n, dtype=torch.int64, device=device)
    kc = torch.empty(n + block, 5, dtype=coords.dtype, device=device)  # kept boxes, then block
    kcls = None if cls is None else torch.empty(n + block, dtype=cls.dtype, device=device)
    num = 0
    s = 0
    while s < n and num < limit:
        e = min(s + block, n)
        nb = e - s
        kc[num : num + nb] = coords[s:e]
        if kcls is not None:
            kcls[num : num + nb] = cls[s:e]
        sup = _pair_suppresses(kc[None, : num + nb], coords[s:e, None], thr, plus_one)
        if kcls is not None:
            sup &= kcls[None, : num + nb] == cls[s:e, None]
        suppressed = sup[:, :num].any(1)
        dst, src = sup[:, num:].tril_(-1).nonzero().unbind(1)  # src < dst in the block
        keep = _resolve_block(suppressed, src, dst)
        pos = s + keep.nonzero().squeeze(1)
        k = pos.numel()
        kept[num : num + k] = pos
        kc[num : num + k] = coords[pos]
        if kcls is not None:
            kcls[num : num + k] = cls[pos]
        num += k
        s = e
    return kept[: min(num, limit)]


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
