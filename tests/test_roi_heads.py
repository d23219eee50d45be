"""Fast R-CNN head: proposal targets, predictor init, loss, post-processing."""

from __future__ import annotations

import math

import torch
from torch import nn

from fasterrcnn.modeling.config import RoIHeadConfig
from fasterrcnn.modeling.roi_heads import FastRCNNPredictor, RoIHeads, RoISample, sample_proposal_targets
from fasterrcnn.ops import BoxCoder, box_iou


def random_proposals(n: int, seed: int, size: float = 300.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * 100 + 10
    return torch.cat([xy, xy + wh], 1)


def test_proposal_targets_fg_fraction_thresholds_and_targets():
    torch.manual_seed(0)
    gt = torch.tensor([[50.0, 50, 150, 150], [200, 100, 260, 220]])
    labels = torch.tensor([3, 1])
    # many proposals jittered around the gt boxes (lots of foreground) + random ones
    jitter = torch.cat([gt[i % 2][None] + torch.randn(1, 4) * 8 for i in range(300)])
    loose = torch.cat([gt[i % 2][None] + torch.randn(1, 4) * 40 for i in range(300)])  # many in [0.1, 0.5)
    proposals = torch.cat([jitter, loose, random_proposals(300, 1)])
    cfg = RoIHeadConfig()  # 128 per image, 25% fg, fg >= 0.5, bg in [0.1, 0.5)
    coder = BoxCoder(cfg.bbox_reg_weights)
    s = sample_proposal_targets(proposals, gt, labels, cfg, coder)
    assert s.rois.shape[0] == 128 and s.num_fg == 32
    iou = box_iou(gt, s.rois).max(0).values
    fg = s.labels > 0
    assert fg.sum() == 32 and (iou[fg] >= 0.5).all()
    assert ((iou[~fg] >= 0.1) & (iou[~fg] < 0.5)).all()
    # foreground labels/targets are those of the best-overlapping gt box
    best = box_iou(gt, s.rois).argmax(0)
    assert torch.equal(s.labels[fg], labels[best[fg]])
    torch.testing.assert_close(s.reg_targets[fg], coder.encode(gt[best[fg]], s.rois[fg]))
    assert (s.reg_targets[~fg] == 0).all()


def test_ground_truth_is_appended_to_proposals():
    gt = torch.tensor([[10.0, 10, 60, 60]])
    # no proposal overlaps the gt: the only foreground RoI can be the gt box itself
    proposals = torch.tensor([[100.0, 100, 150, 150], [200, 200, 260, 250], [40, 40, 100, 100]])
    s = sample_proposal_targets(proposals, gt, torch.tensor([2]), RoIHeadConfig(), BoxCoder((10, 10, 5, 5)))
    assert s.num_fg == 1
    assert torch.equal(s.rois[0], gt[0]) and s.labels[0] == 2
    assert torch.equal(s.reg_targets[0], torch.zeros(4))  # the gt box regresses onto itself
    # [40,40,100,100]: IoU = 400/(2500+3600-400) = 0.070 < 0.1 -> neither fg nor bg
    assert s.rois.shape[0] == 1
    cfg = RoIHeadConfig(add_gt_as_proposals=False, bg_iou_thresh_lo=0.0)
    s = sample_proposal_targets(proposals, gt, torch.tensor([2]), cfg, BoxCoder((10, 10, 5, 5)))
    assert s.num_fg == 0 and s.rois.shape[0] == 3  # bg lower bound 0: all three are background


def test_background_only_image():
    s = sample_proposal_targets(random_proposals(50, 2), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                RoIHeadConfig(bg_iou_thresh_lo=0.0), BoxCoder())
    assert s.num_fg == 0 and s.rois.shape[0] == 50 and (s.labels == 0).all()


def test_predictor_shapes_and_init():
    p = FastRCNNPredictor(4096, 20)
    assert p.cls_score.out_features == 21 and p.bbox_pred.out_features == 84
    assert abs(p.cls_score.weight.std().item() - 0.01) < 0.0005
    assert abs(p.bbox_pred.weight.std().item() - 0.001) < 0.00005


class FlatHead(nn.Module):
    out_features = 4 * 2 * 2

    def forward(self, x):
        return x.flatten(1)


def make_heads(num_classes: int = 3, **cfg) -> RoIHeads:
    return RoIHeads.from_config(FlatHead(), FlatHead.out_features, num_classes, 2, 1 / 16, RoIHeadConfig(**cfg))


def test_loss_hand_computed():
    heads = make_heads()
    # two RoIs: a foreground of class 2 with target (1, 0, 0, 0), and a background
    samples = [RoISample(torch.zeros(2, 4), torch.tensor([2, 0]), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]]), 1)]
    cls_logits = torch.zeros(2, 4)  # uniform over 4 classes: CE = ln 4 each
    deltas = torch.zeros(2, 16)
    deltas[0, 8:12] = torch.tensor([0.25, 0.0, 2.0, 0.0])  # class 2's deltas of the fg RoI
    deltas[1, 0:4] = 100.0  # background RoIs never pay a regression loss
    losses = heads.loss(cls_logits, deltas, samples)
    torch.testing.assert_close(losses["det_cls"], torch.tensor(math.log(4)))
    # smooth L1 (beta 1) on (0.25 - 1, 0, 2 - 0, 0) = 0.5 * 0.75^2 + (2 - 0.5) = 1.78125, / 2 RoIs
    torch.testing.assert_close(losses["det_reg"], torch.tensor(1.78125 / 2))


def test_postprocess_threshold_nms_and_limit():
    heads = make_heads(num_classes=2, detections_per_img=3)
    proposals = [torch.tensor([[10.0, 10, 50, 50], [12, 10, 52, 50], [100, 100, 150, 160], [0, 0, 5, 5]])]
    cls_logits = torch.tensor(
        [
            [0.0, 4.0, 0.0],  # class 1, high
            [0.0, 3.0, 0.0],  # class 1, overlaps the first (IoU 0.9) -> suppressed by NMS 0.3
            [0.0, 0.0, 5.0],  # class 2
            [9.0, 0.0, 0.0],  # background: both class scores < 0.05
        ]
    )
    deltas = torch.zeros(4, 12)
    dets = heads.postprocess(cls_logits, deltas, proposals, [(200, 200)])[0]
    probs = torch.softmax(cls_logits, 1)
    # kept: (RoI 2, class 2), (RoI 0, class 1), then the lower-scoring class of RoIs 0/2 as separate classes
    assert dets["labels"].tolist()[:2] == [2, 1]
    torch.testing.assert_close(dets["scores"][:2], torch.stack([probs[2, 2], probs[0, 1]]))
    assert len(dets["boxes"]) <= 3
    assert (dets["scores"] > 0.05).all()
    assert torch.all(dets["scores"][:-1] >= dets["scores"][1:])
    # RoI 1 (class 1) never survives next to RoI 0
    assert not any(torch.equal(b, proposals[0][1]) and lab == 1 for b, lab in zip(dets["boxes"], dets["labels"]))


def test_postprocess_decodes_class_specific_deltas_and_clips():
    heads = make_heads(num_classes=1)
    proposals = [torch.tensor([[10.0, 10, 50, 50]])]
    cls_logits = torch.tensor([[0.0, 5.0]])
    deltas = torch.zeros(1, 8)
    deltas[0, 4:] = torch.tensor([10 * 0.5, 0.0, 0.0, 0.0])  # class 1: shift right by 0.5 w (weights 10)
    dets = heads.postprocess(cls_logits, deltas, proposals, [(100, 60)])[0]
    torch.testing.assert_close(dets["boxes"], torch.tensor([[30.0, 10, 60, 50]]))  # x2 70 clipped to 60


def test_box_vote_hand_computed():
    from fasterrcnn.modeling.roi_heads import box_vote

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40], [0, 0, 4, 10]])
    scores = torch.tensor([0.9, 0.3, 0.8, 0.7, 0.5])
    labels = torch.tensor([1, 1, 2, 1, 1])
    # kept box 0 (class 1): box 1 overlaps it with IoU 90/110 = 0.818 (votes), box 2 is class 2,
    # box 3 does not overlap, box 4 has IoU 0.4 (< 0.5): the vote is (0.9 b0 + 0.3 b1) / 1.2
    out = box_vote(boxes[:1], labels[:1], boxes, scores, labels, 0.5)
    torch.testing.assert_close(out, torch.tensor([[0.25, 0.0, 10.25, 10.0]]))
    # a threshold above 0.818 leaves the box alone; a lower one (0.4) lets box 4 vote too
    torch.testing.assert_close(box_vote(boxes[:1], labels[:1], boxes, scores, labels, 0.9), boxes[:1])
    expect = (0.9 * boxes[0] + 0.3 * boxes[1] + 0.5 * boxes[4]) / 1.7
    torch.testing.assert_close(box_vote(boxes[:1], labels[:1], boxes, scores, labels, 0.4)[0], expect)
    assert box_vote(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), boxes, scores, labels, 0.5).shape == (0, 4)


def test_postprocess_box_vote_against_brute_force():
    g = torch.Generator().manual_seed(3)
    proposals = [random_proposals(60, 4, size=150.0), random_proposals(40, 5, size=150.0)]
    cls_logits = torch.randn(100, 4, generator=g) * 2
    deltas = torch.randn(100, 16, generator=g)
    plain = make_heads().postprocess(cls_logits, deltas, proposals, [(260, 260), (260, 260)])
    voted = make_heads(box_vote_thresh=0.6).postprocess(cls_logits, deltas, proposals, [(260, 260), (260, 260)])
    coder = BoxCoder(RoIHeadConfig().bbox_reg_weights)
    probs = torch.softmax(cls_logits, 1)
    for i, (p, v) in enumerate(zip(plain, voted)):
        assert torch.equal(p["labels"], v["labels"]) and torch.equal(p["scores"], v["scores"])
        rows = slice(0, 60) if i == 0 else slice(60, 100)
        # the candidates, one by one: every (RoI, class) decoded, clipped, above the score threshold
        cands = []
        for r in range(rows.start, rows.stop):
            for c in range(1, 4):
                b = coder.decode(deltas[r : r + 1, 4 * c : 4 * c + 4], proposals[i][r - rows.start][None])[0]
                b = b.clamp(min=0, max=260)
                if probs[r, c] > 0.05:
                    cands.append((b, float(probs[r, c]), c))
        assert len(p["boxes"]) > 3
        for box, lab in zip(p["boxes"], p["labels"].tolist()):
            num, den = torch.zeros(4), 0.0
            for b, s, c in cands:
                if c == lab and float(box_iou(box[None], b[None])) >= 0.6:
                    num, den = num + s * b, den + s
            expected = num / den
            j = [k for k in range(len(p["boxes"])) if torch.equal(p["boxes"][k], box)][0]
            torch.testing.assert_close(v["boxes"][j], expected, atol=1e-4, rtol=1e-5)
        assert not torch.equal(p["boxes"], v["boxes"])  # some boxes moved


def test_box_vote_keeps_float32_coordinates_under_bf16_autocast():
    """Voting under bf16 autocast (the CPU inference setting) must not round the coordinates to
    bf16 (8 bits of mantissa: 1001.3 would become 1000 or 1004)."""
    from fasterrcnn.modeling.roi_heads import box_vote

    boxes = torch.tensor([[1001.3, 500.7, 1203.9, 777.1], [1002.1, 501.3, 1204.3, 776.3]])
    scores = torch.tensor([0.9, 0.6])
    labels = torch.tensor([1, 1])
    expect = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = box_vote(boxes[:1], labels[:1], boxes, scores, labels, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], expect)
