"""Feature-pyramid backbones (FPN, Lin et al. 2017): a multi-level body, the FPN neck over
it, and the light box head that pooled pyramid features use (modeling/box_heads.py).

    name                    body (levels)                       FPN levels (256-d)            head
    resnet50_fpn            ResNet-50 C2..C5 (strides 4..32)    '0'..'3' + 'pool' (4..64)     2 fc 1024
    resnet50_fpn_v2         the same, trainable BatchNorm        the same, BatchNorm convs     4 conv + 1 fc
    mobilenet_v3_large_fpn  MobileNetV3-Large, 2 maps (32, 32)  '0', '1' + 'pool' (32, 32, 64) 2 fc 1024

These are the architectures of torchvision's COCO detection models (`fasterrcnn_resnet50_fpn`,
`_v2`, `fasterrcnn_mobilenet_v3_large_fpn`, `_320_fpn`); `fasterrcnn.load_torchvision` maps
their weights onto these modules. RoIs are pooled from every level but 'pool'.
"""

from __future__ import annotations

from torch import nn

from fasterrcnn.modeling.box_heads import ConvFCHead, TwoMLPHead
from fasterrcnn.modeling.necks.fpn import FPN

from .base import IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneInfo
from .mobilenet_v3 import MobileNetV3LargeBody
from .resnet_fpn import ResNetFPNBody

__all__ = ["build_mobilenet_v3_large_fpn", "build_resnet50_fpn", "build_resnet50_fpn_v2"]

OUT_CHANNELS = 256
POOLED = 7  # RoIAlign output of the pyramid heads


def _info(name: str, head_features: int) -> BackboneInfo:
    return BackboneInfo(
        name=name, out_channels=OUT_CHANNELS, stride=16, rpn_channels=OUT_CHANNELS, roi_output_size=POOLED,
        head_features=head_features, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD, pool_skip_levels=("pool",),
    )


def _trainable(frozen_stages: int | None, stages: int, default: int) -> int:
    """torchvision's `trainable_backbone_layers` from our `frozen_stages` (leading stages frozen)."""
    return default if frozen_stages is None else max(0, stages - frozen_stages)


def build_resnet50_fpn(frozen_stages: int | None = None, *, bn_eps: float = 1e-5) -> tuple[Backbone, nn.Module, BackboneInfo]:
    """ResNet-50 + FPN, FrozenBatchNorm; `frozen_stages` (default 2: stem + layer1, i.e.
    torchvision's 3 trainable layers) counts the stem and layer1..4 as five stages."""
    body = ResNetFPNBody("resnet50", norm="frozen", trainable_layers=_trainable(frozen_stages, 5, 3), bn_eps=bn_eps)
    fpn = FPN.from_levels(body.levels, OUT_CHANNELS)
    head = TwoMLPHead(OUT_CHANNELS * POOLED * POOLED, 1024)
    return Backbone(body, fpn.levels, neck=fpn), head, _info("resnet50_fpn", head.out_features)


def build_resnet50_fpn_v2(frozen_stages: int | None = None) -> tuple[Backbone, nn.Module, BackboneInfo]:
    """ResNet-50 + FPN with trainable BatchNorm in the body and the FPN (torchvision's v2)."""
    body = ResNetFPNBody("resnet50", norm="bn", trainable_layers=_trainable(frozen_stages, 5, 3))
    fpn = FPN.from_levels(body.levels, OUT_CHANNELS, norm="bn")
    head = ConvFCHead(OUT_CHANNELS, POOLED)
    return Backbone(body, fpn.levels, neck=fpn), head, _info("resnet50_fpn_v2", head.out_features)


def build_mobilenet_v3_large_fpn(frozen_stages: int | None = None) -> tuple[Backbone, nn.Module, BackboneInfo]:
    """MobileNetV3-Large + FPN over its last two maps (both stride 32), FrozenBatchNorm;
    `frozen_stages` counts its six stages (default 3 frozen: torchvision's 3 trainable)."""
    body = MobileNetV3LargeBody(norm="frozen", trainable_layers=_trainable(frozen_stages, 6, 3))
    fpn = FPN.from_levels(body.levels, OUT_CHANNELS)
    head = TwoMLPHead(OUT_CHANNELS * POOLED * POOLED, 1024)
    return Backbone(body, fpn.levels, neck=fpn), head, _info("mobilenet_v3_large_fpn", head.out_features)
