"""RPN: anchor labelling and sampling, the loss, the head's size, the proposal layer."""

from __future__ import annotations

import math

import pytest
import torch

from fasterrcnn.modeling.config import AnchorConfig, RPNConfig
from fasterrcnn.modeling.matcher import IGNORE, NEGATIVE, match_boxes, sample_balanced
from fasterrcnn.modeling.proposals import ProposalLayer
from fasterrcnn.modeling.rpn import RegionProposalNetwork, RPNHead, rpn_anchor_targets
from fasterrcnn.ops import BoxCoder, box_iou

# A 100x100 image with two ground-truth boxes and nine hand-made anchors.
GT = torch.tensor([[10.0, 10, 50, 50], [50, 0, 90, 20]])  # A (40x40), B (40x20)
ANCHORS = torch.tensor(
    [
        [10.0, 10, 50, 50],  # a0: IoU(A) = 1                         -> positive (A)
        [12, 10, 52, 50],  # a1: IoU(A) = 1520/1680 = 0.905          -> positive (A)
        [30, 10, 70, 50],  # a2: IoU(A) = 800/2400 = 0.333            -> ignored (0.3..0.7)
        [60, 60, 90, 90],  # a3: no overlap                           -> negative
        [-10, 10, 30, 50],  # a4: crosses the left border             -> ignored
        [40, 10, 80, 50],  # a5: IoU(A) = IoU(B) = 0.143              -> negative
        [45, 0, 85, 40],  # a6: IoU(B) = 700/1700 = 0.412, B's best   -> positive (B), highest-IoU rule
        [50, -5, 90, 25],  # a7: IoU(B) = 800/1200 = 0.667 but crosses the top border -> ignored
        [55, 0, 95, 40],  # a8: IoU(B) = 0.412, tied with a6          -> positive (B), ties included
    ]
)
IMAGE = (100, 100)


def test_anchor_labels_hand_made():
    cfg = RPNConfig(batch_size_per_image=256)
    t = rpn_anchor_targets(ANCHORS, GT, IMAGE, cfg, BoxCoder())
    labels = dict(zip(t.sampled.tolist(), t.labels.tolist()))
    assert labels == {0: 1.0, 1: 1.0, 6: 1.0, 8: 1.0, 3: 0.0, 5: 0.0}  # a2, a4, a7 ignored
    assert sorted(t.pos.tolist()) == [0, 1, 6, 8]
    # regression targets are those of each positive's own best box
    coder = BoxCoder()
    expected = {0: GT[0], 1: GT[0], 6: GT[1], 8: GT[1]}
    for row, a in enumerate(t.pos.tolist()):
        torch.testing.assert_close(t.reg_targets[row], coder.encode(expected[a][None], ANCHORS[a][None])[0])


def test_without_highest_iou_rule_b_gets_no_positive():
    cfg = RPNConfig(batch_size_per_image=256, highest_iou_rule=False)
    t = rpn_anchor_targets(ANCHORS, GT, IMAGE, cfg, BoxCoder())
    assert sorted(t.pos.tolist()) == [0, 1]
    # a6 and a8 fall back to "ignored" (IoU 0.41 is between the thresholds)
    assert 6 not in t.sampled.tolist() and 8 not in t.sampled.tolist()


def test_border_anchors_kept_when_allowed():
    cfg = RPNConfig(batch_size_per_image=256, allowed_border=-1)  # keep every anchor
    t = rpn_anchor_targets(ANCHORS, GT, IMAGE, cfg, BoxCoder())
    # a7 (0.667) is now B's best anchor: a6/a8 lose the highest-IoU rule and become ignored
    assert sorted(t.pos.tolist()) == [0, 1, 7]
    # a4 takes part now but its IoU(A) = 0.333 lies between the thresholds: still not sampled
    assert 4 not in t.sampled.tolist()
    assert sorted(t.sampled[t.labels == 0].tolist()) == [3, 5]


def test_no_anchor_inside_the_image():
    # every anchor crosses the border of a tiny image: nothing is sampled, nothing crashes
    cfg = RPNConfig(batch_size_per_image=256)
    t = rpn_anchor_targets(ANCHORS + 200, GT, (20, 20), cfg, BoxCoder())
    assert t.sampled.numel() == 0 and t.pos.numel() == 0


def test_match_boxes_rules():
    iou = torch.tensor([[0.9, 0.5, 0.2, 0.0, 0.3], [0.1, 0.6, 0.25, 0.0, 0.3]])
    m = match_boxes(iou, pos_thresh=0.7, neg_thresh_hi=0.3, highest_iou_rule=True)
    # col0: 0.9 > 0.7 -> gt0; col1: gt1's highest (0.6) -> gt1 (its own best); col2: < 0.3 -> neg;
    # col3: 0 -> neg; col4: 0.3 is not < 0.3 -> ignored
    assert m.matched_gt.tolist() == [0, 1, NEGATIVE, NEGATIVE, IGNORE]
    # strict vs inclusive positive threshold (RPN: "> 0.7"; RoI head: ">= 0.5")
    eq = torch.tensor([[0.7, 0.5]])
    assert match_boxes(eq, pos_thresh=0.7, neg_thresh_hi=0.3).matched_gt.tolist() == [IGNORE, IGNORE]
    assert match_boxes(eq, pos_thresh=0.5, pos_inclusive=True, neg_thresh_hi=0.5).matched_gt.tolist() == [0, 0]
    # a gt box overlapping nothing creates no positives through the highest-IoU rule
    zero = torch.tensor([[0.0, 0.0, 0.0]])
    assert match_boxes(zero, pos_thresh=0.7, neg_thresh_hi=0.3, highest_iou_rule=True).matched_gt.tolist() == [NEGATIVE] * 3
    # no gt at all: everything negative (background-only image)
    assert match_boxes(torch.zeros(0, 4), pos_thresh=0.7, neg_thresh_hi=0.3).matched_gt.tolist() == [NEGATIVE] * 4


@pytest.mark.parametrize(
    "num_pos, num_neg, batch, frac, expected",
    [
        (1000, 5000, 256, 0.5, (128, 128)),  # RPN, plenty of both
        (10, 5000, 256, 0.5, (10, 246)),  # few positives: pad with negatives
        (10, 20, 256, 0.5, (10, 20)),  # not enough of either
        (1000, 5000, 128, 0.25, (32, 96)),  # RoI head: 25% foreground
        (0, 50, 128, 0.25, (0, 50)),
    ],
)
def test_sampling_counts(num_pos, num_neg, batch, frac, expected):
    n = num_pos + num_neg + 7
    pos = torch.zeros(n, dtype=torch.bool)
    neg = torch.zeros(n, dtype=torch.bool)
    pos[:num_pos] = True
    neg[num_pos : num_pos + num_neg] = True
    p, q = sample_balanced(pos, neg, batch, frac, generator=torch.Generator().manual_seed(0))
    assert (p.numel(), q.numel()) == expected
    assert pos[p].all() and neg[q].all()
    assert p.unique().numel() == p.numel() and q.unique().numel() == q.numel()


def test_rpn_loss_hand_computed():
    cfg = RPNConfig(batch_size_per_image=256)  # lambda 10, Nreg = locations, beta 1/9
    rpn = RegionProposalNetwork.from_config(8, 16, cfg, AnchorConfig(), channels=8)
    n = ANCHORS.shape[0]
    logits = torch.zeros(1, n)  # p = 0.5 everywhere: each sampled anchor costs ln 2
    deltas = torch.zeros(1, n, 4)
    losses = rpn.loss(ANCHORS, logits, deltas, [IMAGE], [GT], num_locations=6)
    torch.testing.assert_close(losses["rpn_cls"], torch.tensor(math.log(2)))

    def sl1(x: float, beta: float = 1 / 9) -> float:
        return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta

    # t* of the positives (Eq. 2), predictions are 0:
    # a0 -> A: (0, 0, 0, 0); a1 -> A: centre 32 vs 30, w 40: (-0.05, 0, 0, 0)
    # a6 -> B: centres (65, 20) vs (70, 10), w 40, h 40 vs 40x20: (0.125, -0.25, 0, log 0.5)
    # a8 -> B: centres (75, 20) vs (70, 10): (-0.125, -0.25, 0, log 0.5)
    per = [sl1(-0.05), sl1(0.125) + sl1(-0.25) + sl1(math.log(0.5)), sl1(-0.125) + sl1(-0.25) + sl1(math.log(0.5))]
    expected = 10.0 * sum(per) / 6  # lambda * sum / Nreg
    torch.testing.assert_close(losses["rpn_reg"], torch.tensor(expected))
    # the 'sampled' normaliser divides by the 6 sampled anchors instead
    rpn.reg_normalizer = "sampled"
    losses = rpn.loss(ANCHORS, logits, deltas, [IMAGE], [GT], num_locations=6)
    torch.testing.assert_close(losses["rpn_reg"], torch.tensor(10.0 * sum(per) / 6))


def test_rpn_loss_background_only_image():
    rpn = RegionProposalNetwork.from_config(8, 16, RPNConfig(), AnchorConfig(), channels=8)
    losses = rpn.loss(ANCHORS, torch.zeros(1, 9), torch.zeros(1, 9, 4), [IMAGE], [torch.zeros(0, 4)], 6)
    torch.testing.assert_close(losses["rpn_cls"], torch.tensor(math.log(2)))
    assert losses["rpn_reg"].item() == 0.0


def test_vgg_rpn_output_layers_hold_27648_weights():
    head = RPNHead(512, 512, 9)
    weights = head.cls_logits.weight.numel() + head.bbox_pred.weight.numel()
    assert weights == 512 * (2 + 4) * 9 == 27_648
    # initialised from N(0, 0.01), zero bias
    assert abs(head.bbox_pred.weight.std().item() - 0.01) < 0.001
    assert head.cls_logits.bias.abs().sum() == 0
    sig = RPNHead(256, 256, 9, objectness="sigmoid")
    assert sig.cls_logits.out_channels == 9 and sig.bbox_pred.out_channels == 36


def test_head_flatten_follows_anchor_order():
    head = RPNHead(4, 4, 3)
    n, k, h, w = 2, 3, 2, 5
    cls = torch.randn(n, 2 * k, h, w)
    reg = torch.randn(n, 4 * k, h, w)
    logits, deltas = head.flatten(cls, reg)
    assert logits.shape == (n, h * w * k) and deltas.shape == (n, h * w * k, 4)
    for y, x, a in [(0, 0, 0), (1, 3, 2), (0, 4, 1)]:
        idx = (y * w + x) * k + a
        # softmax layout: channel a = background score, channel k + a = object score
        torch.testing.assert_close(logits[1, idx], cls[1, k + a, y, x] - cls[1, a, y, x])
        torch.testing.assert_close(deltas[1, idx], reg[1, 4 * a : 4 * a + 4, y, x])
    # sigmoid(logit difference) is the softmax object probability
    p = torch.softmax(torch.stack([cls[0, 0, 0, 0], cls[0, k, 0, 0]]), 0)[1]
    torch.testing.assert_close(torch.sigmoid(logits[0, 0]), p)


def reference_proposals(anchors, logits, deltas, size, scale, cfg, pre_n, post_n):
    """The proposal layer written plainly: decode, clip, filter small, sort, top-N, greedy NMS, top-M."""
    boxes = BoxCoder().decode(deltas, anchors)
    h, w = size
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    cands = []
    for i in range(boxes.shape[0]):
        bw, bh = (boxes[i, 2] - boxes[i, 0]).item(), (boxes[i, 3] - boxes[i, 1]).item()
        if bw >= cfg.min_box_size * scale and bh >= cfg.min_box_size * scale:
            cands.append((logits[i].item(), i))
    cands.sort(key=lambda c: -c[0])
    cands = cands[:pre_n]
    kept: list[int] = []
    for _, i in cands:
        if all(box_iou(boxes[i][None], boxes[j][None]).item() <= cfg.nms_thresh for j in kept):
            kept.append(i)
        if len(kept) == post_n:
            break
    return boxes[kept], torch.sigmoid(logits[kept])


@pytest.mark.parametrize("training", [False, True])
def test_proposal_layer_counts_and_order(training):
    g = torch.Generator().manual_seed(0)
    n = 400
    centres = torch.rand(n, 2, generator=g) * 200
    sizes = torch.rand(n, 2, generator=g) * 60 + 4
    anchors = torch.cat([centres - sizes / 2, centres + sizes / 2], 1)
    logits = torch.randn(1, n, generator=g)
    deltas = torch.randn(1, n, 4, generator=g) * 0.2
    cfg = RPNConfig(pre_nms_top_n_test=150, post_nms_top_n_test=40, pre_nms_top_n_train=300, post_nms_top_n_train=80)
    layer = ProposalLayer.from_config(cfg, BoxCoder()).train(training)
    props, scores = layer(anchors, logits, deltas, [(180, 200)], [0.75])
    pre_n, post_n = (300, 80) if training else (150, 40)
    assert props[0].shape[0] <= post_n
    assert torch.all(scores[0][:-1] >= scores[0][1:])  # decreasing objectness
    ref_boxes, ref_scores = reference_proposals(anchors, logits[0], deltas[0], (180, 200), 0.75, cfg, pre_n, post_n)
    torch.testing.assert_close(props[0], ref_boxes)
    torch.testing.assert_close(scores[0], ref_scores)
    # every proposal inside the image, none smaller than 16 px x the scale, no pair over the NMS threshold
    p = props[0]
    assert (p[:, 0] >= 0).all() and (p[:, 2] <= 200).all() and (p[:, 3] <= 180).all()
    assert ((p[:, 2] - p[:, 0]) >= 12).all() and ((p[:, 3] - p[:, 1]) >= 12).all()
    iou = box_iou(p, p).fill_diagonal_(0)
    assert iou.max() <= cfg.nms_thresh


def test_proposal_layer_defaults_are_the_papers():
    cfg = RPNConfig()
    assert (cfg.pre_nms_top_n_train, cfg.post_nms_top_n_train) == (12000, 2000)
    assert (cfg.pre_nms_top_n_test, cfg.post_nms_top_n_test) == (6000, 300)
    assert cfg.nms_thresh == 0.7 and cfg.min_box_size == 16
    layer = ProposalLayer.from_config(cfg, BoxCoder())
    assert layer.train().counts() == (12000, 2000) and layer.eval().counts() == (6000, 300)


def test_proposals_carry_no_gradient():
    rpn = RegionProposalNetwork.from_config(8, 16, RPNConfig(), AnchorConfig(), channels=8)
    feats = torch.randn(1, 8, 25, 25, requires_grad=True)
    out = rpn(feats, [(400, 400)], [1.0], [torch.tensor([[100.0, 120, 260, 250]])])
    assert not out.proposals[0].requires_grad  # approximate joint training
    (out.losses["rpn_cls"] + out.losses["rpn_reg"]).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
