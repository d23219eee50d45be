"""Backbones: shapes and strides, parameter counts, torchvision-format weight loading,
freezing, ZF's Caffe LRN, batch-norm folding, bf16/channels_last, and a learning sanity check."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fasterrcnn.modeling.backbones import (
    BACKBONES,
    BackboneInfo,
    FrozenBatchNorm2d,
    build_backbone,
    fold_batchnorm,
    load_pretrained,
)
from fasterrcnn.modeling.backbones.base import freeze
from fasterrcnn.modeling.backbones.zf import WithinChannelLRN

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _n_learnable_like_torchvision(m: nn.Module) -> int:
    """Parameters plus FrozenBatchNorm2d weight/bias (parameters in torchvision's nets)."""
    frozen = sum(
        mod.weight.numel() + mod.bias.numel()
        for mod in m.modules()
        if isinstance(mod, FrozenBatchNorm2d)
    )
    return _n_params(m) + frozen


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run this module on one intra-op thread: its many small convs lose more to thread
    synchronisation than they gain, badly so on a loaded machine; restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# the single-map backbones (trunk -> one stride-16 Tensor); the pyramid ones are tested in
# test_necks_fpn.py and test_pyramid.py
SINGLE_MAP = ("vgg16", "zf", "small", "resnet18", "resnet34", "resnet50", "resnet101")


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    return {name: build_backbone(name) for name in SINGLE_MAP}


# ------------------------------------------------------------------------------------------
# Registry and API


def test_registry_names_and_errors():
    assert BACKBONES == ("vgg16", "zf", "small", "resnet18", "resnet34", "resnet50", "resnet101",
                         "resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn",
                         "efficientnet_lite0", "efficientnet_lite0_fpn", "efficientnet_lite1", "efficientnet_lite1_fpn",
                         "efficientnet_lite2", "efficientnet_lite2_fpn")
    with pytest.raises(ValueError) as e:
        build_backbone("vgg19")
    for name in BACKBONES:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="unknown backbone"):
        load_pretrained("alexnet", nn.Identity(), nn.Identity(), {})
    with pytest.raises(ValueError, match="bogus"):
        build_backbone("small", bogus=1)
    for bad in (-1, 6, 1.5):
        with pytest.raises(ValueError, match="frozen_stages"):
            build_backbone("vgg16", frozen_stages=bad)
    with pytest.raises(ValueError, match="frozen_stages"):
        build_backbone("resnet50", frozen_stages=5)


def test_info_values(built):
    expected = {  # out_channels, rpn_channels, roi_output_size, head_features
        "vgg16": (512, 512, 7, 4096),
        "zf": (256, 256, 6, 4096),
        "small": (256, 128, 7, 512),
        "resnet18": (256, 256, 14, 512),
        "resnet34": (256, 256, 14, 512),
        "resnet50": (1024, 1024, 14, 2048),
        "resnet101": (1024, 1024, 14, 2048),
    }
    for name, (trunk, head, info) in built.items():
        assert isinstance(info, BackboneInfo) and info.name == name
        got = (info.out_channels, info.rpn_channels, info.roi_output_size, info.head_features)
        assert got == expected[name], name
        assert info.stride == trunk.stride == 16
        assert trunk.out_channels == info.out_channels
        assert head.out_features == info.head_features
        assert len(info.pixel_mean) == len(info.pixel_std) == 3
        assert all(s > 0 for s in info.pixel_std)
    assert built["vgg16"][2].pixel_mean == (0.485, 0.456, 0.406)
    assert built["vgg16"][2].pixel_std == (0.229, 0.224, 0.225)
    # ZF: Caffe's 0..255 mean-subtracted input (BGR mean 102.98, 115.95, 122.77 as RGB)
    zf_info = built["zf"][2]
    assert zf_info.pixel_std[0] == pytest.approx(1 / 255)
    assert [255 * m for m in zf_info.pixel_mean] == pytest.approx([122.7717, 115.9465, 102.9801])


# ------------------------------------------------------------------------------------------
# Shapes and strides


@pytest.mark.parametrize("name", SINGLE_MAP)
def test_trunk_and_head_shapes(built, name):
    trunk, head, info = built[name]
    trunk.eval(), head.eval()
    # The heavy nets get a smaller (still odd) first size to keep the suite quick.
    big = (1, 145, 211) if name in ("vgg16", "resnet50", "resnet101") else (1, 333, 517)
    with torch.no_grad():
        for n, h, w in (big, (2, 97, 161)):
            y = trunk(torch.randn(n, 3, h, w))
            assert y.shape == (n, info.out_channels, math.ceil(h / 16), math.ceil(w / 16))
            assert torch.isfinite(y).all()
        p = info.roi_output_size
        for r in (5, 0):  # an image without RoIs must not break the head
            out = head(torch.randn(r, info.out_channels, p, p))
            assert out.shape == (r, info.head_features)


def test_feature_size_is_ceil_over_16_for_many_sizes(built):
    sizes = [16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100]  # H; W = H + 5
    for name in ("vgg16", "zf", "small", "resnet18"):
        trunk = built[name][0].eval()
        with torch.no_grad():
            for s in sizes:
                y = trunk(torch.zeros(1, 3, s, s + 5))
                assert y.shape[-2:] == (math.ceil(s / 16), math.ceil((s + 5) / 16)), (name, s)


def test_zf_caffe_pooling_option():
    zf_caffe = build_backbone("zf", ceil_mode=True)[0].eval()
    with torch.no_grad():
        # Caffe ceil-mode pools map n -> floor(n/2) + 1: 96 -> 48 -> 25 -> 13 -> 7 (ours 6),
        # 160 -> 80 -> 41 -> 21 -> 11 (ours 10); 600 x 1000 gives 39 x 64 (ours 38 x 63)
        assert zf_caffe(torch.zeros(1, 3, 96, 160)).shape[-2:] == (7, 11)


# ------------------------------------------------------------------------------------------
# Parameter counts


def test_vgg16_and_zf_parameter_counts(built):
    trunk, head, _ = built["vgg16"]
    assert _n_params(trunk) == 14_714_688  # torchvision vgg16().features (pool5 has no weights)
    assert _n_params(head) == 25088 * 4096 + 4096 + 4096 * 4096 + 4096
    trunk, head, _ = built["zf"]
    convs = [(3, 96, 7), (96, 256, 5), (256, 384, 3), (384, 384, 3), (384, 256, 3)]
    assert _n_params(trunk) == sum(i * o * k * k + o for i, o, k in convs)
    assert _n_params(head) == 9216 * 4096 + 4096 + 4096 * 4096 + 4096


def test_resnet_parameter_counts_match_torchvision(built):
    # torchvision's resnetNN() parameter totals, including fc (512|2048 -> 1000)
    totals = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
              "resnet101": 44_549_160}
    for name, total in totals.items():
        trunk, head, info = built[name]
        fc = info.head_features * 1000 + 1000
        n = _n_learnable_like_torchvision(trunk) + _n_learnable_like_torchvision(head)
        assert n + fc == total, name
    assert _n_learnable_like_torchvision(built["resnet50"][1]) == 14_964_736  # layer4


def test_small_parameter_count(built):
    trunk, head, _ = built["small"]
    assert _n_params(trunk) == 659_728
    assert _n_params(head) == 1_885_248
    assert 1e6 < _n_params(trunk) + _n_params(head) < 5e6


def test_small_residual_block_counts():
    """`blocks` sets the residual blocks of stages 1-3 (default one each): a 32-channel basic
    block has 2 x (9 x 32 x 32) conv weights + 2 x 64 BatchNorm parameters."""
    from fasterrcnn.modeling.backbones.small import build_small

    trunk, _, _ = build_small(blocks=(0, 1, 2))
    assert _n_params(trunk) == 659_728 - (2 * 9 * 32 * 32 + 2 * 64) + (2 * 9 * 128 * 128 + 2 * 256)
    x = torch.rand(1, 3, 64, 96)
    assert trunk(x).shape == (1, 256, 4, 6)
    for bad in ((1, 1), (1, -1, 1), (1.5, 1, 1)):
        with pytest.raises(ValueError, match="blocks must be three"):
            build_small(blocks=bad)


# ------------------------------------------------------------------------------------------
# Loading torchvision-format ImageNet weights


def _torchvision_vgg16_state_dict() -> dict[str, torch.Tensor]:
    """torchvision vgg16's keys and shapes, written out from its layer list, random values."""
    g = torch.Generator().manual_seed(1)
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    sd, idx, cin = {}, 0, 3
    for v in cfg:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.randn(v, cin, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(v, generator=g)
        cin, idx = v, idx + 2
    for i, (fin, fout) in zip((0, 3, 6), ((25088, 4096), (4096, 4096), (4096, 1000)), strict=True):
        sd[f"classifier.{i}.weight"] = torch.empty(fout, fin).uniform_(-1, 1, generator=g)
        sd[f"classifier.{i}.bias"] = torch.randn(fout, generator=g)
    return sd


@pytest.fixture(scope="module")
def vgg_sd():
    return _torchvision_vgg16_state_dict()


@pytest.fixture(scope="module")
def vgg_fresh():
    """A second VGG-16 (the one in `built` stays untouched), shared by the loading tests."""
    return build_backbone("vgg16")


def test_load_torchvision_vgg16(vgg_sd, vgg_fresh):
    trunk, head, _ = vgg_fresh
    sd = vgg_sd
    assert len(sd) == 32
    report = load_pretrained("vgg16", trunk, head, sd)
    assert report["missing"] == [] and report["unexpected"] == []
    assert sorted(report["ignored"]) == ["classifier.6.bias", "classifier.6.weight"]
    convs = [m for m in trunk.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13
    assert torch.equal(trunk.features[0].weight, sd["features.0.weight"])  # conv1_1
    assert torch.equal(trunk.features[28].bias, sd["features.28.bias"])  # conv5_3
    assert torch.equal(head.classifier[0].weight, sd["classifier.0.weight"])  # fc6
    assert torch.equal(head.classifier[3].bias, sd["classifier.3.bias"])  # fc7
    # The frozen convs are still frozen after loading.
    assert not trunk.features[0].weight.requires_grad
    # The head flattens pool5 the way torchvision does: (C, H, W) order.
    x = torch.randn(2, 512, 7, 7)
    head.eval()
    ref = F.relu(F.linear(x.flatten(1), sd["classifier.0.weight"], sd["classifier.0.bias"]))
    ref = F.relu(F.linear(ref, sd["classifier.3.weight"], sd["classifier.3.bias"]))
    torch.testing.assert_close(head(x), ref)


def _torchvision_resnet_state_dict(depths, bottleneck: bool) -> dict[str, torch.Tensor]:
    """torchvision resnet keys and shapes (incl. num_batches_tracked and fc), random values."""
    g = torch.Generator().manual_seed(2)
    sd: dict[str, torch.Tensor] = {}

    def conv(key, cout, cin, k):
        sd[key + ".weight"] = torch.randn(cout, cin, k, k, generator=g)

    def bn(key, c):
        sd[key + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[key + ".bias"] = torch.randn(c, generator=g)
        sd[key + ".running_mean"] = torch.randn(c, generator=g)
        sd[key + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[key + ".num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    exp = 4 if bottleneck else 1
    cin = 64
    for li, (planes, n) in enumerate(zip((64, 128, 256, 512), depths, strict=True), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            if bottleneck:
                conv(p + ".conv1", planes, cin, 1), bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3), bn(p + ".bn2", planes)
                conv(p + ".conv3", planes * 4, planes, 1), bn(p + ".bn3", planes * 4)
            else:
                conv(p + ".conv1", planes, cin, 3), bn(p + ".bn1", planes)
                conv(p + ".conv2", planes, planes, 3), bn(p + ".bn2", planes)
            if b == 0 and (li > 1 or cin != planes * exp):
                conv(p + ".downsample.0", planes * exp, cin, 1)
                bn(p + ".downsample.1", planes * exp)
            cin = planes * exp
    sd["fc.weight"] = torch.randn(1000, cin, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


def test_load_torchvision_resnet50():
    trunk, head, _ = build_backbone("resnet50")
    sd = _torchvision_resnet_state_dict((3, 4, 6, 3), bottleneck=True)
    assert len(sd) == 320  # as torchvision's resnet50().state_dict(), 53 num_batches_tracked
    report = load_pretrained("resnet50", trunk, head, sd)
    assert report["missing"] == [] and report["unexpected"] == []
    ignored = set(report["ignored"])
    assert {"fc.weight", "fc.bias"} <= ignored
    assert {k for k in ignored if k not in ("fc.weight", "fc.bias")} == {
        k for k in sd if k.endswith("num_batches_tracked")
    }
    assert torch.equal(trunk.conv1.weight, sd["conv1.weight"])
    assert torch.equal(trunk.bn1.running_var, sd["bn1.running_var"])
    assert torch.equal(trunk.layer3[5].bn3.weight, sd["layer3.5.bn3.weight"])
    assert torch.equal(trunk.layer2[0].downsample[0].weight, sd["layer2.0.downsample.0.weight"])
    assert torch.equal(head.layer4[0].downsample[1].running_mean,
                       sd["layer4.0.downsample.1.running_mean"])
    assert torch.equal(head.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
    # Frozen BN computes BatchNorm2d's eval-mode function with the loaded statistics.
    ref = nn.BatchNorm2d(64).eval()
    ref.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("bn1.")})
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(trunk.bn1(x), ref(x))


def test_load_torchvision_resnet18_and_state_dict_roundtrip():
    trunk, head, _ = build_backbone("resnet18")
    sd = _torchvision_resnet_state_dict((2, 2, 2, 2), bottleneck=False)
    report = load_pretrained("resnet18", trunk, head, sd)
    assert report["missing"] == [] and report["unexpected"] == []
    # Our own state dicts use the same names: trunk + head keys == torchvision's minus fc/nbt.
    ours = set(trunk.state_dict()) | set(head.state_dict())
    theirs = {k for k in sd if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    assert ours == theirs


def test_load_reports_missing_and_unexpected_and_rejects_bad_shapes(vgg_sd, vgg_fresh):
    trunk, head, _ = vgg_fresh
    sd = dict(vgg_sd)
    del sd["features.28.bias"]
    sd["features.99.weight"] = torch.zeros(1)
    sd["module.features.26.bias"] = sd.pop("features.26.bias")  # DataParallel prefix
    report = load_pretrained("vgg16", trunk, head, sd)
    assert report["missing"] == ["features.28.bias"]
    assert report["unexpected"] == ["features.99.weight"]
    assert torch.equal(trunk.features[26].bias, sd["module.features.26.bias"])

    before = trunk.features[0].weight.clone()
    sd = dict(vgg_sd)
    sd["features.0.weight"] = torch.zeros(64, 3, 3, 3)  # would change features.0 ...
    sd["features.2.weight"] = torch.zeros(64, 64, 5, 5)  # ... but this one is wrong
    with pytest.raises(ValueError, match=r"features\.2\.weight"):
        load_pretrained("vgg16", trunk, head, sd)
    assert torch.equal(trunk.features[0].weight, before)  # nothing loaded on error
    trunk, head, _ = build_backbone("resnet50")
    sd = _torchvision_resnet_state_dict((3, 4, 6, 3), bottleneck=True)
    sd["layer4.1.bn2.running_var"] = torch.ones(3)
    with pytest.raises(ValueError, match=r"layer4\.1\.bn2\.running_var"):
        load_pretrained("resnet50", trunk, head, sd)


def test_load_own_format_zf_and_small(built):
    for name, extra in (("zf", {"fc8.weight": torch.zeros(1000, 4096)}), ("small", {})):
        src_t, src_h, _ = built[name]
        sd = {**src_t.state_dict(), **src_h.state_dict(), **extra}
        trunk, head, _ = build_backbone(name)
        report = load_pretrained(name, trunk, head, sd)
        assert report["missing"] == [] and report["unexpected"] == []
        assert report["ignored"] == list(extra)
        for k, v in trunk.state_dict().items():
            assert torch.equal(v, sd[k]), k


# ------------------------------------------------------------------------------------------
# Freezing


def _frozen_names(*modules: nn.Module) -> set[str]:
    return {f"{i}.{n}" for i, m in enumerate(modules) for n, p in m.named_parameters()
            if not p.requires_grad}


def test_vgg16_freezing_and_floor_pooling(built):
    trunk, head, _ = built["vgg16"]  # default 2: conv1_x, conv2_x
    assert _frozen_names(trunk, head) == {
        f"0.features.{i}.{w}" for i in (0, 2, 5, 7) for w in ("weight", "bias")
    }
    trunk, head, _ = build_backbone("vgg16", frozen_stages=0, ceil_mode=False)
    assert _frozen_names(trunk, head) == set()
    del head
    with torch.no_grad():  # ceil_mode=False: torchvision's floor(H/16)
        assert trunk(torch.zeros(1, 3, 97, 161)).shape[-2:] == (6, 10)
    freeze(trunk.stage(i) for i in range(1, 6))  # stages 1..5 cover every conv
    assert _frozen_names(trunk) == {f"0.{n}" for n, _ in trunk.named_parameters()}


def test_zf_and_small_freezing():
    trunk, head, _ = build_backbone("zf")
    assert _frozen_names(trunk, head) == set()  # py-faster-rcnn trains every ZF layer
    trunk, _, _ = build_backbone("zf", frozen_stages=2)
    assert _frozen_names(trunk) == {f"0.conv{i}.{w}" for i in (1, 2) for w in ("weight", "bias")}
    trunk, head, _ = build_backbone("small")
    assert _frozen_names(trunk, head) == set()
    trunk, head, _ = build_backbone("small", frozen_stages=2)
    assert _frozen_names(trunk, head) == {
        f"0.{n}" for n, _ in trunk.named_parameters() if n.split(".")[0] in
        ("stem", "stage1", "stage2")
    }
    trunk.train()  # frozen stages' batch norms stay in eval mode (statistics fixed)
    assert not trunk.stage2[1].bn1.training and trunk.stage3[1].bn1.training


def test_resnet_freezing():
    trunk, head, _ = build_backbone("resnet50")  # default 1: stem + layer1
    frozen = _frozen_names(trunk, head)
    expected = {f"0.{n}" for n, _ in trunk.named_parameters()
                if n.startswith(("conv1.", "layer1."))}
    assert frozen == expected and "0.conv1.weight" in frozen
    assert all(p.requires_grad for p in trunk.layer2.parameters())
    assert all(p.requires_grad for p in head.parameters())
    # Frozen batch norm: no parameters anywhere.
    assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
    assert all(".bn" not in n and "downsample.1" not in n for n, _ in trunk.named_parameters())
    trunk, head, _ = build_backbone("resnet18", frozen_stages=0)
    assert _frozen_names(trunk, head) == set()
    trunk, head, _ = build_backbone("resnet18", frozen_stages=4)
    assert all(not p.requires_grad for p in [*trunk.parameters(), *head.parameters()])
    trunk, head, _ = build_backbone("resnet18", frozen_stages=1, norm="bn")
    trunk.train()
    assert not trunk.bn1.training and not trunk.layer1[0].bn1.training
    assert trunk.layer2[0].bn1.training


# ------------------------------------------------------------------------------------------
# ZF's Caffe LRN, initialisation


def test_within_channel_lrn_matches_caffe_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6) * 100
    alpha, beta = 5e-5, 0.75
    out = WithinChannelLRN(3, alpha, beta)(x)
    pad = F.pad(x, (1, 1, 1, 1))
    ref = torch.empty_like(x)
    for i in range(5):
        for j in range(6):
            s = (pad[:, :, i:i + 3, j:j + 3] ** 2).sum(dim=(2, 3))
            ref[:, :, i, j] = x[:, :, i, j] / (1 + alpha / 9 * s) ** beta
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, x)


def test_fresh_weights_are_initialised(built):
    trunk, head, _ = built["vgg16"]
    w = trunk.features[28].weight  # kaiming fan_out: std sqrt(2 / (512 * 9))
    assert w.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.05)
    assert head.classifier[3].weight.std().item() == pytest.approx(0.01, rel=0.05)
    for name in SINGLE_MAP:
        trunk, head, _ = built[name]
        for m in [*trunk.modules(), *head.modules()]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert 0 < m.weight.std().item() < 1
                assert m.bias is None or torch.count_nonzero(m.bias) == 0


# ------------------------------------------------------------------------------------------
# Batch-norm folding, precision and memory format


def test_fold_batchnorm_preserves_outputs():
    torch.manual_seed(0)
    trunk, head, _ = build_backbone("small")
    for m in trunk.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    trunk.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = trunk(x)
        fold_batchnorm(trunk)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in trunk.modules())
        torch.testing.assert_close(trunk(x), ref, rtol=1e-4, atol=1e-4)

    trunk, head, _ = build_backbone("resnet18")
    load_pretrained("resnet18", trunk, head,
                    _torchvision_resnet_state_dict((2, 2, 2, 2), bottleneck=False))
    for m in [*trunk.modules(), *head.modules()]:  # keep activations at a sane scale
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    trunk.eval(), head.eval()
    x = torch.randn(1, 3, 64, 64)
    r = torch.randn(2, 256, 14, 14)
    with torch.no_grad():
        ref, ref_h = trunk(x), head(r)
        fold_batchnorm(trunk), fold_batchnorm(head)
        assert not any(isinstance(m, FrozenBatchNorm2d) for m in trunk.modules())
        torch.testing.assert_close(trunk(x), ref, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(head(r), ref_h, rtol=1e-4, atol=1e-3)
    with pytest.raises(RuntimeError, match="eval"):
        fold_batchnorm(build_backbone("small")[0])


@pytest.mark.parametrize("name", ["small", "zf", "resnet18"])
def test_bf16_autocast_and_channels_last(built, name):
    trunk, head, info = built[name]
    trunk.eval(), head.eval()
    x = torch.randn(1, 3, 97, 161)
    with torch.no_grad():
        ref = trunk(x)
        trunk_cl = trunk.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = trunk_cl(x.contiguous(memory_format=torch.channels_last))
            p = info.roi_output_size
            h = head(y[:, :, :p, :p].float().contiguous())
        trunk.to(memory_format=torch.contiguous_format)
    assert y.shape == ref.shape and h.shape == (1, info.head_features)
    rel = (y.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel


# ------------------------------------------------------------------------------------------
# Learning sanity check for `small`


def test_small_learns_a_toy_dense_task():
    """Trunk + 1x1 classifier learns to mark the stride-16 cells covered by a bright square."""
    torch.manual_seed(0)
    trunk, _, info = build_backbone("small")
    clf = nn.Conv2d(info.out_channels, 2, 1)
    params = [*trunk.parameters(), *clf.parameters()]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)

    def batch(n=4, size=96):
        x = torch.randn(n, 3, size, size) * 0.3
        y = torch.zeros(n, size // 16, size // 16, dtype=torch.long)
        for i in range(n):
            s = int(torch.randint(24, 48, ()))
            x0, y0 = (int(v) for v in torch.randint(0, size - s, (2,)))
            x[i, :, y0:y0 + s, x0:x0 + s] += 2.0
            cy = torch.arange(size // 16) * 16 + 8  # cell centres
            inside = ((cy >= y0) & (cy < y0 + s))[:, None] & ((cy >= x0) & (cy < x0 + s))[None]
            y[i][inside] = 1
        return x, y

    losses = []
    trunk.train()
    for _ in range(25):
        x, y = batch()
        loss = F.cross_entropy(clf(trunk(x)), y, weight=torch.tensor([1.0, 4.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, losses
