"""The exact block-wise greedy machinery shared by the dense and the hashed NMS: the pairwise
suppression test with torchvision's arithmetic, and the fixpoint that resolves one block's
greedy order (`fasterrcnn.ops.nms` says why it is exact)."""

from __future__ import annotations

import torch
from torch import Tensor


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
