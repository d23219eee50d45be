"""Box coding: the paper's parameterisation of a box relative to a reference box.

Faster R-CNN, Eq. (2) (from R-CNN):

    tx = (x - xa) / wa,   ty = (y - ya) / ha,   tw = log(w / wa),   th = log(h / ha)

where (x, y, w, h) are a box's centre, width and height and (xa, ya, wa, ha) those of the
reference box (an anchor for the RPN, a proposal for the Fast R-CNN head). Each coordinate
can be multiplied by a weight (torchvision's convention): the detection head uses weights
(10, 10, 5, 5), i.e. targets divided by the stds (0.1, 0.1, 0.2, 0.2) of py-faster-rcnn's
BBOX_NORMALIZE_STDS; the RPN uses (1, 1, 1, 1).

Decoding clamps dw/dh at log(1000/16) before exp() so that a wild prediction can never
overflow (a box at most 1000/16 times its reference's size).

Coding is done in float32 or float64 even when the inputs are bfloat16/float16 (as under
autocast): log/exp of ratios in 8 mantissa bits would move boxes by several pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from fasterrcnn.ops._utils import check_boxes, upcast

__all__ = ["BBOX_XFORM_CLIP", "BoxCoder", "decode_boxes", "encode_boxes"]

# Largest dw/dh accepted by decode (torchvision's and detectron's value).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def _centres(boxes: Tensor, one: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    widths = boxes[..., 2] - boxes[..., 0] + one
    heights = boxes[..., 3] - boxes[..., 1] + one
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


def _weights(weights: Sequence[float]) -> tuple[float, float, float, float]:
    w = tuple(float(x) for x in weights)
    if len(w) != 4 or not all(x > 0 for x in w):
        raise ValueError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return w  # type: ignore[return-value]


def encode_boxes(
    reference_boxes: Tensor,
    proposals: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    *,
    legacy_plus_one: bool = False,
) -> Tensor:
    """Regression targets t* that turn each of `proposals` into its `reference_boxes`.

    Same argument order as torchvision's `encode_boxes(reference_boxes, proposals, weights)`:
    `reference_boxes` are the ground-truth boxes matched to `proposals` (the anchors or RoIs),
    both Tensor[N, 4]. Returns Tensor[N, 4] of (wx*tx, wy*ty, ww*tw, wh*th).
    """
    check_boxes(reference_boxes, "reference_boxes")
    check_boxes(proposals, "proposals")
    if reference_boxes.shape != proposals.shape:
        raise ValueError(
            f"reference_boxes {tuple(reference_boxes.shape)} and proposals "
            f"{tuple(proposals.shape)} must have the same shape"
        )
    wx, wy, ww, wh = _weights(weights)
    dtype = torch.promote_types(upcast(reference_boxes).dtype, upcast(proposals).dtype)
    one = 1.0 if legacy_plus_one else 0.0
    ex_x, ex_y, ex_w, ex_h = _centres(proposals.to(dtype), one)
    gt_x, gt_y, gt_w, gt_h = _centres(reference_boxes.to(dtype), one)
    return torch.stack(
        (
            wx * (gt_x - ex_x) / ex_w,
            wy * (gt_y - ex_y) / ex_h,
            ww * torch.log(gt_w / ex_w),
            wh * torch.log(gt_h / ex_h),
        ),
        dim=-1,
    )


def decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    *,
    bbox_xform_clip: float = BBOX_XFORM_CLIP,
    legacy_plus_one: bool = False,
) -> Tensor:
    """Apply regression `deltas` to reference `boxes`: the inverse of `encode_boxes`.

    `deltas` is Tensor[N, 4 * K] (K boxes per reference box, e.g. one per class for the
    class-specific head) and `boxes` Tensor[N, 4]. Returns Tensor[N, 4 * K] in float32 (or
    float64 when either input is float64), never in reduced precision.
    """
    if not isinstance(deltas, Tensor):
        raise TypeError(f"deltas must be a torch.Tensor, got {type(deltas).__name__}")
    check_boxes(boxes, "boxes")
    if deltas.dim() != 2 or deltas.shape[-1] % 4 != 0 or deltas.shape[0] != boxes.shape[0] or boxes.dim() != 2:
        raise ValueError(
            f"deltas must be Tensor[N, 4*K] for boxes Tensor[N, 4]; got {tuple(deltas.shape)} "
            f"and {tuple(boxes.shape)}"
        )
    wx, wy, ww, wh = _weights(weights)
    dtype = torch.promote_types(upcast(deltas).dtype, upcast(boxes).dtype)
    one = 1.0 if legacy_plus_one else 0.0
    ctr_x, ctr_y, widths, heights = (t[:, None] for t in _centres(boxes.to(dtype), one))
    deltas = deltas.to(dtype)
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=bbox_xform_clip)
    dh = (deltas[:, 3::4] / wh).clamp(max=bbox_xform_clip)
    pred_x = dx * widths + ctr_x
    pred_y = dy * heights + ctr_y
    half_w = 0.5 * torch.exp(dw) * widths
    half_h = 0.5 * torch.exp(dh) * heights
    out = torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w - one, pred_y + half_h - one), dim=2)
    return out.reshape(deltas.shape)


class BoxCoder:
    """Encodes boxes as regression targets and decodes predictions (Eq. 2 of the paper).

    A small stateless helper holding the weights, the clamp and the pixel convention, in the
    style of torchvision's `BoxCoder`: the RPN uses `BoxCoder((1, 1, 1, 1))`, the detection
    head `BoxCoder((10, 10, 5, 5))` (1 / the paper code's target stds).
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        bbox_xform_clip: float = BBOX_XFORM_CLIP,
        legacy_plus_one: bool = False,
    ) -> None:
        self.weights = _weights(weights)
        self.bbox_xform_clip = float(bbox_xform_clip)
        self.legacy_plus_one = bool(legacy_plus_one)

    def encode(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        """Targets (Tensor[N, 4]) that move `proposals` onto `reference_boxes`."""
        return encode_boxes(reference_boxes, proposals, self.weights, legacy_plus_one=self.legacy_plus_one)

    def decode(self, deltas: Tensor, boxes: Tensor) -> Tensor:
        """Boxes (Tensor[N, 4*K]) from `deltas` (Tensor[N, 4*K]) applied to `boxes` (Tensor[N, 4])."""
        return decode_boxes(
            deltas,
            boxes,
            self.weights,
            bbox_xform_clip=self.bbox_xform_clip,
            legacy_plus_one=self.legacy_plus_one,
        )

    def __repr__(self) -> str:
        return (
            f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip:.4f}, "
            f"legacy_plus_one={self.legacy_plus_one})"
        )
