"""Backbones: the shared convolutional trunk (paper Sec. 3.1, "shareable convolutional
layers") and the box head (the detector's two fully connected layers, fc6/fc7) of each network.

`build_backbone(name)` returns `(trunk, head, info)`:

- `trunk`: Tensor[N, 3, H, W] normalised images -> Tensor[N, C, h, w] at stride 16; attributes
  `out_channels` (C) and `stride` (16). For every backbone h = ceil(H/16), w = ceil(W/16)
  (VGG-16 with `ceil_mode=False` gives torchvision's floor(H/16) instead).
- `head`: Tensor[R, C, p, p] RoI-pooled features -> Tensor[R, D]; attribute `out_features` (D).
- `info`: a `BackboneInfo` with the defaults the model config reads (RPN width, RoI grid p,
  pixel mean/std in [0, 1] units).

    name        trunk                         C     RPN   p    head                     D
    vgg16       conv1_1..conv5_3 (no pool5)   512   512   7    fc6, fc7                 4096
    zf          conv1..conv5 (py-faster-rcnn) 256   256   6    fc6, fc7                 4096
    small       compact, BatchNorm, scratch   256   128   7    1x1 reduce, fc6, fc7     512
    resnet18    C4: stem, layer1..3           256   256   14   layer4 + avg pool        512
    resnet34    C4                            256   256   14   layer4 + avg pool        512
    resnet50    C4                            1024  1024  14   layer4 + avg pool        2048
    resnet101   C4                            1024  1024  14   layer4 + avg pool        2048
    efficientnet_lite0/1/2  C4: stem..stage 5 112/112/120 256  14  stages 6-7 + 1x1 + pool 1280
    efficientnet_lite0/1/2_fpn, resnet50_fpn(_v2), mobilenet_v3_large_fpn: feature pyramids
        (several levels, see pyramid.py and efficientnet_lite.py)

`load_pretrained(name, trunk, head, state_dict)` loads ImageNet classification weights in
torchvision's key format (vgg16, resnet*) or in the backbone's own key format (zf: `conv1.*` ..
`fc7.*` as py-faster-rcnn names its layers; small: its own module names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from . import efficientnet_lite, pyramid, resnet, small, vgg, zf
from .base import Backbone, BackboneInfo, FeatureLevel, FrozenBatchNorm2d, fold_batchnorm, load_into

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneInfo",
    "BackboneSpec",
    "FeatureLevel",
    "FrozenBatchNorm2d",
    "build_backbone",
    "fold_batchnorm",
    "load_pretrained",
    "register_backbone",
]

Builder = Callable[..., tuple[nn.Module, nn.Module, BackboneInfo]]


@dataclass(frozen=True)
class BackboneSpec:
    """One entry of the backbone registry: how to build it (`build(frozen_stages, **options)`
    -> (body or Backbone, box head, BackboneInfo)), the options it takes, and the ImageNet
    state-dict prefixes that `load_pretrained` ignores (the classifier)."""

    name: str
    build: Builder
    options: tuple[str, ...] = ()
    ignored_prefixes: tuple[str, ...] = ()


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone (see docs/ARCHITECTURE.md, "Adding a backbone"); a name is registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is registered already")
    _REGISTRY[spec.name] = spec
    return spec


register_backbone(BackboneSpec("vgg16", vgg.build_vgg16, ("ceil_mode", "dropout"), vgg.IGNORED_PREFIXES))
register_backbone(BackboneSpec("zf", zf.build_zf, ("ceil_mode", "dropout"), zf.IGNORED_PREFIXES))
register_backbone(BackboneSpec("small", small.build_small,
                               ("norm", "head_features", "dropout", "head_norm", "reduce_before_pool", "blocks"),
                               small.IGNORED_PREFIXES))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register_backbone(BackboneSpec(_name, partial(resnet.build_resnet, _name), ("norm",), resnet.IGNORED_PREFIXES))
register_backbone(BackboneSpec("resnet50_fpn", pyramid.build_resnet50_fpn, ("bn_eps",), resnet.IGNORED_PREFIXES))
register_backbone(BackboneSpec("resnet50_fpn_v2", pyramid.build_resnet50_fpn_v2, (), resnet.IGNORED_PREFIXES))
register_backbone(BackboneSpec("mobilenet_v3_large_fpn", pyramid.build_mobilenet_v3_large_fpn, (), ("classifier.",)))
for _name in efficientnet_lite.ARCHS:
    register_backbone(BackboneSpec(_name, partial(efficientnet_lite.build_efficientnet_lite, _name), ("norm",),
                                   efficientnet_lite.IGNORED_PREFIXES))
    # the FPN layout has no use for the classifier's 1x1 head conv either
    register_backbone(BackboneSpec(f"{_name}_fpn", partial(efficientnet_lite.build_efficientnet_lite_fpn, _name),
                                   ("norm", "fpn_channels"),
                                   (*efficientnet_lite.IGNORED_PREFIXES, "_conv_head.", "_bn1.")))

# The names, in registration order (what --help and error messages list).
BACKBONES: tuple[str, ...] = tuple(_REGISTRY)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(_REGISTRY)}")


def build_backbone(
    name: str, *, frozen_stages: int | None = None, **kwargs
) -> tuple[nn.Module, nn.Module, BackboneInfo]:
    """Build backbone `name` (one of `BACKBONES`) with fresh (not pretrained) weights.

    `frozen_stages`: number of leading stages whose parameters get requires_grad False; None
    takes the backbone's default (vgg16 2 = conv1_x, conv2_x as the paper's code; zf 0; small 0;
    resnet* 1 = stem + layer1, as Detectron). Options per backbone (`kwargs`):
    vgg16/zf `ceil_mode`, `dropout`; small `norm` ("bn"/"gn"), `head_features`, `dropout`;
    resnet* `norm` ("frozen"/"bn"). Unknown names, options or values raise ValueError.
    """
    _check_name(name)
    spec = _REGISTRY[name]
    unknown = sorted(set(kwargs) - set(spec.options))
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; "
                         f"valid options: frozen_stages, {valid}")
    return spec.build(frozen_stages, **kwargs)


def load_pretrained(
    name: str, trunk: nn.Module, head: nn.Module, state_dict: Mapping[str, Tensor]
) -> dict[str, list[str]]:
    """Load an ImageNet classification state dict into `trunk` and `head` of backbone `name`.

    Keys are torchvision's for vgg16 (`features.N.*`, `classifier.0/3.*`) and resnet*
    (`conv1.weight`, `bn1.*`, `layerK.*`); the 1000-way classifier (`classifier.6.*`, `fc.*`;
    `fc8.*` for zf; `_fc.*` for efficientnet_lite*) and `num_batches_tracked` entries of frozen batch norms are reported under
    "ignored", not as errors. Returns {"missing": [...], "unexpected": [...], "ignored": [...]}.
    A shape mismatch raises `fasterrcnn.errors.CheckpointError` (a ValueError) naming the key,
    before any weight is changed.
    """
    _check_name(name)
    return load_into(trunk, head, state_dict, _REGISTRY[name].ignored_prefixes)
