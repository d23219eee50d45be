"""Building data sets from a path, and the DataLoader that feeds the engine.

`build_dataset(path, split, format="auto", train=...)` recognises the layout by asking the
formats of the registry (`fasterrcnn.data.formats`) in turn:

* PASCAL VOC: PATH has Annotations/ (or PATH holds exactly one VOC*/ such directory, as in
  VOCdevkit/); the split is ImageSets/Main/<split>.txt.
* COCO: PATH is an instances JSON file, or a directory with annotations/instances_<split>*.json,
  annotations/<split>.json or <split>.json; the images are in the first that exists of
  PATH/<split>, PATH/images/<split>, PATH/images, PATH/<name of the JSON without instances_>,
  the JSON's directory (or pass image_dir).
* YOLO txt: PATH is a data.yaml, or a directory with data.yaml, or with images/ and labels/
  (flat, or split subfolders images/<split>, labels/<split>; or <split>/images, <split>/labels).
* LabelMe: PATH is a directory of per-image .json files, or of split subfolders holding them.

`build_loader(dataset, batch_size=..., shuffle=..., seed=..., epoch=..., num_workers=...)`
returns a `DetectionLoader` (a DataLoader) whose batches are `(list[Tensor[3, H, W]],
list[dict])` (the model pads the batch itself). The order of an epoch is a permutation drawn
from a generator seeded by (seed, epoch), and the sampler hands the epoch to the data set with
each index, so order and augmentation depend only on (seed, epoch): a resumed run sees the
same batches, with any number of workers. Decoding, resizing and flipping run in the workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from fasterrcnn.data import formats
from fasterrcnn.data.base import DetectionDataset
from fasterrcnn.data.transforms import build_transforms
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
    "DistributedBatchSampler",
    "DetectionLoader",
]

# ------------------------------------------------------------------------- layout detection


def detect_format(path: str | os.PathLike, split: str | None = None) -> tuple[str, dict]:
    """(format name, where) of the data set at `path`, asking the registered formats in turn
    (`fasterrcnn.data.formats`): e.g. ("voc", {"root"}) or ("coco", {"annotation_json",
    "image_dir"}). DataError naming the path when none recognises it."""
    return formats.detect(path, split)


def is_single_file(path: str | os.PathLike, format: str = "auto") -> bool:
    """True for a data set that is one split (a COCO JSON file; a flat YOLO or LabelMe folder):
    it has no splits, so training and evaluating on it are the same images unless another
    data set is given."""
    path = os.fspath(path)
    try:
        fmt = formats.format_of(path, None, format)
    except DataError:  # an ambiguous folder: building it says why
        return False
    return fmt is not None and fmt.single_split(path)


def available_splits(path: str | os.PathLike, format: str = "auto") -> list[str] | None:
    """The split names a data set offers (VOC: ImageSets/Main/*.txt; COCO folder: its
    annotation files; YOLO: data.yaml's or the split folders; LabelMe: the split folders), or
    None when that cannot be told (a single file, a flat folder, an unknown layout)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    fmt = formats.format_of(path, None, format)
    return None if fmt is None else fmt.splits(path)


def has_split(path: str | os.PathLike, split: str, format: str = "auto") -> bool | None:
    """Whether the data set at `path` has split `split` (None when that cannot be told; False
    for a folder of no known layout)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    fmt = formats.format_of(path, split, format)
    if fmt is None:
        return False if os.path.isdir(path) else None
    return fmt.has_split(path, split)


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

    `format`: "auto" (detected) or a registered format's name (`formats.choices()`).
    train=True: resize + random horizontal flip (p = flip_prob), and images without a
    non-difficult object are left out (counted in the report; `skip_empty` overrides).
    train=False: resize only, every image kept. Pass the training set's `classes` when
    building its test set so that labels agree.
    """
    if format != formats.AUTO:
        formats.get(format)  # ConfigError for an unknown name, before anything is read
    transforms = build_transforms(train, min_size=min_size, max_size=max_size, flip_prob=flip_prob)
    skip_empty = train if skip_empty is None else skip_empty
    name, where = formats.locate(os.fspath(path), split, format)
    return formats.get(name).build(
        where, split, classes=classes, transforms=transforms, seed=seed, skip_empty=skip_empty,
        image_dir=image_dir,
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


class DistributedBatchSampler(Sampler):
    """Process `rank`'s share of every batch of `batches` in data-parallel training: items
    rank, rank + world, ... of each global batch, so the `world` processes see disjoint
    shares of every batch and of the epoch, in an order that depends only on (seed, epoch), as
    the batches themselves (aspect-ratio grouping included). A batch of B images thus becomes
    `world` batches of B / world, and every process takes the same number of steps per epoch as
    a single process would with batches of B.

    An epoch's incomplete batches (the last one of each orientation group) need not divide by
    `world`: with `remainder="pad"` (default, as torch's DistributedSampler) such a batch is
    completed to the next multiple of `world` by repeating its own first images (the same
    orientation; at most `world` - 1 repeats per incomplete batch), so no image is left out;
    with `remainder="drop"` the incomplete batches are skipped."""

    def __init__(self, batches: AspectGroupedBatchSampler, rank: int, world: int, remainder: str = "pad") -> None:
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of world size {world}")
        if remainder not in ("pad", "drop"):
            raise ConfigError(f"remainder must be 'pad' or 'drop', got {remainder!r}")
        self.batches, self.rank, self.world, self.remainder = batches, int(rank), int(world), remainder

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            if len(batch) < self.batches.batch_size and self.remainder == "drop":
                continue
            padded = list(batch) + [batch[i % len(batch)] for i in range(-len(batch) % self.world)]
            yield padded[self.rank :: self.world]

    def __len__(self) -> int:
        if self.remainder == "drop":
            sizes = [sum(self.batches.landscape), len(self.batches.landscape) - sum(self.batches.landscape)]
            return sum(n // self.batches.batch_size for n in sizes)
        return len(self.batches)


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
    rank: int = 0,
    world: int = 1,
    remainder: str = "pad",
) -> DetectionLoader:
    """A loader of `(list[Tensor], list[dict])` batches; see the module docstring.

    `group_aspect=True` (training; needs a `DetectionDataset`, whose image sizes are known
    without decoding) makes every batch all-landscape or all-portrait
    (`AspectGroupedBatchSampler`). With `world` > 1 (data-parallel training) the loader yields
    process `rank`'s share of each batch of `batch_size` (`DistributedBatchSampler`; an
    incomplete batch padded or dropped as `remainder` says)."""
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
    if group_aspect or world > 1:
        if group_aspect and not isinstance(dataset, DetectionDataset):
            raise ConfigError("group_aspect needs a DetectionDataset (its image sizes)")
        # one group (plain batches in the epoch's order) unless grouping by orientation
        landscape = [w >= h for h, w in dataset.image_sizes] if group_aspect else [True] * len(dataset)
        batches = AspectGroupedBatchSampler(sampler, landscape, batch_size, drop_last)
        if world > 1:
            batches = DistributedBatchSampler(batches, rank, world, remainder)
        return DetectionLoader(dataset, batch_sampler=batches, **common)
    return DetectionLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
