"""RoI max pooling (Fast R-CNN, Girshick 2015), with torchvision.ops.roi_pool's semantics.

The rule (Fast R-CNN, Sec. 2.1): "RoI max pooling works by dividing the h x w RoI window into
an H x W grid of sub-windows of approximate size h/H x w/W and then max-pooling the values in
each sub-window into the corresponding output grid cell". Faster R-CNN uses H = W = 7 for
VGG-16 and 6 x 6 for ZF.

Quantisation, exactly as torchvision's kernels (so that models trained with torchvision behave
the same here), for a RoI (x1, y1, x2, y2) and feature map H x W:

* corners are scaled by ``spatial_scale`` and rounded half away from zero (C ``round``; not
  ``torch.round``, which rounds half to even);
* the RoI size is ``max(end - start + 1, 1)`` cells; bin ``p`` of ``n`` covers cells
  ``[floor(p * size / n), ceil((p + 1) * size / n))`` offset by the start and clamped to the
  map; an empty bin outputs 0;
* the maximum is over values ``> -FLT_MAX`` (a bin holding only -inf/NaN outputs -FLT_MAX and
  passes no gradient); ties go to the first maximum in row-major scan order, and the gradient
  flows to that one argmax only.

Algorithm (no loop over RoIs or bins): the maximum over a rectangle is answered from a 2-D
sparse table on channels-last features, ``T[k][l][h, w] = max over [h, h + 2^k) x
[w, w + 2^l)`` for the levels the bins need; a bin of ``a x b`` cells is the maximum of the four
(overlapping) ``2^floor(log2 a) x 2^floor(log2 b)`` blocks anchored at its corners, each a row of
contiguous channel values gathered with one ``index_select`` for all bins at once. Channels are
processed in blocks so that the tables and lookup buffers stay cache-sized. When a gradient is
needed the argmax travels through the same table: for float32 (and float16/bfloat16, computed
in float32) value and position are packed into one int64 key whose integer order is (value,
then earlier position), so the table is built and queried with plain ``maximum``; float64 keeps
(value, position) pairs; the pooled values are then read at the argmax positions. The argmax
is stored like torchvision's (int32, output layout) and the backward pass is one ``index_add_``
of the output gradient at the argmax positions.

On CPU with numba installed (a core dependency), the forward pass instead runs the kernel's own
scan, compiled: for each bin, the cells in row-major order, each a contiguous row of channels
(channels-last), keeping the first strict maximum per channel (a branch-free loop that
vectorises); the RoIs are split between `torch.get_num_threads()` threads (the compiled loop
releases the GIL). Same bins, values and argmax codes as the table path (the tests run both);
on the ops benchmark's workload the forward pass is ~3x faster and forward + backward ~2x
(BENCHMARKS.md), since a scan reads each cell of each bin once while the tables are built over
the whole map.
"""

from __future__ import annotations

import functools
import numbers
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from fasterrcnn.ops._utils import check_roi_input, convert_boxes_to_roi_format, pair

__all__ = ["roi_pool", "RoIPool"]

_FLT_MAX = float(torch.finfo(torch.float32).max)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32/float16/bfloat16 are computed in float32 (as
    torchvision's autocast wrappers do)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Internal arithmetic must not be recast by an enclosing torch.autocast region."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.autocast(device.type, enabled=False)
    except (RuntimeError, TypeError):  # device type without autocast support
        pass
    return nullcontext()


def _check_scale(spatial_scale: float) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, numbers.Real):
        raise TypeError(f"spatial_scale must be a float, got {type(spatial_scale).__name__}")
    s = float(spatial_scale)
    if not (s > 0 and s < float("inf")):
        raise ValueError(f"spatial_scale must be a finite positive number, got {spatial_scale!r}")
    return s


def _round_half_away(v: Tensor) -> Tensor:
    """C ``round``: halves go away from zero (torch.round would send 2.5 to 2)."""
    t = torch.trunc(v)
    step = torch.where((v - t).abs() >= 0.5, torch.sign(v), torch.zeros_like(v))
    return t + step


def _bins(
    rois: Tensor, spatial_scale: float, out_h: int, out_w: int, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cell ranges of every bin: hstart/hend [K, out_h] and wstart/wend [K, out_w] (int64),
    computed in the dtype of `rois` with the kernel's order of operations."""
    dt = rois.dtype
    scale = torch.tensor(spatial_scale, dtype=dt, device=rois.device)
    q = _round_half_away(rois[:, 1:5] * scale).to(torch.int64)
    start_w, start_h, end_w, end_h = q.unbind(1)
    roi_w = (end_w - start_w + 1).clamp(min=1)
    roi_h = (end_h - start_h + 1).clamp(min=1)
    bin_h = roi_h.to(dt) / out_h
    bin_w = roi_w.to(dt) / out_w
    ph = torch.arange(out_h + 1, dtype=dt, device=rois.device)
    pw = torch.arange(out_w + 1, dtype=dt, device=rois.device)
    edges_h = ph * bin_h[:, None]
    edges_w = pw * bin_w[:, None]
    hs = (torch.floor(edges_h[:, :-1]).to(torch.int64) + start_h[:, None]).clamp(0, height)
    he = (torch.ceil(edges_h[:, 1:]).to(torch.int64) + start_h[:, None]).clamp(0, height)
    ws = (torch.floor(edges_w[:, :-1]).to(torch.int64) + start_w[:, None]).clamp(0, width)
    we = (torch.ceil(edges_w[:, 1:]).to(torch.int64) + start_w[:, None]).clamp(0, width)
    return hs, he, ws, we


def _floor_log2(n: Tensor, max_level: int) -> Tensor:
    """floor(log2(n)) for integer n >= 1, exactly (no float log)."""
    k = torch.zeros_like(n)
    for lvl in range(1, max_level + 1):
        k += n >= (1 << lvl)
    return k


def _lookup_rows(
    rois: Tensor, out_h: int, out_w: int, spatial_scale: float, n: int, height: int, width: int
) -> tuple[list[Tensor], int, int]:
    """Rows of the flattened sparse table to combine for each bin (four [K * out_h * out_w]
    int64 tensors, row-major over (roi, ph, pw)), and the table's levels (KH, KW).

    Table rows are ``((kh * (KW + 1) + kw) * N + b) * H * W + h * W + w``; the last row of the
    table (index L * N * H * W) is the sentinel read by empty bins."""
    hs, he, ws, we = _bins(rois, spatial_scale, out_h, out_w, height, width)
    len_h = he - hs
    len_w = we - ws
    empty = (len_h[:, :, None] <= 0) | (len_w[:, None, :] <= 0)
    len_h = len_h.clamp(min=1)
    len_w = len_w.clamp(min=1)
    max_h = int(len_h.max()) if len_h.numel() else 1
    max_w = int(len_w.max()) if len_w.numel() else 1
    lvl_h_max = max_h.bit_length() - 1
    lvl_w_max = max_w.bit_length() - 1
    kh = _floor_log2(len_h, lvl_h_max)
    kw = _floor_log2(len_w, lvl_w_max)
    hw = height * width
    b = rois[:, 0].to(torch.int64)
    level = kh[:, :, None] * (lvl_w_max + 1) + kw[:, None, :]  # [K, out_h, out_w]
    base = (level * n + b[:, None, None]) * hw
    h_lo = hs * width
    h_hi = (he - (1 << kh)) * width
    w_lo = ws
    w_hi = we - (1 << kw)
    sentinel = (lvl_h_max + 1) * (lvl_w_max + 1) * n * hw
    rows = []
    for hh in (h_lo, h_hi):
        for ww in (w_lo, w_hi):
            r = base + hh[:, :, None] + ww[:, None, :]
            rows.append(r.masked_fill_(empty, sentinel).reshape(-1))
    return rows, lvl_h_max, lvl_w_max


# Working memory per channel block: blocks keep the tables and lookup buffers cache-sized and
# reused, instead of touching (and page-faulting) levels x the whole feature map at once.
# (8 MiB: measured best on the benchmark workload, 2-core AMD EPYC, 32 MiB L3).
_BLOCK_BYTES = 8 << 20


def _channel_block(c: int, bytes_per_channel: int) -> int:
    """Channels per block so that a block's working set is about _BLOCK_BYTES: a multiple of 8
    in [32, 64] (wider blocks spill the caches; narrower ones cost more in per-op overhead, and
    in exposure to stalls of intra-op threads on a busy machine, than they gain), or all
    channels if fewer."""
    cb = _BLOCK_BYTES // max(bytes_per_channel, 1)
    return int(min(c, max(32, min(64, cb // 8 * 8))))


_Combine = Callable[[list[Tensor], list[Tensor], list[Tensor]], None]


def _fill_levels(
    tables: list[Tensor], n: int, height: int, width: int, lvl_h: int, lvl_w: int, combine: _Combine
) -> None:
    """Complete the sparse tables in place from level (0, 0). Each table is
    [(lvl_h + 1) * (lvl_w + 1) * N * H * W + 1, cb]; level (k, l) holds, at (n, h, w), the
    combination over cells [h, h + 2^k) x [w, w + 2^l) (only where that window fits)."""
    nhw = n * height * width
    cb = tables[0].shape[1]

    def view(t: Tensor, k: int, l: int) -> Tensor:
        i = k * (lvl_w + 1) + l
        return t[i * nhw : (i + 1) * nhw].view(n, height, width, cb)

    for k in range(lvl_h + 1):
        rows = height - (1 << k) + 1  # rows at which a level-k window starts
        if k > 0:
            s = 1 << (k - 1)
            a = [view(t, k - 1, 0)[:, :rows] for t in tables]
            b = [view(t, k - 1, 0)[:, s : s + rows] for t in tables]
            combine(a, b, [view(t, k, 0)[:, :rows] for t in tables])
        for l in range(1, lvl_w + 1):
            s = 1 << (l - 1)
            cols = width - (1 << l) + 1
            a = [view(t, k, l - 1)[:, :rows, :cols] for t in tables]
            b = [view(t, k, l - 1)[:, :rows, s : s + cols] for t in tables]
            combine(a, b, [view(t, k, l)[:, :rows, :cols] for t in tables])


def _combine_max(a: list[Tensor], b: list[Tensor], out: list[Tensor]) -> None:
    torch.maximum(a[0], b[0], out=out[0])


def _combine_pair(a: list[Tensor], b: list[Tensor], out: list[Tensor]) -> None:
    """(value, q) pairs: the larger value wins; on a tie the larger q (= earlier position)."""
    (av, aq), (bv, bq) = a, b
    take_b = (bv > av) | ((bv == av) & (bq > aq))
    torch.where(take_b, bq, aq, out=out[1])
    torch.where(take_b, bv, av, out=out[0])


def _flat_views(bufs: list[Tensor], rows: int, cb: int) -> list[Tensor]:
    return [b[: rows * cb].view(rows, cb) for b in bufs]


def _pool_forward(
    x: Tensor, rois: Tensor, out_h: int, out_w: int, spatial_scale: float, with_argmax: bool
) -> tuple[Tensor, Tensor | None]:
    """x: [N, C, H, W] in the compute dtype, rois [K, 5] in the same dtype.

    Returns the pooled [K, C, out_h, out_w] and, if asked, the argmax store in the same layout
    (int32, or int64 for huge inputs): ``c * (N*H*W + 2) + q`` where q = N*H*W - p for the
    argmax at flat position p = n*H*W + h*W + w, q = 0 where no value beats -FLT_MAX and
    q = N*H*W + 1 for an empty bin. The backward pass adds the output gradient at these indices
    of a [C, N*H*W + 2] buffer (whose columns 0 and N*H*W + 1 are discarded)."""
    n, c, height, width = x.shape
    k = rois.shape[0]
    m = k * out_h * out_w
    nhw = n * height * width
    stride = nhw + 2  # codes per channel
    dev = x.device
    if c * stride >= 2**62:
        raise ValueError(f"roi_pool: input of {c} x {nhw} positions is too large")
    out = torch.empty(k, c, out_h, out_w, dtype=x.dtype, device=dev)
    arg = None
    if with_argmax:
        idt = torch.int32 if c * stride < 2**31 else torch.int64
        arg = torch.empty(k, c, out_h, out_w, dtype=idt, device=dev)
    if m == 0 or c == 0:
        return out, arg
    if height == 0 or width == 0:
        if arg is not None:
            codes = torch.arange(c, device=dev) * stride + nhw + 1
            arg.copy_(codes.view(1, c, 1, 1).expand_as(arg))
        return out.zero_(), arg
    rows, lvl_h, lvl_w = _lookup_rows(rois, out_h, out_w, spatial_scale, n, height, width)
    n_rows = (lvl_h + 1) * (lvl_w + 1) * nhw + 1

    if not with_argmax:
        mode = "value"
        dtypes = [x.dtype]
    elif x.dtype == torch.float32 and sys.byteorder == "little" and arg.dtype == torch.int32:
        # (value, code) packed in one int64 key: high 32 bits = order-preserving int of the
        # float, low 32 bits = the code; so one integer maximum selects the value and, on a tie,
        # the earlier position (larger q).
        mode = "key"
        dtypes = [torch.int64]
    else:
        mode = "pair"
        dtypes = [x.dtype, torch.int64]
    combine = _combine_pair if mode == "pair" else _combine_max
    per_channel = sum(torch.empty(0, dtype=d).element_size() for d in dtypes) * (n_rows + 2 * m)
    block = _channel_block(c, per_channel)
    tab_bufs = [torch.empty(n_rows * block, dtype=d, device=dev) for d in dtypes]
    acc_bufs = [torch.empty(m * block, dtype=d, device=dev) for d in dtypes]
    tmp_bufs = [torch.empty(m * block, dtype=d, device=dev) for d in dtypes]
    neg = torch.full((), -_FLT_MAX, dtype=x.dtype, device=dev)
    if with_argmax:
        q_pos = nhw - torch.arange(nhw, dtype=torch.int64, device=dev).view(n, height, width, 1)
        chan = torch.arange(c, dtype=torch.int64, device=dev) * stride
        arg3 = arg.view(k, c, out_h * out_w)
    out3 = out.view(k, c, out_h * out_w)

    for c0 in range(0, c, block):
        cb = min(block, c - c0)
        tables = _flat_views(tab_bufs, n_rows, cb)
        acc = _flat_views(acc_bufs, m, cb)
        tmp = _flat_views(tmp_bufs, m, cb)
        xs = x[:, c0 : c0 + cb].permute(0, 2, 3, 1)  # [N, H, W, cb]
        valid = xs > -_FLT_MAX  # the kernel's maximum starts at -FLT_MAX with a strict '>'
        lvl0 = [t[:nhw].view(n, height, width, cb) for t in tables]
        if with_argmax:
            off = chan[c0 : c0 + cb]
            code0 = torch.where(valid, q_pos + off, off)
        if mode == "value":
            torch.where(valid, xs, neg, out=lvl0[0])
        elif mode == "key":
            v = torch.where(valid, xs + 0.0, -_FLT_MAX)  # + 0.0 folds -0.0 into +0.0
            bits = v.view(torch.int32)
            ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
            torch.bitwise_or(
                torch.bitwise_left_shift(ordered.to(torch.int64), 32), code0, out=lvl0[0]
            )
        else:
            torch.where(valid, xs, neg, out=lvl0[0])
            lvl0[1].copy_(code0)
        _fill_levels(tables, n, height, width, lvl_h, lvl_w, combine)
        # the sentinel row, read by empty bins: value 0 (value mode) or the empty-bin code
        tables[0][-1].zero_()
        if with_argmax:
            tables[-1][-1].copy_(off + nhw + 1)  # key mode: high word 0, low word the code

        for t, a in zip(tables, acc, strict=True):
            torch.index_select(t, 0, rows[0], out=a)
        for i in (1, 2, 3):
            for t, b in zip(tables, tmp, strict=True):
                torch.index_select(t, 0, rows[i], out=b)
            if mode == "value" and i == 3:
                # the last maximum writes the block straight into the output layout
                blk = (t.view(k, out_h * out_w, cb).transpose(1, 2) for t in (acc[0], tmp[0]))
                torch.maximum(*blk, out=out3[:, c0 : c0 + cb])
            else:
                combine(acc, tmp, acc)
        if mode == "key":
            code = acc[0].view(torch.int32).view(m, cb, 2)[..., 0]  # little-endian low words
        elif mode == "pair":
            code = acc[1]
        if mode != "value":
            arg3[:, c0 : c0 + cb].copy_(code.view(k, out_h * out_w, cb).transpose(1, 2))

    if with_argmax:
        # The pooled values are the input values at the argmax codes: a [C, N*H*W + 2] table
        # holding -FLT_MAX at code 0, x[c, p] at code N*H*W - p, and 0 at N*H*W + 1.
        vals = torch.empty(c, stride, dtype=x.dtype, device=dev)
        vals[:, 0] = -_FLT_MAX
        vals[:, -1] = 0
        vals[:, 1:-1].view(c, n, height, width).copy_(x.flip(0, 2, 3).permute(1, 0, 2, 3))
        torch.index_select(vals.view(-1), 0, arg.view(-1), out=out.view(-1))
    return out, arg


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


def _pool_backward(grad: Tensor, arg: Tensor, shape: torch.Size) -> Tensor:
    """Add each output gradient at its argmax (`arg` as from `_pool_forward`)."""
    n, c, height, width = shape
    nhw = n * height * width
    buf = torch.zeros(c, nhw + 2, dtype=grad.dtype, device=grad.device)
    if grad.numel():
        buf.view(-1).index_add_(0, arg.view(-1), grad.contiguous().view(-1))
    # code q in 1..N*H*W <-> position p = N*H*W - q; codes 0 and N*H*W + 1 have no position.
    g = buf[:, 1:-1].view(c, n, height, width).flip(1, 2, 3)
    return g.permute(1, 0, 2, 3).contiguous()


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        rois: Tensor,
        out_h: int,
        out_w: int,
        spatial_scale: float,
        need: bool,
    ) -> Tensor:
        cdt = _compute_dtype(x.dtype)
        with _no_autocast(x.device):
            xc = x.to(cdt)
            rc = rois.detach().to(cdt)
            scan = _compiled_scan() if xc.device.type == "cpu" and xc.numel() else None
            if scan is not None:
                out, q = _pool_forward_scan(scan, xc, rc, out_h, out_w, spatial_scale, need)
            else:
                out, q = _pool_forward(xc, rc, out_h, out_w, spatial_scale, need)
        if need:
            ctx.save_for_backward(q)
        ctx.shape = x.shape
        ctx.in_dtype = x.dtype
        return out.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        with _no_autocast(grad_out.device):
            g = _pool_backward(grad_out.to(_compute_dtype(ctx.in_dtype)), q, ctx.shape)
        return g.to(ctx.in_dtype), None, None, None, None, None


def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI max pooling (Fast R-CNN): each RoI is divided into an ``h x w`` grid of sub-windows
    of approximate size (RoI height / h) x (RoI width / w), and each sub-window is max-pooled.

    Same signature and outputs as ``torchvision.ops.roi_pool`` (quantised RoI corners and bins;
    see the module docstring for the exact rule).

    Args:
        input: feature map Tensor[N, C, H, W] (float32/float64/float16/bfloat16; float16 and
            bfloat16 are pooled in float32 and returned in their own dtype).
        boxes: Tensor[K, 5] of (batch index, x1, y1, x2, y2), or a list of Tensor[L_i, 4], one
            per image, in image coordinates.
        output_size: (h, w) of the output grid, or one int for a square grid (7 for VGG-16,
            6 for ZF).
        spatial_scale: factor from image to feature-map coordinates (1/16 for VGG-16 conv5_3).

    Returns:
        Tensor[K, C, h, w], differentiable with respect to ``input`` (the gradient of each
        output goes to its argmax); boxes get no gradient.
    """
    rois = convert_boxes_to_roi_format(boxes, "boxes")
    check_roi_input(input, rois, "roi_pool")
    out_h, out_w = pair(output_size, "output_size")
    scale = _check_scale(spatial_scale)
    need_grad = input.requires_grad and torch.is_grad_enabled()  # else no argmax is kept
    return _RoIPoolFunction.apply(input, rois, out_h, out_w, scale, need_grad)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool` (the Fast R-CNN RoI pooling layer)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float) -> None:
        super().__init__()
        self.output_size = pair(output_size, "output_size")
        self.spatial_scale = _check_scale(spatial_scale)

    def forward(self, input: Tensor, rois: Tensor | Sequence[Tensor]) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
