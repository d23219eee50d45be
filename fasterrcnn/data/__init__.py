"""The data layer: readers for users' data (PASCAL VOC, COCO, YOLO txt, LabelMe; the registry
of formats in `formats`), the embedded synthetic data set, transforms, the DataLoader, and
validation of bad data.

    from fasterrcnn.data import build_dataset, build_loader
    train = build_dataset("data/raccoon", "train", train=True, min_size=600, max_size=1000,
                          flip_prob=0.5, seed=0)
    test = build_dataset("data/raccoon", "test", train=False, classes=train.classes)
    loader = build_loader(train, batch_size=2, shuffle=True, seed=0, epoch=0, num_workers=2)
    for images, targets in loader: ...            # list[Tensor[3, H, W]], list[dict]
    print(train.report.summary())                 # what was fixed or skipped, with file names

See `DetectionDataset` for the (image, target) contract. The names below are imported
lazily, so that `fasterrcnn.data.formats` (the CLI's --format choices) comes without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DetectionDataset": "base",
    "ImageRecord": "base",
    "VOCDataset": "voc",
    "VOC_CLASSES": "voc",
    "COCODataset": "coco",
    "YOLODataset": "yolo",
    "LabelMeDataset": "labelme",
    "SYNTH_CLASSES": "synth",
    "DataReport": "report",
    "available_splits": "loader",
    "build_dataset": "loader",
    "build_loader": "loader",
    "has_split": "loader",
    "is_single_file": "loader",
    "detect_format": "loader",
    "collate": "loader",
    "EpochSampler": "loader",
    "AspectGroupedBatchSampler": "loader",
    "DistributedBatchSampler": "loader",
    "DetectionLoader": "loader",
    "Compose": "transforms",
    "ExifTranspose": "transforms",
    "ToRGB": "transforms",
    "Resize": "transforms",
    "RandomHorizontalFlip": "transforms",
    "ToTensor": "transforms",
    "build_transforms": "transforms",
    "read_image": "transforms",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fasterrcnn.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
