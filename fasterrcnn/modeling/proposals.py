"""The proposal layer: from RPN outputs to a few hundred object proposals (paper, Sec. 3.3).

For each image: apply the predicted deltas to every anchor (Eq. 2 inverted), clip the boxes
to the image, drop boxes smaller than 16 pixels in the input image (the code's
RPN_MIN_SIZE, multiplied by the resize scale), keep the top-N by objectness score, run NMS at
IoU 0.7, and keep the top-M: N/M = 12000/2000 in training, 6000/300 at test time (code).
"Our ablation experiments show that NMS does not harm the ultimate detection accuracy, but
substantially reduces the number of proposals."

With a feature pyramid (FPN, Lin et al. 2017, Sec. 4.1) the top-N is taken per level, and
the NMS runs per level (one batched call, the level index as the category), as torchvision
and detectron2 do; with one level this is the paper's layer exactly. `filter_before_topk`
chooses where the small boxes go: before the top-N (the paper's code) or after it (torchvision,
whose minimum size is 1e-3 px in network coordinates).

The proposals are returned detached: approximate joint training ignores the gradient with
respect to the proposal coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fasterrcnn.ops import BoxCoder, batched_nms, clip_boxes_to_image, nms

__all__ = ["ProposalLayer"]


class ProposalLayer(nn.Module):
    """Turns anchors + objectness logits + deltas into proposals and their scores.

    pre_nms_top_n / post_nms_top_n: {"training": N, "testing": N}, per level / per image;
    min_size: the smallest proposal side kept, in input-image pixels when `scale_min_size`
    (multiplied by each image's resize scale: the paper's code) or in network pixels;
    score_thresh: proposals with a lower probability are dropped (torchvision: 0)."""

    def __init__(
        self,
        box_coder: BoxCoder,
        *,
        pre_nms_top_n: dict[str, int],
        post_nms_top_n: dict[str, int],
        nms_thresh: float = 0.7,
        min_size: float = 16.0,
        scale_min_size: bool = True,
        filter_before_topk: bool = True,
        score_thresh: float = 0.0,
    ) -> None:
        super().__init__()
        self.box_coder = box_coder
        self.pre_nms_top_n = dict(pre_nms_top_n)
        self.post_nms_top_n = dict(post_nms_top_n)
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.scale_min_size = scale_min_size
        self.filter_before_topk = filter_before_topk
        self.score_thresh = score_thresh

    @classmethod
    def from_config(cls, cfg: Any, box_coder: BoxCoder) -> ProposalLayer:
        """From an `RPNConfig` (the values are copied: the layer keeps no config)."""
        return cls(
            box_coder,
            pre_nms_top_n={"training": cfg.pre_nms_top_n_train, "testing": cfg.pre_nms_top_n_test},
            post_nms_top_n={"training": cfg.post_nms_top_n_train, "testing": cfg.post_nms_top_n_test},
            nms_thresh=cfg.nms_thresh,
            min_size=cfg.min_box_size,
            scale_min_size=cfg.scale_min_box_size,
            filter_before_topk=cfg.filter_before_topk,
            score_thresh=cfg.proposal_score_thresh,
        )

    def counts(self) -> tuple[int, int]:
        """(top-N before NMS, top-M after NMS) for the current mode."""
        mode = "training" if self.training else "testing"
        return self.pre_nms_top_n[mode], self.post_nms_top_n[mode]

    @torch.no_grad()
    def forward(
        self,
        anchors: Tensor,
        objectness: Tensor,
        deltas: Tensor,
        image_sizes: list[tuple[int, int]],
        scales: list[float],
        post_n: int | None = None,
        level_counts: Sequence[int] | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        anchors: Tensor[A, 4] (the same for every image of the padded batch; all levels, in
        level order); objectness: Tensor[N, A] logits (fg - bg for softmax, the sigmoid logit
        otherwise); deltas: Tensor[N, A, 4]; image_sizes: the (h, w) of each image inside the
        padded batch; scales: each image's resize scale (network pixels per input-image pixel);
        post_n: keep this many after NMS instead of the mode's top-M; level_counts: anchors
        per level (default: one level).
        Returns per image: proposals Tensor[P, 4] (float32, P <= top-M) sorted by decreasing
        score, and their scores Tensor[P] (probabilities).
        """
        pre_n, default_post_n = self.counts()
        post_n = default_post_n if post_n is None else post_n
        counts = list(level_counts) if level_counts is not None else [anchors.shape[0]]
        levels = torch.repeat_interleave(torch.arange(len(counts), device=anchors.device),
                                         torch.as_tensor(counts, device=anchors.device))
        all_boxes = self.box_coder.decode(deltas.reshape(-1, 4).float(), anchors.repeat(deltas.shape[0], 1))
        all_boxes = all_boxes.view(deltas.shape[0], -1, 4)
        proposals, scores = [], []
        for i, (size, scale) in enumerate(zip(image_sizes, scales)):
            boxes = clip_boxes_to_image(all_boxes[i], size, legacy_plus_one=self.box_coder.legacy_plus_one)
            keep_boxes, keep_scores = self._one_image(boxes, objectness[i].float(), levels, counts, scale, pre_n, post_n)
            proposals.append(keep_boxes)
            scores.append(keep_scores)
        return proposals, scores

    def _small(self, boxes: Tensor, scale: float) -> Tensor:
        one = 1.0 if self.box_coder.legacy_plus_one else 0.0
        min_size = self.min_size * scale if self.scale_min_size else self.min_size
        return (boxes[:, 2] - boxes[:, 0] + one < min_size) | (boxes[:, 3] - boxes[:, 1] + one < min_size)

    def _one_image(
        self, boxes: Tensor, logits: Tensor, levels: Tensor, counts: list[int], scale: float, pre_n: int, post_n: int
    ) -> tuple[Tensor, Tensor]:
        if self.filter_before_topk:
            logits = logits.masked_fill(self._small(boxes, scale), float("-inf"))
        idx = self._top_per_level(logits, counts, pre_n, skip_masked=self.filter_before_topk)
        boxes, logits, levels = boxes[idx], logits[idx], levels[idx]
        if not self.filter_before_topk:
            keep = ~self._small(boxes, scale) & (torch.sigmoid(logits) >= self.score_thresh)
            boxes, logits, levels = boxes[keep], logits[keep], levels[keep]
        legacy = self.box_coder.legacy_plus_one
        if len(counts) == 1:
            keep = nms(boxes, logits, self.nms_thresh, max_keep=post_n, legacy_plus_one=legacy)
        else:
            keep = batched_nms(boxes, logits, levels, self.nms_thresh, max_keep=post_n, legacy_plus_one=legacy)
        return boxes[keep], torch.sigmoid(logits[keep])

    @staticmethod
    def _top_per_level(logits: Tensor, counts: list[int], pre_n: int, skip_masked: bool) -> Tensor:
        """Indices of each level's top-`pre_n` logits (sorted within a level), levels in order;
        masked (-inf) entries are not taken when `skip_masked`."""
        out, start = [], 0
        for n in counts:
            level = logits[start:start + n]
            k = min(pre_n, int(torch.isfinite(level).sum()) if skip_masked else n)
            out.append(level.topk(k, sorted=True).indices + start)
            start += n
        return out[0] if len(out) == 1 else torch.cat(out)
