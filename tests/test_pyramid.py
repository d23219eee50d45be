"""The detector assembled from parts, feature levels, and torchvision's architectures.

Brute-force references for the multi-level proposal layer and the FPN pooler, the key map of
torchvision's state dicts, and the conversion of version-1 checkpoints.
"""

from __future__ import annotations

import math

import pytest
import torch

import fasterrcnn
from fasterrcnn.anchors import MultiLevelAnchors, centred_base_anchors
from fasterrcnn.errors import CheckpointError
from fasterrcnn.modeling.poolers import MultiScaleRoIPooler, fpn_levels
from fasterrcnn.modeling.proposals import ProposalLayer
from fasterrcnn.ops import BoxCoder, box_iou, roi_align


def test_centred_anchors_are_torchvisions_rule():
    a = centred_base_anchors((32, 64), (0.5, 1.0, 2.0))
    # ratio-major, then size; w = s / sqrt(r), h = s * sqrt(r), centred on 0, rounded
    want = []
    for r in (0.5, 1.0, 2.0):
        for s in (32, 64):
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            want.append([round(-w / 2), round(-h / 2), round(w / 2), round(h / 2)])
    assert a.tolist() == [[float(v) for v in row] for row in want]


def test_multi_level_anchors_concatenate_levels_in_order():
    gen = MultiLevelAnchors.centred([4, 8], [(16,), (32,)], [(1.0,), (1.0,)])
    anchors, counts = gen([(2, 3), (1, 2)])
    assert counts == [6, 2] and anchors.shape == (8, 4)
    # level 0, position (y=1, x=2): centre (8, 4); level 1, position (0, 1): centre (8, 0)
    assert anchors[5].tolist() == [0.0, -4.0, 16.0, 12.0]
    assert anchors[7].tolist() == [-8.0, -16.0, 24.0, 16.0]


def test_input_stride_rule_spaces_anchors_by_input_over_map_size():
    # an FPN's pooled level of a 480 x 320 input: 8 x 5 positions; torchvision's rule puts them
    # 480 // 8 = 60 px apart in y and 320 // 5 = 64 px in x, the declared rule 64 px on both
    declared = MultiLevelAnchors.centred([64], [(32,)], [(1.0,)])
    by_input = MultiLevelAnchors.centred([64], [(32,)], [(1.0,)], stride_rule="input")
    a, _ = declared([(8, 5)])
    b, _ = by_input([(8, 5)], input_size=(480, 320))
    centres = lambda t: ((t[:, 0] + t[:, 2]) / 2, (t[:, 1] + t[:, 3]) / 2)  # noqa: E731
    (ax, ay), (bx, by) = centres(a), centres(b)
    assert torch.equal(ax, bx) and torch.equal(ay, ay.new_tensor([64.0 * (i // 5) for i in range(40)]))
    assert torch.equal(by, by.new_tensor([60.0 * (i // 5) for i in range(40)]))
    with pytest.raises(ValueError, match="input_size"):
        by_input([(8, 5)])
    with pytest.raises(ValueError, match="stride_rule"):
        MultiLevelAnchors.centred([64], [(32,)], [(1.0,)], stride_rule="inferred")


def _brute_force_proposals(anchors, logits, deltas, counts, size, pre_n, post_n, thresh):
    """Per level: top-`pre_n` logits; decode, clip; then greedy NMS within each level over all
    levels' candidates in decreasing score; the first `post_n`."""
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    boxes = coder.decode(deltas, anchors)
    h, w = size
    boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h), boxes[:, 2].clamp(0, w),
                         boxes[:, 3].clamp(0, h)], 1)
    cands, start = [], 0
    for lvl, n in enumerate(counts):
        idx = logits[start:start + n].topk(min(pre_n, n)).indices + start
        cands += [(float(logits[i]), lvl, boxes[i]) for i in idx.tolist()]
        start += n
    cands.sort(key=lambda c: -c[0])
    kept = []
    for score, lvl, box in cands:
        if all(lv != lvl or float(box_iou(box[None], b[None])) <= thresh for _, lv, b in kept):
            kept.append((score, lvl, box))
    return torch.stack([b for _, _, b in kept[:post_n]])


def test_proposal_layer_per_level_topk_and_nms_match_brute_force():
    torch.manual_seed(0)
    # the same anchor size on both levels: boxes of different levels overlap, and only a
    # per-level NMS keeps both; a global top-30 would differ from the per-level ones
    gen = MultiLevelAnchors.centred([8, 16], [(32,), (32,)], [(0.5, 1.0, 2.0)] * 2)
    anchors, counts = gen([(6, 8), (3, 4)])
    logits = torch.randn(1, anchors.shape[0]) * 3
    deltas = torch.randn(1, anchors.shape[0], 4) * 0.2
    layer = ProposalLayer(BoxCoder(), pre_nms_top_n={"training": 40, "testing": 30},
                          post_nms_top_n={"training": 50, "testing": 25}, nms_thresh=0.6, min_size=1e-3,
                          scale_min_size=False, filter_before_topk=False).eval()
    props, scores = layer(anchors, logits, deltas, [(48, 64)], [1.0], level_counts=counts)
    want = _brute_force_proposals(anchors, logits[0], deltas[0], counts, (48, 64), 30, 25, 0.6)
    one_level = _brute_force_proposals(anchors, logits[0], deltas[0], [sum(counts)], (48, 64), 30, 25, 0.6)
    assert one_level.shape != want.shape or not torch.allclose(one_level, want)  # the rule matters here
    assert props[0].shape == want.shape
    assert torch.allclose(props[0], want, atol=1e-5)
    assert torch.all(scores[0][:-1] >= scores[0][1:])


def test_fpn_pooler_uses_the_level_rule_and_roi_align_per_level():
    torch.manual_seed(0)
    feats = {"0": torch.randn(2, 4, 32, 32), "1": torch.randn(2, 4, 16, 16), "2": torch.randn(2, 4, 8, 8)}
    sizes = [(128, 128), (120, 100)]  # the largest image: 128 x 128 -> scales 1/4, 1/8, 1/16
    rois = [torch.tensor([[0.0, 0, 20, 20], [10, 10, 120, 110], [0, 0, 127, 127]]),
            torch.tensor([[5.0, 5, 60, 70], [1, 2, 3, 4]])]
    pooler = MultiScaleRoIPooler(["0", "1", "2"], 3, sampling_ratio=2, aligned=False)
    out = pooler(feats, rois, sizes)
    flat = torch.cat(rois)
    # FPN Eq. 1 with k0 = 4 and 224: k = floor(4 + log2(sqrt(wh) / 224)), clamped to 2..4
    k = [min(4, max(2, math.floor(4 + math.log2(math.sqrt((b[2] - b[0]) * (b[3] - b[1])) / 224) + 1e-6)))
         for b in flat.tolist()]
    assert fpn_levels(flat, 2, 4).tolist() == [v - 2 for v in k]
    batch = [0, 0, 0, 1, 1]
    for r, (lvl, b) in enumerate(zip(k, batch)):
        name, scale = str(lvl - 2), 2.0 ** -lvl
        want = roi_align(feats[name], [flat[r:r + 1] if i == b else flat[:0] for i in range(2)], 3, scale, 2, False)
        assert torch.allclose(out[r], want[0], atol=1e-6)


@pytest.mark.parametrize("preset", ["resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn"])
def test_torchvision_state_dicts_map_with_no_missing_or_unexpected_keys(preset):
    from fasterrcnn.modeling.torchvision_weights import TORCHVISION_ARCHS, load_torchvision, torchvision_state_dict

    arch = next(a for a, p in TORCHVISION_ARCHS.items() if p == preset)
    model = fasterrcnn.build_model(preset, 90)
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in torchvision_state_dict(model).items()}
    assert all(k.startswith(("backbone.body.", "backbone.fpn.", "rpn.head.", "roi_heads.box_head.",
                             "roi_heads.box_predictor.")) for k in state)
    loaded = load_torchvision(arch, state)
    assert loaded.class_names[0] == "person" and len(loaded.class_names) == 90
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items() if k in got and not v.is_floating_point())
    assert torch.equal(got["roi_heads.predictor.cls_score.weight"], state["roi_heads.box_predictor.cls_score.weight"])
    # a key too many, or one missing, is named
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        load_torchvision(arch, {**state, "extra.weight": torch.zeros(1)})
    missing = dict(state)
    missing.pop("rpn.head.cls_logits.weight")
    with pytest.raises(CheckpointError, match="missing keys.*rpn.head.cls_logits.weight"):
        load_torchvision(arch, missing)


def test_torchvision_key_names_of_the_heads():
    from fasterrcnn.modeling.torchvision_weights import torchvision_key_map

    v2 = torchvision_key_map(fasterrcnn.build_model("resnet50_fpn_v2", 90))
    assert v2["rpn.head.conv.0.0.weight"] == "rpn.head.conv.weight"
    assert v2["rpn.head.conv.1.0.bias"] == "rpn.head.more_convs.0.bias"
    assert v2["roi_heads.box_head.3.1.running_var"] == "roi_heads.box_head.convs.3.1.running_var"
    assert v2["roi_heads.box_head.5.weight"] == "roi_heads.box_head.fc.weight"
    assert v2["backbone.fpn.layer_blocks.3.1.weight"] == "backbone.neck.outputs.3.norm.weight"
    mb = torchvision_key_map(fasterrcnn.build_model("mobilenet_v3_large_fpn", 90))
    assert mb["backbone.body.13.block.2.fc1.weight"] == "backbone.body.features.13.block.2.fc1.weight"


def test_version_1_checkpoints_are_converted_when_read(tmp_path):
    from fasterrcnn.modeling.checkpoint import FORMAT, load_checkpoint

    model = fasterrcnn.build_model("small", 3, min_size=64, max_size=96)
    state = {("backbone." + k[len("backbone.body."):] if k.startswith("backbone.body.") else k): v
             for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    config.pop("preset")  # not in version 1
    torch.save({"format": FORMAT, "version": 1, "config": config, "model": state}, tmp_path / "v1.pt")
    loaded, ckpt = load_checkpoint(tmp_path / "v1.pt")
    assert ckpt["version"] == 2
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_single_level_presets_keep_one_level_named_0():
    model = fasterrcnn.build_model("small", 3, min_size=64, max_size=96).eval()
    assert [lv.name for lv in model.backbone.levels] == ["0"] and model.backbone.levels[0].stride == 16
    feats = model.backbone(torch.zeros(1, 3, 64, 96))
    assert list(feats) == ["0"] and feats["0"].shape[-2:] == (4, 6)
    fpn = fasterrcnn.build_model("resnet50_fpn", 2)
    assert [(lv.name, lv.stride) for lv in fpn.backbone.levels] == [("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)]
    assert fpn.roi_heads.pooler.names == ["0", "1", "2", "3"]


def test_detect_runs_torchvision_weights_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from fasterrcnn.cli import main
    from fasterrcnn.modeling.torchvision_weights import torchvision_state_dict

    model = fasterrcnn.build_model("mobilenet_v3_large_320_fpn", 90)
    torch.save(torchvision_state_dict(model), tmp_path / "tv.pth")
    Image.new("RGB", (160, 120), (90, 140, 200)).save(tmp_path / "photo.jpg")
    arch = ["--torchvision", "fasterrcnn_mobilenet_v3_large_320_fpn"]
    assert main(["detect", str(tmp_path / "photo.jpg"), *arch, "--out", str(tmp_path / "det"), "--workers", "0",
                 "--no-progress"]) == 2
    assert "needs --weights" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "photo.jpg"), *arch, "--weights", str(tmp_path / "tv.pth"),
                 "--out", str(tmp_path / "det"), "--workers", "0", "--no-progress"]) == 0
    import json

    meta = json.loads((tmp_path / "det" / "images.json").read_text())
    assert len(meta["categories"]) == 90 and meta["categories"][0]["name"] == "person"
    assert (tmp_path / "det" / "photo.jpg").exists()


def test_fine_tuning_from_torchvision_weights_on_other_classes(tmp_path, capsys):
    from fasterrcnn.cli import main
    from fasterrcnn.data.synth import generate
    from fasterrcnn.modeling.checkpoint import load_checkpoint
    from fasterrcnn.modeling.torchvision_weights import load_torchvision, torchvision_state_dict

    coco = fasterrcnn.build_model("mobilenet_v3_large_320_fpn", 90)
    state = torchvision_state_dict(coco)
    mine = load_torchvision("fasterrcnn_mobilenet_v3_large_320_fpn", state, num_classes=3, class_names=["a", "b", "c"])
    assert mine.roi_heads.predictor.cls_score.out_features == 4 and mine.class_names == ["a", "b", "c"]
    got = mine.state_dict()
    assert all(torch.equal(got[k], v) for k, v in coco.state_dict().items() if not k.startswith("roi_heads.predictor."))
    # the command line: the preset follows the architecture, the frozen stages stay as loaded
    torch.save(state, tmp_path / "tv.pth")
    data = tmp_path / "data"
    generate(data, num_train=4, num_test=0, min_size=64, max_size=96, max_objects=2, seed=0, progress=False)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--torchvision", "fasterrcnn_mobilenet_v3_large_320_fpn", "--weights",
                 str(tmp_path / "tv.pth"), "--out", str(out), "--epochs", "1", "--max-iters", "2", "--batch-size", "2",
                 "--min-size", "64", "--max-size", "96", "--workers", "0", "--no-progress", "--no-eval"]) == 0
    assert "a new predictor" in capsys.readouterr().out
    tuned, ckpt = load_checkpoint(out / "model_final.pt")
    assert ckpt["config"]["preset"] == "mobilenet_v3_large_320_fpn" and tuned.num_classes == len(tuned.class_names)
    frozen = "backbone.body.features.1.block.0.0.weight"  # a stage torchvision also keeps frozen
    assert torch.equal(tuned.state_dict()[frozen], coco.state_dict()[frozen])
