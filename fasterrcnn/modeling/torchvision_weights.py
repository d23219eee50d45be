"""torchvision's COCO detection checkpoints as fasterrcnn models.

`load_torchvision(arch, weights, **overrides)` builds the preset of the same architecture
(its values are torchvision's), maps every key of a torchvision state dict onto it, and
loads it strictly: a missing or unexpected key is an error naming it. The official files
(`fasterrcnn_resnet50_fpn_coco-258fb6c6.pth`, ...) load as they are, with
`torch.load(weights_only=True)`. 91-output weights get the COCO category names (torchvision's
label ids, 'N/A' for the unused ones).

Key map (torchvision -> ours):
    backbone.body.*                   -> backbone.body.*    (ResNet: same names; MobileNet: features.*)
    backbone.fpn.inner_blocks.K.*     -> backbone.neck.laterals.K.*
    backbone.fpn.layer_blocks.K.*     -> backbone.neck.outputs.K.*
    rpn.head.conv.I.0.*               -> rpn.head.conv.* (I = 0), rpn.head.more_convs.{I-1}.*
    rpn.head.cls_logits / bbox_pred   -> the same
    roi_heads.box_head.fc6 / fc7      -> the same (two-fc head)
    roi_heads.box_head.K.0 / K.1      -> roi_heads.box_head.convs.K.0 / .1 (v2: conv, BatchNorm)
    roi_heads.box_head.5              -> roi_heads.box_head.fc (v2)
    roi_heads.box_predictor.*         -> roi_heads.predictor.*
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from fasterrcnn.errors import CheckpointError, ConfigError
from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS

__all__ = ["COCO_CATEGORIES", "TORCHVISION_ARCHS", "load_torchvision", "torchvision_key_map", "torchvision_state_dict"]

# The 90 label ids of torchvision's COCO detection models (index = label; 0 is background).
COCO_CATEGORIES: tuple[str, ...] = (
    "__background__", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse",
    "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag",
    "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

def torchvision_key_map(model: torch.nn.Module) -> dict[str, str]:
    """{torchvision key: our key} for a model built from a torchvision-architecture preset."""
    backbone = model.backbone
    mapping = dict(backbone.body.torchvision_key_map("backbone.body.", "backbone.body."))
    mapping.update(backbone.neck.torchvision_key_map("backbone.fpn.", "backbone.neck."))
    for key in model.state_dict():
        if not key.startswith("backbone."):
            mapping.setdefault(_tv_name(key), key)
    return mapping


def torchvision_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's state dict under torchvision's names (the inverse of `load_torchvision`'s
    map): what torchvision's model of the same architecture loads strictly."""
    inverse = {ours: tv for tv, ours in torchvision_key_map(model).items()}
    return {inverse[k]: v for k, v in model.state_dict().items()}


def _tv_name(ours: str) -> str:
    """Our key of a head layer -> torchvision's (see the module docstring)."""
    for pattern, tv in ((r"^rpn\.head\.conv\.", "rpn.head.conv.0.0."),
                        (r"^roi_heads\.predictor\.", "roi_heads.box_predictor."),
                        (r"^roi_heads\.box_head\.fc\.", "roi_heads.box_head.5.")):
        if re.match(pattern, ours):
            return re.sub(pattern, tv, ours)
    m = re.match(r"^rpn\.head\.more_convs\.(\d+)\.", ours)
    if m:
        return f"rpn.head.conv.{int(m.group(1)) + 1}.0." + ours[m.end():]
    m = re.match(r"^roi_heads\.box_head\.convs\.(\d+)\.", ours)
    if m:
        return f"roi_heads.box_head.{m.group(1)}." + ours[m.end():]
    return ours


def _read(weights: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(weights, Mapping):
        return dict(weights)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise CheckpointError(f"torchvision weights {path} do not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error means a bad file
        raise CheckpointError(f"{path} is not a readable torchvision state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint of torchvision's references
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def load_torchvision(
    arch: str, weights: str | os.PathLike | Mapping[str, Tensor], num_classes: int | None = None, **overrides: Any
) -> torch.nn.Module:
    """A ready model (eval mode) from torchvision's detection weights of `arch` (one of
    `TORCHVISION_ARCHS`): the preset of that architecture, with the number of classes read
    from the weights, `overrides` applied (e.g. `score_thresh=0.3`, `min_size=600`).

    Fine-tuning on other classes: with `num_classes` (and `class_names`) different from the
    weights', every weight is loaded but the predictor's, which starts afresh (N(0, 0.01) and
    N(0, 0.001), as the paper's new layers)."""
    from fasterrcnn.modeling.faster_rcnn import build_model

    if arch not in TORCHVISION_ARCHS:
        raise ConfigError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
    state = _read(weights)
    cls = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls is None:
        raise CheckpointError(f"{arch} weights have no roi_heads.box_predictor.cls_score.weight: not a Faster R-CNN state dict")
    saved_classes = cls.shape[0] - 1
    new_head = num_classes is not None and num_classes != saved_classes
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor.")}
    num_classes = num_classes if num_classes is not None else saved_classes
    if num_classes == len(COCO_CATEGORIES) - 1:
        overrides.setdefault("class_names", list(COCO_CATEGORIES[1:]))
    if arch == "fasterrcnn_resnet50_fpn":  # torchvision's COCO file has BatchNorm eps 0 (its overwrite_eps)
        overrides.setdefault("backbone_options.bn_eps", 0.0)
    model = build_model(TORCHVISION_ARCHS[arch], num_classes, **overrides)
    mapping = torchvision_key_map(model)
    ours = model.state_dict()
    renamed: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        target = mapping.get(key)
        if target is None:
            unexpected.append(key)
        elif target in ours:
            renamed[target] = value
    missing = sorted(k for k in set(ours) - set(renamed) if not (new_head and k.startswith("roi_heads.predictor.")))
    if unexpected or missing:
        raise CheckpointError(f"{arch} weights do not match: unexpected keys {unexpected[:5]}, missing keys {missing[:5]}")
    try:
        model.load_state_dict(renamed, strict=not new_head)
    except RuntimeError as exc:
        raise CheckpointError(f"{arch} weights do not fit the architecture: {exc}") from exc
    return model.eval()
