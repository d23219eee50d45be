"""fasterrcnn: Faster R-CNN (Ren, He, Girshick, Sun, NIPS 2015) in pure PyTorch.

A Region Proposal Network and a Fast R-CNN detector sharing one convolutional backbone,
with the paper's numbers as defaults. See docs/ARCHITECTURE.md for the module map.

    import fasterrcnn
    model = fasterrcnn.build_model("vgg16", num_classes=20)
    model.eval(); detections = model([image])   # [{"boxes", "labels", "scores"}]

The names below are imported lazily, so `import fasterrcnn` (and the CLI's --help) stays
fast until the model is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FasterRCNN": "fasterrcnn.modeling.faster_rcnn",
    "build_model": "fasterrcnn.modeling.faster_rcnn",
    "ModelConfig": "fasterrcnn.modeling.config",
    "PRESETS": "fasterrcnn.modeling.config",
    "save_checkpoint": "fasterrcnn.modeling.checkpoint",
    "load_checkpoint": "fasterrcnn.modeling.checkpoint",
    "load_imagenet_weights": "fasterrcnn.modeling.checkpoint",
    "FlipTTA": "fasterrcnn.modeling.tta",
    "load_torchvision": "fasterrcnn.modeling.torchvision_weights",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fasterrcnn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
