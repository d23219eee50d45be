"""Pieces shared by the backbones: the `BackboneInfo` record, frozen batch norm, freezing,
pretrained-weight loading and batch-norm folding.

A backbone is a pair of modules (see `fasterrcnn.modeling.backbones`):

- a *trunk* mapping normalised images `Tensor[N, 3, H, W]` to the shared feature map
  `Tensor[N, C, ceil(H/16), ceil(W/16)]` (attributes `out_channels`, `stride = 16`), shared by
  the RPN and the detector (paper Sec. 3.1);
- a *box head* mapping RoI-pooled features `Tensor[R, C, p, p]` to `Tensor[R, D]` (attribute
  `out_features`): the two fully connected layers of Fast R-CNN (fc6/fc7), or a ResNet's last
  stage in the C4 layout.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fasterrcnn.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneInfo:
    """Defaults that the model config reads for one backbone.

    `pixel_mean` / `pixel_std` are in units of an RGB image scaled to [0, 1]: the model
    normalises with `(image - mean) / std` before the trunk.
    """

    name: str
    out_channels: int  # C of the trunk's feature map
    stride: int  # feature stride of the trunk (16 for all)
    rpn_channels: int  # width of the RPN's 3x3 conv (paper: 512 VGG-16, 256 ZF)
    roi_output_size: int  # p of the RoI pooling grid p x p fed to the box head
    head_features: int  # D, the box head's output width
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    rpn_skip_levels: tuple[str, ...] = ()  # levels the RPN does not use (none here)
    pool_skip_levels: tuple[str, ...] = ()  # levels RoIs are not pooled from (an FPN's extra "pool" level)


@dataclass(frozen=True)
class FeatureLevel:
    """One feature map a backbone returns: its name, stride (input pixels per cell) and channels."""

    name: str
    stride: int
    channels: int


class Backbone(nn.Module):
    """The shared convolutional layers as the detector sees them: `body` (a trunk returning one
    map, or an ordered dict of maps) and an optional `neck` (e.g. an FPN) over the body's maps.

    `forward` returns an ordered dict of named feature levels, in increasing stride, each
    declared in `levels` (name, stride, channels): the paper's single stride-16 map is the
    one-level case, named "0"."""

    def __init__(self, body: nn.Module, levels: Sequence[FeatureLevel], neck: nn.Module | None = None) -> None:
        super().__init__()
        if not levels:
            raise ValueError("a backbone declares at least one feature level")
        self.body = body
        self.neck = neck
        self.levels: tuple[FeatureLevel, ...] = tuple(levels)

    @property
    def out_channels(self) -> int:
        """The channels of every level (one RPN head and one pooler serve them all)."""
        return self.levels[0].channels

    @property
    def strides(self) -> list[int]:
        return [lv.stride for lv in self.levels]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out = self.body(x)
        if self.neck is not None:
            out = self.neck(out)
        if isinstance(out, Tensor):
            return OrderedDict([(self.levels[0].name, out)])
        return OrderedDict(out)


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps)
    * weight + bias, per channel. All four are buffers (never trained), as in torchvision's
    `ops.misc.FrozenBatchNorm2d` and Detectron: detection mini-batches (1-2 images) are too
    small to re-estimate ImageNet batch statistics. State-dict keys are a BatchNorm2d's;
    a `num_batches_tracked` entry in a loaded state dict is accepted and dropped.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """Per-channel (scale, shift) with y = x * scale + shift, in float32."""
        scale = self.weight.float() * torch.rsqrt(self.running_var.float() + self.eps)
        shift = self.bias.float() - self.running_mean.float() * scale
        return scale, shift

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        # Computed in the input's dtype: under bf16 autocast the next conv gets bf16 as is,
        # instead of an fp32 copy that autocast would have to convert back.
        scale = scale.to(x.dtype).reshape(1, -1, 1, 1)
        shift = shift.to(x.dtype).reshape(1, -1, 1, 1)
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze(modules: Iterable[nn.Module]) -> None:
    """Turn off requires_grad of every parameter of `modules`."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def check_frozen_stages(name: str, frozen_stages: int, max_stages: int) -> int:
    if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int):
        raise ValueError(f"frozen_stages for {name} must be an int, got {frozen_stages!r}")
    if not 0 <= frozen_stages <= max_stages:
        raise ValueError(
            f"frozen_stages for {name} must be in 0..{max_stages}, got {frozen_stages}"
        )
    return frozen_stages


def load_into(
    trunk: nn.Module,
    head: nn.Module,
    state_dict: Mapping[str, Tensor],
    ignored_prefixes: tuple[str, ...] = (),
) -> dict[str, list[str]]:
    """Load a flat state dict whose keys are the trunk's and the head's own keys (the two name
    spaces are disjoint by construction) into both modules.

    Keys starting with one of `ignored_prefixes` (the 1000-way ImageNet classifier) and
    `*.num_batches_tracked` entries that have no place (frozen batch norm) are reported under
    "ignored". A leading "module." (DataParallel) is stripped. Shapes are checked before
    anything is copied: a mismatch raises `CheckpointError` (a ValueError) naming the key,
    and leaves both modules untouched. Returns {"missing", "unexpected", "ignored"}: keys of
    trunk/head absent from `state_dict`, keys of `state_dict` with no place, and the ignored.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to tensors, got {type(state_dict)}")
    targets = {"trunk": trunk.state_dict(), "head": head.state_dict()}
    to_load: dict[str, dict[str, Tensor]] = {"trunk": {}, "head": {}}
    unexpected: list[str] = []
    ignored: list[str] = []
    for raw_key, value in state_dict.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        where = next((w for w, sd in targets.items() if key in sd), None)
        if where is None:
            if key.startswith(ignored_prefixes) or key.endswith(".num_batches_tracked"):
                ignored.append(raw_key)
            else:
                unexpected.append(raw_key)
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"state dict entry {raw_key!r} is not a tensor ({type(value)})")
        expected = targets[where][key]
        if tuple(value.shape) != tuple(expected.shape):
            raise CheckpointError(
                f"shape mismatch for {raw_key!r}: the state dict has {tuple(value.shape)}, "
                f"the {where} expects {tuple(expected.shape)}"
            )
        to_load[where][key] = value
    missing = [f"{k}" for w, sd in targets.items() for k in sd if k not in to_load[w]]
    # Frozen batch norm has no num_batches_tracked; trainable batch norm may lack it in a
    # state dict (older checkpoints): not worth reporting either way.
    missing = [k for k in missing if not k.endswith(".num_batches_tracked")]
    trunk.load_state_dict(to_load["trunk"], strict=False)
    head.load_state_dict(to_load["head"], strict=False)
    return {"missing": missing, "unexpected": unexpected, "ignored": ignored}


def _fold_pair(conv: nn.Conv2d, bn: nn.Module) -> None:
    """Fold an eval-mode BatchNorm2d / FrozenBatchNorm2d into the conv before it, in place."""
    if isinstance(bn, FrozenBatchNorm2d):
        scale, shift = bn.scale_shift()
    elif isinstance(bn, nn.BatchNorm2d):
        scale = bn.weight.float() * torch.rsqrt(bn.running_var.float() + bn.eps)
        shift = bn.bias.float() - bn.running_mean.float() * scale
    else:  # pragma: no cover - callers pass only the two kinds
        raise TypeError(type(bn))
    with torch.no_grad():
        w = conv.weight.float() * scale.reshape(-1, 1, 1, 1)
        b = shift if conv.bias is None else conv.bias.float() * scale + shift
        conv.weight.copy_(w.to(conv.weight.dtype))
        if conv.bias is None:
            grad = conv.weight.requires_grad
            conv.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=grad)
        else:
            conv.bias.copy_(b.to(conv.bias.dtype))


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a conv into that conv, for inference.

    Pairs are found by name inside each module: `convN`/`bnN` (torchvision ResNet blocks),
    `conv`/`bn` (the small backbone), the (conv, norm) names a module lists in its
    `batchnorm_pairs` attribute (EfficientNet-Lite), and consecutive (Conv2d, norm) entries of an
    nn.Sequential (ResNet `downsample`). Folded norms become nn.Identity. The module must be
    in eval mode (trainable batch norm would otherwise keep updating statistics the conv no
    longer sees); the state-dict layout changes (conv biases appear, norms vanish), so fold
    only a model you will not save as a checkpoint. Returns `module`.
    """
    if module.training:
        raise RuntimeError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    norm_types = (nn.BatchNorm2d, FrozenBatchNorm2d)
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        if isinstance(parent, nn.Sequential):
            names = list(children)
            for a, b in zip(names, names[1:], strict=False):
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], norm_types):
                    _fold_pair(children[a], children[b])
                    setattr(parent, b, nn.Identity())
        for conv_name, bn_name in getattr(parent, "batchnorm_pairs", ()):  # declared by the module
            conv, bn = children.get(conv_name), children.get(bn_name)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, norm_types):
                _fold_pair(conv, bn)
                setattr(parent, bn_name, nn.Identity())
        for name, child in children.items():
            if not isinstance(child, nn.Conv2d):
                continue
            bn_name = "bn" + name[len("conv"):] if name.startswith("conv") else None
            if bn_name and isinstance(children.get(bn_name), norm_types):
                _fold_pair(child, children[bn_name])
                setattr(parent, bn_name, nn.Identity())
    return module
