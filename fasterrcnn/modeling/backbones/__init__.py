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

`load_pretrained(name, trunk, head, state_dict)` loads ImageNet classification weights in
torchvision's key format (vgg16, resnet*) or in the backbone's own key format (zf: `conv1.*` ..
`fc7.*` as py-faster-rcnn names its layers; small: its own module names).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial

from torch import Tensor, nn

from . import resnet, small, vgg, zf
from .base import BackboneInfo, FrozenBatchNorm2d, fold_batchnorm, load_into

BACKBONES: tuple[str, ...] = (
    "vgg16", "zf", "small", "resnet18", "resnet34", "resnet50", "resnet101",
)

__all__ = [
    "BACKBONES",
    "BackboneInfo",
    "FrozenBatchNorm2d",
    "build_backbone",
    "fold_batchnorm",
    "load_pretrained",
]

_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_BUILDERS: dict[str, Callable[..., tuple[nn.Module, nn.Module, BackboneInfo]]] = {
    "vgg16": vgg.build_vgg16,
    "zf": zf.build_zf,
    "small": small.build_small,
    **{n: partial(resnet.build_resnet, n) for n in _RESNETS},
}
_OPTIONS: dict[str, tuple[str, ...]] = {
    "vgg16": ("ceil_mode", "dropout"),
    "zf": ("ceil_mode", "dropout"),
    "small": ("norm", "head_features", "dropout", "head_norm", "reduce_before_pool", "blocks"),
    **{n: ("norm",) for n in _RESNETS},
}
_IGNORED: dict[str, tuple[str, ...]] = {
    "vgg16": vgg.IGNORED_PREFIXES,
    "zf": zf.IGNORED_PREFIXES,
    "small": small.IGNORED_PREFIXES,
    **{n: resnet.IGNORED_PREFIXES for n in _RESNETS},
}


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}")


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
    unknown = sorted(set(kwargs) - set(_OPTIONS[name]))
    if unknown:
        valid = ", ".join(_OPTIONS[name]) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for backbone {name!r}; "
                         f"valid options: frozen_stages, {valid}")
    return _BUILDERS[name](frozen_stages, **kwargs)


def load_pretrained(
    name: str, trunk: nn.Module, head: nn.Module, state_dict: Mapping[str, Tensor]
) -> dict[str, list[str]]:
    """Load an ImageNet classification state dict into `trunk` and `head` of backbone `name`.

    Keys are torchvision's for vgg16 (`features.N.*`, `classifier.0/3.*`) and resnet*
    (`conv1.weight`, `bn1.*`, `layerK.*`); the 1000-way classifier (`classifier.6.*`, `fc.*`;
    `fc8.*` for zf) and `num_batches_tracked` entries of frozen batch norms are reported under
    "ignored", not as errors. Returns {"missing": [...], "unexpected": [...], "ignored": [...]}.
    A shape mismatch raises `fasterrcnn.errors.CheckpointError` (a ValueError) naming the key,
    before any weight is changed.
    """
    _check_name(name)
    return load_into(trunk, head, state_dict, _IGNORED[name])
