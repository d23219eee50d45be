"""The proposal layer: from RPN outputs to a few hundred object proposals (paper, Sec. 3.3).

For each image: apply the predicted deltas to every anchor (Eq. 2 inverted), clip the boxes
to the image, drop boxes smaller than 16 pixels in the input image (the code's
RPN_MIN_SIZE, multiplied by the resize scale), keep the top-N by objectness score, run NMS at
IoU 0.7, and keep the top-M: N/M = 12000/2000 in training, 6000/300 at test time (code).
"Our ablation experiments show that NMS does not harm the ultimate detection accuracy, but
substantially reduces the number of proposals."

The proposals are returned detached: approximate joint training ignores the gradient with
respect to the proposal coordinates.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fasterrcnn.modeling.config import RPNConfig
from fasterrcnn.ops import BoxCoder, clip_boxes_to_image, nms

__all__ = ["ProposalLayer"]


class ProposalLayer(nn.Module):
    """Turns anchors + objectness logits + deltas into proposals and their scores."""

    def __init__(self, cfg: RPNConfig, box_coder: BoxCoder) -> None:
        super().__init__()
        self.cfg = cfg
        self.box_coder = box_coder

    def counts(self) -> tuple[int, int]:
        """(top-N before NMS, top-M after NMS) for the current mode."""
        if self.training:
            return self.cfg.pre_nms_top_n_train, self.cfg.post_nms_top_n_train
        return self.cfg.pre_nms_top_n_test, self.cfg.post_nms_top_n_test

    @torch.no_grad()
    def forward(
        self,
        anchors: Tensor,
        objectness: Tensor,
        deltas: Tensor,
        image_sizes: list[tuple[int, int]],
        scales: list[float],
        post_n: int | None = None,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """
        anchors: Tensor[A, 4] (the same for every image of the padded batch);
        objectness: Tensor[N, A] logits (fg - bg for softmax, the sigmoid logit otherwise);
        deltas: Tensor[N, A, 4]; image_sizes: the (h, w) of each image inside the padded batch;
        scales: each image's resize scale (network pixels per input-image pixel);
        post_n: keep this many after NMS instead of the mode's top-M.
        Returns per image: proposals Tensor[P, 4] (float32, P <= top-M) sorted by decreasing
        score, and their scores Tensor[P] (probabilities).
        """
        pre_n, default_post_n = self.counts()
        post_n = default_post_n if post_n is None else post_n
        legacy = self.box_coder.legacy_plus_one
        one = 1.0 if legacy else 0.0
        all_boxes = self.box_coder.decode(deltas.reshape(-1, 4).float(), anchors.repeat(deltas.shape[0], 1))
        all_boxes = all_boxes.view(deltas.shape[0], -1, 4)
        proposals, scores = [], []
        for i, (size, scale) in enumerate(zip(image_sizes, scales)):
            boxes = clip_boxes_to_image(all_boxes[i], size, legacy_plus_one=legacy)
            logits = objectness[i].float()
            min_size = self.cfg.min_box_size * scale
            ws = boxes[:, 2] - boxes[:, 0] + one
            hs = boxes[:, 3] - boxes[:, 1] + one
            small = (ws < min_size) | (hs < min_size)
            logits = logits.masked_fill(small, float("-inf"))
            k = min(pre_n, int((~small).sum()))
            top_logits, top_idx = logits.topk(k, sorted=True)
            top_boxes = boxes[top_idx]
            keep = nms(top_boxes, top_logits, self.cfg.nms_thresh, max_keep=post_n, legacy_plus_one=legacy)
            proposals.append(top_boxes[keep])
            scores.append(torch.sigmoid(top_logits[keep]))
        return proposals, scores
