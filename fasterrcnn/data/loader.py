"""Building data sets from a path, and the DataLoader that feeds the engine.

`build_dataset(path, split, format="auto", train=...)` recognises the layout:

* PASCAL VOC: PATH has Annotations/ (or PATH holds exactly one VOC*/ such directory, as in
  VOCdevkit/); the split is ImageSets/Main/<split>.txt.
* COCO: PATH is an instances JSON file, or a directory with annotations/instances_<split>*.json,
  annotations/<split>.json or <split>.json; the images are in the first that exists of
  PATH/<split>, PATH/images/<split>, PATH/images, PATH/<name of the JSON without instances_>,
  the JSON's directory (or pass image_dir).

`build_loader(dataset, batch_size=..., shuffle=..., seed=..., epoch=..., num_workers=...)`
returns a `DetectionLoader` (a DataLoader) whose batches are `(list[Tensor[3, H, W]],
list[dict])` (the model pads the batch itself). The order of an epoch is a permutation drawn
from a generator seeded by (seed, epoch), and the sampler hands the epoch to the data set with
each index, so order and augmentation depend only on (seed, epoch): a resumed run sees the
same batches, with any number of workers. Decoding, resizing and flipping run in the workers.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fasterrcnn.data.base import DetectionDataset
from fasterrcnn.data.coco import COCODataset
from fasterrcnn.data.transforms import build_transforms
from fasterrcnn.data.voc import VOCDataset, is_voc_root, voc_splits
from fasterrcnn.errors import ConfigError, DataError

__all__ = [
    "available_splits",
    "build_dataset",
    "has_split",
    "is_single_file",
    "detect_format",
    "build_loader",
    "collate",
    "EpochSampler",
    "AspectGroupedBatchSampler",
    "DetectionLoader",
]

FORMATS = ("auto", "voc", "coco")


# ------------------------------------------------------------------------- layout detection


def detect_format(path: str | os.PathLike, split: str | None = None) -> tuple[str, dict]:
    """("voc", {"root"}) or ("coco", {"annotation_json", "image_dir"}) for a data set path."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: data set path not found")
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            return "coco", {"annotation_json": path, "image_dir": _coco_image_dir(path, split)}
        raise DataError(f"{path}: not a data set (expected a directory or a COCO .json file)")
    voc = _voc_root(path)
    if voc is not None:
        return "voc", {"root": voc}
    jpath = _coco_json(path, split)
    if jpath is not None:
        return "coco", {"annotation_json": jpath, "image_dir": _coco_image_dir(jpath, split, path)}
    jsons = sorted(
        os.path.relpath(p, path)
        for p in glob.glob(os.path.join(path, "*.json"))
        + glob.glob(os.path.join(path, "annotations", "*.json"))
    )
    if jsons:
        raise DataError(
            f"{path}: no COCO annotation file for split '{split or 'train'}' "
            f"(found {', '.join(jsons[:5])}); pass --split or the JSON file itself"
        )
    raise DataError(
        f"{path}: layout not recognised: expected PASCAL VOC (Annotations/, JPEGImages/, "
        f"ImageSets/Main/<split>.txt) or COCO (a JSON file, annotations/instances_<split>.json "
        f"or <split>.json)"
    )


def _voc_root(path: str) -> str | None:
    if is_voc_root(path):
        return path
    for parent in (path, os.path.join(path, "VOCdevkit")):
        if not os.path.isdir(parent):
            continue
        subs = sorted(
            os.path.join(parent, d)
            for d in os.listdir(parent)
            if d.upper().startswith("VOC") and is_voc_root(os.path.join(parent, d))
        )
        if len(subs) == 1:
            return subs[0]
        if len(subs) > 1:
            raise DataError(
                f"{path}: holds several VOC data sets "
                f"({', '.join(os.path.basename(s) for s in subs)}); give one of them"
            )
    return None


def _coco_json(path: str, split: str | None) -> str | None:
    split = split or "train"
    patterns = [
        os.path.join(path, "annotations", f"instances_{split}.json"),
        os.path.join(path, "annotations", f"instances_{split}*.json"),
        os.path.join(path, "annotations", f"{split}.json"),
        os.path.join(path, f"instances_{split}.json"),
        os.path.join(path, f"{split}.json"),
    ]
    for pattern in patterns:
        hits = sorted(glob.glob(pattern))
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise DataError(f"{path}: several annotation files match split '{split}': {hits}")
    return None


def _coco_image_dir(jpath: str, split: str | None, root: str | None = None) -> str:
    jdir = os.path.dirname(os.path.abspath(jpath))
    root = root or (os.path.dirname(jdir) if os.path.basename(jdir) == "annotations" else jdir)
    stem = os.path.splitext(os.path.basename(jpath))[0]
    stem = stem[len("instances_") :] if stem.startswith("instances_") else stem
    candidates = []
    if split:
        candidates += [os.path.join(root, split), os.path.join(root, "images", split)]
    candidates += [
        os.path.join(root, stem),
        os.path.join(root, "images", stem),
        os.path.join(root, "images"),
        jdir,
    ]
    for c in candidates:
        if os.path.isdir(c):
            return c
    return jdir


def is_single_file(path: str | os.PathLike, format: str = "auto") -> bool:
    """True for a data set that is one annotation file (a COCO JSON): it has no splits, so
    training and evaluating on it are the same images unless another file is given."""
    return format in ("auto", "coco") and os.path.isfile(path)


def available_splits(path: str | os.PathLike, format: str = "auto") -> list[str] | None:
    """The split names a data set folder offers (VOC: ImageSets/Main/*.txt; COCO folder:
    its annotation files), or None when that cannot be told (a single file, an unknown layout)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return None
    voc = _voc_root(path) if format in ("auto", "voc") else None
    if voc is not None:
        return voc_splits(voc)
    if format == "voc":
        return None
    names = set()
    for pattern in ("annotations/instances_*.json", "annotations/*.json", "instances_*.json", "*.json"):
        for hit in glob.glob(os.path.join(path, pattern)):
            stem = os.path.splitext(os.path.basename(hit))[0]
            names.add(stem[len("instances_"):] if stem.startswith("instances_") else stem)
    return sorted(names) if names else None


def has_split(path: str | os.PathLike, split: str, format: str = "auto") -> bool | None:
    """Whether the data set folder `path` has split `split` (None when that cannot be told)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return None
    voc = _voc_root(path) if format in ("auto", "voc") else None
    if voc is not None:
        return split in voc_splits(voc)
    if format == "voc":
        return None
    return _coco_json(path, split) is not None


# -------------------------------------------------------------------------------- factory


def build_dataset(
    path: str | os.PathLike,
    split: str | None = "train",
    *,
    format: str = "auto",
    train: bool,
    min_size: int | Sequence[int] = 600,
    max_size: int = 1000,
    flip_prob: float = 0.5,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    skip_empty: bool | None = None,
    image_dir: str | os.PathLike | None = None,
) -> DetectionDataset:
    """Read the data set at `path` with the standard transforms.

    train=True: resize + random horizontal flip (p = flip_prob), and images without a
    non-difficult object are left out (counted in the report; `skip_empty` overrides).
    train=False: resize only, every image kept. Pass the training set's `classes` when
    building its test set so that labels agree.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    transforms = build_transforms(train, min_size=min_size, max_size=max_size, flip_prob=flip_prob)
    skip_empty = train if skip_empty is None else skip_empty
    path = os.fspath(path)
    if format == "auto":
        kind, where = detect_format(path, split)
    elif format == "voc":
        root = _voc_root(path) if os.path.isdir(path) else None
        if root is None:
            raise DataError(f"{path}: not a PASCAL VOC directory (no Annotations/ found)")
        kind, where = "voc", {"root": root}
    else:
        if os.path.isfile(path):
            jpath = path
        elif os.path.isdir(path):
            jpath = _coco_json(path, split)
            if jpath is None:
                raise DataError(f"{path}: no COCO annotation file for split '{split}' found")
        else:
            raise DataError(f"{path}: data set path not found")
        kind, where = "coco", {"annotation_json": jpath, "image_dir": _coco_image_dir(jpath, split)}
    if kind == "voc":
        return VOCDataset(
            where["root"], split, classes, transforms, seed=seed, skip_empty=skip_empty
        )
    return COCODataset(
        image_dir if image_dir is not None else where["image_dir"],
        where["annotation_json"],
        classes,
        transforms,
        seed=seed,
        skip_empty=skip_empty,
    )


# --------------------------------------------------------------------------------- loader


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """[(image, target), ...] -> ([images], [targets]); images keep their own sizes."""
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    return images, targets


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixing (seed, epoch), for the shuffling generator."""
    ss = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch) & 0xFFFFFFFFFFFFFFFF, 0x5A4D]
    )
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


class EpochSampler(Sampler):
    """Indices of one epoch: a permutation seeded by (seed, epoch) when shuffling, else 0..n-1.

    With `with_epoch` (for `DetectionDataset`s) it yields `(epoch, index)` pairs, so the data
    set applies that epoch's augmentation even in persistent worker processes."""

    def __init__(
        self, n: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, with_epoch: bool = True
    ):
        self.n, self.shuffle, self.seed, self.epoch = int(n), bool(shuffle), int(seed), int(epoch)
        self.with_epoch = with_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator:
        epoch = self.epoch
        for i in self.order():
            yield (epoch, i) if self.with_epoch else i

    def __len__(self) -> int:
        return self.n


class AspectGroupedBatchSampler(Sampler):
    """Batches of images of the same orientation (landscape: w >= h, or portrait), in the order
    of an `EpochSampler`: each index joins its group's pending batch, and a batch is yielded as
    soon as it is full, so an epoch's batches depend only on (seed, epoch). At the end of the
    epoch each group's incomplete batch is yielded too (smaller), unless `drop_last`.

    A batch is padded to its largest height and width; mixing a landscape and a portrait image
    pads both to nearly a square (and multiplies the padded shapes the convolution kernels are
    prepared for). detectron2 groups the same way (DATALOADER.ASPECT_RATIO_GROUPING), and
    torchvision's reference scripts group by aspect-ratio bins."""

    def __init__(self, sampler: EpochSampler, landscape: Sequence[bool], batch_size: int,
                 drop_last: bool = False):
        if len(landscape) != len(sampler):
            raise ValueError(f"{len(landscape)} orientations for {len(sampler)} images")
        self.sampler = sampler
        self.landscape = [bool(v) for v in landscape]
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def __iter__(self) -> Iterator[list]:
        pending: dict[bool, list] = {True: [], False: []}
        for item in self.sampler:
            index = item[1] if isinstance(item, tuple) else item
            group = pending[self.landscape[index]]
            group.append(item)
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()
        if not self.drop_last:
            for group in pending.values():
                if group:
                    yield list(group)

    def __len__(self) -> int:
        sizes = [sum(self.landscape), len(self.landscape) - sum(self.landscape)]
        if self.drop_last:
            return sum(n // self.batch_size for n in sizes)
        return sum(-(-n // self.batch_size) for n in sizes)


class DetectionLoader(DataLoader):
    """A DataLoader with `set_epoch(epoch)`: the next iteration yields that epoch's order and
    augmentation."""

    def _epoch_sampler(self) -> Any:
        return self.batch_sampler if hasattr(self.batch_sampler, "set_epoch") else self.sampler

    def set_epoch(self, epoch: int) -> None:
        self._epoch_sampler().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch_sampler().epoch


def build_loader(
    dataset,
    *,
    batch_size: int = 1,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    persistent_workers: bool | None = None,
    pin_memory: bool = False,
    group_aspect: bool = False,
    shard: Callable[[Any], Any] | None = None,
) -> DetectionLoader:
    """A loader of `(list[Tensor], list[dict])` batches; see the module docstring.

    `group_aspect=True` (training; needs a `DetectionDataset`, whose image sizes are known
    without decoding) makes every batch all-landscape or all-portrait
    (`AspectGroupedBatchSampler`). `shard` wraps the batch sampler to yield only this
    process's share of each batch (data-parallel training, `engine.distributed.shard_batches`)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    sampler = EpochSampler(
        len(dataset),
        shuffle=shuffle,
        seed=seed,
        epoch=epoch,
        with_epoch=isinstance(dataset, DetectionDataset),
    )
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    common = dict(collate_fn=collate, num_workers=num_workers, pin_memory=pin_memory,
                  persistent_workers=persistent_workers and num_workers > 0)
    if group_aspect or shard is not None:
        if group_aspect and not isinstance(dataset, DetectionDataset):
            raise ConfigError("group_aspect needs a DetectionDataset (its image sizes)")
        # one group (plain batches in the epoch's order) unless grouping by orientation
        landscape = [w >= h for h, w in dataset.image_sizes] if group_aspect else [True] * len(dataset)
        batches = AspectGroupedBatchSampler(sampler, landscape, batch_size, drop_last)
        return DetectionLoader(dataset, batch_sampler=batches if shard is None else shard(batches), **common)
    return DetectionLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
