"""The detector's data-dependent steps as ONNX operators.

Each function runs our own PyTorch op when called eagerly and is written into an ONNX graph as
the standard operator with the same semantics when traced by `torch.onnx.export` (an
`autograd.Function` with a `symbolic`):

| step | eager | ONNX (opset >= 16) | how the semantics agree |
|---|---|---|---|
| resize | `F.interpolate(bilinear[, antialias])` | `Resize(linear, half_pixel)`; antialiased: the filter's taps as `Gather` + weighted sum | sizes given, not scales |
| pad | `F.pad` (zeros, bottom/right) | `Pad(constant 0)` | the same |
| NMS | `fasterrcnn.ops.nms` | `NonMaxSuppression` | both suppress IoU > threshold; the +1 pixel convention is obtained by passing x2 + 1, y2 + 1 (the IoU of the shifted boxes without +1 is the legacy IoU exactly) |
| RoI max pooling | `fasterrcnn.ops.roi_pool` | `MaxRoiPool` | the Caffe quantisation of Fast R-CNN (corners rounded half away from zero, bins floor/ceil) on both sides |
| RoIAlign | `fasterrcnn.ops.roi_align` | `RoiAlign(avg)` | `aligned=True` is `half_pixel`, `aligned=False` `output_half_pixel`; an adaptive sampling ratio (ours <= 0) is ONNX's 0 |

The tests check each pair on the same inputs against onnxruntime.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fasterrcnn.ops import batched_nms as _batched_nms
from fasterrcnn.ops import nms as _nms
from fasterrcnn.ops import roi_align as _roi_align
from fasterrcnn.ops import roi_pool as _roi_pool

__all__ = ["nms_indices", "pad_bottom_right", "resize_bilinear", "roi_align_rois", "roi_max_pool"]

OPSET = 18  # the default opset of the export
MIN_OPSET = 16  # RoiAlign's coordinate_transformation_mode (aligned=True) appeared in opset 16


@contextmanager
def _untraced() -> Iterator[None]:
    """Run the eager op without recording it: the Function's symbolic stands for it."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        yield
    finally:
        torch._C._set_tracing_state(state)


def _const(g: Any, value: Tensor) -> Any:
    return g.op("Constant", value_t=value)


class _Resize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, image: Tensor, height: Tensor, width: Tensor, antialias: bool) -> Tensor:
        with _untraced():
            size = (int(height), int(width))
            if size == tuple(image.shape[-2:]):
                return image.clone()
            return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=antialias)[0]

    @staticmethod
    def symbolic(g: Any, image: Any, height: Any, width: Any, antialias: bool) -> Any:
        axes = _const(g, torch.tensor([0]))
        x = g.op("Unsqueeze", image, axes)
        hw = g.op("Concat", g.op("Unsqueeze", height, axes), g.op("Unsqueeze", width, axes), axis_i=0)
        sizes = g.op("Concat", _const(g, torch.tensor([1, 3], dtype=torch.int64)), hw, axis_i=0)
        empty = _const(g, torch.tensor([], dtype=torch.float32))
        y = g.op("Resize", x, empty, empty, sizes, mode_s="linear", coordinate_transformation_mode_s="half_pixel")
        return g.op("Squeeze", y, axes)


def _antialias_taps(in_size: Tensor, out_size: Tensor) -> tuple[Tensor, Tensor]:
    """The input indices Tensor[out, K] and weights of PyTorch's antialiased bilinear filter
    along one axis (Pillow's): output i is centred at s (i + 1/2) with s = in / out; the taps j
    with |j + 1/2 - centre| < support (s when downscaling, 1 otherwise) weigh 1 - |j + 1/2 -
    centre| / max(s, 1), normalised to sum 1. Sizes are 0-dim int64 tensors (traceable)."""
    scale = in_size.float() / out_size.float()
    down = scale >= 1.0
    support = torch.where(down, scale, torch.ones_like(scale))
    invscale = torch.where(down, 1.0 / scale, torch.ones_like(scale))
    centre = scale * (torch.arange(out_size, dtype=torch.float32) + 0.5)
    first = torch.clamp(torch.floor(centre - support + 0.5), min=0.0)  # (= trunc: negatives go to 0)
    last = torch.minimum(torch.floor(centre + support + 0.5), in_size.float())
    taps = torch.ceil(support).to(torch.int64) * 2 + 1
    j = first[:, None] + torch.arange(taps, dtype=torch.float32)[None]
    weights = torch.clamp(1.0 - torch.abs((j - centre[:, None] + 0.5) * invscale), min=0.0) * (j < last[:, None])
    weights = weights / weights.sum(1, keepdim=True)
    return torch.minimum(j, in_size.float() - 1).to(torch.int64), weights


def _antialiased(image: Tensor, height: Tensor, width: Tensor) -> Tensor:
    """Separable antialiased bilinear resize as gathers and weighted sums (width, then height)."""
    size = torch._shape_as_tensor(image)
    idx, w = _antialias_taps(size[2], width)
    x = (image[:, :, idx] * w).sum(-1)  # [C, H, width]
    idx, w = _antialias_taps(size[1], height)
    return (x[:, idx, :] * w[None, :, :, None]).sum(2)  # [C, height, width]


def resize_bilinear(image: Tensor, height: Tensor, width: Tensor, antialias: bool) -> Tensor:
    """Tensor[3, H, W] resized to (height, width) (0-dim int64 tensors), bilinear, half-pixel
    centres (align_corners=False), antialiased when downscaling if `antialias`.

    ONNX's `Resize` with `antialias=1` is not PyTorch's (Pillow's) filter (onnxruntime 1.32
    differs by up to 0.3 on a 2x reduction), so an antialiased resize is exported as the filter
    itself (`_antialiased`); the plain bilinear one is ONNX's `Resize`, which agrees."""
    if antialias and torch.onnx.is_in_onnx_export():
        return _antialiased(image, height, width)
    return _Resize.apply(image, height, width, antialias)


class _Pad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, image: Tensor, bottom: Tensor, right: Tensor) -> Tensor:
        with _untraced():
            return F.pad(image, (0, int(right), 0, int(bottom)))

    @staticmethod
    def symbolic(g: Any, image: Any, bottom: Any, right: Any) -> Any:
        axes = _const(g, torch.tensor([0]))
        pads = g.op("Concat", _const(g, torch.zeros(4, dtype=torch.int64)), g.op("Unsqueeze", bottom, axes),
                    g.op("Unsqueeze", right, axes), axis_i=0)
        return g.op("Pad", image, pads, _const(g, torch.tensor(0.0)), mode_s="constant")


def pad_bottom_right(image: Tensor, bottom: Tensor, right: Tensor) -> Tensor:
    """Tensor[C, H, W] padded with zeros by `bottom` rows and `right` columns (0-dim int64)."""
    return _Pad.apply(image, bottom, right)


class _NMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, groups: Tensor, num_groups: int, iou_threshold: float,
                max_keep: int, legacy_plus_one: bool) -> Tensor:
        with _untraced():
            if num_groups == 1:
                return _nms(boxes, scores, iou_threshold, max_keep=max_keep, legacy_plus_one=legacy_plus_one)
            return _batched_nms(boxes, scores, groups, iou_threshold, max_keep=max_keep,
                                legacy_plus_one=legacy_plus_one)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, groups: Any, num_groups: int, iou_threshold: float,
                 max_keep: int, legacy_plus_one: bool) -> Any:
        # One ONNX "class" per group: a box scores -inf outside its own group and the score threshold
        # (the lowest float) drops those entries, so each group is suppressed on its own, exactly.
        if legacy_plus_one:
            boxes = g.op("Add", boxes, _const(g, torch.tensor([0.0, 0.0, 1.0, 1.0])))
        zero = _const(g, torch.tensor([0]))
        groups = g.op("Cast", groups, to_i=7)  # int64
        member = g.op("Equal", g.op("Unsqueeze", groups, zero),
                      _const(g, torch.arange(num_groups, dtype=torch.int64)[:, None]))  # [G, N]
        matrix = g.op("Where", member, g.op("Unsqueeze", scores, zero), _const(g, torch.tensor(float("-inf"))))
        selected = g.op("NonMaxSuppression", g.op("Unsqueeze", boxes, zero), g.op("Unsqueeze", matrix, zero),
                        _const(g, torch.tensor([max_keep], dtype=torch.int64)),
                        _const(g, torch.tensor([iou_threshold], dtype=torch.float32)),
                        _const(g, torch.tensor([_FLT_LOWEST], dtype=torch.float32)), center_point_box_i=0)
        kept = g.op("Gather", selected, _const(g, torch.tensor(2)), axis_i=1)  # [S] box indices, group by group
        if num_groups == 1:
            return kept
        # the groups' survivors merged by decreasing score, the best max_keep of them
        kept_scores = g.op("Gather", scores, kept, axis_i=0)
        k = g.op("Min", g.op("Shape", kept), _const(g, torch.tensor([max_keep], dtype=torch.int64)))
        _, order = g.op("TopK", kept_scores, k, axis_i=0, largest_i=1, sorted_i=1, outputs=2)
        return g.op("Gather", kept, order, axis_i=0)


_FLT_LOWEST = float(torch.finfo(torch.float32).min)


def nms_indices(boxes: Tensor, scores: Tensor, groups: Tensor, num_groups: int, iou_threshold: float,
                max_keep: int, legacy_plus_one: bool = False) -> Tensor:
    """Greedy NMS within each group (`groups`: Tensor[N] in 0..num_groups-1; `fasterrcnn.ops.nms`
    for one group, `batched_nms` for several): indices of the kept boxes by decreasing score, at
    most `max_keep` in all."""
    return _NMS.apply(boxes, scores, groups, int(num_groups), float(iou_threshold), int(max_keep),
                      bool(legacy_plus_one))


class _RoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
        with _untraced():
            return _roi_pool(features, rois, output_size, spatial_scale)

    @staticmethod
    def symbolic(g: Any, features: Any, rois: Any, output_size: int, spatial_scale: float) -> Any:
        return g.op("MaxRoiPool", features, rois, pooled_shape_i=[output_size, output_size],
                    spatial_scale_f=spatial_scale)


def roi_max_pool(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float) -> Tensor:
    """RoI max pooling of `rois` Tensor[K, 5] (batch index, x1, y1, x2, y2)."""
    return _RoIPool.apply(features, rois, int(output_size), float(spatial_scale))


class _RoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
                sampling_ratio: int, aligned: bool) -> Tensor:
        with _untraced():
            return _roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def symbolic(g: Any, features: Any, rois: Any, output_size: int, spatial_scale: float, sampling_ratio: int,
                 aligned: bool) -> Any:
        batch = g.op("Cast", g.op("Gather", rois, _const(g, torch.tensor(0)), axis_i=1), to_i=7)  # int64
        boxes = g.op("Slice", rois, _const(g, torch.tensor([1])), _const(g, torch.tensor([5])),
                     _const(g, torch.tensor([1])))
        mode = "half_pixel" if aligned else "output_half_pixel"
        return g.op("RoiAlign", features, boxes, batch, mode_s="avg", output_height_i=output_size,
                    output_width_i=output_size, sampling_ratio_i=max(sampling_ratio, 0),
                    spatial_scale_f=spatial_scale, coordinate_transformation_mode_s=mode)


def roi_align_rois(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float, sampling_ratio: int,
                   aligned: bool) -> Tensor:
    """RoIAlign (average) of `rois` Tensor[K, 5] (batch index, x1, y1, x2, y2)."""
    return _RoIAlign.apply(features, rois, int(output_size), float(spatial_scale), int(sampling_ratio), bool(aligned))
