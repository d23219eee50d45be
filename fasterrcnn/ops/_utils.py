"""Argument checks and conversions shared by the ops (not part of the public API)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class NonFiniteError(ValueError):
    """NaN or inf where an op needs finite numbers (boxes, RoIs, scores). In training this is
    the mark of a divergence: the trainer reports it as one."""


def check_boxes(boxes: Tensor, name: str = "boxes", *, finite: bool = True) -> None:
    """Raise a clear error unless `boxes` is a floating/integer tensor of shape [..., 4].

    With `finite=True` (the default) NaN or infinite coordinates are an error too: they
    would otherwise poison every IoU, sort and pooling window downstream.
    """
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.dim() < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4] (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    if boxes.is_complex() or boxes.dtype == torch.bool:
        raise TypeError(f"{name} must be a real-valued tensor, got {boxes.dtype}")
    if finite and boxes.is_floating_point() and boxes.numel() and not bool(torch.isfinite(boxes).all()):
        bad = (~torch.isfinite(boxes)).any(-1).nonzero()[0].tolist()
        raise NonFiniteError(f"{name} contains non-finite coordinates (first at index {bad})")


def check_boxes_2d(boxes: Tensor, name: str = "boxes") -> None:
    """Like `check_boxes` but the tensor must be exactly [N, 4]."""
    check_boxes(boxes, name)
    if boxes.dim() != 2:
        raise ValueError(f"{name} must have shape [N, 4], got {tuple(boxes.shape)}")


def upcast(t: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (and ints -> float32) so products of coordinates are exact
    enough; float32/float64 are returned as they are."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def convert_boxes_to_roi_format(boxes: Tensor | Sequence[Tensor], name: str = "boxes") -> Tensor:
    """RoI boxes as a Tensor[K, 5] (batch index, x1, y1, x2, y2).

    Accepts what torchvision.ops.roi_pool / roi_align accept: a Tensor[K, 5] whose first
    column is the index of the image in the batch, or a list/tuple of Tensor[L_i, 4], one per
    image.
    """
    if isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor):
                raise TypeError(f"{name}[{i}] must be a torch.Tensor, got {type(b).__name__}")
            if b.dim() != 2 or b.shape[-1] != 4:
                raise ValueError(f"{name}[{i}] must have shape [L, 4], got {tuple(b.shape)}")
        if len(boxes) == 0:
            raise ValueError(f"{name} is an empty list: give one Tensor[L, 4] per image")
        dtype, device = boxes[0].dtype, boxes[0].device
        cat = torch.cat([b.to(dtype) for b in boxes], 0)
        idx = torch.cat(
            [torch.full((b.shape[0], 1), i, dtype=dtype, device=device) for i, b in enumerate(boxes)], 0
        )
        rois = torch.cat([idx, cat], 1)
    elif isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[-1] != 5:
            raise ValueError(
                f"{name} must be a Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of "
                f"Tensor[L, 4], got a tensor of shape {tuple(boxes.shape)}"
            )
        rois = boxes
    else:
        raise TypeError(f"{name} must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if rois.is_floating_point() and rois.numel() and not bool(torch.isfinite(rois).all()):
        bad = (~torch.isfinite(rois)).any(-1).nonzero()[0].tolist()
        raise NonFiniteError(f"{name} contains non-finite values (first at RoI {bad})")
    return rois


def check_roi_input(input: Tensor, rois: Tensor, op: str) -> None:
    """Shared checks of roi_pool/roi_align: a 4-D feature map and batch indices inside it."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"{op}: input must be a 4-D feature map [N, C, H, W], got {tuple(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"{op}: input must be a floating-point tensor, got {input.dtype}")
    if rois.device != input.device:
        raise ValueError(f"{op}: boxes are on {rois.device} but input is on {input.device}")
    if rois.numel():
        bidx = rois[:, 0]
        if bool((bidx < 0).any() | (bidx >= input.shape[0]).any() | (bidx != bidx.round()).any()):
            raise ValueError(
                f"{op}: batch indices in boxes[:, 0] must be integers in [0, {input.shape[0] - 1}]"
            )


def pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    """`output_size` as (height, width), from an int or a pair, each a positive int."""
    if isinstance(v, int):
        v = (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(x, int) and x > 0 for x in v):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return v  # type: ignore[return-value]
