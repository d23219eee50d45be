"""Running a model over a data set: detections (and RPN proposals) in original image coordinates.

The data pipeline may already have resized each image (in its workers); the model returns
boxes in the coordinates of the image it was given, and this loop maps them back to the
image file's own size (`target["orig_size"]`), where the ground truth lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from fasterrcnn.engine.precision import autocast


@dataclass
class Predictions:
    """Per-image results in original image coordinates (CPU tensors)."""

    detections: list[dict[str, Any]] = field(default_factory=list)  # image_id, boxes, labels, scores
    proposals: list[dict[str, Any]] = field(default_factory=list)  # image_id, boxes, scores (if asked)
    seconds: float = 0.0
    num_images: int = 0


def to_original(boxes: Tensor, image: Tensor, orig_size: tuple[int, int]) -> Tensor:
    """Boxes in the coordinates of `image` (as the loader gave it) -> the original file's pixels."""
    h, w = image.shape[-2:]
    h0, w0 = orig_size
    s = torch.tensor([w0 / w, h0 / h, w0 / w, h0 / h], dtype=boxes.dtype, device=boxes.device)
    return boxes * s


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Any,
    device: torch.device,
    precision: str = "fp32",
    num_proposals: int | None = None,
    progress: bool = True,
    desc: str = "predict",
) -> Predictions:
    """Run `model` (eval mode) on every batch of `loader` ((images, targets) batches).

    With `num_proposals`, the RPN's top proposals (up to that many) are returned too, for
    proposal recall; the detector still sees only its configured top-M (the first M of them:
    NMS with an early stop returns a prefix of the longer run).
    """
    import time

    model.eval()
    out = Predictions()
    start = time.perf_counter()
    for images, targets in tqdm(loader, desc=desc, disable=not progress, leave=False, unit="batch"):
        with autocast(device, precision):
            results = model([img.to(device) for img in images], return_proposals=num_proposals is not None, num_proposals=num_proposals)
        for img, tgt, res in zip(images, targets, results):
            orig = tuple(tgt["orig_size"])
            out.detections.append(
                {
                    "image_id": tgt["image_id"],
                    "boxes": to_original(res["boxes"].float().cpu(), img, orig),
                    "labels": res["labels"].cpu(),
                    "scores": res["scores"].float().cpu(),
                }
            )
            if num_proposals is not None:
                out.proposals.append(
                    {
                        "image_id": tgt["image_id"],
                        "boxes": to_original(res["proposals"].float().cpu(), img, orig),
                        "scores": res["proposal_scores"].float().cpu(),
                    }
                )
        out.num_images += len(images)
    out.seconds = time.perf_counter() - start
    return out
