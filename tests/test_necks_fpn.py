"""The FPN neck (Lin et al. 2017, Sec. 3) and the multi-level bodies it sits on (ResNet C2..C5,
He et al. 2016; MobileNetV3-Large, Howard et al. 2019): a brute-force reference of the FPN
equations, sizes and names for odd images, gradients, freezing and torchvision's modules
(oracle fixture `tests/fixtures/torchvision/modules.pt`, written by
`scripts/torchvision_module_fixtures.py` with weights from `tests/torchvision_weights.py`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.modeling.backbones.base import FeatureLevel, FrozenBatchNorm2d
from fasterrcnn.modeling.backbones.mobilenet_v3 import (
    InvertedResidual,
    MobileNetV3LargeBody,
    SqueezeExcite,
    make_divisible,
)
from fasterrcnn.modeling.backbones.resnet_fpn import ResNetFPNBody
from fasterrcnn.modeling.necks import FPN
from fasterrcnn.modeling.necks.fpn import ConvNorm
from tests.torchvision_weights import make_image, make_state_dict, state_dict_digest

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision" / "modules.pt"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread (the machine is shared); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------
# Brute-force reference of Sec. 3: M_n = L_n(C_n), M_k = L_k(C_k) + Up(M_k+1), P_k = O_k(M_k)


def _ceil_sizes(h: int, w: int, strides: list[int]) -> list[tuple[int, int]]:
    """Sizes of a body whose every stride-2 step maps n to ceil(n / 2)."""
    return [(-(-h // s), -(-w // s)) for s in strides]


def _nearest_ref(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resampling: output pixel i reads input pixel floor(i * n_in / n_out)."""
    rows = torch.arange(size[0]) * x.shape[-2] // size[0]
    cols = torch.arange(size[1]) * x.shape[-1] // size[1]
    return x[:, :, rows][:, :, :, cols]


def _conv_norm_ref(block: ConvNorm, x: Tensor) -> Tensor:
    conv = block.conv
    y = F.conv2d(x, conv.weight, conv.bias, padding=conv.kernel_size[0] // 2)
    if block.norm is None:
        return y
    n = block.norm
    shape = (1, -1, 1, 1)
    return (y - n.running_mean.view(shape)) / torch.sqrt(n.running_var.view(shape) + n.eps) \
        * n.weight.view(shape) + n.bias.view(shape)


def _fpn_ref(fpn: FPN, feats: list[Tensor]) -> list[Tensor]:
    n = len(feats)
    merged: list[Tensor | None] = [None] * n
    merged[n - 1] = _conv_norm_ref(fpn.laterals[n - 1], feats[n - 1])
    for k in range(n - 2, -1, -1):
        lateral = _conv_norm_ref(fpn.laterals[k], feats[k])
        merged[k] = lateral + _nearest_ref(merged[k + 1], tuple(lateral.shape[-2:]))
    outs = [_conv_norm_ref(fpn.outputs[k], merged[k]) for k in range(n)]
    if fpn.extra_pool:
        outs.append(outs[-1][:, :, ::2, ::2])  # max over a 1x1 window, stride 2: subsampling
    return outs


def _randomise_norms(module: nn.Module, g: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))


STRIDES = [4, 8, 16, 32]
CHANNELS = [8, 16, 24, 12]


@pytest.mark.parametrize("norm", [None, "bn", "frozen"])
@pytest.mark.parametrize("hw", [(37, 53), (64, 48), (9, 5)])
def test_fpn_matches_bruteforce_reference(norm, hw):
    g = torch.Generator().manual_seed(hw[0] * 1000 + hw[1] + {None: 0, "bn": 1, "frozen": 2}[norm])
    torch.manual_seed(1)
    names = ["c2", "c3", "c4", "c5"]
    fpn = FPN(CHANNELS, 10, names, norm=norm, in_strides=STRIDES).eval()
    _randomise_norms(fpn, g)
    with torch.no_grad():
        for p in fpn.parameters():  # torchvision's zero bias init would hide a bias mix-up
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    sizes = _ceil_sizes(*hw, STRIDES)
    feats = [torch.randn(2, c, *s, generator=g) for c, s in zip(CHANNELS, sizes)]
    with torch.no_grad():
        out = fpn(dict(zip(names, feats)))
        ref = _fpn_ref(fpn, feats)
    assert list(out) == ["0", "1", "2", "3", "pool"]
    expected_sizes = sizes + [(-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2))]
    for (name, y), r, s in zip(out.items(), ref, expected_sizes):
        assert tuple(y.shape) == (2, 10, *s), name
        torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5, msg=f"level {name}")


def test_fpn_takes_inputs_by_name_and_without_extra_level():
    torch.manual_seed(0)
    fpn = FPN([4, 6], 5, ["a", "b"], extra_pool=False).eval()
    a, b = torch.randn(1, 4, 7, 9), torch.randn(1, 6, 4, 5)
    out = fpn({"b": b, "a": a, "unused": torch.randn(1, 3, 2, 2)})  # order and extras ignored
    assert list(out) == ["0", "1"]
    ref = _fpn_ref(fpn, [a, b])
    torch.testing.assert_close(out["0"], ref[0])
    torch.testing.assert_close(out["1"], ref[1])
    assert fpn.levels is None  # no strides given
    with pytest.raises(KeyError, match="missing"):
        fpn({"a": a})


def test_fpn_odd_image_through_resnet_body():
    """3x37x53 images through a stride-4..32 body: each top-down upsampling must land on the
    lateral's exact (ceil-halved) size, e.g. 2x2 -> 3x4 -> 5x7 -> 10x14."""
    torch.manual_seed(0)
    body = ResNetFPNBody("resnet18").eval()
    fpn = FPN.from_levels(body.levels, 32).eval()
    with torch.no_grad():
        feats = body(torch.randn(2, 3, 37, 53))
        out = fpn(feats)
    assert [(k, tuple(v.shape[1:])) for k, v in feats.items()] == [
        ("c2", (64, 10, 14)), ("c3", (128, 5, 7)), ("c4", (256, 3, 4)), ("c5", (512, 2, 2))]
    assert [(k, tuple(v.shape[1:])) for k, v in out.items()] == [
        ("0", (32, 10, 14)), ("1", (32, 5, 7)), ("2", (32, 3, 4)), ("3", (32, 2, 2)), ("pool", (32, 1, 1))]
    ref = _fpn_ref(fpn, list(feats.values()))
    for y, r in zip(out.values(), ref):
        torch.testing.assert_close(y, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", [None, "bn"])
def test_gradient_reaches_every_fpn_parameter(norm):
    torch.manual_seed(0)
    fpn = FPN(CHANNELS, 6, ["a", "b", "c", "d"], norm=norm).train()
    feats = {n: torch.randn(2, c, *s, requires_grad=True)
             for n, c, s in zip("abcd", CHANNELS, _ceil_sizes(29, 41, STRIDES))}
    out = fpn(feats)
    loss = sum((y * torch.randn_like(y)).sum() for y in out.values())
    loss.backward()
    params = dict(fpn.named_parameters())
    assert len(params) == 4 * 2 * (2 if norm is None else 3)  # conv w (+ b) or conv w + norm w, b
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for name, x in feats.items():
        assert x.grad is not None and x.grad.abs().sum() > 0, name


def test_fpn_arguments_are_checked():
    with pytest.raises(ValueError, match="one name per input level"):
        FPN([4, 8], 16, ["a"])
    with pytest.raises(ValueError, match="distinct"):
        FPN([4, 8], 16, ["a", "a"])
    with pytest.raises(ValueError, match="must not decrease"):
        FPN([4, 8], 16, ["a", "b"], in_strides=[16, 8])
    with pytest.raises(ValueError, match="strides"):
        FPN([4, 8], 16, ["a", "b"], in_strides=[8])
    with pytest.raises(ValueError, match="norm"):
        FPN([4, 8], 16, ["a", "b"], norm="gn")


def test_fpn_parameters_and_key_names():
    plain = FPN([3, 5], 7, ["a", "b"])
    assert isinstance(plain.laterals[1].conv, nn.Conv2d) and plain.laterals[1].conv.kernel_size == (1, 1)
    assert plain.outputs[0].conv.kernel_size == (3, 3) and plain.outputs[0].conv.bias is not None
    keymap = plain.torchvision_key_map("backbone.fpn.", "neck.", legacy=False)
    assert keymap == {
        "backbone.fpn.inner_blocks.0.0.weight": "neck.laterals.0.conv.weight",
        "backbone.fpn.inner_blocks.0.0.bias": "neck.laterals.0.conv.bias",
        "backbone.fpn.inner_blocks.1.0.weight": "neck.laterals.1.conv.weight",
        "backbone.fpn.inner_blocks.1.0.bias": "neck.laterals.1.conv.bias",
        "backbone.fpn.layer_blocks.0.0.weight": "neck.outputs.0.conv.weight",
        "backbone.fpn.layer_blocks.0.0.bias": "neck.outputs.0.conv.bias",
        "backbone.fpn.layer_blocks.1.0.weight": "neck.outputs.1.conv.weight",
        "backbone.fpn.layer_blocks.1.0.bias": "neck.outputs.1.conv.bias",
    }
    # torchvision < 0.14 names (FPN state-dict version 1), still accepted by torchvision's loader
    both = plain.torchvision_key_map("backbone.fpn.", "neck.")
    assert both == keymap | {
        "backbone.fpn.inner_blocks.0.weight": "neck.laterals.0.conv.weight",
        "backbone.fpn.inner_blocks.0.bias": "neck.laterals.0.conv.bias",
        "backbone.fpn.inner_blocks.1.weight": "neck.laterals.1.conv.weight",
        "backbone.fpn.inner_blocks.1.bias": "neck.laterals.1.conv.bias",
        "backbone.fpn.layer_blocks.0.weight": "neck.outputs.0.conv.weight",
        "backbone.fpn.layer_blocks.0.bias": "neck.outputs.0.conv.bias",
        "backbone.fpn.layer_blocks.1.weight": "neck.outputs.1.conv.weight",
        "backbone.fpn.layer_blocks.1.bias": "neck.outputs.1.conv.bias",
    }
    assert {v: k for k, v in both.items()} == {v: k for k, v in keymap.items()}  # current names win
    normed = FPN([3, 5], 7, ["a", "b"], norm="frozen").torchvision_key_map("", "")
    assert normed["layer_blocks.1.1.running_var"] == "outputs.1.norm.running_var"
    assert normed["inner_blocks.0.1.num_batches_tracked"] == "laterals.0.norm.num_batches_tracked"
    assert "inner_blocks.0.0.bias" not in normed  # a conv before a norm has no bias


def test_declared_levels():
    r50 = ResNetFPNBody("resnet50")
    assert r50.levels == tuple(FeatureLevel(f"c{k}", 2 ** k, c)
                               for k, c in zip(range(2, 6), [256, 512, 1024, 2048]))
    assert FPN.from_levels(r50.levels).levels == tuple(
        FeatureLevel(n, s, 256) for n, s in [("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)])
    mbv3 = MobileNetV3LargeBody()
    assert mbv3.levels == (FeatureLevel("stage4", 32, 160), FeatureLevel("stage5", 32, 960))
    assert FPN.from_levels(mbv3.levels).levels == (
        FeatureLevel("0", 32, 256), FeatureLevel("1", 32, 256), FeatureLevel("pool", 64, 256))
    with torch.no_grad():
        out = mbv3.eval()(torch.randn(1, 3, 65, 97))
    assert [tuple(v.shape[1:]) for v in out.values()] == [(160, 3, 4), (960, 3, 4)]  # ceil(n / 32)


# ------------------------------------------------------------------------------------------
# Bodies


def test_resnet_fpn_body_sizes_and_options():
    torch.manual_seed(0)
    body = ResNetFPNBody("resnet18", returned_layers=(2, 3), bn_eps=0.0).eval()
    assert not hasattr(body, "layer4") and list(body.returned.values()) == ["c3", "c4"]
    assert all(m.eps == 0.0 for m in body.modules() if isinstance(m, FrozenBatchNorm2d))
    for h, w in [(37, 53), (64, 64), (33, 95)]:
        with torch.no_grad():
            out = body(torch.randn(1, 3, h, w))
        assert [tuple(v.shape[-2:]) for v in out.values()] == _ceil_sizes(h, w, [8, 16])
    for bad in [dict(trainable_layers=6), dict(trainable_layers=True), dict(returned_layers=(3, 2)),
                dict(returned_layers=(0, 1)), dict(norm="gn")]:
        with pytest.raises(ValueError):
            ResNetFPNBody("resnet18", **bad)


def test_frozen_stages_keep_their_batch_norms_in_eval():
    body = ResNetFPNBody("resnet18", norm="bn", trainable_layers=3).train()
    assert not body.bn1.training and not body.layer1[0].bn1.training and body.layer2[0].bn1.training
    assert not body.bn1.weight.requires_grad and body.layer2[0].bn1.weight.requires_grad
    mb = MobileNetV3LargeBody(norm="bn", trainable_layers=3).train()
    assert not mb.features[6].block[0][1].training and mb.features[7].block[0][1].training


def test_mobilenet_v3_large_structure():
    """Table 1 of Howard et al. 2019 as torchvision builds it: stages, SE widths, activations,
    residuals, the hard-sigmoid SE gate."""
    body = MobileNetV3LargeBody()
    feats = body.features
    assert len(feats) == 17 and body.stage_indices == (0, 2, 4, 7, 13, 16)
    blocks = [m for m in feats if isinstance(m, InvertedResidual)]
    se = [m for b in blocks for m in b.block if isinstance(m, SqueezeExcite)]
    assert [m.fc1.out_channels for m in se] == [24, 32, 32, 120, 168, 168, 240, 240]
    assert [make_divisible(v) for v in (18, 30, 120, 168, 240, 3.0, 13)] == [24, 32, 120, 168, 240, 8, 16]
    acts = [type(b.block[0][2]) for b in blocks]
    assert acts == [nn.ReLU] * 6 + [nn.Hardswish] * 9
    assert [b.use_residual for b in blocks] == [True, False, True, False, True, True, False, True, True,
                                                True, False, True, False, True, True]
    assert len(blocks[0].block) == 2  # no 1x1 expansion when the expansion width is the input's
    n_params = sum(p.numel() for p in feats.parameters())
    n_norm = sum(2 * m.num_features for m in feats.modules() if isinstance(m, FrozenBatchNorm2d))
    assert n_params + n_norm == 2_971_952  # torchvision's mobilenet_v3_large().features
    m = se[0]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
        x = torch.randn(2, 72, 5, 6)
        z = m.fc2(torch.relu(m.fc1(x.mean((2, 3), keepdim=True))))
        torch.testing.assert_close(m(x), x * torch.clamp(z + 3, 0, 6) / 6)


def test_gradient_reaches_every_trainable_body_parameter():
    torch.manual_seed(0)
    body = MobileNetV3LargeBody(trainable_layers=6).train()
    fpn = FPN.from_levels(body.levels, 16).train()
    out = fpn(body(torch.randn(1, 3, 64, 64)))
    sum((y * torch.randn_like(y)).sum() for y in out.values()).backward()
    for name, p in [*body.named_parameters(), *fpn.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------
# torchvision oracle


def _fixture() -> dict:
    if not FIXTURE.exists():
        pytest.fail(f"{FIXTURE} is missing: run /work/tv/bin/python scripts/torchvision_module_fixtures.py")
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def fixture() -> dict:
    return _fixture()


def _ours(model: str, trainable_layers: int = 3) -> tuple[nn.ModuleDict, dict[str, str]]:
    """Our body + FPN for one torchvision model, and {torchvision key: our key}."""
    if model == "resnet50_fpn":  # COCO_V1: frozen BN with eps 0 (torchvision's overwrite_eps)
        body, fpn_norm = ResNetFPNBody("resnet50", trainable_layers=trainable_layers, bn_eps=0.0), None
    elif model == "resnet50_fpn_v2":
        body, fpn_norm = ResNetFPNBody("resnet50", norm="bn", trainable_layers=trainable_layers), "bn"
    else:
        body, fpn_norm = MobileNetV3LargeBody(trainable_layers=trainable_layers), None
    fpn = FPN.from_levels(body.levels, 256, norm=fpn_norm)
    keymap = body.torchvision_key_map("backbone.body.", "body.") | fpn.torchvision_key_map("backbone.fpn.", "fpn.")
    return nn.ModuleDict({"body": body, "fpn": fpn}), keymap


MODELS = ("resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn")


def _check_level(name: str, ours: Tensor, ref: dict) -> None:
    assert tuple(ours.shape) == tuple(ref["shape"]), name
    flat = ours.reshape(-1)
    scale = ref["abs_max"]
    torch.testing.assert_close(flat[ref["index"].long()], ref["values"], rtol=1e-4, atol=1e-4 * scale,
                               msg=lambda m: f"{name}: {m}")
    assert math.isclose(float(flat.abs().max()), scale, rel_tol=1e-4), name
    total = float(flat.double().sum())
    assert abs(total - ref["sum"]) <= 1e-4 * (abs(ref["sum"]) + scale * math.sqrt(flat.numel())), name


@pytest.mark.parametrize("model", MODELS)
def test_matches_torchvision_modules(fixture, model):
    """torchvision's weights (rebuilt from the recorded spec, checked by digest) load strictly
    into our body + FPN through the key maps, and give the same maps on two images."""
    fx = fixture["models"][model]
    weights = make_state_dict(fx["spec"])
    assert state_dict_digest(weights) == fx["digest"], (
        "tests/torchvision_weights.py's rules changed since the fixture was written: rerun "
        "scripts/torchvision_module_fixtures.py with a torchvision interpreter")
    ours, keymap = _ours(model)
    assert set(weights) <= set(keymap), sorted(set(weights) - set(keymap))[:5]
    ours.load_state_dict({keymap[k]: v for k, v in weights.items()}, strict=True)
    ours.eval()
    mean, std = torch.tensor(fixture["mean"]).view(1, 3, 1, 1), torch.tensor(fixture["std"]).view(1, 3, 1, 1)
    for img, rec in fx["outputs"].items():
        x = (make_image(rec["image"]).unsqueeze(0) - mean) / std
        assert tuple(x.shape) == tuple(rec["shape"])
        with torch.no_grad():
            feats = ours["body"](x)
            out = ours["fpn"](feats)
        assert len(feats) == len(rec["body"])
        for (tv_name, ref), (name, y) in zip(rec["body"].items(), feats.items()):
            _check_level(f"{model}/{img}/body {name} (torchvision {tv_name})", y, ref)
        assert list(out) == list(rec["fpn"])
        for name, ref in rec["fpn"].items():
            _check_level(f"{model}/{img}/fpn {name}", out[name], ref)


@pytest.mark.parametrize("model", MODELS)
def test_freezing_matches_torchvision(fixture, model):
    """For every trainable_layers value, our frozen parameters are torchvision's (FrozenBatchNorm2d
    has no parameters on either side; trainable BN's weight/bias freeze with their stage)."""
    for t, frozen_tv in fixture["models"][model]["frozen"].items():
        ours, keymap = _ours(model, trainable_layers=int(t))
        to_tv = {v: k for k, v in keymap.items()}
        frozen = sorted(to_tv[n] for n, p in ours.named_parameters() if not p.requires_grad)
        assert frozen == frozen_tv, f"trainable_layers={t}"
