"""Detection ops with torchvision.ops' signatures and semantics, written in plain PyTorch.

Same outputs as torchvision.ops for the same inputs (so models trained with torchvision
behave the same here), on any device and in float32/float64/bfloat16/float16; options where
the paper's original code differs (the +1 pixel convention).
"""

from fasterrcnn.ops.box_coder import BBOX_XFORM_CLIP, BoxCoder, decode_boxes, encode_boxes
from fasterrcnn.ops.boxes import box_area, box_iou, clip_boxes_to_image, hflip_boxes, remove_small_boxes
from fasterrcnn.ops.nms import batched_nms, nms
from fasterrcnn.ops.roi_align import RoIAlign, roi_align
from fasterrcnn.ops.roi_pool import RoIPool, roi_pool

__all__ = [
    "BBOX_XFORM_CLIP",
    "BoxCoder",
    "RoIAlign",
    "RoIPool",
    "batched_nms",
    "box_area",
    "box_iou",
    "clip_boxes_to_image",
    "decode_boxes",
    "encode_boxes",
    "hflip_boxes",
    "nms",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
]
