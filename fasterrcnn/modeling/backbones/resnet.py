"""ResNet-18/34/50/101 (He et al. 2016) in the "C4" layout of Faster R-CNN with ResNets
(He et al. 2016, Sec. A; Detectron's R-50-C4):

- trunk: conv1, bn1, ReLU, 3x3/2 max-pool, layer1 .. layer3 (conv2_x .. conv4_x): stride 16,
  256 channels (ResNet-18/34) or 1024 (ResNet-50/101);
- box head: layer4 (conv5_x, its first block with stride 2) applied to 14 x 14 RoI features
  -> 7 x 7, then global average pooling -> 512 / 2048 features.

Blocks are torchvision's (ResNet v1.5: a bottleneck's stride sits in its 3x3 conv) and every
parameter/buffer name is torchvision's (`conv1.weight`, `bn1.running_mean`,
`layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer4.*` in the head), so an
ImageNet `resnetNN` state dict loads as is; its `fc.*` (the 1000-way classifier) is ignored.

Normalisation is `FrozenBatchNorm2d` by default (fixed ImageNet statistics and affine
parameters, as Detectron and torchvision's detection models do: 1-2 image mini-batches are too
small for batch statistics); `norm="bn"` uses trainable nn.BatchNorm2d instead (for training
from scratch). With `FrozenBatchNorm2d` and no loaded weights each norm is the identity (weight
1, bias 0, mean 0, var 1): these backbones are meant to be used with ImageNet weights.

Geometry: every stride-2 layer maps n to ceil(n/2), so H x W gives ceil(H/16) x ceil(W/16).

`frozen_stages` (default 1, Detectron's FREEZE_AT 2): 0 trains every conv, 1 freezes the stem
(conv1) and layer1, 2 also layer2, 3 also layer3 (the whole trunk), 4 also layer4 (the head).
Frozen stages' trainable batch norms (`norm="bn"`) are kept in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneInfo,
    FrozenBatchNorm2d,
    check_frozen_stages,
    freeze,
)

IGNORED_PREFIXES = ("fc.",)

NormLayer = Callable[[int], nn.Module]


def _norm_layer(norm: str) -> NormLayer:
    if norm == "frozen":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    raise ValueError(f"norm must be 'frozen' or 'bn', got {norm!r}")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None,
                 norm: NormLayer):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand x4 (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, downsample: nn.Module | None,
                 norm: NormLayer):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _make_layer(block: type, cin: int, planes: int, blocks: int, stride: int,
                norm: NormLayer) -> nn.Sequential:
    cout = planes * block.expansion
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(_conv1x1(cin, cout, stride), norm(cout))
    layers = [block(cin, planes, stride, downsample, norm)]
    layers += [block(cout, planes, 1, None, norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


_SPECS: dict[str, tuple[type, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNetTrunk(nn.Module):
    """Stem + layer1..layer3: Tensor[N, 3, H, W] -> Tensor[N, C, ceil(H/16), ceil(W/16)],
    C = 256 (BasicBlock) or 1024 (Bottleneck)."""

    stride = 16

    def __init__(self, block: type, layers: tuple[int, int, int], norm: NormLayer):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_layer(block, 64, 64, layers[0], 1, norm)
        self.layer2 = _make_layer(block, 64 * block.expansion, 128, layers[1], 2, norm)
        self.layer3 = _make_layer(block, 128 * block.expansion, 256, layers[2], 2, norm)
        self.out_channels = 256 * block.expansion
        self._frozen: list[nn.Module] = []
        _init(self)

    def stages(self) -> list[list[nn.Module]]:
        """Modules of stage 1 (stem + layer1), 2 (layer2), 3 (layer3)."""
        return [[self.conv1, self.bn1, self.layer1], [self.layer2], [self.layer3]]

    def train(self, mode: bool = True) -> ResNetTrunk:
        super().train(mode)
        for m in self._frozen:  # frozen stages keep their (trainable-type) norms in eval
            m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


class ResNetC4Head(nn.Module):
    """layer4 (stride 2) + global average pool: Tensor[R, C, 14, 14] -> Tensor[R, D],
    D = 512 (BasicBlock) or 2048 (Bottleneck)."""

    def __init__(self, block: type, blocks: int, norm: NormLayer):
        super().__init__()
        self.layer4 = _make_layer(block, 256 * block.expansion, 512, blocks, 2, norm)
        self.out_features = 512 * block.expansion
        self._frozen: list[nn.Module] = []
        _init(self)

    def train(self, mode: bool = True) -> ResNetC4Head:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(x).mean(dim=(2, 3))


def build_resnet(
    name: str, frozen_stages: int | None = None, *, norm: str = "frozen"
) -> tuple[ResNetTrunk, ResNetC4Head, BackboneInfo]:
    block, layers = _SPECS[name]
    frozen_stages = check_frozen_stages(name, 1 if frozen_stages is None else frozen_stages, 4)
    norm_layer = _norm_layer(norm)
    trunk = ResNetTrunk(block, layers[:3], norm_layer)
    head = ResNetC4Head(block, layers[3], norm_layer)
    for stage in trunk.stages()[:frozen_stages]:
        freeze(stage)
        trunk._frozen += stage
    if frozen_stages == 4:
        freeze([head.layer4])
        head._frozen.append(head.layer4)
    trunk.train(), head.train()
    info = BackboneInfo(
        name=name, out_channels=trunk.out_channels, stride=16,
        # Detectron's C4 RPN keeps the trunk's width (1024 for R-50-C4).
        rpn_channels=trunk.out_channels, roi_output_size=14, head_features=head.out_features,
        pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    )
    return trunk, head, info
