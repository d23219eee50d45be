"""MobileNetV3-Large (Howard et al. 2019, "Searching for MobileNetV3", Table 1) as the body of
torchvision's `fasterrcnn_mobilenet_v3_large_fpn` / `fasterrcnn_mobilenet_v3_large_320_fpn`.

The network (Table 1, width multiplier 1, no dilation):

- `features.0`: 3x3/2 conv, 16 channels, norm, hard-swish;
- `features.1` .. `features.15`: the 15 "bneck" inverted residual blocks (Sandler et al. 2018,
  Sec. 3.3; MobileNetV3 Sec. 5): an optional 1x1 expansion (absent when the expansion equals
  the input width: block 1), a k x k depthwise conv carrying the stride, an optional
  squeeze-and-excite (Sec. 5.3), a linear 1x1 projection; a residual sum when the stride is 1
  and the widths agree. ReLU in the first 6 blocks, hard-swish after (Sec. 5.2:
  h-swish(x) = x ReLU6(x + 3) / 6);
- `features.16`: 1x1 conv 160 -> 960, norm, hard-swish (the classifier's pooling and 1280-wide
  layers are not part of the detection body).

Squeeze-and-excite (Sec. 5.3, Fig. 4; Hu et al. 2018): global average pool, 1x1 conv to
`make_divisible(expanded // 4, 8)` channels (the "1/4 of the expansion layer", rounded to a
multiple of 8: 72 -> 24, 120 -> 32, 480 -> 120, 672 -> 168, 960 -> 240), ReLU, 1x1 conv back,
and the hard sigmoid ReLU6(x + 3) / 6 (Sec. 5.2) -- not the logistic sigmoid -- as the gate.

Detection body (torchvision's `_mobilenet_extractor(backbone, fpn=True, ...)`): the "stages"
are `features.0`, every strided block (1 at `features.2`, `.4`, `.7`, `.13`) and `features.16`:
stage indices (0, 2, 4, 7, 13, 16), strides 2, 4, 8, 16, 32, 32 and widths 16, 24, 40, 80, 160,
960. A stage's map is the output *of that module*, so the default `returned_stages` (4, 5)
returns two stride-32 maps: 'stage4' = the output of block 13 (the first 160-wide block; blocks
14, 15 feed only 'stage5') and 'stage5' = the 960-wide last conv. The FPN over them
(`necks.FPN`, 256 channels, max-pooled extra level) thus gives '0' and '1' at stride 32 and
'pool' at stride 64.

Freezing (`trainable_layers`, torchvision's `trainable_backbone_layers`, 0..6, default 3 as the
COCO models): the parameters of `features[:stage_indices[6 - t]]` get requires_grad False (all
of `features` for t = 0): t = 3 freezes `features.0` .. `features.6`, t = 6 nothing. Frozen
modules' trainable norms (`norm="bn"`) are kept in eval mode, as in `resnet.py`.

Norms: "frozen" (`FrozenBatchNorm2d`, eps 1e-5: what the COCO models were trained with --
torchvision passes `FrozenBatchNorm2d` itself as the norm layer, so not the classifier's eps
1e-3) or "bn" (nn.BatchNorm2d, eps 1e-5, for training from scratch); `bn_eps` overrides eps.

Parameter names are torchvision's under `features.`: `features.N.0.weight` (a conv), `.1.*`
(its norm), `features.N.block.M.0.weight`, `features.N.block.M.fc1.weight` (SE). So the
ImageNet classifier's `features.*` keys load as they are, and a detection checkpoint's
`backbone.body.N.*` keys map to `features.N.*` (`torchvision_key_map`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from .base import FeatureLevel, FrozenBatchNorm2d, freeze

# Table 1 (MobileNetV3-Large) bnecks: (kernel, expanded width, output width, SE, activation, stride)
LARGE_BNECKS: tuple[tuple[int, int, int, bool, str, int], ...] = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
STEM_CHANNELS = 16
LAST_CHANNELS = 960  # 6 x 160, Table 1's last 1x1 conv
DEFAULT_TRAINABLE_LAYERS = 3
DEFAULT_RETURNED_STAGES = (4, 5)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"RE": nn.ReLU, "HS": nn.Hardswish}


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of `divisor` to v (at least `divisor`), one step up if rounding lost
    more than 10% of v: the channel rounding of the MobileNet reference code."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _norm_layer(norm: str) -> type[nn.Module]:
    if norm == "frozen":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    raise ValueError(f"MobileNetV3 norm must be 'frozen' or 'bn', got {norm!r}")


class ConvNormAct(nn.Sequential):
    """conv (at index 0, no bias), norm (1), optional activation (2): torchvision's
    Conv2dNormActivation layout, "same" padding (k - 1) / 2."""

    def __init__(self, cin: int, cout: int, kernel_size: int, norm: type[nn.Module],
                 activation: type[nn.Module] | None, stride: int = 1, groups: int = 1):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            norm(cout),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = cout
        self.stride = stride


class SqueezeExcite(nn.Module):
    """x * hard_sigmoid(fc2(ReLU(fc1(mean_hw(x))))), fc1/fc2 1x1 convs with bias (Sec. 5.3)."""

    def __init__(self, channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.gate(self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * scale


class InvertedResidual(nn.Module):
    """One bneck of Table 1: [1x1 expand] -> k x k depthwise (stride) -> [SE] -> 1x1 linear
    projection, + x when the stride is 1 and the widths agree. Layers sit in `block`."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, use_se: bool,
                 activation: str, stride: int, norm: type[nn.Module]):
        super().__init__()
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        if expanded != cin:
            layers.append(ConvNormAct(cin, expanded, 1, norm, act))
        layers.append(ConvNormAct(expanded, expanded, kernel, norm, act, stride, groups=expanded))
        if use_se:
            layers.append(SqueezeExcite(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvNormAct(expanded, cout, 1, norm, None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.stride = stride
        self.out_channels = cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def mobilenet_v3_large_features(norm: str = "frozen", bn_eps: float = 1e-5) -> nn.Sequential:
    """The 17 modules of MobileNetV3-Large's `features` (Table 1 up to the 960-wide conv)."""
    norm_layer = _norm_layer(norm)
    layers: list[nn.Module] = [ConvNormAct(3, STEM_CHANNELS, 3, norm_layer, nn.Hardswish, stride=2)]
    cin = STEM_CHANNELS
    for kernel, expanded, cout, use_se, act, stride in LARGE_BNECKS:
        layers.append(InvertedResidual(cin, kernel, expanded, cout, use_se, act, stride, norm_layer))
        cin = cout
    layers.append(ConvNormAct(cin, LAST_CHANNELS, 1, norm_layer, nn.Hardswish))
    features = nn.Sequential(*layers)
    _init(features)
    for m in features.modules():
        if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            m.eps = bn_eps
    return features


def stage_indices(features: nn.Sequential) -> tuple[int, ...]:
    """Indices of the stage modules: the stem, every strided block, the last module."""
    strided = [i for i, m in enumerate(features) if isinstance(m, InvertedResidual) and m.stride > 1]
    return (0, *strided, len(features) - 1)


def _check_int(what: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an int in {low}..{high}, got {value!r}")
    return value


class MobileNetV3LargeBody(nn.Module):
    """MobileNetV3-Large `features` returning the maps of `returned_stages` (default (4, 5):
    'stage4' = block 13's output, 160 channels, stride 32; 'stage5' = the last conv, 960
    channels, stride 32) as an ordered dict; `levels` declares them. Modules after the last
    returned stage are dropped (as torchvision's IntermediateLayerGetter does)."""

    def __init__(self, norm: str = "frozen", trainable_layers: int = DEFAULT_TRAINABLE_LAYERS,
                 returned_stages: Sequence[int] = DEFAULT_RETURNED_STAGES, bn_eps: float = 1e-5):
        super().__init__()
        features = mobilenet_v3_large_features(norm, bn_eps)
        stages = stage_indices(features)
        _check_int("trainable_layers", trainable_layers, 0, len(stages))
        returned = self._check_returned(returned_stages, len(stages))
        self.stage_indices = stages
        self.returned = {stages[k]: f"stage{k}" for k in returned}
        self.features = features[: max(self.returned) + 1]
        self.levels = self._levels(features, stages, returned)
        self._frozen: list[nn.Module] = []
        self._freeze(len(features) if trainable_layers == 0 else stages[len(stages) - trainable_layers])

    @staticmethod
    def _check_returned(returned_stages: Sequence[int], num_stages: int) -> tuple[int, ...]:
        returned = tuple(returned_stages)
        if not returned or sorted(set(returned)) != list(returned):
            raise ValueError(f"returned_stages must be increasing stage numbers, got {returned}")
        for k in returned:
            _check_int("a returned stage", k, 0, num_stages - 1)
        return returned

    @staticmethod
    def _levels(features: nn.Sequential, stages: tuple[int, ...],
                returned: tuple[int, ...]) -> tuple[FeatureLevel, ...]:
        levels, stride = [], 1
        wanted = {stages[k]: k for k in returned}
        for i, m in enumerate(features):
            stride *= m.stride
            if i in wanted:
                levels.append(FeatureLevel(f"stage{wanted[i]}", stride, m.out_channels))
        return tuple(levels)

    def _freeze(self, before: int) -> None:
        modules = list(self.features[:before])
        freeze(modules)
        self._frozen = modules
        self.train(self.training)

    def train(self, mode: bool = True) -> MobileNetV3LargeBody:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.returned:
                out[self.returned[i]] = x
        return out

    def torchvision_key_map(self, prefix_tv: str = "backbone.body.", prefix_ours: str = ""
                            ) -> dict[str, str]:
        """{torchvision key: our key}: 'backbone.body.13.block.2.fc1.weight' ->
        prefix_ours + 'features.13.block.2.fc1.weight' for every state-dict entry (and each
        norm's 'num_batches_tracked', which a FrozenBatchNorm2d drops on load). With
        prefix_tv="features." it maps the ImageNet classifier's keys (the identity)."""
        return _key_map(self, "features.", prefix_tv, prefix_ours)


def _key_map(module: nn.Module, strip: str, prefix_tv: str, prefix_ours: str) -> dict[str, str]:
    keys = list(module.state_dict())
    keys += [f"{n}.num_batches_tracked" for n, m in module.named_modules()
             if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    return {prefix_tv + k[len(strip):]: prefix_ours + k for k in dict.fromkeys(keys)}
