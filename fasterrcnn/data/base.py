"""`DetectionDataset`: the data contract between the readers and the training/evaluation engine.

A reader (VOC, COCO, YOLO, LabelMe: see formats.py) parses and validates all annotations into one
`ImageRecord` per image (boxes in the original image's continuous pixel coordinates, already
clipped, degenerate boxes and unknown classes dropped and counted in `report`). The image
files' existence and headers (size, colour mode, EXIF orientation) are checked at
construction too, so a missing or unreadable file stops the run before training starts.
Pixels are decoded in `__getitem__`, i.e. in the DataLoader's workers, where the transforms
(resize, flip) also run.

Random augmentation draws from a generator seeded by (seed, epoch, index) only: the same
epoch gives the same flips whatever the number of workers or the order of loading, and a
resumed run reproduces the augmentation of the epoch it resumes.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fasterrcnn.data import report as R
from fasterrcnn.data.report import DataReport
from fasterrcnn.data.transforms import image_header, pil_to_tensor, read_image
from fasterrcnn.errors import ConfigError, DataError

__all__ = ["DetectionDataset", "ImageRecord"]


@dataclass
class ImageRecord:
    """One image and its cleaned annotation, in original (upright) image coordinates."""

    file: str
    image_id: int
    name: str  # VOC id or COCO file name: how results files refer to the image
    height: int
    width: int
    boxes: np.ndarray  # float32 [N, 4] x1 y1 x2 y2, continuous pixels, inside the image
    labels: np.ndarray  # int64 [N] in 1..K
    difficult: np.ndarray  # bool [N]


class DetectionDataset(torch.utils.data.Dataset):
    """Base class of the readers: images with boxes, labels and difficult flags.

    `dataset[i]` returns `(image, target)`: image Tensor[3, H, W] float32 in [0, 1] (RGB,
    after the transforms) and target {"boxes" Tensor[N, 4] float32 in the returned image's
    pixels, "labels" Tensor[N] int64 in 1..K, "difficult" Tensor[N] bool, "image_id" int,
    "orig_size" (H0, W0) of the upright image file, "file" str}. `annotation(i)` gives the
    same fields in original coordinates without decoding the image.

    `i` may also be a pair `(epoch, i)`: the loader's sampler passes the epoch that way, so
    that persistent workers see it without `set_epoch` reaching their copies.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        classes: Sequence[str],
        *,
        transforms: Callable | None = None,
        seed: int = 0,
        skip_empty: bool = False,
        report: DataReport | None = None,
    ):
        self.classes: list[str] = list(classes)
        self.report: DataReport = report if report is not None else DataReport()
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0
        if skip_empty:
            kept = []
            for rec in records:
                if (~rec.difficult).any():
                    kept.append(rec)
                else:
                    what = "only difficult objects" if len(rec.labels) else "no objects"
                    self.report.add(R.EMPTY_SKIPPED, rec.file, f"{what}; left out of training")
            records = kept
        self.records: list[ImageRecord] = records
        self.report.num_images = len(records)
        self.report.num_objects = int(sum(len(r.labels) for r in records))
        self.report.num_difficult = int(sum(int(r.difficult.sum()) for r in records))

    # ----------------------------------------------------------------------------- contract

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index) -> tuple[Tensor, dict]:
        epoch = self.epoch
        if isinstance(index, tuple):
            epoch, index = index
        rec = self.records[index]
        image = read_image(rec.file)
        if (image.height, image.width) != (rec.height, rec.width):
            raise DataError(
                f"{rec.file}: decoded image is {image.width}x{image.height}, expected "
                f"{rec.width}x{rec.height} (the size read when the data set was built: from the "
                f"file's header, or from the annotations if images were not verified)"
            )
        target = self._target(rec)
        if self.transforms is not None:
            image, target = self.transforms(image, target, self.rng(index, epoch))
        if isinstance(image, Image.Image):
            image = pil_to_tensor(image)
        return image, target

    def annotation(self, index: int) -> dict:
        """The target of image `index` in original image coordinates (no decoding)."""
        return self._target(self.records[index])

    def verify_images(self, threads: int = 2) -> None:
        """Decode every image file once, so that a corrupt or truncated file stops a run
        before it starts, not when an epoch or the evaluation reaches it. Raises DataError
        naming the bad files (all of them are checked; the first few are listed)."""
        from concurrent.futures import ThreadPoolExecutor

        def check(path: str) -> str | None:
            try:
                read_image(path)
            except DataError as exc:
                return str(exc)
            return None

        files = list(dict.fromkeys(rec.file for rec in self.records))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # PIL decodes without the GIL
            errors = [e for e in pool.map(check, files) if e is not None]
        if errors:
            more = f" (and {len(errors) - 3} more of {len(files)} images)" if len(errors) > 3 else ""
            raise DataError("; ".join(errors[:3]) + more)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random augmentation `__getitem__` applies."""
        self.epoch = int(epoch)

    # ------------------------------------------------------------------------------ helpers

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of image `index`'s random augmentation in `epoch`."""
        epoch = self.epoch if epoch is None else int(epoch)
        entropy = [
            self.seed & 0xFFFFFFFFFFFFFFFF,
            epoch & 0xFFFFFFFFFFFFFFFF,
            int(index) % len(self),
        ]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    @staticmethod
    def _target(rec: ImageRecord) -> dict:
        return {
            "boxes": torch.from_numpy(rec.boxes.copy()).reshape(-1, 4),
            "labels": torch.from_numpy(rec.labels.copy()),
            "difficult": torch.from_numpy(rec.difficult.copy()),
            "image_id": rec.image_id,
            "orig_size": (rec.height, rec.width),
            "file": rec.file,
        }

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (the model has K + 1 outputs with background)."""
        return len(self.classes)

    @property
    def files(self) -> list[str]:
        return [r.file for r in self.records]

    @property
    def image_names(self) -> list[str]:
        """VOC ids / COCO file names, the names results files use."""
        return [r.name for r in self.records]

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(H0, W0) of every image, e.g. to group batches by aspect ratio."""
        return [(r.height, r.width) for r in self.records]

    def stats(self) -> dict:
        """Counts per class: objects, difficult objects, images containing the class."""
        objects: Counter = Counter()
        difficult: Counter = Counter()
        images: Counter = Counter()
        for rec in self.records:
            for lab, dif in zip(rec.labels.tolist(), rec.difficult.tolist(), strict=True):
                objects[lab] += 1
                difficult[lab] += int(dif)
            for lab in set(rec.labels.tolist()):
                images[lab] += 1
        per_class = {
            name: {"objects": objects[i], "difficult": difficult[i], "images": images[i]}
            for i, name in enumerate(self.classes, start=1)
        }
        return {
            "images": len(self.records),
            "objects": int(sum(objects.values())),
            "difficult": int(sum(difficult.values())),
            "images_without_objects": sum(1 for r in self.records if len(r.labels) == 0),
            "per_class": per_class,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} images, {self.num_classes} classes, "
            f"transforms={self.transforms!r})"
        )


# ---------------------------------------------------------------------- shared validation


def check_classes(classes: Sequence[str] | None) -> list[str] | None:
    """Validate a user-given class list: non-empty, unique, non-empty strings, no background."""
    if classes is None:
        return None
    if isinstance(classes, str):
        raise ConfigError(f"classes must be a list of names, got the string {classes!r}")
    out = [str(c).strip() for c in classes]
    if not out:
        raise ConfigError("classes is empty: give at least one object class")
    if any(not c for c in out):
        raise ConfigError(f"classes contains an empty name: {list(classes)}")
    dupes = sorted({c for c in out if out.count(c) > 1})
    if dupes:
        raise ConfigError(f"classes contains duplicates: {dupes}")
    if any(c.lower() in ("__background__", "background") for c in out):
        raise ConfigError(
            "classes must list object classes only (label 0, background, is implicit)"
        )
    return out


def probe_image(path: str, report: DataReport) -> tuple[int, int]:
    """(height, width) of an image file after EXIF orientation; counts conversions/rotations."""
    height, width, mode, orientation = image_header(path)
    if mode != "RGB":
        report.add(R.CONVERTED, path, f"colour mode {mode} is converted to RGB when read")
    if orientation != 1:
        report.add(R.EXIF_ROTATED, path, f"EXIF orientation {orientation} is applied when read")
    return height, width


def check_size(
    path: str,
    annotated: tuple[int, int] | None,
    real: tuple[int, int],
    source: str,
    report: DataReport,
) -> None:
    """Count an annotated (H, W) that disagrees with the image file's (the file's is used)."""
    if annotated is None or annotated == real:
        return
    report.add(
        R.SIZE_MISMATCH,
        path,
        f"{source} says {annotated[1]}x{annotated[0]} but the image is {real[1]}x{real[0]}; "
        f"using the image's size",
    )


def clean_boxes(
    boxes: np.ndarray,
    descriptions: Sequence[str],
    height: int,
    width: int,
    file: str,
    report: DataReport,
) -> tuple[np.ndarray, np.ndarray]:
    """Clip boxes [N, 4] (x1 y1 x2 y2) to a (height, width) image and drop the degenerate.

    Returns (clipped boxes, keep mask). Clipped boxes are counted as `boxes_clipped`; boxes
    of zero or negative area after clipping (including boxes wholly outside the image) are
    counted as `boxes_degenerate` and not kept."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(boxes, 0.0, limits)
    changed = (clipped != boxes).any(axis=1)
    # the area test on the values the record stores: a box thinner than float32's resolution
    # (x1 < x2 in float64, x1 == x2 in float32) has no area
    clipped = clipped.astype(np.float32)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    for k in np.flatnonzero(~keep):
        report.add(
            R.DEGENERATE,
            file,
            f"{descriptions[k]}: box {_fmt(boxes[k])} has no area inside the "
            f"{width}x{height} image; skipped",
        )
    for k in np.flatnonzero(changed & keep):
        report.add(
            R.CLIPPED,
            file,
            f"{descriptions[k]}: box {_fmt(boxes[k])} extends outside the {width}x{height} "
            f"image; clipped to {_fmt(clipped[k])}",
        )
    return clipped, keep


def _fmt(box: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box.tolist()) + ")"


def empty_record_check(rec: ImageRecord, report: DataReport) -> None:
    if len(rec.labels) == 0:
        report.add(R.EMPTY, rec.file, "no objects")


def make_record(
    file: str,
    image_id: int,
    name: str,
    height: int,
    width: int,
    boxes: list | np.ndarray,
    labels: list,
    difficult: list,
) -> ImageRecord:
    return ImageRecord(
        file=file,
        image_id=int(image_id),
        name=name,
        height=int(height),
        width=int(width),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        difficult=np.asarray(difficult, dtype=bool).reshape(-1),
    )


def existing(path: str | os.PathLike) -> bool:
    return os.path.isfile(path)
