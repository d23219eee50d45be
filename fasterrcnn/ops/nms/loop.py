"""The compiled sequential greedy NMS loop (numba): each box, by decreasing score, against the
boxes kept so far, with torchvision's arithmetic. The dispatcher in `fasterrcnn.ops.nms` uses
it for CPU tensors without categories when at most 2,048 boxes are to be kept."""

from __future__ import annotations

import functools

import numpy as np


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
