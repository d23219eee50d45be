"""ZF net (Zeiler & Fergus 2014), the paper's fast backbone, as defined by py-faster-rcnn's
`models/pascal_voc/ZF/faster_rcnn_end2end/train.prototxt`:

    conv1 96 @ 7x7 /2 pad 3, ReLU, LRN, max-pool 3x3 /2 pad 1
    conv2 256 @ 5x5 /2 pad 2, ReLU, LRN, max-pool 3x3 /2 pad 1
    conv3 384 @ 3x3 pad 1, ReLU; conv4 384 @ 3x3 pad 1, ReLU; conv5 256 @ 3x3 pad 1, ReLU
    RPN 3x3 conv 256; RoI pooling 6 x 6 on conv5; fc6 9216 -> 4096, fc7 4096 -> 4096
    (ReLU, dropout 0.5 each)

The LRN is Caffe's WITHIN_CHANNEL kind (local_size 3, alpha 5e-5, beta 0.75): each value is
divided by (1 + alpha * mean of x^2 over its 3 x 3 spatial neighbourhood, zero padded)^beta.
It is not torch's `nn.LocalResponseNorm`, which normalises across channels.

Geometry: every stride-2 layer maps n to ceil(n/2) (torch's floor-mode pooling with pad 1 and
the padded strided convs), so H x W gives exactly ceil(H/16) x ceil(W/16) (600 x 1000 ->
38 x 63); feature cell i covers input pixels [16 i, 16 i + 16). Caffe pools in ceil mode,
which adds a row/column on even sizes (floor(n/2) + 1: 600 x 1000 -> 39 x 64);
`ceil_mode=True` reproduces that. Pooling has no weights: either fits the same weights.

Parameter names follow the prototxt (`conv1` .. `conv5` in the trunk, `fc6`, `fc7` in the
head; `fc8.*` is ignored when loading), so converted Caffe weights (ZF.v2.caffemodel) map one to
one. Two caveats for such a conversion: Caffe feeds BGR images in 0..255 minus the mean pixel
(the `pixel_mean`/`pixel_std` defaults below reproduce the scale and mean; conv1's input
channels must be reversed BGR -> RGB), and its dropout layers use `scale_train: false`
(activations scaled by 0.5 at test time instead of 2 at training time), so fc7 outputs are
twice torch's inverted-dropout ones at test time. No ZF ImageNet weights exist in torchvision.

All layers train by default (`frozen_stages` 0: the prototxt gives every layer lr_mult 1);
`frozen_stages` k freezes conv1 .. convk.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from .base import BackboneInfo, check_frozen_stages, freeze

# Caffe's mean pixel (BGR 102.9801, 115.9465, 122.7717 in 0..255), as RGB in [0, 1] units, and
# a std of 1/255: (x - mean) / std is then Caffe's 0..255 mean-subtracted input.
ZF_PIXEL_MEAN = (122.7717 / 255.0, 115.9465 / 255.0, 102.9801 / 255.0)
ZF_PIXEL_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)

IGNORED_PREFIXES = ("fc8.",)


class WithinChannelLRN(nn.Module):
    """Caffe LRN with norm_region WITHIN_CHANNEL: x / (1 + alpha * avg_{k x k}(x^2))^beta, the
    average over a zero-padded k x k window that counts the padding (Caffe's AVE pooling with
    pad (k-1)/2, stride 1, divides by k^2 everywhere)."""

    def __init__(self, size: int = 3, alpha: float = 5e-5, beta: float = 0.75):
        super().__init__()
        if size % 2 != 1:
            raise ValueError(f"LRN size must be odd, got {size}")
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: Tensor) -> Tensor:
        sq_avg = F.avg_pool2d(x * x, self.size, stride=1, padding=self.size // 2,
                              count_include_pad=True)
        return x * (sq_avg * self.alpha + 1.0).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}"


class ZFTrunk(nn.Module):
    """conv1 .. conv5 of ZF net: Tensor[N, 3, H, W] -> Tensor[N, 256, ceil(H/16), ceil(W/16)]."""

    out_channels = 256
    stride = 16

    def __init__(self, ceil_mode: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, kernel_size=7, stride=2, padding=3)
        self.norm1 = WithinChannelLRN(3, 5e-5, 0.75)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)
        self.conv2 = nn.Conv2d(96, 256, kernel_size=5, stride=2, padding=2)
        self.norm2 = WithinChannelLRN(3, 5e-5, 0.75)
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=ceil_mode)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        for m in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3, self.conv4, self.conv5]

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.norm1(F.relu(self.conv1(x), inplace=True)))
        x = self.pool2(self.norm2(F.relu(self.conv2(x), inplace=True)))
        x = F.relu(self.conv3(x), inplace=True)
        x = F.relu(self.conv4(x), inplace=True)
        return F.relu(self.conv5(x), inplace=True)


class ZFHead(nn.Module):
    """fc6, fc7 (4096 each, ReLU, dropout 0.5): Tensor[R, 256, 6, 6] -> Tensor[R, 4096]."""

    def __init__(self, in_channels: int = 256, pool_size: int = 6, hidden: int = 4096,
                 dropout: float = 0.5):
        super().__init__()
        self.out_features = hidden
        self.fc6 = skip_init(nn.Linear, in_channels * pool_size * pool_size, hidden)
        self.fc7 = skip_init(nn.Linear, hidden, hidden)
        self.drop6 = nn.Dropout(dropout)
        self.drop7 = nn.Dropout(dropout)
        for m in (self.fc6, self.fc7):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop6(F.relu(self.fc6(x.flatten(1)), inplace=True))
        return self.drop7(F.relu(self.fc7(x), inplace=True))


def build_zf(
    frozen_stages: int | None = None, *, ceil_mode: bool = False, dropout: float = 0.5
) -> tuple[ZFTrunk, ZFHead, BackboneInfo]:
    frozen_stages = check_frozen_stages("zf", 0 if frozen_stages is None else frozen_stages, 5)
    trunk = ZFTrunk(ceil_mode=ceil_mode)
    head = ZFHead(dropout=dropout)
    freeze(trunk.convs()[:frozen_stages])
    info = BackboneInfo(
        name="zf", out_channels=256, stride=16, rpn_channels=256, roi_output_size=6,
        head_features=4096, pixel_mean=ZF_PIXEL_MEAN, pixel_std=ZF_PIXEL_STD,
    )
    return trunk, head, info
