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

Layout: this module holds the public functions, the autograd function, the backward pass and
the dispatch rule (the compiled scan on CPU where numba is installed, else the tables);
`bins.py` the quantisation both paths share, `tables.py` the sparse-table path, `scan.py` the
compiled scan.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from fasterrcnn.ops._utils import check_roi_input, convert_boxes_to_roi_format, pair

from . import scan as _scan
from .tables import _pool_forward

__all__ = ["roi_pool", "RoIPool"]


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
            scan = _scan._compiled_scan() if xc.device.type == "cpu" and xc.numel() else None
            if scan is not None:
                out, q = _scan._pool_forward_scan(scan, xc, rc, out_h, out_w, spatial_scale, need)
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
