"""Matching boxes to ground truth by IoU, and sampling a balanced mini-batch.

Both stages of Faster R-CNN label candidate boxes by their IoU with the ground truth and then
train on a fixed-size sample of them:

* RPN (paper, Sec. 3.1.2): an anchor is positive if it has the highest IoU with some
  ground-truth box (ties included) or an IoU higher than 0.7 with any ground-truth box;
  negative if its IoU is lower than 0.3 with every ground-truth box; everything else is
  ignored. 256 anchors are sampled per image with up to 1:1 positives to negatives.
* Fast R-CNN head (paper's code, from Fast R-CNN): an RoI is foreground if its IoU with a
  ground-truth box is >= 0.5 and background if it lies in [0.1, 0.5); 128 RoIs per image,
  up to 25% foreground.

`match_boxes` does the labelling for both (the thresholds and the inclusive/strict sides are
arguments), `sample_balanced` the sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["IGNORE", "NEGATIVE", "MatchResult", "match_boxes", "sample_balanced"]

NEGATIVE = -1  # matched_gt value of a negative (background) candidate
IGNORE = -2  # matched_gt value of a candidate that takes no part in training


@dataclass
class MatchResult:
    """`matched_gt[i]`: index of the ground-truth box candidate i is assigned to (>= 0,
    positive), or NEGATIVE, or IGNORE. `max_iou[i]`: its best IoU with any ground-truth box."""

    matched_gt: Tensor
    max_iou: Tensor

    @property
    def positive(self) -> Tensor:
        return self.matched_gt >= 0

    @property
    def negative(self) -> Tensor:
        return self.matched_gt == NEGATIVE


def match_boxes(
    iou: Tensor,
    *,
    pos_thresh: float,
    neg_thresh_hi: float,
    neg_thresh_lo: float = 0.0,
    pos_inclusive: bool = False,
    highest_iou_rule: bool = False,
    valid: Tensor | None = None,
) -> MatchResult:
    """Label candidates (columns of `iou`, Tensor[G, A]) against G ground-truth boxes (rows).

    * positive: best IoU > `pos_thresh` (>= when `pos_inclusive`), assigned to its best box;
    * negative: `neg_thresh_lo` <= best IoU < `neg_thresh_hi`;
    * ignored: everything else, and every candidate where `valid` is False (e.g. anchors
      crossing the image border).
    * `highest_iou_rule`: for each ground-truth box, every valid candidate whose IoU equals
      that box's highest IoU (ties included) is positive too, assigned to its own best box, as
      py-faster-rcnn's anchor_target_layer does. A box that overlaps no valid candidate at all
      (highest IoU 0) creates no positives.

    With G = 0 there is nothing to match: every valid candidate with IoU in the negative range
    (i.e. all of them, IoU 0, when `neg_thresh_lo` is 0) is negative.
    """
    if iou.dim() != 2:
        raise ValueError(f"iou must be Tensor[G, A], got {tuple(iou.shape)}")
    num_gt, num_cand = iou.shape
    device = iou.device
    if valid is None:
        valid = torch.ones(num_cand, dtype=torch.bool, device=device)
    if num_gt == 0:
        max_iou = torch.zeros(num_cand, dtype=iou.dtype, device=device)
        best_gt = torch.zeros(num_cand, dtype=torch.long, device=device)
    else:
        max_iou, best_gt = iou.max(dim=0)
    pos = (max_iou >= pos_thresh) if pos_inclusive else (max_iou > pos_thresh)
    neg = (max_iou < neg_thresh_hi) & (max_iou >= neg_thresh_lo)
    if highest_iou_rule and num_gt > 0 and num_cand > 0:
        masked = iou.masked_fill(~valid[None, :], -1.0)
        gt_best = masked.max(dim=1, keepdim=True).values  # [G, 1]
        is_best = (masked == gt_best) & (gt_best > 0)
        pos = pos | is_best.any(dim=0)
    matched = torch.full((num_cand,), IGNORE, dtype=torch.long, device=device)
    matched[neg & valid] = NEGATIVE
    pos = pos & valid
    matched[pos] = best_gt[pos]
    return MatchResult(matched, max_iou)


def sample_balanced(
    positive: Tensor,
    negative: Tensor,
    batch_size: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample up to `batch_size` candidates, at most `positive_fraction` of them positive, and
    fill the rest with negatives (paper: "If there are fewer than 128 positive samples in an
    image, we pad the mini-batch with negative ones").

    `positive`, `negative`: boolean masks over candidates. Returns the indices (int64) of the
    sampled positives and negatives, drawn uniformly without replacement (from `generator`,
    or torch's global RNG so that a seeded run is reproducible).
    """
    pos_idx = torch.where(positive)[0]
    neg_idx = torch.where(negative)[0]
    num_pos = min(int(batch_size * positive_fraction), pos_idx.numel())
    num_neg = min(batch_size - num_pos, neg_idx.numel())
    device = positive.device
    perm_pos = torch.randperm(pos_idx.numel(), generator=generator, device="cpu")[:num_pos].to(device)
    perm_neg = torch.randperm(neg_idx.numel(), generator=generator, device="cpu")[:num_neg].to(device)
    return pos_idx[perm_pos], neg_idx[perm_neg]
