"""Box heads for pooled pyramid features: RoI features Tensor[R, C, p, p] -> Tensor[R, D].

* `TwoMLPHead`: the FPN paper's head (Lin et al. 2017, Sec. 4.2: "two hidden 1,024-d fully
  connected (fc) layers, each followed by ReLU"), Fast R-CNN's fc6/fc7 made lighter; the head
  of torchvision's `fasterrcnn_resnet50_fpn` and MobileNetV3 models.
* `ConvFCHead`: four 3x3 convs (each with BatchNorm and ReLU) then one fc layer (the "4conv1fc"
  head of detectron2 and of torchvision's `fasterrcnn_resnet50_fpn_v2`, after Wu et al.).

The single-map backbones (VGG-16, ZF, small, ResNet C4) bring their own heads (backbones/).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConvFCHead", "TwoMLPHead"]


class TwoMLPHead(nn.Module):
    """flatten -> fc6 -> ReLU -> fc7 -> ReLU."""

    def __init__(self, in_features: int, representation: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.out_features = representation

    def forward(self, x: Tensor) -> Tensor:
        return self.fc7(self.fc6(x.flatten(1)).relu()).relu()


class ConvFCHead(nn.Module):
    """`num_convs` x (3x3 conv without bias, BatchNorm, ReLU), flatten, fc, ReLU."""

    def __init__(self, in_channels: int, output_size: int, conv_channels: int = 256, num_convs: int = 4,
                 representation: int = 1024) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(num_convs):
            layers.append(nn.Sequential(nn.Conv2d(cin, conv_channels, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(conv_channels), nn.ReLU(inplace=True)))
            cin = conv_channels
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(conv_channels * output_size * output_size, representation)
        self.out_features = representation
        for m in self.convs.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.convs(x).flatten(1)).relu()
