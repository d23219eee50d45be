# DEV ONLY (untracked)
from dataclasses import dataclass
import torch
from torch import nn
@dataclass(frozen=True)
class BackboneInfo:
    name: str; out_channels: int; stride: int; rpn_channels: int; roi_output_size: int
    head_features: int; pixel_mean: tuple; pixel_std: tuple
BACKBONES = ("vgg16", "zf", "small")
def _cbr(i, o, s): return [nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
class Trunk(nn.Module):
    def __init__(self):
        super().__init__(); self.out_channels = 128; self.stride = 16
        self.body = nn.Sequential(*_cbr(3,32,2), *_cbr(32,32,1), *_cbr(32,64,2), *_cbr(64,64,1), *_cbr(64,128,2), *_cbr(128,128,1), *_cbr(128,128,2), *_cbr(128,128,1))
    def forward(self, x): return self.body(x)
class Head(nn.Module):
    def __init__(self):
        super().__init__(); self.out_features = 256
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(128*7*7, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    def forward(self, x): return self.fc(x)
def build_backbone(name, *, frozen_stages=None, **kw):
    return Trunk(), Head(), BackboneInfo(name, 128, 16, 128, 7, 256, (0.5,0.5,0.5), (0.25,0.25,0.25))
