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
C contiguous values gathered with one ``index_select`` for all bins at once. When a gradient is
needed the argmax travels through the same table: for float32 (and float16/bfloat16, computed
in float32) value and position are packed into one int64 key whose integer order is (value,
then earlier position), so the table is built and queried with plain ``maximum``; float64 keeps
(value, position) pairs. The backward pass is one ``scatter_add_`` into a channels-last buffer.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from fasterrcnn.ops._utils import check_roi_input, convert_boxes_to_roi_format, pair

__all__ = ["roi_pool", "RoIPool"]

_FLT_MAX = float(torch.finfo(torch.float32).max)
_LOW32 = 0xFFFFFFFF


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32/float16/bfloat16 are computed in float32 (as
    torchvision's autocast wrappers do)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device) -> Any:
    """Internal arithmetic must not be recast by an enclosing torch.autocast region."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.autocast(device.type, enabled=False)
    except (RuntimeError, TypeError):  # device type without autocast support
        pass
    return nullcontext()


def _check_scale(spatial_scale: float) -> float:
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)):
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


def _build_table(
    level0: tuple[Tensor, ...], lvl_h: int, lvl_w: int, combine: Any
) -> tuple[Tensor, ...]:
    """Sparse tables for every (kh <= lvl_h, kw <= lvl_w): one tensor per part (value/key,
    position), each [(lvl_h + 1) * (lvl_w + 1) * N * H * W + 1, C] with the sentinel row last
    left for the caller to fill. `level0` holds the parts at level (0, 0), each [N, H, W, C]."""
    n, height, width, c = level0[0].shape
    nhw = n * height * width
    n_lvl = (lvl_h + 1) * (lvl_w + 1)
    tables = tuple(torch.empty(n_lvl * nhw + 1, c, dtype=p.dtype, device=p.device) for p in level0)

    def view(t: Tensor, k: int, l: int) -> Tensor:
        i = k * (lvl_w + 1) + l
        return t[i * nhw : (i + 1) * nhw].view(n, height, width, c)

    for t, p in zip(tables, level0):
        view(t, 0, 0).copy_(p)
    for k in range(lvl_h + 1):
        if k > 0:
            s = 1 << (k - 1)
            rows = height - (1 << k) + 1  # rows that a level-k query can start at
            a = [view(t, k - 1, 0)[:, :rows] for t in tables]
            bb = [view(t, k - 1, 0)[:, s : s + rows] for t in tables]
            combine(a, bb, [view(t, k, 0)[:, :rows] for t in tables])
        rows = height - (1 << k) + 1
        for l in range(1, lvl_w + 1):
            s = 1 << (l - 1)
            cols = width - (1 << l) + 1
            a = [view(t, k, l - 1)[:, :rows, :cols] for t in tables]
            bb = [view(t, k, l - 1)[:, :rows, s : s + cols] for t in tables]
            combine(a, bb, [view(t, k, l)[:, :rows, :cols] for t in tables])
    return tables


def _combine_max(a: list[Tensor], b: list[Tensor], out: list[Tensor]) -> None:
    torch.maximum(a[0], b[0], out=out[0])


def _combine_pair(a: list[Tensor], b: list[Tensor], out: list[Tensor]) -> None:
    """(value, q) pairs: the larger value wins; on a tie the larger q (= earlier position)."""
    (av, aq), (bv, bq) = a, b
    take_b = (bv > av) | ((bv == av) & (bq > aq))
    v = torch.where(take_b, bv, av)
    q = torch.where(take_b, bq, aq)
    out[0].copy_(v)
    out[1].copy_(q)


def _pool_forward(
    x: Tensor, rois: Tensor, out_h: int, out_w: int, spatial_scale: float, with_argmax: bool
) -> tuple[Tensor, Tensor | None]:
    """x: [N, C, H, W] in the compute dtype, rois [K, 5] in the same dtype. Returns the pooled
    [K, C, out_h, out_w] and, if asked, q [K * out_h * out_w, C] (int64): for each output the
    row ``N*H*W - p`` of its argmax p (flat position n*H*W + h*W + w), or 0 for no argmax."""
    n, c, height, width = x.shape
    k = rois.shape[0]
    out = torch.empty(k, c, out_h, out_w, dtype=x.dtype, device=x.device)
    if k == 0 or c == 0:
        return out, (torch.zeros(k * out_h * out_w, c, dtype=torch.int64, device=x.device) if with_argmax else None)
    if height == 0 or width == 0:
        out.zero_()
        return out, (torch.zeros(k * out_h * out_w, c, dtype=torch.int64, device=x.device) if with_argmax else None)
    rows, lvl_h, lvl_w = _lookup_rows(rois, out_h, out_w, spatial_scale, n, height, width)
    nhw = n * height * width
    x_cl = x.permute(0, 2, 3, 1)  # [N, H, W, C] view
    valid = x_cl > -_FLT_MAX  # the kernel's maxval starts at -FLT_MAX with a strict '>'
    out_cl = out.permute(0, 2, 3, 1)  # [K, out_h, out_w, C] view of the output

    if not with_argmax:
        v0 = torch.where(valid, x_cl, -_FLT_MAX)
        (table,) = _build_table((v0,), lvl_h, lvl_w, _combine_max)
        table[-1].zero_()  # empty bins: 0
        acc = table.index_select(0, rows[0])
        tmp = table.index_select(0, rows[1])
        torch.maximum(acc, tmp, out=acc)
        torch.index_select(table, 0, rows[2], out=tmp)
        torch.maximum(acc, tmp, out=acc)
        torch.index_select(table, 0, rows[3], out=tmp)
        torch.maximum(acc.view(k, out_h, out_w, c), tmp.view(k, out_h, out_w, c), out=out_cl)
        return out, None

    # q = nhw - p for valid entries (ties: larger q = smaller p wins), 0 = no argmax.
    q0 = nhw - torch.arange(nhw, dtype=torch.int64, device=x.device).view(n, height, width, 1)
    q0 = torch.where(valid, q0, 0)
    if x.dtype == torch.float32 and nhw < _LOW32:
        # Pack (value, q) into one int64 key: high 32 bits = order-preserving int of the float,
        # low 32 bits = q. -0.0 is folded into +0.0 (they compare equal in the kernel).
        v0 = torch.where(valid, x_cl + 0.0, -_FLT_MAX)
        bits = v0.contiguous().view(torch.int32)
        ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
        key0 = torch.bitwise_left_shift(ordered, 32) | q0
        (table,) = _build_table((key0,), lvl_h, lvl_w, _combine_max)
        table[-1].zero_()  # sentinel: value +0.0, q = 0
        acc = table.index_select(0, rows[0])
        tmp = table.index_select(0, rows[1])
        for i in (2, 3, None):
            torch.maximum(acc, tmp, out=acc)
            if i is not None:
                torch.index_select(table, 0, rows[i], out=tmp)
        del table, tmp
        q = acc & _LOW32
        hi = torch.bitwise_right_shift(acc, 32).to(torch.int32)
        hi = torch.where(hi < 0, hi ^ 0x7FFFFFFF, hi)
        out_cl.copy_(hi.view(torch.float32).view(k, out_h, out_w, c))
        return out, q

    # float64 (or a map too large for 32-bit positions): (value, q) pairs.
    v0 = torch.where(valid, x_cl, -_FLT_MAX)
    tv, tq = _build_table((v0, q0.expand_as(v0)), lvl_h, lvl_w, _combine_pair)
    tv[-1].zero_()
    tq[-1].zero_()
    av, aq = tv.index_select(0, rows[0]), tq.index_select(0, rows[0])
    for i in (1, 2, 3):
        bv, bq = tv.index_select(0, rows[i]), tq.index_select(0, rows[i])
        out_pair = [av, aq]
        _combine_pair([av, aq], [bv, bq], out_pair)
    out_cl.copy_(av.view(k, out_h, out_w, c))
    return out, aq


def _pool_backward(grad: Tensor, q: Tensor, shape: torch.Size) -> Tensor:
    """Scatter each output gradient to its argmax (q as from `_pool_forward`)."""
    n, c, height, width = shape
    nhw = n * height * width
    buf = torch.zeros(nhw + 1, c, dtype=grad.dtype, device=grad.device)
    if q.numel():
        g = grad.permute(0, 2, 3, 1).reshape(-1, c)
        buf.scatter_add_(0, q, g)
    # row q <-> position p = nhw - q; row 0 collects what has no argmax.
    g_cl = buf[1:].flip(0).view(n, height, width, c)
    return g_cl.permute(0, 3, 1, 2).contiguous()


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, rois: Tensor, out_h: int, out_w: int, spatial_scale: float
    ) -> Tensor:
        cdt = _compute_dtype(x.dtype)
        with _no_autocast(x.device):
            xc = x.to(cdt)
            rc = rois.detach().to(cdt)
            need = x.requires_grad
            out, q = _pool_forward(xc, rc, out_h, out_w, spatial_scale, need)
        if need:
            ctx.save_for_backward(q)
        ctx.shape = x.shape
        ctx.in_dtype = x.dtype
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        with _no_autocast(grad_out.device):
            g = _pool_backward(grad_out.to(_compute_dtype(ctx.in_dtype)), q, ctx.shape)
        return g.to(ctx.in_dtype), None, None, None, None


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
    return _RoIPoolFunction.apply(input, rois, out_h, out_w, scale)


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
