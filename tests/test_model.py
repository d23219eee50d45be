"""The assembled FasterRCNN: presets, shapes, training stages, coordinates, checkpoints."""

from __future__ import annotations

import os

import pytest
import torch

import fasterrcnn
from fasterrcnn import build_model, load_checkpoint, load_imagenet_weights, save_checkpoint
from fasterrcnn.errors import CheckpointError, ConfigError
from fasterrcnn.modeling.config import ModelConfig, preset_config

LOSSES = {"rpn_cls", "rpn_reg", "det_cls", "det_reg"}


def targets_for(images):
    out = []
    for img in images:
        h, w = img.shape[-2:]
        out.append({"boxes": torch.tensor([[0.1 * w, 0.2 * h, 0.6 * w, 0.9 * h], [0.5 * w, 0.1 * h, 0.9 * w, 0.5 * h]]),
                    "labels": torch.tensor([1, 2])})
    return out


@pytest.mark.parametrize("preset", ["vgg16", "zf", "small", "resnet18"])
def test_forward_shapes_every_preset_odd_sizes(preset):
    torch.manual_seed(0)
    model = build_model(preset, 3, min_size=160, max_size=272)
    images = [torch.rand(3, 333, 517), torch.rand(3, 201, 97)]
    model.train()
    losses = model(images, targets_for(images))
    assert set(losses) == LOSSES and all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    model.eval()
    with torch.no_grad():
        dets = model(images, return_proposals=True)
    assert len(dets) == 2
    for det, img in zip(dets, images):
        h, w = img.shape[-2:]
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["labels"].shape == (n,) and det["scores"].shape == (n,)
        assert n <= 100 and det["labels"].dtype == torch.int64
        assert ((det["labels"] >= 1) & (det["labels"] <= 3)).all()
        assert (det["scores"] > 0.05).all()
        for boxes in (det["boxes"], det["proposals"]):  # in the input image's coordinates
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert det["proposals"].shape[0] <= 300


def test_preset_defaults_are_the_papers():
    vgg = build_model("vgg16", 20)
    assert vgg.rpn.head.conv.out_channels == 512 and vgg.roi_heads.output_size == 7
    assert vgg.roi_heads.box_head.out_features == 4096
    zf = build_model("zf", 20)
    assert zf.rpn.head.conv.out_channels == 256 and zf.roi_heads.output_size == 6
    cfg = preset_config("vgg16", 20)
    assert (cfg.transform.min_size, cfg.transform.max_size) == (600, 1000)
    assert cfg.roi_heads.pooler == "roi_pool" and cfg.rpn.objectness == "softmax"
    assert (cfg.roi_heads.batch_size_per_image, cfg.roi_heads.positive_fraction) == (128, 0.25)
    assert (cfg.roi_heads.nms_thresh, cfg.roi_heads.score_thresh, cfg.roi_heads.detections_per_img) == (0.3, 0.05, 100)


def test_overrides_and_config_errors():
    m = build_model("small", 2, min_size=320, rpn={"nms_thresh": 0.6}, **{"roi_heads.pooler": "roi_align"})
    assert m.config.transform.min_size == 320 and m.config.rpn.nms_thresh == 0.6
    assert m.config.roi_heads.pooler == "roi_align"
    with pytest.raises(ConfigError, match="unknown override 'nms'"):
        build_model("small", 2, nms=0.5)
    with pytest.raises(ConfigError, match="ambiguous: write one of rpn.nms_thresh, roi_heads.nms_thresh"):
        build_model("small", 2, nms_thresh=0.5)
    with pytest.raises(ConfigError, match="rpn.neg_iou_thresh <= rpn.pos_iou_thresh"):
        build_model("small", 2, rpn={"neg_iou_thresh": 0.8})
    with pytest.raises(ConfigError, match="unknown preset"):
        build_model("alexnet", 2)
    with pytest.raises(ConfigError, match="must be a number"):
        build_model("small", 2, rpn={"nms_thresh": "high"})
    assert build_model("small", 2, box_vote_thresh=0.5).config.roi_heads.box_vote_thresh == 0.5
    assert build_model("small", 2).config.roi_heads.box_vote_thresh is None  # the paper: no voting
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="box_vote_thresh in"):
            build_model("small", 2, box_vote_thresh=bad)


def test_multi_scale_training_sizes_and_test_size():
    """train_min_size: in training an image already at one of the scales is kept, any other
    is brought to one of them; in eval every image goes to the test size (min_size)."""
    m = build_model("small", 2, min_size=576, max_size=864, train_min_size=[384, 448, 512], train_max_size=672)
    t = m.transform
    m.train()
    assert t([torch.rand(3, 448, 600)]).image_sizes == [(448, 600)]  # at scale 448: untouched
    assert t([torch.rand(3, 512, 512)] * 2).image_sizes == [(512, 512)] * 2
    torch.manual_seed(0)
    drawn = {t([torch.rand(3, 500, 700)]).image_sizes[0] for _ in range(30)}
    assert drawn == {(384, 538), (448, 627), (480, 672)}  # 512 capped by train_max_size 672
    m.eval()
    assert t([torch.rand(3, 448, 600)]).image_sizes == [(576, 771)]
    assert build_model("small", 2, min_size=320).transform.train_min_sizes is None  # one scale: min_size
    with pytest.raises(ConfigError, match="transform.train_min_size"):
        build_model("small", 2, train_min_size=[400, 2000])
    with pytest.raises(ConfigError, match="transform.train_min_size"):
        build_model("small", 2, train_min_size=[])


def test_torchvision_vgg16_state_dict_loads_with_no_missing_keys():
    # torchvision's vgg16 key names: 13 convs at features.{0,2,5,7,10,12,14,17,19,21,24,26,28},
    # classifier.0 / .3 (fc6, fc7) and .6 (the 1000-way classifier, not used by the detector)
    convs = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i, cin, cout in convs:
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g)
    for i, (cin, cout) in zip((0, 3, 6), ((25088, 4096), (4096, 4096), (4096, 1000))):
        sd[f"classifier.{i}.weight"] = torch.randn(cout, cin, generator=g)
        sd[f"classifier.{i}.bias"] = torch.randn(cout, generator=g)
    model = build_model("vgg16", 20)
    report = load_imagenet_weights(model, sd)
    assert report["missing"] == []
    assert all(k.startswith("classifier.6") for k in report["unexpected"])
    assert torch.equal(model.backbone.body.features[28].weight, sd["features.28.weight"])
    assert torch.equal(model.roi_heads.box_head.classifier[0].weight, sd["classifier.0.weight"])
    assert torch.equal(model.roi_heads.box_head.classifier[3].bias, sd["classifier.3.bias"])
    # conv1 and conv2 are frozen as in the paper's code; conv3_1 trains
    assert not model.backbone.body.features[0].weight.requires_grad and not model.backbone.body.features[7].weight.requires_grad
    assert model.backbone.body.features[10].weight.requires_grad


def test_stages_for_alternating_training():
    torch.manual_seed(0)
    model = build_model("small", 2, min_size=160, max_size=256)
    images = [torch.rand(3, 180, 240)]
    targets = targets_for(images)
    model.train().set_stage("rpn")
    assert set(model(images, targets)) == {"rpn_cls", "rpn_reg"}
    model.set_stage("detector")
    with pytest.raises(ValueError, match="needs proposals"):
        model(images, targets)
    proposals = [torch.tensor([[10.0, 20, 100, 150], [50, 10, 230, 100], [0, 0, 240, 180]])]
    losses = model(images, targets, proposals=proposals)
    assert set(losses) == {"det_cls", "det_reg"}
    # steps 3/4: shared convs fixed (and their BatchNorm statistics too)
    model.freeze_backbone()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.train()
    assert not model.backbone.training and model.rpn.training
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.backbone.parameters())
    model.set_stage("joint")
    assert set(model(images, targets)) == LOSSES
    with pytest.raises(ValueError, match="stage must be one of"):
        model.set_stage("both")


def test_given_proposals_round_trip_coordinates():
    """Proposals given in input-image coordinates come back unchanged through the detector
    when it predicts zero deltas: resizing to the network and mapping back are exact inverses."""
    torch.manual_seed(0)
    model = build_model("small", 2, min_size=300, max_size=500).eval().set_stage("detector")
    torch.nn.init.zeros_(model.roi_heads.predictor.bbox_pred.weight)
    torch.nn.init.zeros_(model.roi_heads.predictor.cls_score.weight)
    with torch.no_grad():
        model.roi_heads.predictor.cls_score.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # class 1 for every RoI
    image = torch.rand(3, 450, 620)  # resized by 300 / 450 = 2/3 inside
    props = torch.tensor([[10.0, 20, 200, 300], [300, 100, 600, 440]])
    with torch.no_grad():
        det = model([image], proposals=[props])[0]
    order = det["boxes"][:, 0].argsort()
    torch.testing.assert_close(det["boxes"][order], props, atol=1e-3, rtol=0)
    assert (det["labels"] == 1).all()


def test_target_and_image_errors():
    model = build_model("small", 2, min_size=160, max_size=256).train()
    img = [torch.rand(3, 100, 120)]
    with pytest.raises(ValueError, match="needs targets"):
        model(img)
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[0\] .* no positive width"):
        model(img, [{"boxes": torch.tensor([[10.0, 10, 5, 20]]), "labels": torch.tensor([1])}])
    with pytest.raises(ValueError, match=r"labels'\] must be in 1..2"):
        model(img, [{"boxes": torch.tensor([[1.0, 1, 5, 5]]), "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="non-finite"):
        model(img, [{"boxes": torch.tensor([[1.0, 1, float("inf"), 5]]), "labels": torch.tensor([1])}])
    with pytest.raises(TypeError, match="float tensor with values in"):
        model([torch.zeros(3, 10, 10, dtype=torch.uint8)], [])
    with pytest.raises(ValueError, match=r"shape \[3, H, W\]"):
        model([torch.rand(1, 10, 10)], [])
    # an image without objects is fine: every anchor and RoI is background
    losses = model(img, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert losses["rpn_reg"] == 0 and losses["det_reg"] == 0 and torch.isfinite(losses["det_cls"])


def test_difficult_objects_are_not_training_targets():
    torch.manual_seed(0)
    model = build_model("small", 2, min_size=160, max_size=256).train()
    img = [torch.rand(3, 160, 200)]
    boxes = torch.tensor([[10.0, 10, 120, 150]])
    torch.manual_seed(1)
    only_difficult = model(img, [{"boxes": boxes, "labels": torch.tensor([1]), "difficult": torch.tensor([True])}])
    torch.manual_seed(1)
    empty = model(img, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    for k in LOSSES:
        torch.testing.assert_close(only_difficult[k], empty[k])


def test_checkpoint_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    model = build_model("small", 3, class_names=["a", "b", "c"], min_size=200, max_size=300)
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=7)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)  # plain values + tensors only
    assert raw["format"] == "fasterrcnn.checkpoint" and raw["config"]["backbone"] == "small"
    loaded, ckpt = load_checkpoint(path, score_thresh=0.2)
    assert ckpt["epoch"] == 7 and loaded.class_names == ["a", "b", "c"] and not loaded.training
    assert loaded.config.roi_heads.score_thresh == 0.2
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    images = [torch.rand(3, 150, 210)]
    model.eval()
    with torch.no_grad():
        a, b = model(images)[0], loaded(images)[0]
    assert torch.equal(a["boxes"], b["boxes"])
    assert ModelConfig.from_dict(raw["config"]) == model.config

    (tmp_path / "trunc.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="trunc.pt is not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fasterrcnn checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    raw["model"].pop("rpn.head.conv.weight")
    torch.save(raw, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(tmp_path / "partial.pt")


def test_save_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    model = build_model("small", 1, min_size=160, max_size=256)
    path = save_checkpoint(tmp_path / "m.pt", model)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "m.pt", model)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_lazy_public_api():
    assert callable(fasterrcnn.build_model) and fasterrcnn.FasterRCNN.__name__ == "FasterRCNN"
    with pytest.raises(AttributeError):
        fasterrcnn.not_there  # noqa: B018


def test_backbone_option_override_by_dotted_key():
    m = build_model("small", 3, **{"backbone_options.head_norm": "bn"})
    assert m.config.backbone_options == {"head_norm": "bn"}
    assert isinstance(m.roi_heads.box_head.norm6, torch.nn.BatchNorm1d)
    with pytest.raises(ConfigError, match="unknown option"):
        build_model("small", 3, **{"backbone_options.bogus": 1})


def test_small_reduce_before_pool_pools_the_reduced_map():
    """With `reduce_before_pool` the 1x1 conv runs on the feature map and the pooling reads its
    64 channels; the detector's RoI scores are exactly head(pool(reduce(features)))."""
    torch.manual_seed(0)
    m = build_model("small", 3, min_size=128, max_size=160,
                    backbone_options={"reduce_before_pool": True, "head_norm": "bn"}).eval()
    head = m.roi_heads.box_head
    feats = torch.randn(1, 256, 8, 10)
    rois = [torch.tensor([[0.0, 0.0, 64.0, 48.0], [16.0, 8.0, 150.0, 120.0]])]
    cls, deltas = m.roi_heads.predict(feats, rois)
    reduced = head.pool_input(feats)
    assert reduced.shape == (1, 64, 8, 10)
    pooled = m.roi_heads.pool(reduced, rois)
    assert pooled.shape == (2, 64, 7, 7)
    want_cls, want_deltas = m.roi_heads.predictor(head(pooled))
    torch.testing.assert_close(cls, want_cls)
    torch.testing.assert_close(deltas, want_deltas)
    # it trains: every parameter of the head gets a gradient
    m.train()
    images = [torch.rand(3, 128, 160)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([1])}]
    sum(m(images, targets).values()).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_small_bn_head_trains_on_an_image_with_a_single_roi():
    """With one image per batch, the background rule (IoU in [0.1, 0.5)) can leave the ground-
    truth box as the image's only RoI: the BatchNorm'd head then normalises that one row with its
    running statistics (and leaves them unchanged) instead of failing; two rows use and update
    the batch statistics as usual."""
    torch.manual_seed(0)
    m = build_model("small", 3, min_size=128, max_size=160,
                    backbone_options={"reduce_before_pool": True, "head_norm": "bn"}).train()
    head = m.roi_heads.box_head
    norm = head.norm6
    norm.running_mean.fill_(0.5)
    before = norm.running_mean.clone()
    x = torch.randn(1, 64, 7, 7)
    out = head(x)
    assert out.shape == (1, 512) and torch.isfinite(out).all()
    torch.testing.assert_close(norm.running_mean, before)
    want = torch.relu((head.fc6(x.flatten(1)) - 0.5) / torch.sqrt(torch.tensor(1.0 + norm.eps)) * norm.weight + norm.bias)
    torch.testing.assert_close(torch.relu(norm(head.fc6(x.flatten(1)))), want)
    head(torch.randn(2, 64, 7, 7))
    assert not torch.equal(norm.running_mean, before)
    # end to end: one image whose only RoI is its ground-truth box (no proposal in [0.1, 0.5))
    features = torch.randn(1, 256, 8, 10)
    proposals = [torch.tensor([[150.0, 110.0, 158.0, 118.0]])]  # far from the object: IoU 0
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 90.0, 100.0]]), "labels": torch.tensor([1])}]
    _, losses = m.roi_heads(features, proposals, [(128, 160)], targets)
    assert torch.isfinite(sum(losses.values()))


def _greedy_nms(boxes, scores, labels, thresh, limit):
    """Per-class greedy NMS, one box at a time (the reference for the merged TTA detections)."""
    from fasterrcnn.ops import box_iou

    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    kept: list[int] = []
    for i in order:
        if all(labels[j] != labels[i] or float(box_iou(boxes[i][None], boxes[j][None])) <= thresh for j in kept):
            kept.append(i)
    return kept[:limit]


def test_flip_tta_merges_the_mirror_images_detections():
    from fasterrcnn import FlipTTA

    torch.manual_seed(0)
    model = build_model("small", 3, min_size=160, max_size=256, detections_per_img=40).eval()
    images = [torch.rand(3, 150, 200), torch.rand(3, 170, 130)]
    tta = FlipTTA(model)
    merged = tta(images)
    plain = model(images)
    mirrored = model([img.flip(-1) for img in images])
    for img, out, a, b in zip(images, merged, plain, mirrored):
        w = img.shape[-1]
        back = b["boxes"].clone()
        back[:, 0], back[:, 2] = w - b["boxes"][:, 2], w - b["boxes"][:, 0]
        boxes = torch.cat([a["boxes"], back])
        scores = torch.cat([a["scores"], b["scores"]])
        labels = torch.cat([a["labels"], b["labels"]])
        assert len(a["boxes"]) and len(b["boxes"])
        kept = _greedy_nms(boxes, scores, labels, 0.3, 40)
        assert len(out["boxes"]) == len(kept)
        torch.testing.assert_close(out["boxes"], boxes[kept])
        torch.testing.assert_close(out["scores"], scores[kept])
        assert torch.equal(out["labels"], labels[kept])
        assert (out["boxes"][:, 2] <= w).all() and (out["boxes"][:, 0] >= 0).all()
    with pytest.raises(RuntimeError, match="inference"):
        tta.train()
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        tta(images)
