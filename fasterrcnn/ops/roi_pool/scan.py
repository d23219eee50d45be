"""RoI max pooling by the kernel's own scan of each bin, compiled by numba (CPU, channels-last
rows, the RoIs split over threads)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .bins import _FLT_MAX, _bins


def _scan_bins(x, bidx, hs, he, ws, we, out, arg, best, pos, k0: int, k1: int, floor):  # numpy in, compiled by numba
    """The kernel's scan for RoIs k0..k1-1: x [N, H, W, C] (channels-last), bins hs/he [K, out_h]
    and ws/we [K, out_w]; writes out [K, C, out_h, out_w] and, if `arg` is not empty, the argmax
    codes of `_pool_forward` in the same layout. `best` and `pos` ([C] each) are the caller's
    scratch. Only values above `floor` (-FLT_MAX in x's dtype) count; the first maximum in
    row-major order wins."""
    n, height, width, c = x.shape
    nhw = n * height * width
    stride = nhw + 2
    out_h = hs.shape[1]
    out_w = ws.shape[1]
    keep = arg.size > 0
    for k in range(k0, k1):
        b = bidx[k]
        for ph in range(out_h):
            h0 = hs[k, ph]
            h1 = he[k, ph]
            for pw in range(out_w):
                w0 = ws[k, pw]
                w1 = we[k, pw]
                if h1 <= h0 or w1 <= w0:  # empty bin: 0, no gradient
                    for ch in range(c):
                        out[k, ch, ph, pw] = 0
                    if keep:
                        for ch in range(c):
                            arg[k, ch, ph, pw] = ch * stride + nhw + 1
                    continue
                for ch in range(c):
                    best[ch] = floor
                    pos[ch] = -1
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        p = (b * height + h) * width + w
                        for ch in range(c):  # branch-free, so that it vectorises
                            v = x[b, h, w, ch]
                            gt = v > best[ch]
                            best[ch] = v if gt else best[ch]
                            pos[ch] = p if gt else pos[ch]
                for ch in range(c):
                    out[k, ch, ph, pw] = best[ch]
                if keep:
                    for ch in range(c):
                        arg[k, ch, ph, pw] = ch * stride + (nhw - pos[ch] if pos[ch] >= 0 else 0)


@functools.cache
def _compiled_scan() -> Callable[..., None] | None:
    """`_scan_bins` compiled by numba (cached on disk next to this module), or None without numba."""
    from fasterrcnn._optional import optional_import

    numba = optional_import("numba")  # without it: the PyTorch code, same results, no message
    if numba is None:
        return None
    return numba.njit(cache=True, nogil=True)(_scan_bins)


def _pool_forward_scan(
    scan: Callable[..., None], x: Tensor, rois: Tensor, out_h: int, out_w: int, spatial_scale: float,
    with_argmax: bool,
) -> tuple[Tensor, Tensor | None]:
    """`_pool_forward`'s outputs (values and, if asked, argmax codes) by the compiled scan (CPU)."""
    n, c, height, width = x.shape
    k = rois.shape[0]
    stride = n * height * width + 2
    idt = torch.int32 if c * stride < 2**31 else torch.int64
    out = torch.empty(k, c, out_h, out_w, dtype=x.dtype)
    arg = torch.empty((k, c, out_h, out_w) if with_argmax else (0, 0, 0, 0), dtype=idt)
    if k and c:
        hs, he, ws, we = (t.numpy() for t in _bins(rois, spatial_scale, out_h, out_w, height, width))
        bidx = rois[:, 0].to(torch.int64).numpy()
        xs = x.permute(0, 2, 3, 1).contiguous().numpy()  # free when x is channels-last already
        floor = xs.dtype.type(-_FLT_MAX)
        threads = max(1, min(torch.get_num_threads(), k // 16))
        cuts = [k * i // threads for i in range(threads + 1)]

        def part(i: int) -> None:  # each thread its own scratch
            best, pos = np.empty(c, xs.dtype), np.empty(c, np.int64)
            scan(xs, bidx, hs, he, ws, we, out.numpy(), arg.numpy(), best, pos, cuts[i], cuts[i + 1], floor)

        if threads == 1:
            part(0)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(part, range(threads)))
    return out, (arg if with_argmax else None)
