"""The data layer: readers for users' data (PASCAL VOC, COCO), the embedded synthetic data set,
transforms, the DataLoader, and validation of bad data.

    from fasterrcnn.data import build_dataset, build_loader
    train = build_dataset("data/raccoon", "train", train=True, min_size=600, max_size=1000,
                          flip_prob=0.5, seed=0)
    test = build_dataset("data/raccoon", "test", train=False, classes=train.classes)
    loader = build_loader(train, batch_size=2, shuffle=True, seed=0, epoch=0, num_workers=2)
    for images, targets in loader: ...            # list[Tensor[3, H, W]], list[dict]
    print(train.report.summary())                 # what was fixed or skipped, with file names

See `DetectionDataset` for the (image, target) contract.
"""

from fasterrcnn.data.base import DetectionDataset, ImageRecord
from fasterrcnn.data.coco import COCODataset
from fasterrcnn.data.loader import (
    AspectGroupedBatchSampler,
    DetectionLoader,
    EpochSampler,
    available_splits,
    build_dataset,
    build_loader,
    collate,
    detect_format,
    has_split,
    is_single_file,
)
from fasterrcnn.data.report import DataReport
from fasterrcnn.data.synth import SYNTH_CLASSES
from fasterrcnn.data.transforms import (
    Compose,
    ExifTranspose,
    RandomHorizontalFlip,
    Resize,
    ToRGB,
    ToTensor,
    build_transforms,
    read_image,
)
from fasterrcnn.data.voc import VOC_CLASSES, VOCDataset

__all__ = [
    "DetectionDataset",
    "ImageRecord",
    "VOCDataset",
    "COCODataset",
    "VOC_CLASSES",
    "SYNTH_CLASSES",
    "DataReport",
    "available_splits",
    "build_dataset",
    "build_loader",
    "has_split",
    "is_single_file",
    "detect_format",
    "collate",
    "EpochSampler",
    "AspectGroupedBatchSampler",
    "DetectionLoader",
    "Compose",
    "ExifTranspose",
    "ToRGB",
    "Resize",
    "RandomHorizontalFlip",
    "ToTensor",
    "build_transforms",
    "read_image",
]
