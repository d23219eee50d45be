"""ResNet (He et al. 2016) as a multi-level body for a Feature Pyramid Network (Lin et al.
2017, Sec. 4.1: "we use the feature activations output by each stage's last residual block
... {C2, C3, C4, C5} for conv2, conv3, conv4, and conv5 outputs ... strides of {4, 8, 16, 32}").

The body of torchvision's `resnet_fpn_backbone` / `fasterrcnn_resnet50_fpn(_v2)`: conv1, bn1,
ReLU, 3x3/2 max-pool, layer1 .. layer4, built from `resnet.py`'s blocks (torchvision's ResNet
v1.5 bottleneck, stride in the 3x3 conv), returning an ordered dict

    name  module   stride  channels (ResNet-50/101; ResNet-18/34)
    c2    layer1   4       256; 64
    c3    layer2   8       512; 128
    c4    layer3   16      1024; 256
    c5    layer4   32      2048; 512

(`returned_layers`, default (1, 2, 3, 4) as torchvision's; modules after the last returned
layer are dropped, as its IntermediateLayerGetter does). Every stride-2 layer maps n to
ceil(n / 2), so C_k is ceil(H / 2^k) x ceil(W / 2^k).

Parameter names are torchvision's ResNet names (`conv1.weight`, `bn1.running_var`,
`layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.weight`): the
ImageNet classifier's keys load as they are (its `fc.*` has no place), and a detection
checkpoint's `backbone.body.*` keys map by dropping that prefix (`torchvision_key_map`).

Freezing (`trainable_layers`, torchvision's `trainable_backbone_layers`, 0..5, default 3): the
trainable modules are the last t of (conv1 + bn1, layer1, layer2, layer3, layer4); t = 3
trains layer2..layer4 and freezes conv1, bn1, layer1; t = 5 trains everything. Frozen modules'
trainable norms (`norm="bn"`) are kept in eval mode, as in `resnet.py`.

Norms: "frozen" (`FrozenBatchNorm2d`: `fasterrcnn_resnet50_fpn`) or "bn" (nn.BatchNorm2d:
`fasterrcnn_resnet50_fpn_v2`, whose checkpoint has trainable batch norms; in eval mode both
compute the same). `bn_eps` sets every norm's eps: the COCO_V1 checkpoint of
`fasterrcnn_resnet50_fpn` needs `bn_eps=0.0` (torchvision calls `overwrite_eps(model, 0.0)`
after loading it); the v2 checkpoint uses the default 1e-5.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from .base import FeatureLevel, FrozenBatchNorm2d, freeze
from .resnet import _SPECS, _init, _make_layer, _norm_layer

DEFAULT_TRAINABLE_LAYERS = 3
DEFAULT_RETURNED_LAYERS = (1, 2, 3, 4)


def _check_args(name: str, trainable_layers: int, returned_layers: tuple[int, ...]) -> None:
    if name not in _SPECS:
        raise ValueError(f"unknown ResNet {name!r}; valid: {', '.join(_SPECS)}")
    t = trainable_layers
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= 5:
        raise ValueError(f"trainable_layers must be an int in 0..5, got {t!r}")
    if not returned_layers or sorted(set(returned_layers)) != list(returned_layers) \
            or not set(returned_layers) <= {1, 2, 3, 4}:
        raise ValueError(f"returned_layers must be increasing numbers in 1..4, got {returned_layers}")


class ResNetFPNBody(nn.Module):
    """ResNet stem + layer1..layer4 -> OrderedDict(c2=..., c3=..., c4=..., c5=...) (the
    `returned_layers`), declared in `levels` as FeatureLevel(name, stride, channels)."""

    def __init__(self, name: str = "resnet50", *, norm: str = "frozen",
                 trainable_layers: int = DEFAULT_TRAINABLE_LAYERS,
                 returned_layers: Sequence[int] = DEFAULT_RETURNED_LAYERS, bn_eps: float = 1e-5):
        super().__init__()
        returned = tuple(returned_layers)
        _check_args(name, trainable_layers, returned)
        block, depths = _SPECS[name]
        norm_layer = _norm_layer(norm)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for k in range(1, max(returned) + 1):
            planes = 64 * 2 ** (k - 1)
            layer = _make_layer(block, cin, planes, depths[k - 1], 1 if k == 1 else 2, norm_layer)
            self.add_module(f"layer{k}", layer)
            cin = planes * block.expansion
        _init(self)
        self.returned = {f"layer{k}": f"c{k + 1}" for k in returned}
        self.levels = tuple(FeatureLevel(f"c{k + 1}", 2 ** (k + 1), 64 * 2 ** (k - 1) * block.expansion)
                            for k in returned)
        self._set_eps(bn_eps)
        self._frozen: list[nn.Module] = []
        self._freeze(trainable_layers)

    def _set_eps(self, eps: float) -> None:
        for m in self.modules():
            if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                m.eps = eps

    def _stages(self) -> list[list[nn.Module]]:
        """Freezing units, first to last: (conv1, bn1), layer1, .., the last built layer."""
        layers = [[getattr(self, f"layer{k}")] for k in range(1, 5) if hasattr(self, f"layer{k}")]
        return [[self.conv1, self.bn1], *layers]

    def _freeze(self, trainable_layers: int) -> None:
        # torchvision counts from layer4 down even when layer4 is not built (returned_layers).
        units = self._stages() + [[]] * (5 - len(self._stages()))
        for unit in units[: 5 - trainable_layers]:
            freeze(unit)
            self._frozen += unit
        self.train(self.training)

    def train(self, mode: bool = True) -> ResNetFPNBody:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: OrderedDict[str, Tensor] = OrderedDict()
        for k in range(1, 5):
            name = f"layer{k}"
            if not hasattr(self, name):
                break
            x = getattr(self, name)(x)
            if name in self.returned:
                out[self.returned[name]] = x
        return out

    def torchvision_key_map(self, prefix_tv: str = "backbone.body.", prefix_ours: str = ""
                            ) -> dict[str, str]:
        """{torchvision key: our key}: 'backbone.body.layer2.0.downsample.1.running_mean' ->
        prefix_ours + 'layer2.0.downsample.1.running_mean', for every state-dict entry and each
        norm's 'num_batches_tracked' (a FrozenBatchNorm2d drops it on load)."""
        keys = list(self.state_dict())
        keys += [f"{n}.num_batches_tracked" for n, m in self.named_modules()
                 if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
        return {prefix_tv + k: prefix_ours + k for k in dict.fromkeys(keys)}
