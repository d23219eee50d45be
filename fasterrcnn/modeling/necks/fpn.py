"""Feature Pyramid Network neck (Lin, Dollar, Girshick, He, Hariharan, Belongie 2017,
"Feature Pyramid Networks for Object Detection", Sec. 3), with torchvision's semantics
(`torchvision.ops.FeaturePyramidNetwork` + `LastLevelMaxPool`) so that the FPN weights of its
detection checkpoints load through `FPN.torchvision_key_map`.

Given the body's maps C_1 .. C_n (increasing stride), Sec. 3 "Top-down pathway and lateral
connections":

    M_n = L_n(C_n),          M_k = L_k(C_k) + Up(M_{k+1}) for k = n-1 .. 1
    P_k = O_k(M_k)

- L_k, the lateral connection: a 1x1 conv C_k -> d channels (d = 256 in the paper);
- Up, the top-down pathway: nearest-neighbour upsampling of M_{k+1} to the exact spatial size
  of L_k(C_k) (the paper's "factor of 2"; with odd sizes, e.g. ceil-halved maps, the size is
  taken from the lateral, as torchvision does: `F.interpolate(size=..., mode="nearest")`);
- O_k: a 3x3 conv "on each merged map to generate the final feature map ... to reduce the
  aliasing effect of upsampling". No non-linearity anywhere (the paper: "there are no
  non-linearities in these extra layers").
- The extra level (Sec. 4.1, "P6 is simply a stride two subsampling of P5"): max pooling of the
  last output with kernel 1, stride 2 (torchvision's `LastLevelMaxPool`, level name 'pool'),
  so a map of n pixels gives ceil(n / 2).

`norm="bn"` (torchvision's `fasterrcnn_resnet50_fpn_v2`: `norm_layer=nn.BatchNorm2d`) puts a
batch norm after every L_k and O_k conv, which then have no bias; `norm="frozen"` uses
`FrozenBatchNorm2d` (the same inference, nothing trained; the `num_batches_tracked` entries of
a BatchNorm2d state dict are dropped on load).

(The paper's one numbered equation, Eq. 1, assigns an RoI of w x h to level
k = floor(4 + log2(sqrt(wh) / 224)): that belongs to the RoI pooler, not to this module.)

Output names are torchvision's: '0' .. str(n-1) for P_1 .. P_n, then 'pool'. ResNet-50 with
C2..C5 gives '0' (stride 4), '1' (8), '2' (16), '3' (32), 'pool' (64); MobileNetV3-Large's two
stride-32 maps give '0' (32), '1' (32), 'pool' (64).

Parameters (our names -> torchvision's `FeaturePyramidNetwork` names, `Conv2dNormActivation`
wraps each conv in an nn.Sequential: conv at `.0`, norm at `.1`):

    laterals.K.conv.{weight,bias}   <- inner_blocks.K.0.{weight,bias}
    laterals.K.norm.*               <- inner_blocks.K.1.*
    outputs.K.conv.{weight,bias}    <- layer_blocks.K.0.{weight,bias}
    outputs.K.norm.*                <- layer_blocks.K.1.*

Initialisation is torchvision's (and Detectron's "c2_xavier_fill"): kaiming-uniform with
a = 1, zero bias.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.modeling.backbones.base import FeatureLevel, FrozenBatchNorm2d

POOL_NAME = "pool"

# Our sub-module names -> torchvision's, inside one level's conv block.
_TV_BLOCKS = {"laterals": "inner_blocks", "outputs": "layer_blocks"}
_TV_PARTS = {"conv": "0", "norm": "1"}


class ConvNorm(nn.Module):
    """A conv followed by an optional norm (no activation): one L_k or O_k of the FPN."""

    def __init__(self, cin: int, cout: int, kernel_size: int, norm: str | None):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=norm is None)
        self.norm = _make_norm(norm, cout)
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return x if self.norm is None else self.norm(x)


def _make_norm(norm: str | None, channels: int) -> nn.Module | None:
    if norm is None:
        return None
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "frozen":
        return FrozenBatchNorm2d(channels)
    raise ValueError(f"FPN norm must be None, 'bn' or 'frozen', got {norm!r}")


def _check_inputs(in_channels: Sequence[int], in_names: Sequence[str],
                  in_strides: Sequence[int] | None) -> None:
    if len(in_channels) == 0 or len(in_channels) != len(in_names):
        raise ValueError(f"FPN needs one name per input level, got {len(in_channels)} channel "
                         f"counts and names {list(in_names)}")
    if len(set(in_names)) != len(in_names):
        raise ValueError(f"FPN input names must be distinct, got {list(in_names)}")
    if in_strides is None:
        return
    if len(in_strides) != len(in_names):
        raise ValueError(f"FPN got {len(in_strides)} strides for {len(in_names)} input levels")
    if any(b < a for a, b in zip(in_strides, in_strides[1:])):
        raise ValueError(f"FPN input strides must not decrease, got {list(in_strides)}")


class FPN(nn.Module):
    """The FPN neck: an ordered dict of body maps (names `in_names`, increasing stride) ->
    an ordered dict of `out_channels`-wide maps '0' .. str(n-1) (+ 'pool' with `extra_pool`).

    `in_strides` (optional) only feeds the declared `levels`: a tuple of
    `FeatureLevel(name, stride, channels)` of the outputs, 'pool' at twice the last stride
    (None when `in_strides` is not given; `FPN.from_levels` takes the body's levels).
    `out_channels` is d.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, in_names: Sequence[str],
                 extra_pool: bool = True, norm: str | None = None, *,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        _check_inputs(in_channels, in_names, in_strides)
        self.in_names = tuple(in_names)
        self.out_channels = out_channels
        self.extra_pool = extra_pool
        self.norm = norm
        self.laterals = nn.ModuleList(ConvNorm(c, out_channels, 1, norm) for c in in_channels)
        self.outputs = nn.ModuleList(ConvNorm(out_channels, out_channels, 3, norm)
                                     for _ in in_channels)
        self.out_names = tuple(str(k) for k in range(len(in_names))) + ((POOL_NAME,) if extra_pool else ())
        self.levels = self._levels(in_strides)

    @classmethod
    def from_levels(cls, levels: Sequence[FeatureLevel], out_channels: int = 256,
                    extra_pool: bool = True, norm: str | None = None) -> FPN:
        """The FPN over a body's declared levels (names, channels and strides)."""
        return cls([lv.channels for lv in levels], out_channels, [lv.name for lv in levels],
                   extra_pool, norm, in_strides=[lv.stride for lv in levels])

    def _levels(self, in_strides: Sequence[int] | None) -> tuple[FeatureLevel, ...] | None:
        if in_strides is None:
            return None
        strides = list(in_strides) + ([2 * in_strides[-1]] if self.extra_pool else [])
        return tuple(FeatureLevel(n, s, self.out_channels) for n, s in zip(self.out_names, strides))

    def _inputs(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        missing = [n for n in self.in_names if n not in features]
        if missing:
            raise KeyError(f"FPN expects feature maps {list(self.in_names)}, missing {missing} "
                           f"(got {list(features)})")
        return [features[n] for n in self.in_names]

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        xs = self._inputs(features)
        merged = self.laterals[-1](xs[-1])  # M_n
        results = [self.outputs[-1](merged)]
        for k in range(len(xs) - 2, -1, -1):  # top-down: M_k = L_k(C_k) + Up(M_{k+1})
            lateral = self.laterals[k](xs[k])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.outputs[k](merged))
        if self.extra_pool:
            results.append(F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0))
        return OrderedDict(zip(self.out_names, results))

    def torchvision_key_map(self, prefix_tv: str = "backbone.fpn.", prefix_ours: str = "",
                            legacy: bool = True) -> dict[str, str]:
        """{torchvision key: our key} for every entry of this module's state dict, e.g.
        'backbone.fpn.inner_blocks.0.0.weight' -> prefix_ours + 'laterals.0.conv.weight',
        'backbone.fpn.layer_blocks.3.1.running_var' -> prefix_ours + 'outputs.3.norm.running_var'.
        With norm layers, each norm's 'num_batches_tracked' is mapped too (a FrozenBatchNorm2d
        drops it on load), so a torchvision state dict renames completely.

        `legacy`: also map the names of torchvision's FPN before `Conv2dNormActivation`
        (state-dict version < 2, no norms: 'inner_blocks.0.weight', 'layer_blocks.2.bias'),
        which torchvision itself still accepts on load. The map is then many-to-one; the legacy
        entries come first, so inverting it (`{v: k for k, v in m.items()}`) gives the current
        names."""
        ours = list(dict.fromkeys(list(self.state_dict()) + _norm_counters(self)))
        current = {prefix_tv + _to_torchvision(k): prefix_ours + k for k in ours}
        if not legacy or self.norm is not None:
            return current
        old = {prefix_tv + _to_torchvision(k, legacy=True): prefix_ours + k for k in ours}
        return old | current


def _norm_counters(module: nn.Module) -> list[str]:
    return [f"{name}.num_batches_tracked" for name, m in module.named_modules()
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]


def _to_torchvision(key: str, legacy: bool = False) -> str:
    """'laterals.K.conv.weight' -> 'inner_blocks.K.0.weight' ('inner_blocks.K.weight' with
    `legacy`), 'outputs' -> 'layer_blocks', 'norm' -> '.1'."""
    block, k, part, rest = key.split(".", 3)
    if legacy:
        return f"{_TV_BLOCKS[block]}.{k}.{rest}"
    return f"{_TV_BLOCKS[block]}.{k}.{_TV_PARTS[part]}.{rest}"
