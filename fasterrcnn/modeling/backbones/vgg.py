"""VGG-16 (Simonyan & Zisserman 2015), the paper's accurate backbone (Sec. 4: "the 13 shareable
convolutional layers" and fc6/fc7 of the detector).

Trunk: conv1_1 .. conv5_3 with their ReLUs and the first four max-pools (pool5 dropped), 512
channels at stride 16, stored as `features` with torchvision's indices (`features.0` = conv1_1
... `features.28` = conv5_3), so torchvision's ImageNet `vgg16` keys `features.N.*` load as
they are. Head: fc6/fc7 as `classifier` with torchvision's indices (`classifier.0` Linear
25088 -> 4096, ReLU, Dropout, `classifier.3` Linear 4096 -> 4096, ReLU, Dropout) applied to
7 x 7 x 512 RoI-pooled features flattened in (C, H, W) order, as torchvision flattens pool5;
torchvision's `classifier.6` (the 1000-way fc8) is ignored.

Geometry: the pools run in ceil mode, as Caffe's do in the paper's code, so an H x W image gives
a ceil(H/16) x ceil(W/16) map (600 x 1000 -> 38 x 63); `ceil_mode=False` gives torchvision's
floor(H/16) instead. Pooling has no weights: ImageNet weights fit either way.

Freezing (`frozen_stages`, default 2): conv1_x and conv2_x are not trained, as in the paper's
code (py-faster-rcnn sets lr_mult 0 on conv1_1 .. conv2_2); 0 trains everything, 5 freezes
all 13 conv layers.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils import skip_init

from .base import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, check_frozen_stages, freeze

# torchvision's configuration "D"; "M" is a 2x2/2 max-pool. pool5 (the last "M") is dropped.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# First index in `features` of each conv stage (conv1_x .. conv5_x) and the end of the trunk.
_STAGE_STARTS = (0, 5, 10, 17, 24, 30)

IGNORED_PREFIXES = ("classifier.6.",)


class VGG16Trunk(nn.Module):
    """conv1_1 .. conv5_3 (13 conv + ReLU, 4 max-pools): Tensor[N, 3, H, W] ->
    Tensor[N, 512, ceil(H/16), ceil(W/16)] (floor with ceil_mode=False)."""

    out_channels = 512
    stride = 16

    def __init__(self, ceil_mode: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers)
        assert len(self.features) == _STAGE_STARTS[-1]
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # torchvision's init, for training without ImageNet
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def stage(self, i: int) -> nn.Sequential:
        """The layers of conv stage i (1..5): conv{i}_x, their ReLUs and the pool after."""
        return self.features[_STAGE_STARTS[i - 1] : _STAGE_STARTS[i]]

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class VGG16Head(nn.Module):
    """fc6, fc7 (4096 each, ReLU, dropout 0.5): Tensor[R, 512, 7, 7] -> Tensor[R, 4096]."""

    def __init__(self, in_channels: int = 512, pool_size: int = 7, hidden: int = 4096,
                 dropout: float = 0.5):
        super().__init__()
        self.out_features = hidden
        # skip_init: no default init of fc6's 103 M weights before ours (saves ~0.5 s).
        self.classifier = nn.Sequential(
            skip_init(nn.Linear, in_channels * pool_size * pool_size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            skip_init(nn.Linear, hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x.flatten(1))


def build_vgg16(
    frozen_stages: int | None = None, *, ceil_mode: bool = True, dropout: float = 0.5
) -> tuple[VGG16Trunk, VGG16Head, BackboneInfo]:
    frozen_stages = check_frozen_stages("vgg16", 2 if frozen_stages is None else frozen_stages, 5)
    trunk = VGG16Trunk(ceil_mode=ceil_mode)
    head = VGG16Head(dropout=dropout)
    freeze(trunk.stage(i) for i in range(1, frozen_stages + 1))
    info = BackboneInfo(
        name="vgg16", out_channels=512, stride=16, rpn_channels=512, roi_output_size=7,
        head_features=4096, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
    )
    return trunk, head, info
