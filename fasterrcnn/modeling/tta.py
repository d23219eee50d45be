"""Test-time augmentation by horizontal flipping (not in the paper; detectron2's TEST.AUG.FLIP).

`FlipTTA(model)` runs the detector on each image and on its mirror image, maps the mirror's
boxes back, and merges the two detection sets per class with the detector's own
post-processing rules: NMS at `roi_heads.nms_thresh` (0.3), box voting when
`roi_heads.box_vote_thresh` is set, at most `roi_heads.detections_per_img` detections. It
costs a second forward pass. The call is the model's: `FlipTTA(model)(images)` ->
[{"boxes", "labels", "scores"}] per image in the input images' coordinates; with
`return_proposals=True` the proposals are those of the unflipped image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from fasterrcnn.modeling.roi_heads import select_detections
from fasterrcnn.modeling.transform import check_images
from fasterrcnn.ops import hflip_boxes

__all__ = ["FlipTTA", "merge_detections"]


def merge_detections(
    parts: Sequence[dict[str, Tensor]],
    nms_thresh: float,
    max_detections: int,
    box_vote_thresh: float | None = None,
    legacy_plus_one: bool = False,
) -> dict[str, Tensor]:
    """Pool several detection sets of one image (same coordinates) and keep, per class, the
    boxes that survive NMS at `nms_thresh`, best first, at most `max_detections`; with
    `box_vote_thresh`, each kept box is voted with the pooled boxes it overlaps."""
    boxes = torch.cat([p["boxes"].float() for p in parts])
    scores = torch.cat([p["scores"].float() for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    return select_detections(boxes, scores, labels, nms_thresh, max_detections, box_vote_thresh, legacy_plus_one)


class FlipTTA(nn.Module):
    """A detector evaluated on each image and its horizontal mirror, detections merged."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def config(self) -> Any:
        return self.model.config

    def train(self, mode: bool = True) -> FlipTTA:
        if mode:
            raise RuntimeError("FlipTTA is for inference: train the wrapped model itself")
        return super().train(False)  # (puts the wrapped model in eval mode too)

    @torch.no_grad()
    def forward(self, images: Sequence[Tensor] | Tensor, **kwargs: Any) -> list[dict[str, Tensor]]:
        if self.model.training:
            raise RuntimeError("FlipTTA needs the model in eval mode (model.eval())")
        images = check_images(images)
        plain = self.model(images, **kwargs)
        mirrored = self.model([img.flip(-1) for img in images])
        h = self.model.roi_heads
        legacy = h.box_coder.legacy_plus_one
        results = []
        for img, a, b in zip(images, plain, mirrored):
            b = {**b, "boxes": hflip_boxes(b["boxes"].float(), img.shape[-1], legacy_plus_one=legacy)}
            merged = merge_detections([a, b], h.nms_thresh, h.detections_per_img, h.box_vote_thresh, legacy)
            results.append({**a, **merged})
        return results
