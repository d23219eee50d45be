"""The Region Proposal Network (paper, Sec. 3.1): head, anchor targets, loss, assembly.

"An RPN takes an image (of any size) as input and outputs a set of rectangular object
proposals, each with an objectness score." It slides a small network over the shared
feature map: a 3x3 conv (512-d for VGG-16, 256-d for ZF) + ReLU, then two sibling 1x1 convs,
`cls` with 2k scores (softmax over object / not object; a k-logit sigmoid variant is an
option) and `reg` with 4k box deltas, for the k anchors of each position.

Training (Sec. 3.1.2): anchors are labelled by IoU (see `matcher.match_boxes`), 256 are
sampled per image (<= 1:1), and the loss is

    L = (1/Ncls) sum_i Lcls(p_i, p*_i) + lambda (1/Nreg) sum_i p*_i Lreg(t_i, t*_i)

with Ncls = 256 (the sampled anchors), Nreg = the number of anchor locations (~2,400) and
lambda = 10, so both terms weigh about equally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.anchors import AnchorGenerator, MultiLevelAnchors, anchors_inside
from fasterrcnn.modeling.clock import StageClock, no_clock
from fasterrcnn.modeling.losses import smooth_l1
from fasterrcnn.modeling.matcher import match_boxes, sample_balanced
from fasterrcnn.modeling.proposals import ProposalLayer
from fasterrcnn.ops import BoxCoder, box_iou

__all__ = ["AnchorSampling", "RPNHead", "RPNOutput", "RegionProposalNetwork", "rpn_anchor_targets"]


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then sibling 1x1 convs for objectness and box deltas (Fig. 3, left).

    Output layouts (the paper code's, at every position (y, x)):
    * softmax: `cls_logits` has 2k channels, [k background scores, k object scores];
    * sigmoid: k channels, one logit per anchor;
    * `bbox_pred` has 4k channels, anchor-major: channel 4a + c is coordinate c of anchor a.
    For VGG-16 the two output layers hold 512 x (2 + 4) x 9 = 27,648 weights (paper: "2.8 x
    10^4 parameters"). New layers are initialised from N(0, 0.01) with zero bias (Sec. 3.1.3).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_anchors: int,
        objectness: str = "softmax",
        init_std: float = 0.01,
        num_convs: int = 1,
    ) -> None:
        super().__init__()
        if objectness not in ("softmax", "sigmoid"):
            raise ValueError(f"objectness must be 'softmax' or 'sigmoid', got {objectness!r}")
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.num_anchors = num_anchors
        self.objectness = objectness
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        # more 3x3 conv + ReLU layers (torchvision's v2 RPN head has two); the paper's has one
        self.more_convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(num_convs - 1))
        self.cls_logits = nn.Conv2d(channels, num_anchors * (2 if objectness == "softmax" else 1), 1)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 1)
        for layer in (self.conv, *self.more_convs, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=init_std)
            nn.init.zeros_(layer.bias)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features [N, C, H, W] -> (cls logits [N, 2k or k, H, W], deltas [N, 4k, H, W])."""
        t = F.relu(self.conv(features))
        for conv in self.more_convs:
            t = F.relu(conv(t))
        return self.cls_logits(t), self.bbox_pred(t)

    def flatten(self, cls_logits: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
        """Per-anchor outputs in the anchor order (y, x, a) of `anchors.grid_anchors`:
        objectness logits Tensor[N, H*W*k] (for softmax, the logit difference object - background,
        whose sigmoid is exactly the softmax object probability) and deltas Tensor[N, H*W*k, 4],
        both float32."""
        n, _, h, w = deltas.shape
        k = self.num_anchors
        if self.objectness == "softmax":
            pair = cls_logits.view(n, 2, k, h, w).permute(0, 3, 4, 2, 1).float()
            logits = (pair[..., 1] - pair[..., 0]).reshape(n, -1)
        else:
            logits = cls_logits.permute(0, 2, 3, 1).reshape(n, -1).float()
        flat_deltas = deltas.view(n, k, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4).float()
        return logits, flat_deltas


@dataclass
class AnchorTargets:
    """Sampled anchors of one image: indices, binary labels, regression targets of positives."""

    sampled: Tensor  # int64 indices into the anchors (positives first)
    labels: Tensor  # float 1/0 for each sampled anchor
    pos: Tensor  # int64 indices of the positive anchors
    reg_targets: Tensor  # [num_pos, 4]


@dataclass(frozen=True)
class AnchorSampling:
    """The RPN's training rule for anchors (Sec. 3.1.2): labelling thresholds, the border
    rule, and the balanced sample of each image. Frozen: a model's rule never changes under it."""

    pos_iou_thresh: float = 0.7
    neg_iou_thresh: float = 0.3
    highest_iou_rule: bool = True
    allowed_border: float = 0.0
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5

    @classmethod
    def from_config(cls, cfg: Any) -> AnchorSampling:
        return cls(cfg.pos_iou_thresh, cfg.neg_iou_thresh, cfg.highest_iou_rule, cfg.allowed_border,
                   cfg.batch_size_per_image, cfg.positive_fraction)


def rpn_anchor_targets(
    anchors: Tensor,
    gt_boxes: Tensor,
    image_size: tuple[int, int],
    cfg: AnchorSampling | Any,
    box_coder: BoxCoder,
) -> AnchorTargets:
    """Label, sample and encode the anchors of one image (Sec. 3.1.2 and the code's
    anchor_target_layer): anchors crossing the image border are ignored; of the rest,
    positives are IoU > 0.7 or the highest IoU of a gt box (ties included), negatives IoU < 0.3;
    `cfg.batch_size_per_image` are sampled with at most `cfg.positive_fraction` positives.
    `cfg` is an `AnchorSampling` (or any object with its fields, e.g. an `RPNConfig`)."""
    inside = anchors_inside(anchors, image_size, cfg.allowed_border)
    inside_idx = torch.where(inside)[0]
    inside_anchors = anchors[inside_idx]
    iou = box_iou(gt_boxes, inside_anchors, legacy_plus_one=box_coder.legacy_plus_one)
    match = match_boxes(
        iou,
        pos_thresh=cfg.pos_iou_thresh,
        neg_thresh_hi=cfg.neg_iou_thresh,
        highest_iou_rule=cfg.highest_iou_rule,
    )
    pos, neg = sample_balanced(match.positive, match.negative, cfg.batch_size_per_image, cfg.positive_fraction)
    reg_targets = box_coder.encode(gt_boxes[match.matched_gt[pos]], inside_anchors[pos])
    sampled = torch.cat([inside_idx[pos], inside_idx[neg]])
    labels = torch.cat([torch.ones(pos.numel()), torch.zeros(neg.numel())]).to(anchors.device)
    return AnchorTargets(sampled, labels, inside_idx[pos], reg_targets.float())


@dataclass
class RPNOutput:
    """What the RPN returns: per-image proposals and scores (network-input coordinates) and,
    in training, its two losses."""

    proposals: list[Tensor]
    scores: list[Tensor]
    losses: dict[str, Tensor]


class RegionProposalNetwork(nn.Module):
    """Anchors + RPN head + proposal layer (+ targets and loss in training).

    Assembled from its parts: `anchor_generator` (a `MultiLevelAnchors`: one level for the
    paper's single stride-16 map, several for a feature pyramid, the head shared by all),
    `head` (`RPNHead`), `proposal_layer`, the `box_coder`, the anchor `sampling` rule and the
    loss's lambda, normaliser and smooth L1 beta (Eq. 1)."""

    def __init__(
        self,
        anchor_generator: MultiLevelAnchors,
        head: RPNHead,
        proposal_layer: ProposalLayer,
        box_coder: BoxCoder,
        *,
        sampling: AnchorSampling = AnchorSampling(),
        loss_lambda: float = 10.0,
        reg_normalizer: str = "locations",
        smooth_l1_beta: float = 1.0 / 9.0,
    ) -> None:
        super().__init__()
        if reg_normalizer not in ("locations", "sampled"):
            raise ValueError(f"reg_normalizer must be 'locations' or 'sampled', got {reg_normalizer!r}")
        self.anchor_generator = anchor_generator
        self.head = head
        self.proposal_layer = proposal_layer
        self.box_coder = box_coder
        self.sampling = sampling
        self.loss_lambda = loss_lambda
        self.reg_normalizer = reg_normalizer
        self.smooth_l1_beta = smooth_l1_beta

    @classmethod
    def from_config(
        cls,
        in_channels: int,
        stride: int | Sequence[int],
        cfg: Any,
        anchor_cfg: Any,
        channels: int,
        legacy_plus_one: bool = False,
    ) -> RegionProposalNetwork:
        """The parts from an `RPNConfig` and an `AnchorConfig` (values copied): the paper's
        anchors (scales x stride) on each level of `stride`, or `anchor_cfg.sizes` per level."""
        strides = [stride] if isinstance(stride, int) else list(stride)
        if anchor_cfg.sizes is not None:
            if len(anchor_cfg.sizes) != len(strides):
                raise ValueError(f"anchors.sizes has {len(anchor_cfg.sizes)} levels but the backbone has {len(strides)}")
            anchors = MultiLevelAnchors.centred(strides, anchor_cfg.sizes, [anchor_cfg.ratios] * len(strides),
                                                anchor_cfg.stride_rule)
        else:
            anchors = MultiLevelAnchors([AnchorGenerator(s, anchor_cfg.ratios, anchor_cfg.scales) for s in strides],
                                        anchor_cfg.stride_rule)
        head = RPNHead(in_channels, channels, anchors.num_anchors, cfg.objectness, cfg.init_std, num_convs=cfg.head_convs)
        box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0), legacy_plus_one=legacy_plus_one)
        return cls(anchors, head, ProposalLayer.from_config(cfg, box_coder), box_coder,
                   sampling=AnchorSampling.from_config(cfg), loss_lambda=cfg.loss_lambda,
                   reg_normalizer=cfg.reg_normalizer, smooth_l1_beta=cfg.smooth_l1_beta)

    def forward(
        self,
        features: Mapping[str, Tensor] | Tensor,
        image_sizes: list[tuple[int, int]],
        scales: list[float],
        gt_boxes: list[Tensor] | None = None,
        num_proposals: int | None = None,
        clock: StageClock = no_clock,
        input_size: tuple[int, int] | None = None,
    ) -> RPNOutput:
        """Proposals for each image (and the losses when `gt_boxes` are given); with
        `num_proposals`, that many are kept after NMS instead of the configured top-M.
        `features`: the backbone's levels (a mapping, in level order) or one map;
        `input_size`: the padded batch's (H, W) (the anchors' "input" stride rule needs it)."""
        maps = list(features.values()) if isinstance(features, Mapping) else [features]
        if len(maps) > len(self.anchor_generator.levels):  # e.g. an FPN's extra level, pooled only
            maps = maps[: len(self.anchor_generator.levels)]
        with clock("rpn_head"):
            outs = [self.head.flatten(*self.head(m)) for m in maps]
            logits = outs[0][0] if len(outs) == 1 else torch.cat([o[0] for o in outs], dim=1)
            flat_deltas = outs[0][1] if len(outs) == 1 else torch.cat([o[1] for o in outs], dim=1)
            anchors, counts = self.anchor_generator([tuple(m.shape[-2:]) for m in maps], input_size=input_size)
        with clock("proposals"):
            proposals, scores = self.proposal_layer(
                anchors, logits.detach(), flat_deltas.detach(), image_sizes, scales, post_n=num_proposals,
                level_counts=counts,
            )
        losses: dict[str, Tensor] = {}
        if gt_boxes is not None:
            with clock("rpn_loss"):
                num_locations = sum(m.shape[-2] * m.shape[-1] for m in maps)
                losses = self.loss(anchors, logits, flat_deltas, image_sizes, gt_boxes, num_locations)
        return RPNOutput(proposals, scores, losses)

    def loss(
        self,
        anchors: Tensor,
        logits: Tensor,
        deltas: Tensor,
        image_sizes: list[tuple[int, int]],
        gt_boxes: list[Tensor],
        num_locations: int,
    ) -> dict[str, Tensor]:
        """Eq. (1): `rpn_cls` = mean log loss over the sampled anchors (1/Ncls); `rpn_reg` =
        lambda * sum of smooth L1 over positives / Nreg (anchor locations, or sampled anchors
        with `reg_normalizer='sampled'`)."""
        cls_terms, cls_labels, reg_pred, reg_true = [], [], [], []
        for i, (size, gt) in enumerate(zip(image_sizes, gt_boxes)):
            t = rpn_anchor_targets(anchors, gt, size, self.sampling, self.box_coder)
            cls_terms.append(logits[i, t.sampled])
            cls_labels.append(t.labels)
            reg_pred.append(deltas[i, t.pos])
            reg_true.append(t.reg_targets)
        cls_logits = torch.cat(cls_terms)
        labels = torch.cat(cls_labels)
        num_sampled = max(labels.numel(), 1)
        rpn_cls = F.binary_cross_entropy_with_logits(cls_logits, labels, reduction="sum") / num_sampled
        reg = smooth_l1(torch.cat(reg_pred), torch.cat(reg_true), self.smooth_l1_beta).sum()
        n_reg = num_locations * len(gt_boxes) if self.reg_normalizer == "locations" else num_sampled
        rpn_reg = self.loss_lambda * reg / n_reg
        return {"rpn_cls": rpn_cls, "rpn_reg": rpn_reg}
