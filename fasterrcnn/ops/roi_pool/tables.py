"""RoI max pooling from 2-D sparse tables of maxima over power-of-two windows (any device; the
argmax packed with the value into one integer key for float32)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import Tensor

from .bins import _FLT_MAX, _bins


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
