"""External proposals for the detector: Selective Search, cached, in training and at test time.

Sec. 4.1 (Tables 2 and 3) compares Fast R-CNN trained and tested on Selective Search's 2,000
proposals per image with the same network on the RPN's 300. The detector takes given
proposals through `FasterRCNN.forward(images, proposals=...)` (the "detector" stage of the
4-step schedule in training; in eval mode the given boxes replace the RPN's); here they come
from OpenCV's Selective Search (fast mode, `fasterrcnn.explain.timing.selective_search`).

Selective Search costs about a second per image on a CPU, so its boxes are computed once per
image content and kept on disk (`SelectiveSearchCache`): the images are keyed by a hash of
their pixels as the data pipeline delivers them (resized, maybe mirrored), so the training
loop's and the evaluation's images find their boxes without knowing which file they came from.
A mirrored image (the flip augmentation) reuses its original's boxes, mirrored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fasterrcnn.errors import ConfigError

__all__ = ["SS_PROPOSALS", "SelectiveSearchCache", "WithProposals", "train_on_proposals"]

SS_PROPOSALS = 2000  # Sec. 4.1: "SS ... 2000 proposals"
_INSTALL = 'OpenCV\'s contrib modules (cv2.ximgproc) are not installed: pip install "fasterrcnn[explain]"'


def image_key(image: Tensor) -> str:
    """A hash of the image's pixels as 8-bit values (what Selective Search sees) and its size."""
    pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return hashlib.sha1(str(tuple(pixels.shape)).encode() + pixels.numpy().tobytes()).hexdigest()


def mirror_boxes(boxes: Tensor, width: int) -> Tensor:
    """Boxes of an image mirrored left-right (x1, y1, x2, y2), continuous convention."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


class SelectiveSearchCache:
    """Selective Search boxes (the first `limit`) per image content, computed on first use and
    kept in the file `path` (written by `save`, atomically). Called like a proposal source:
    `cache(images) -> [Tensor[P, 4] per image]` in each image's pixels."""

    def __init__(self, path: str | Path, limit: int = SS_PROPOSALS, log: Callable[[str], None] = print) -> None:
        from fasterrcnn.explain.timing import selective_search

        self.path = Path(path)
        self.limit = limit
        self.log = log
        self._search = selective_search
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty = False
        if self.path.is_file():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved.get("limit") == limit:
                self._entries = dict(saved["entries"])

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, images: Sequence[Tensor]) -> list[Tensor]:
        return [self._boxes(img).to(img.device) for img in images]

    def seconds_of(self, image: Tensor) -> float:
        """The seconds Selective Search took on this image (or on its mirror image)."""
        entry = self._entries.get(image_key(image)) or self._entries.get(image_key(image.flip(-1)))
        if entry is None:
            self._boxes(image)
            return self.seconds_of(image)
        return float(entry["seconds"])

    def _boxes(self, image: Tensor) -> Tensor:
        key = image_key(image)
        entry = self._entries.get(key)
        if entry is not None:
            return entry["boxes"]
        mirrored = self._entries.get(image_key(image.flip(-1)))
        if mirrored is not None:
            return mirror_boxes(mirrored["boxes"], image.shape[-1])
        found = self._search(image.detach().float().cpu(), self.limit)
        if found is None:
            raise ConfigError(f"Selective Search is needed (the proposals and recall experiments), but {_INSTALL}")
        boxes, seconds = found
        self._entries[key] = {"boxes": boxes.contiguous(), "seconds": float(seconds)}
        self._dirty = True
        return boxes

    def save(self) -> None:
        """Write the boxes computed so far to `path` (when there are new ones)."""
        if not self._dirty:
            return
        from fasterrcnn.fileio import atomic_write

        data = {"limit": self.limit, "entries": self._entries}
        atomic_write(self.path, lambda f: torch.save(data, f))
        self._dirty = False
        self.log(f"Selective Search boxes of {len(self._entries)} images kept in {self.path}")


class WithProposals(nn.Module):
    """`model` with its RPN's proposals replaced by those of `source` (a callable: list of
    images -> list of Tensor[P, 4] in each image's pixels) at inference: the calling
    convention of `FasterRCNN`, so that `evaluate_model` and `predict` run it unchanged. All
    the given boxes reach the detector (no top-M cut)."""

    def __init__(self, model: nn.Module, source: Callable[[list[Tensor]], list[Tensor]]) -> None:
        super().__init__()
        self.model = model
        self.source = source

    def forward(self, images: Sequence[Tensor], targets: Any = None, **kwargs: Any) -> Any:
        images = list(images)
        return self.model(images, targets, proposals=self.source(images), **kwargs)


def train_on_proposals(cfg: Any, source: Callable[[list[Tensor]], list[Tensor]], log: Callable[[str], None] = print) -> Any:
    """Train a Fast R-CNN detector (the model's "detector" stage: RoI head and backbone, no
    RPN) on the proposals of `source` with the trainer's loop, schedule, checks and
    checkpoints; `cfg.schedule` must be "joint" (one stage of `cfg.max_iters` iterations).
    Returns the trainer's TrainResult."""
    from fasterrcnn.engine.trainer import StageSpec, Trainer

    if cfg.schedule != "joint" or cfg.processes != 1:
        raise ConfigError("training on given proposals runs one stage in one process (schedule 'joint', processes 1)")

    class ProposalTrainer(Trainer):
        """The trainer with one detector stage whose proposals come from `source`."""

        def stages(self) -> list[StageSpec]:
            return [StageSpec(1, "Fast R-CNN on given proposals", "detector", self.cfg.epochs, lambda: self.new_model(0))]

        def proposal_source(self, spec: StageSpec, model: Any) -> Callable[[list[Tensor]], list[Tensor]]:
            return source

    return ProposalTrainer(cfg, log).run()
