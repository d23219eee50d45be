"""Block-wise greedy NMS with every (candidate, kept box) IoU evaluated."""

from __future__ import annotations

import torch
from torch import Tensor

from .blocks import _pair_suppresses, _resolve_block

# Block size (candidates visited together), tuned on the ops benchmark workload and on a
# trained RPN's top-6000 boxes (benchmarks/proposal_time.py).
_DENSE_BLOCK = 256


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
