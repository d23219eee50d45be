"""Box geometry: area, pairwise IoU, clipping, small-box removal, mirroring.

Boxes are (x1, y1, x2, y2) in image pixels. Two conventions are supported:

* continuous (default, torchvision's): a box [x1, x2] has width x2 - x1;
* ``legacy_plus_one=True`` (the paper's Caffe code, py-faster-rcnn): coordinates are pixel
  indices and a box covers x2 - x1 + 1 pixels; clipping then goes to W - 1 / H - 1.

Intersection-over-union is the overlap measure of the whole method: anchors are labelled by
it (RPN training), proposals are matched to ground truth by it (Fast R-CNN training), and
NMS suppresses by it.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from fasterrcnn.ops._utils import check_boxes, upcast

__all__ = ["box_area", "box_iou", "clip_boxes_to_image", "hflip_boxes", "remove_small_boxes"]


def box_area(boxes: Tensor, *, legacy_plus_one: bool = False) -> Tensor:
    """Area of each box of a Tensor[..., 4]; returns Tensor[...].

    float16/bfloat16 boxes are upcast to float32 (as torchvision does) so that areas of large
    boxes do not lose precision. Degenerate boxes (x2 < x1) get a negative or zero area, as in
    torchvision; callers that need to reject them use `remove_small_boxes`.
    """
    check_boxes(boxes, finite=False)
    boxes = upcast(boxes)
    one = 1.0 if legacy_plus_one else 0.0
    return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def box_iou(boxes1: Tensor, boxes2: Tensor, *, legacy_plus_one: bool = False) -> Tensor:
    """Pairwise intersection-over-union: Tensor[N, 4] x Tensor[M, 4] -> Tensor[N, M].

    IoU = |A ∩ B| / |A ∪ B|. Like torchvision, 0/0 (two empty boxes) gives NaN, which compares
    false with every threshold.
    """
    check_boxes(boxes1, "boxes1", finite=False)
    check_boxes(boxes2, "boxes2", finite=False)
    if boxes1.dim() != 2 or boxes2.dim() != 2:
        raise ValueError(
            f"box_iou takes two Tensor[N, 4]; got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}"
        )
    boxes1, boxes2 = upcast(boxes1), upcast(boxes2)
    if boxes1.dtype != boxes2.dtype:
        dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
        boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    one = 1.0 if legacy_plus_one else 0.0
    area1 = box_area(boxes1, legacy_plus_one=legacy_plus_one)
    area2 = box_area(boxes2, legacy_plus_one=legacy_plus_one)
    if boxes1.requires_grad or boxes2.requires_grad:
        lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
        rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
        wh = (rb - lt + one).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        return inter / (area1[:, None] + area2[None, :] - inter)
    if _use_compiled(boxes1, boxes2):
        return _box_iou_compiled(boxes1, boxes2, area1, area2, one)
    # Without autograd: one [N, M] tensor per quantity, updated in place (half the memory traffic).
    inter = _overlap(boxes1[:, 0], boxes1[:, 2], boxes2[:, 0], boxes2[:, 2], one)
    inter.mul_(_overlap(boxes1[:, 1], boxes1[:, 3], boxes2[:, 1], boxes2[:, 3], one))
    union = area1[:, None] + area2[None, :]
    return inter.div_(union.sub_(inter))


_COMPILED_MIN_PAIRS = 1 << 16  # below this the tensor code's fixed costs are smaller


def _use_compiled(boxes1: Tensor, boxes2: Tensor) -> bool:
    # never while tracing (ONNX export): the compiled kernel is not a tensor op a trace can record
    return (not torch.jit.is_tracing() and boxes1.device.type == "cpu" and boxes1.dtype in (torch.float32, torch.float64)
            and boxes1.shape[0] * boxes2.shape[0] >= _COMPILED_MIN_PAIRS
            and bool(torch.isfinite(boxes1).all()) and bool(torch.isfinite(boxes2).all())
            and _compiled_iou() is not None)


def _iou_rows(b1, b2, a1, a2, one, out, r0: int, r1: int):  # numpy arrays in, compiled by numba
    """out[i, j] = IoU of b1[i] and b2[j] for rows r0..r1-1: the tensor code's operations, in its
    order and dtype, in one pass over the output (no [N, M] temporaries)."""
    zero = one - one
    for i in range(r0, r1):
        x1, y1, x2, y2, ai = b1[i, 0], b1[i, 1], b1[i, 2], b1[i, 3], a1[i]
        for j in range(b2.shape[0]):
            w = min(x2, b2[j, 2]) - max(x1, b2[j, 0]) + one
            h = min(y2, b2[j, 3]) - max(y1, b2[j, 1]) + one
            if w < zero:
                w = zero
            if h < zero:
                h = zero
            inter = w * h
            out[i, j] = inter / (ai + a2[j] - inter)


@functools.cache
def _compiled_iou():
    """`_iou_rows` compiled by numba (cached on disk next to this module), or None without numba.
    error_model="numpy": 0/0 gives NaN, as the tensor code, instead of raising."""
    from fasterrcnn._optional import optional_import

    numba = optional_import("numba")  # without it: the tensor code, same results, no message
    if numba is None:
        return None
    return numba.njit(cache=True, nogil=True, error_model="numpy")(_iou_rows)


def _box_iou_compiled(boxes1: Tensor, boxes2: Tensor, area1: Tensor, area2: Tensor, one: float) -> Tensor:
    """box_iou on CPU by the compiled kernel, the rows split over torch's intra-op threads."""
    kernel = _compiled_iou()
    n = boxes1.shape[0]
    out = torch.empty(n, boxes2.shape[0], dtype=boxes1.dtype)
    b1, b2 = boxes1.contiguous().numpy(), boxes2.contiguous().numpy()
    a1, a2, o = area1.contiguous().numpy(), area2.contiguous().numpy(), out.numpy()
    one_t = b1.dtype.type(one)
    threads = max(1, min(torch.get_num_threads(), n // 8))
    cuts = [n * i // threads for i in range(threads + 1)]
    if threads == 1:
        kernel(b1, b2, a1, a2, one_t, o, 0, n)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: kernel(b1, b2, a1, a2, one_t, o, cuts[k], cuts[k + 1]), range(threads)))
    return out


def _overlap(lo1: Tensor, hi1: Tensor, lo2: Tensor, hi2: Tensor, one: float) -> Tensor:
    """Pairwise overlap length of the intervals [lo1, hi1] x [lo2, hi2] (>= 0): Tensor[N, M]."""
    d = torch.minimum(hi1[:, None], hi2[None, :])
    d.sub_(torch.maximum(lo1[:, None], lo2[None, :]))
    if one:
        d.add_(one)
    return d.clamp_(min=0)


def clip_boxes_to_image(
    boxes: Tensor, size: tuple[int, int], *, legacy_plus_one: bool = False
) -> Tensor:
    """Clip boxes of a Tensor[..., 4] to an image of `size` = (height, width).

    The proposal layer clips decoded anchors to the image (paper, Sec. 3.3: "cross-boundary
    proposal boxes ... we clip them to the image boundary"). x goes to [0, W] (continuous) or
    [0, W - 1] (legacy), y likewise. Returns a new tensor of the same shape and dtype.
    """
    check_boxes(boxes, finite=False)
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = size
    one = 1 if legacy_plus_one else 0
    x = boxes[..., 0::2].clamp(min=0, max=width - one)
    y = boxes[..., 1::2].clamp(min=0, max=height - one)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def remove_small_boxes(boxes: Tensor, min_size: float, *, legacy_plus_one: bool = False) -> Tensor:
    """Indices (int64, increasing) of the boxes whose width and height are both >= `min_size`.

    The proposal layer drops proposals under 16 px at input scale (py-faster-rcnn's
    `_filter_boxes`, which measures with the +1 convention).
    """
    check_boxes(boxes, finite=False)
    if boxes.dim() != 2:
        raise ValueError(f"boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    one = 1.0 if legacy_plus_one else 0.0
    ws = boxes[:, 2] - boxes[:, 0] + one
    hs = boxes[:, 3] - boxes[:, 1] + one
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


def hflip_boxes(boxes: Tensor, width: float, *, legacy_plus_one: bool = False) -> Tensor:
    """The boxes of an image `width` pixels wide after mirroring it left-right: x -> width - x
    (with the +1 convention, pixel indices: x -> width - 1 - x), x1 and x2 swapped. A new tensor.
    """
    w = width - 1 if legacy_plus_one else width
    out = boxes.clone()
    out[..., 0] = w - boxes[..., 2]
    out[..., 2] = w - boxes[..., 0]
    return out
