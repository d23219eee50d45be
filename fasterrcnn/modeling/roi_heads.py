"""The Fast R-CNN detector on top of the proposals (paper, Sec. 3.2; Fast R-CNN).

* Proposal targets (code): the ground-truth boxes are appended to the proposals; each RoI is
  matched to its highest-IoU ground truth; 128 RoIs are sampled per image, up to 25%
  foreground (IoU >= 0.5), the rest background (IoU in [0.1, 0.5)). Foreground RoIs get the
  matched box's class and regression targets (Eq. 2, divided by the stds 0.1, 0.1, 0.2, 0.2).
* RoI pooling projects each RoI onto the feature map (stride 16) and max-pools it into a fixed
  grid (7x7 for VGG-16, 6x6 for ZF); RoIAlign is the option.
* The box head (fc6, fc7: 2 x 4096 for VGG-16) feeds two siblings: `cls_score` over K+1
  classes (init N(0, 0.01)) and class-specific `bbox_pred` with 4(K+1) outputs (init
  N(0, 0.001)).
* Loss: log loss over the sampled RoIs + smooth L1 on the true class's deltas of foreground
  RoIs, normalised by the number of sampled RoIs.
* Post-processing (code): softmax, per-class decode, clip, score > 0.05, per-class NMS at IoU
  0.3, at most 100 detections per image; optionally box voting (`box_vote_thresh`, not the
  paper's: the kept boxes averaged with the overlapping candidates they suppressed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.modeling.clock import StageClock, no_clock
from fasterrcnn.modeling.losses import smooth_l1
from fasterrcnn.modeling.matcher import match_boxes, sample_balanced
from fasterrcnn.modeling.poolers import RoIPooler
from fasterrcnn.ops import BoxCoder, batched_nms, box_iou, clip_boxes_to_image

__all__ = [
    "FastRCNNPredictor",
    "RoIHeads",
    "RoISample",
    "RoISampling",
    "box_vote",
    "sample_proposal_targets",
    "select_detections",
]


@dataclass
class RoISample:
    """The RoIs of one image chosen for training and their targets."""

    rois: Tensor  # [R, 4]
    labels: Tensor  # [R] int64, 0 = background
    reg_targets: Tensor  # [R, 4] (zeros for background)
    num_fg: int


@dataclass(frozen=True)
class RoISampling:
    """The Fast R-CNN training rule for RoIs (the code's proposal_target_layer): ground truth
    appended to the proposals, foreground IoU >= 0.5, background IoU in [0.1, 0.5), 128 RoIs
    per image with at most 25% foreground. Frozen: a model's rule never changes under it."""

    batch_size_per_image: int = 128
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5
    bg_iou_thresh_hi: float = 0.5
    bg_iou_thresh_lo: float = 0.1
    add_gt_as_proposals: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> RoISampling:
        return cls(cfg.batch_size_per_image, cfg.positive_fraction, cfg.fg_iou_thresh, cfg.bg_iou_thresh_hi,
                   cfg.bg_iou_thresh_lo, cfg.add_gt_as_proposals)


def sample_proposal_targets(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    cfg: RoISampling | Any,
    box_coder: BoxCoder,
) -> RoISample:
    """The code's proposal_target_layer for one image (see the module docstring); `cfg` is a
    `RoISampling` (or any object with its fields, e.g. a `RoIHeadConfig`)."""
    if cfg.add_gt_as_proposals and gt_boxes.numel():
        proposals = torch.cat([proposals, gt_boxes.to(proposals.dtype)])
    iou = box_iou(gt_boxes, proposals, legacy_plus_one=box_coder.legacy_plus_one)
    match = match_boxes(
        iou,
        pos_thresh=cfg.fg_iou_thresh,
        pos_inclusive=True,
        neg_thresh_hi=cfg.bg_iou_thresh_hi,
        neg_thresh_lo=cfg.bg_iou_thresh_lo,
    )
    fg, bg = sample_balanced(match.positive, match.negative, cfg.batch_size_per_image, cfg.positive_fraction)
    keep = torch.cat([fg, bg])
    rois = proposals[keep]
    labels = torch.zeros(keep.numel(), dtype=torch.long, device=proposals.device)
    reg_targets = torch.zeros(keep.numel(), 4, dtype=torch.float32, device=proposals.device)
    if fg.numel():
        matched = match.matched_gt[fg]
        labels[: fg.numel()] = gt_labels[matched]
        reg_targets[: fg.numel()] = box_coder.encode(gt_boxes[matched], proposals[fg]).float()
    return RoISample(rois, labels, reg_targets, int(fg.numel()))


class FastRCNNPredictor(nn.Module):
    """Sibling output layers: `cls_score` (K+1 classes) and class-specific `bbox_pred` (4(K+1))."""

    def __init__(self, in_features: int, num_classes: int, cls_std: float = 0.01, bbox_std: float = 0.001) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=cls_std)
        nn.init.normal_(self.bbox_pred.weight, std=bbox_std)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class RoIHeads(nn.Module):
    """RoI pooling + box head + predictor, with training targets, loss and post-processing.

    Assembled from its parts: the `pooler` (`RoIPooler` for one map, `MultiScaleRoIPooler` for
    a pyramid), the `box_head` (features -> Tensor[R, D]), the `predictor` (`FastRCNNPredictor`)
    and the `box_coder`; the sampling rule, loss beta and post-processing settings are values."""

    def __init__(
        self,
        pooler: nn.Module,
        box_head: nn.Module,
        predictor: FastRCNNPredictor,
        box_coder: BoxCoder,
        *,
        sampling: RoISampling = RoISampling(),
        smooth_l1_beta: float = 1.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.3,
        detections_per_img: int = 100,
        box_vote_thresh: float | None = None,
    ) -> None:
        super().__init__()
        self.pooler = pooler
        self.box_head = box_head
        self.predictor = predictor
        self.box_coder = box_coder
        self.num_classes = predictor.cls_score.out_features - 1
        self.sampling = sampling
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.box_vote_thresh = detections_per_img, box_vote_thresh

    @classmethod
    def from_config(
        cls,
        box_head: nn.Module,
        head_features: int,
        num_classes: int,
        output_size: int,
        spatial_scale: float,
        cfg: Any,
        legacy_plus_one: bool = False,
        pooler: nn.Module | None = None,
    ) -> RoIHeads:
        """The parts from a `RoIHeadConfig` (values copied): a single-map pooler at
        `spatial_scale` unless `pooler` is given."""
        if pooler is None:
            pooler = RoIPooler(cfg.pooler, output_size, spatial_scale, cfg.sampling_ratio, cfg.aligned)
        predictor = FastRCNNPredictor(head_features, num_classes, cfg.cls_init_std, cfg.bbox_init_std)
        return cls(pooler, box_head, predictor, BoxCoder(cfg.bbox_reg_weights, legacy_plus_one=legacy_plus_one),
                   sampling=RoISampling.from_config(cfg), smooth_l1_beta=cfg.smooth_l1_beta,
                   score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh, detections_per_img=cfg.detections_per_img,
                   box_vote_thresh=cfg.box_vote_thresh)

    @property
    def output_size(self) -> int:
        return self.pooler.output_size

    def pool(self, features: Mapping[str, Tensor] | Tensor, rois: list[Tensor],
             image_sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
        """RoI pooling (or RoIAlign) of each image's RoIs: Tensor[sum R_i, C, p, p]."""
        return self.pooler(features, rois, image_sizes)

    def predict(self, features: Mapping[str, Tensor] | Tensor, rois: list[Tensor], clock: StageClock = no_clock,
                image_sizes: Sequence[tuple[int, int]] | None = None) -> tuple[Tensor, Tensor]:
        """Class logits [R, K+1] and class-specific deltas [R, 4(K+1)], in float32."""
        pool_input = getattr(self.box_head, "pool_input", None)
        if pool_input is not None:  # a head that transforms the whole map first (small's option)
            with clock("det_head"):
                features = ({k: pool_input(v) for k, v in features.items()} if isinstance(features, Mapping)
                            else pool_input(features))
        with clock("roi_pool"):
            pooled = self.pool(features, rois, image_sizes)
        with clock("det_head"):
            cls_logits, deltas = self.predictor(self.box_head(pooled).flatten(1))
            return cls_logits.float(), deltas.float()

    def forward(
        self,
        features: Mapping[str, Tensor] | Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
        clock: StageClock = no_clock,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training (targets given): sample RoIs and return ([], losses). Inference: return
        ([{"boxes", "labels", "scores"}] per image in network-input coordinates, {})."""
        if targets is not None:
            with clock("roi_targets"):
                samples = [
                    sample_proposal_targets(p, t["boxes"], t["labels"], self.sampling, self.box_coder)
                    for p, t in zip(proposals, targets)
                ]
            cls_logits, deltas = self.predict(features, [s.rois for s in samples], clock, image_sizes)
            with clock("det_loss"):
                return [], self.loss(cls_logits, deltas, samples)
        cls_logits, deltas = self.predict(features, proposals, clock, image_sizes)
        with clock("postprocess"):
            return self.postprocess(cls_logits, deltas, proposals, image_sizes), {}

    def loss(self, cls_logits: Tensor, deltas: Tensor, samples: list[RoISample]) -> dict[str, Tensor]:
        """`det_cls`: cross-entropy over sampled RoIs; `det_reg`: smooth L1 on the deltas of
        each foreground RoI's true class, summed and divided by the number of sampled RoIs."""
        labels = torch.cat([s.labels for s in samples])
        reg_targets = torch.cat([s.reg_targets for s in samples])
        num = max(labels.numel(), 1)
        det_cls = F.cross_entropy(cls_logits, labels, reduction="sum") / num
        fg = torch.where(labels > 0)[0]
        pred = deltas.view(-1, self.num_classes + 1, 4)[fg, labels[fg]]
        det_reg = smooth_l1(pred, reg_targets[fg], self.smooth_l1_beta).sum() / num
        return {"det_cls": det_cls, "det_reg": det_reg}

    @torch.no_grad()
    def postprocess(
        self,
        cls_logits: Tensor,
        deltas: Tensor,
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Softmax, per-class decode, clip, score threshold, per-class NMS, top detections."""
        legacy = self.box_coder.legacy_plus_one
        probs = F.softmax(cls_logits, dim=-1)
        counts = [p.shape[0] for p in proposals]
        boxes_all = self.box_coder.decode(deltas, torch.cat(proposals).float()).split(counts)
        results = []
        num_cls = self.num_classes + 1
        for boxes, scores, size in zip(boxes_all, probs.split(counts), image_sizes):
            boxes = clip_boxes_to_image(boxes.view(-1, num_cls, 4), size, legacy_plus_one=legacy)
            labels = torch.arange(num_cls, device=boxes.device).expand(boxes.shape[0], num_cls)
            # drop the background column, flatten (RoI, class) pairs
            boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
            one = 1.0 if legacy else 0.0
            keep = (scores > self.score_thresh) & (boxes[:, 2] - boxes[:, 0] + one > 1e-2) & (boxes[:, 3] - boxes[:, 1] + one > 1e-2)
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            results.append(select_detections(boxes, scores, labels, self.nms_thresh, self.detections_per_img,
                                             self.box_vote_thresh, legacy))
        return results


def select_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    nms_thresh: float,
    max_detections: int,
    box_vote_thresh: float | None = None,
    legacy_plus_one: bool = False,
) -> dict[str, Tensor]:
    """The detections of one image among its candidates: per-class NMS at `nms_thresh`, best
    first, at most `max_detections`; with `box_vote_thresh`, each kept box voted (`box_vote`)."""
    keep = batched_nms(boxes, scores, labels, nms_thresh, legacy_plus_one=legacy_plus_one)[:max_detections]
    kept = boxes[keep]
    if box_vote_thresh is not None:
        kept = box_vote(kept, labels[keep], boxes, scores, labels, box_vote_thresh, legacy_plus_one)
    return {"boxes": kept, "labels": labels[keep], "scores": scores[keep]}


def box_vote(
    kept: Tensor,
    kept_labels: Tensor,
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    thresh: float,
    legacy_plus_one: bool = False,
) -> Tensor:
    """Box voting (Gidaris & Komodakis 2015, Sec. 5; Detectron's TEST.BBOX_VOTE): each box kept
    by NMS is replaced by the score-weighted mean of the candidate `boxes` (before NMS) of its
    class that overlap it with IoU >= `thresh`; it is one of them (IoU exactly 1), so every
    weight sum is > 0.
    Scores and labels are unchanged. Tensor[D, 4] -> Tensor[D, 4]."""
    if kept.numel() == 0:
        return kept
    iou = box_iou(kept, boxes, legacy_plus_one=legacy_plus_one)  # [D, N]
    weights = scores.float() * ((iou >= thresh) & (kept_labels[:, None] == labels[None, :]))
    # an elementwise sum, not `weights @ boxes`: under bf16 autocast a matmul would round the
    # coordinates to bf16 (steps of 2-4 px at 256-1000 px)
    return (weights[:, :, None] * boxes.float()[None]).sum(1) / weights.sum(1, keepdim=True)
