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
IoU = inter / (area_i + area_j - inter) is evaluated in the boxes' dtype (float32/float64;
float16/bfloat16 are upcast to float32) and compared with the threshold as a double, so 0/0
(two empty boxes) is NaN and never suppresses. ``legacy_plus_one=True`` measures with the
paper code's pixel-index convention (width = x2 - x1 + 1), as py-faster-rcnn's ``nms`` does.

Algorithm (plain PyTorch, no loop over boxes): sort once, then visit the sorted boxes in
blocks of `_BLOCK` candidates. A candidate can only be suppressed by an earlier *kept* box,
so each block is compared with the boxes kept so far (not with all earlier boxes) and with
itself; the block's own greedy order is resolved exactly by a fixpoint iteration
(keep_i = not suppressed by earlier kept boxes and no kept j < i in the block overlaps it;
entry i depends only on j < i, so the fixpoint is unique, equals the sequential greedy result
and is reached in at most (longest suppression chain + 1) steps, usually 1-3).

Which pairs get an exact IoU: for thresholds >= `_FILTER_MIN_THRESHOLD` a cheap, provably
conservative pre-filter computed by one matrix product rejects most pairs, and the exact
IoU (same arithmetic as torchvision) is evaluated only on the surviving pairs. The filter:
if IoU(i, j) > t > 0 then inter_w >= t * max(w_i, w_j) (since IoU <= inter / area_i <=
inter_w / w_i and likewise for j), hence |dx1| + |dx2| = w_i + w_j - 2 inter_w <=
2 (1 - t) max(w), and max(w)^2 <= w_i w_j / t; with the same for y,

    ||b_i - b_j||^2  <  4 (1 - t)^2 / t * (w_i w_j + h_i h_j),

a test that is an inner product of per-box feature vectors (one GEMM for a whole block).
It is evaluated in float64 with the threshold lowered by 0.01 and a relative slack far above
the rounding error, on inputs where the dtype's IoU is within 1e-3 relative of the exact one
(guards below); anywhere else, and for small thresholds where it would not prune, the
exact IoU is computed for every (candidate, kept box) pair.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fasterrcnn.ops._utils import check_boxes, upcast

__all__ = ["batched_nms", "nms"]

# Candidates processed together (see module docstring); tuned on the benchmark workload.
_DENSE_BLOCK = 256
_TILED_BLOCK = 512  # first block (with max_keep: at least 2 * max_keep), then doubling
_TILED_MAX_BLOCK = 4096
_ROW_TILE = 8  # candidates per tile of the pre-filter (tile sizes: powers of two)
_COL_TILE = 32  # kept boxes per tile of the pre-filter
_GEMM_CHUNK = 1 << 18  # GEMM outputs computed at once
# Below this IoU threshold the pre-filter passes most pairs: compute every IoU instead.
_FILTER_MIN_THRESHOLD = 0.1
# The filter is derived for the threshold minus this margin (covers rounding of the IoU).
_FILTER_MARGIN = 0.01
# Guards under which the dtype's IoU is provably within 1e-3 relative of the exact IoU: no
# overflow / underflow of areas, and (legacy) no cancellation in x2 - x1 + 1.
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
            (width = x2 - x1 + 1), as py-faster-rcnn's ``nms`` does.

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
        raise ValueError(f"scores contains non-finite values (first at index {bad})")
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


def _threshold_in(dtype: torch.dtype, t: float) -> float:
    """A threshold t' exactly representable in `dtype` with (x > t') == (x > t) for every x of
    `dtype`: torchvision compares the float IoU with the threshold as a double, while torch
    casts a Python scalar to the tensor's dtype (0.3 -> 0.30000001f would change the result
    for an IoU of exactly 0.30000001f). t' is t rounded down to `dtype`."""
    if dtype == torch.float64 or math.isinf(t):
        return t
    t32 = torch.tensor(t, dtype=dtype).item()  # round to nearest
    if t32 > t:
        t32 = torch.nextafter(torch.tensor(t32, dtype=dtype), torch.tensor(-math.inf, dtype=dtype)).item()
    return t32


def _pair_suppresses(
    a: Tensor, b: Tensor, thr: float, plus_one: bool
) -> Tensor:
    """Elementwise over pairs: IoU(a, b) > thr, with torchvision's arithmetic.

    a, b: Tensor[..., 5] (x1, y1, x2, y2, area) broadcastable against each other; `a` is the
    earlier (kept) box: union = (area_a + area_b) - inter as in torchvision's kernel.
    """
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    if plus_one:
        iw += 1
        ih += 1
    inter = iw.clamp_(min=0) * ih.clamp_(min=0)
    union = (a[..., 4] + b[..., 4]) - inter
    return (inter / union) > thr



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

    if t >= _FILTER_MIN_THRESHOLD:
        # With max_keep, greedy decisions on the first m boxes do not depend on the others:
        # try a prefix first (4x larger each time it keeps too few).
        m = n if limit >= n else min(n, 4 * limit)
        while True:
            sub = None if cls is None else cls[:m]
            tiler = _Tiler.build(b[:m], w[:m], h[:m], sub, t, plus_one)
            if tiler is None:
                break  # outside the pre-filter's guards: evaluate every IoU
            kept = _greedy_tiled(coords[:m], sub, tiler, thr, plus_one, limit)
            if kept.numel() >= limit or m == n:
                return order[kept]
            m = min(n, 4 * m)
    return order[_greedy_dense(coords, cls, thr, plus_one, limit)]


def _resolve_block(suppressed: Tensor, src: Tensor, dst: Tensor) -> Tensor:
    """Greedy keep mask of one block: keep[i] = not suppressed[i] and no kept j < i with an
    edge j -> i (src < dst, local indices). Jacobi fixpoint iteration: unique fixpoint (entry
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


def _edges(
    coords: Tensor, cls: Tensor | None, i: Tensor, j: Tensor, thr: float, plus_one: bool
) -> Tensor:
    """For candidate pairs (later i, earlier j): IoU > thr (and same category)."""
    sup = _pair_suppresses(coords.index_select(0, j), coords.index_select(0, i), thr, plus_one)
    if cls is not None:
        sup &= cls.index_select(0, j) == cls.index_select(0, i)
    return sup


def _greedy_dense(
    coords: Tensor, cls: Tensor | None, thr: float, plus_one: bool, limit: int
) -> Tensor:
    """Sorted positions of the first `limit` kept boxes, every IoU evaluated exactly: each
    block of candidates against the boxes kept so far and against itself."""
    n = coords.shape[0]
    device = coords.device
    block = _DENSE_BLOCK
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


def _greedy_tiled(
    coords: Tensor, cls: Tensor | None, tiler: _Tiler, thr: float, plus_one: bool, limit: int
) -> Tensor:
    """Like `_greedy_dense`, but the exact IoU is evaluated only on the pairs that pass the
    tiler's conservative pre-filter; degenerate boxes (zero/negative width or height) have
    IoU 0 or NaN with everything, so they are kept and never suppress (threshold > 0)."""
    n = coords.shape[0]
    device = coords.device
    nondeg = tiler.nondeg
    kept = torch.empty(n, dtype=torch.int64, device=device)
    kept_nd = torch.empty(n, dtype=torch.int64, device=device)  # kept non-degenerate
    num = num_nd = 0
    s = 0
    # Blocks grow geometrically: few blocks (few, large tensor ops) when most boxes are kept;
    # small first blocks when they cluster (pairs within a block cost before suppression).
    block = _TILED_BLOCK if limit >= n else max(_TILED_BLOCK, 2 * limit)
    while s < n and num < limit:
        e = min(s + block, n)
        nb = e - s
        rows = s + nondeg[s:e].nonzero().squeeze(1)
        suppressed = torch.zeros(nb, dtype=torch.bool, device=device)
        # 1. suppression by the boxes kept before the block
        if num_nd and rows.numel():
            i, j = tiler.candidates(rows, kept_nd[:num_nd])
            i = i[_edges(coords, cls, i, j, thr, plus_one)]
            suppressed[i - s] = True
            rows = rows[~suppressed[rows - s]]
        # 2. edges among the block's survivors, resolved in order
        src = dst = rows[:0]
        if rows.numel() > 1:
            i, j = tiler.candidates(rows, rows)
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
        block = min(2 * block, _TILED_MAX_BLOCK)
    return kept[: min(num, limit)]


def _fp32_matmul_is_ieee(device: torch.device) -> bool:
    """True unless a global setting lets float32 matmuls run in reduced precision (TF32 on
    CUDA, bfloat16 through oneDNN on CPU): the pre-filter's error bound assumes IEEE float32."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32:
        return False
    mkldnn_matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if getattr(mkldnn_matmul, "fp32_precision", "ieee") not in ("ieee", "none"):
        return False
    return True


def _spread_bits(x: Tensor) -> Tensor:
    """Spread the low 10 bits of x to the even bit positions (for a 2-D Morton code)."""
    x = (x | (x << 8)) & 0x00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F
    x = (x | (x << 2)) & 0x33333333
    return (x | (x << 1)) & 0x55555555


class _Tiler:
    """Conservative candidate pairs for the tiled greedy NMS (threshold >= 0.1).

    Boxes are grouped into tiles of `_ROW_TILE` / `_COL_TILE` boxes that are close in (category, log width,
    log height, centre); a pair of tiles is skipped when no pair of their boxes can have
    IoU > t' (t' = min(t, 1) - `_FILTER_MARGIN`), by the necessary conditions (exact
    geometry, for boxes with positive sides):

        |cx_i - cx_j| < (1 - t') max(w_i, w_j),  min(w) > t' max(w)   (same for y, h),

    (from inter_w >= IoU * max(w), see the module docstring). Surviving tile pairs go through
    the matrix-product filter of the module docstring (one batched GEMM), and only the pairs
    it passes get an exact IoU. Both tests carry slack far above their rounding error; the
    GEMM runs in float32 only when float32 matmuls are IEEE (no TF32/bfloat16 modes) and the
    coordinates are moderate, else in float64.
    """

    def __init__(
        self,
        nondeg: Tensor,
        key: Tensor,
        stats: Tensor,
        rowf: Tensor,
        colf: Tensor,
        te: float,
        gap_slack: float,
    ) -> None:
        self.nondeg = nondeg  # [N] bool: positive width and height (as computed)
        self.key = key  # [N] int64 sort key for tiling
        self.stats = stats  # [N, 5] float64: cx, cy, w, h, category rank
        self.rowf = rowf  # [N + 1, D] GEMM features (row N: sentinel, never a candidate)
        self.colf = colf
        self.te = te
        self.ratio = te * (1.0 - 1e-9)
        self.gap_slack = gap_slack
        self.n = nondeg.shape[0]

    @staticmethod
    def build(
        b: Tensor, w: Tensor, h: Tensor, cls: Tensor | None, t: float, plus_one: bool
    ) -> _Tiler | None:
        """The tiler for boxes `b` (sorted, compute dtype) with computed sides w, h; None when
        the guards of the error analysis fail (the caller then evaluates every IoU)."""
        n = b.shape[0]
        device = b.device
        nondeg = (w > 0) & (h > 0)
        z = b.double()
        if plus_one:
            z[:, 2:] += 1  # the +1 convention's geometry: a box covers [x1, x2 + 1)
        side = torch.where(nondeg, torch.minimum(w, h), torch.full_like(w, math.inf)).min()
        big, side = torch.stack([z.abs().max(), side.double()]).tolist()
        min_side = max(_MIN_SIDE_LEGACY if plus_one else _MIN_SIDE, 1e-9 * big)
        if big > _MAX_ABS_COORD or side < min_side:
            return None

        te = min(t, 1.0) - _FILTER_MARGIN
        c = 4.0 * (1.0 - te) ** 2 / te
        zc = z - (z.amin(0) + z.amax(0)) / 2  # any per-coordinate shift keeps differences
        wd = z[:, 2] - z[:, 0]
        hd = z[:, 3] - z[:, 1]
        zero = torch.zeros_like(wd)
        cx = (z[:, 0] + z[:, 2]) / 2
        cy = (z[:, 1] + z[:, 3]) / 2
        if cls is not None:
            _, rank = torch.unique(cls, return_inverse=True)
            crank = rank.double()
            # category coordinate: boxes of different categories are >= spacing apart, so
            # they fail the GEMM filter (while the category count is moderate)
            wmax = torch.where(nondeg, wd, zero).max()
            hmax = torch.where(nondeg, hd, zero).max()
            spacing = torch.sqrt(2.0 * c * (wmax * wmax + hmax * hmax) + 1.0)
            zc = torch.cat([zc, ((crank - crank.max() / 2) * spacing)[:, None]], 1)
        else:
            crank = zero
        fp32 = _fp32_matmul_is_ieee(device) and float(zc.abs().max()) <= 1e12
        kappa = 3e-5 if fp32 else 1e-10
        sq = (zc * zc).sum(1)
        q = sq - kappa * (sq + 0.5 * c * (wd * wd + hd * hd))
        one = torch.ones_like(q)
        rowf = torch.cat([zc, q[:, None], one[:, None], wd[:, None], hd[:, None]], 1)
        colf = torch.cat([-2.0 * zc, one[:, None], q[:, None], -c * wd[:, None], -c * hd[:, None]], 1)
        d = zc.shape[1]
        sentinel_r = torch.zeros(1, rowf.shape[1], dtype=rowf.dtype, device=device)
        sentinel_r[0, d] = 1e30  # x (1 of every column) -> 1e30
        sentinel_c = torch.zeros_like(sentinel_r)
        sentinel_c[0, d + 1] = 1e30  # x (1 of every row) -> 1e30
        fd = torch.float32 if fp32 else torch.float64
        rowf = torch.cat([rowf, sentinel_r]).to(fd)
        colf = torch.cat([colf, sentinel_c]).to(fd)

        # tiling key: category, log2 width / height bins, Morton code of the centre
        lt = math.log(1.0 / te)
        tiny = torch.finfo(torch.float64).tiny
        bw = torch.floor(torch.log(wd.clamp(min=tiny)) / lt).clamp(-2047, 2047).long() + 2048
        bh = torch.floor(torch.log(hd.clamp(min=tiny)) / lt).clamp(-2047, 2047).long() + 2048

        def quant(v: Tensor) -> Tensor:
            lo, hi = v.min(), v.max()
            return ((v - lo) * (1023.0 / (hi - lo + 1e-300))).clamp(0, 1023).long()

        morton = _spread_bits(quant(cx)) | (_spread_bits(quant(cy)) << 1)
        key = ((crank.long().clamp(max=(1 << 19) - 1) * 4096 + bw) * 4096 + bh) * (1 << 20) + morton
        stats = torch.stack([cx, cy, wd, hd, crank], 1)
        return _Tiler(nondeg, key, stats, rowf, colf, te, 1e-9 * (big + 1.0))

    def _tiles(self, pos: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
        """Tiles of `size` positions of `pos` sorted by key: (min stats [T, 5], max stats
        [T, 5], feature indices [T, size] padded with the sentinel N)."""
        pos = pos[torch.sort(self.key[pos]).indices]
        m = pos.numel()
        nt = -(-m // size)
        pad = nt * size - m
        st = self.stats[torch.cat([pos, pos[-1:].expand(pad)])].view(nt, size, -1)
        feat = torch.cat([pos, pos.new_full((pad,), self.n)]).view(nt, size)
        return st.amin(1), st.amax(1), feat

    def _tile_pairs(self, amin: Tensor, amax: Tensor, bmin: Tensor, bmax: Tensor) -> Tensor:
        """[A, B] bool: may some box of tile a and some box of tile b have IoU > t'?"""
        a0, a1 = amin[:, None, :], amax[:, None, :]
        b0, b1 = bmin[None, :, :], bmax[None, :, :]
        # centres closer than (1 - t') * max(side), in x and in y
        reach = torch.maximum(a1[..., 2:4], b1[..., 2:4]).mul_(1.0 - self.te).add_(self.gap_slack)
        gap = torch.maximum(a0[..., 0:2] - b1[..., 0:2], b0[..., 0:2] - a1[..., 0:2])
        near = gap < reach
        # side ratios above t', for width and height
        ratio = (a1[..., 2:4] > self.ratio * b0[..., 2:4]) & (b1[..., 2:4] > self.ratio * a0[..., 2:4])
        ok = near[..., 0] & near[..., 1] & ratio[..., 0] & ratio[..., 1]
        ok &= (a0[..., 4] <= b1[..., 4]) & (b0[..., 4] <= a1[..., 4])  # categories in common
        return ok

    def candidates(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Pairs (i, j), i in `rows`, j in `cols`, j < i (sorted positions), including every
        pair with IoU > t (a superset: the caller evaluates the exact IoU)."""
        rmin, rmax, rfeat = self._tiles(rows, _ROW_TILE)
        cmin, cmax, cfeat = self._tiles(cols, _COL_TILE)
        ta, tb = self._tile_pairs(rmin, rmax, cmin, cmax).nonzero().unbind(1)
        rf = self.rowf[rfeat]  # [A, row tile, D]
        cf = self.colf[cfeat].transpose(1, 2).contiguous()  # [B, D, col tile]
        col_bits = _COL_TILE.bit_length() - 1  # tile sizes are powers of two
        pair_bits = col_bits + _ROW_TILE.bit_length() - 1
        out_i, out_j = [], []
        chunk = max(1, _GEMM_CHUNK >> pair_bits)
        for p0 in range(0, ta.numel(), chunk):
            a, bb = ta[p0 : p0 + chunk], tb[p0 : p0 + chunk]
            g = torch.bmm(rf.index_select(0, a), cf.index_select(0, bb))  # [p, row, col]
            flat = (g < 0).view(-1).nonzero().squeeze(1)  # (p * row + u) * col + v
            i = rfeat.index_select(0, a).view(-1).index_select(0, flat >> col_bits)
            j = cfeat.index_select(0, bb).view(-1)
            j = j.index_select(0, ((flat >> pair_bits) << col_bits) | (flat & (_COL_TILE - 1)))
            sel = j < i
            out_i.append(i[sel])
            out_j.append(j[sel])
        if not out_i:
            return rows[:0], rows[:0]
        return torch.cat(out_i), torch.cat(out_j)
