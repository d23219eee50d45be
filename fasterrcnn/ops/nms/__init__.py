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

Layout: this module holds the public functions, the argument checks and the dispatch rule
(`_nms`, in one place); `loop.py` the compiled loop, `dense.py` the every-pair block loop,
`grid.py` the spatial hash and its block loop, `blocks.py` the pair test and the block
fixpoint both block loops share.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from fasterrcnn.ops._utils import NonFiniteError, check_boxes, upcast

from . import loop
from .dense import _DENSE_BLOCK, _greedy_dense
from .grid import _greedy_grid, _Grid

__all__ = ["batched_nms", "nms"]

# The dispatch rule of `_nms` (the module docstring says why):
# Early stop at up to this many kept boxes (the RPN's top-300 at test time): every pair is
# evaluated, in small blocks. A trained RPN's boxes cluster on the objects, so the scan goes
# deep into the candidates; small blocks keep the pairs within a block few, and the pairs
# with the <= 512 kept boxes are cheaper to evaluate than to enumerate with the hash
# (measured: 10 ms against 27 ms with the hash on those boxes, 1.6 ms against 3.3 ms on the
# ops benchmark's). With more boxes to keep the hash wins.
_DENSE_MAX_KEEP = 512
_DENSE_SMALL_BLOCK = 64
# At most this many boxes to keep (CPU, no categories, numba installed): the compiled
# sequential loop (`loop.py`), whose cost is ~ candidates x kept boxes.
_LOOP_MAX_KEEP = 2048
# The spatial hash (`grid.py`) is used from these thresholds up; below, it passes most pairs anyway.
_GRID_MIN_THRESHOLD = 0.3
_GRID_MIN_THRESHOLD_BATCHED = 0.1  # (categories are part of the hash)


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
# the dispatcher


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
        compiled = loop._compiled_greedy_loop()
        if compiled is not None:
            bn = b.detach().contiguous().numpy()
            one = bn.dtype.type(1 if plus_one else 0)  # a scalar of the boxes' dtype
            kept = compiled(bn, coords[:, 4].detach().contiguous().numpy(), thr, limit, one)
            return order[torch.from_numpy(kept)]
    # the hash pays off unless the threshold is low or only a few boxes are to be kept
    min_t = _GRID_MIN_THRESHOLD if cls is None else _GRID_MIN_THRESHOLD_BATCHED
    if t >= min_t and limit > _DENSE_MAX_KEEP:
        grid = _Grid.build(b, w, h, cls, t, plus_one)
        if grid is not None:  # (None: outside the hash's error analysis)
            return order[_greedy_grid(coords, cls, grid, thr, plus_one, limit)]
    block = _DENSE_SMALL_BLOCK if limit <= _DENSE_MAX_KEEP else _DENSE_BLOCK
    return order[_greedy_dense(coords, cls, thr, plus_one, limit, block)]


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
