"""Input normalisation shared by the evaluation modules (not part of the public API).

Ground truth and detections arrive as per-image dicts holding tensors, numpy arrays or
lists, or (detections only) as a COCO results list. Everything is converted here, once, to
float64 / int64 / bool numpy arrays and checked; problems in the data raise `DataError`
naming the image and field at fault.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fasterrcnn.errors import DataError

__all__ = [
    "FlatDetections",
    "GroundTruth",
    "flatten_detections",
    "is_coco_results",
    "normalize_ground_truth",
    "to_numpy",
]


def to_numpy(value, dtype, what: str) -> np.ndarray:
    """`value` (torch tensor, numpy array, list, scalar) as a numpy array of `dtype`."""
    try:
        if hasattr(value, "detach") and hasattr(
            value, "cpu"
        ):  # torch.Tensor, without importing torch
            value = value.detach().cpu()
            if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
                value = value.float()
            value = value.numpy()
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError("ragged or non-numeric values")
        if np.issubdtype(dtype, np.integer) and arr.size and arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise TypeError("non-integer values")
        if dtype is bool and arr.size and arr.dtype.kind not in "biu":
            raise TypeError(f"values of type {arr.dtype} are not booleans")
        return arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what}: cannot read as an array of {np.dtype(dtype).name} ({exc})"
        ) from None


def as_image_id(value, what: str) -> int:
    """An image id as a Python int (accepts numpy and 0-d/1-element torch integers)."""
    if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:
        value = value.item()  # torch tensor
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what}: image_id must be an integer, got {value!r}")
    return int(value)


def _boxes(value, what: str, *, allow_inverted: bool = False) -> np.ndarray:
    arr = to_numpy(value, np.float64, f"{what} boxes")
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DataError(f"{what}: boxes must have shape [N, 4] (x1, y1, x2, y2), got {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: box {int(np.flatnonzero(bad)[0])} has non-finite coordinates")
    if not allow_inverted:
        inv = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
        if inv.any():
            i = int(np.flatnonzero(inv)[0])
            raise DataError(f"{what}: box {i} {arr[i].tolist()} has x2 < x1 or y2 < y1")
    return arr


def _labels(value, n: int, num_classes: int | None, what: str) -> np.ndarray:
    arr = to_numpy(value, np.int64, f"{what} labels").reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{what}: {arr.shape[0]} labels for {n} boxes")
    if num_classes is not None and arr.size:
        bad = (arr < 1) | (arr > num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: label {int(arr[i])} (index {i}) is outside 1..{num_classes} "
                f"(0 is background; there are {num_classes} classes)"
            )
    return arr


@dataclass
class GroundTruth:
    """Ground truth of the evaluation set, one entry per image, in the given order."""

    image_ids: list[int]
    boxes: list[np.ndarray]  # float64 [N, 4]
    labels: list[np.ndarray]  # int64 [N]
    difficult: list[np.ndarray]  # bool [N]
    orig_sizes: list[tuple[int, int] | None]
    files: list[str | None]
    index: dict[int, int]  # image_id -> position


def normalize_ground_truth(gt: Sequence[Mapping], num_classes: int | None) -> GroundTruth:
    """Check and convert the ground truth. An entry without "image_id" gets its position."""
    if isinstance(gt, Mapping) or not isinstance(gt, Sequence):
        raise DataError(
            f"ground truth must be a sequence of per-image dicts, got {type(gt).__name__}"
        )
    out = GroundTruth([], [], [], [], [], [], {})
    for pos, entry in enumerate(gt):
        if not isinstance(entry, Mapping):
            raise DataError(f"ground truth[{pos}]: expected a dict, got {type(entry).__name__}")
        image_id = (
            as_image_id(entry["image_id"], f"ground truth[{pos}]") if "image_id" in entry else pos
        )
        what = f"ground truth for image_id {image_id}"
        if image_id in out.index:
            raise DataError(f"{what}: image_id appears twice in the ground truth")
        if "boxes" not in entry or "labels" not in entry:
            raise DataError(f"{what}: missing 'boxes' or 'labels'")
        boxes = _boxes(entry["boxes"], what)
        labels = _labels(entry["labels"], boxes.shape[0], num_classes, what)
        if entry.get("difficult") is None:
            difficult = np.zeros(boxes.shape[0], dtype=bool)
        else:
            difficult = to_numpy(entry["difficult"], bool, f"{what} difficult").reshape(-1)
            if difficult.shape[0] != boxes.shape[0]:
                raise DataError(
                    f"{what}: {difficult.shape[0]} difficult flags for {boxes.shape[0]} boxes"
                )
        size = entry.get("orig_size")
        if size is not None:
            size_arr = to_numpy(size, np.float64, f"{what} orig_size").reshape(-1)
            if size_arr.shape[0] != 2:
                raise DataError(f"{what}: orig_size must be (height, width), got {size!r}")
            size = (int(size_arr[0]), int(size_arr[1]))
        out.index[image_id] = pos
        out.image_ids.append(image_id)
        out.boxes.append(boxes)
        out.labels.append(labels)
        out.difficult.append(difficult)
        out.orig_sizes.append(size)
        out.files.append(None if entry.get("file") is None else str(entry["file"]))
    return out


@dataclass
class FlatDetections:
    """All detections in input order (the order that breaks score ties, like the devkit's
    results files): image position in the ground truth, box xyxy, label 1..K, score."""

    image_index: np.ndarray  # int64 [D]
    boxes: np.ndarray  # float64 [D, 4]
    labels: np.ndarray  # int64 [D]
    scores: np.ndarray  # float64 [D]


def is_coco_results(dets) -> bool:
    """True for a COCO results list ([{"image_id", "category_id", "bbox", "score"}, ...])."""
    return (
        isinstance(dets, Sequence)
        and not isinstance(dets, (str, bytes))
        and len(dets) > 0
        and isinstance(dets[0], Mapping)
        and "bbox" in dets[0]
    )


def category_to_label_map(category_ids: Sequence[int] | None) -> dict[int, int] | None:
    """{category_id: label} (label i <-> category_ids[i - 1]); None means identity."""
    if category_ids is None:
        return None
    mapping: dict[int, int] = {}
    for i, cid in enumerate(category_ids):
        if isinstance(cid, bool) or not isinstance(cid, numbers.Integral):
            raise DataError(f"category_ids[{i}] must be an integer, got {cid!r}")
        if int(cid) in mapping:
            raise DataError(f"category_ids lists category {int(cid)} twice")
        mapping[int(cid)] = i + 1
    return mapping


def flatten_detections(
    dets,
    gt: GroundTruth,
    num_classes: int,
    *,
    category_ids: Sequence[int] | None = None,
    what: str = "detections",
) -> FlatDetections:
    """Per-image detection dicts or a COCO results list -> `FlatDetections`.

    Per-image dicts without "image_id" are matched to the ground truth by position (then
    there must be exactly one per ground-truth image). A detection for an image that is not
    in the ground truth is an error (as in the VOC devkit: "unrecognized image").
    """
    if (
        isinstance(dets, Mapping)
        or not isinstance(dets, Sequence)
        or isinstance(dets, (str, bytes))
    ):
        raise DataError(
            f"{what} must be a sequence of per-image dicts or a COCO results list, "
            f"got {type(dets).__name__}"
        )
    if is_coco_results(dets):
        from fasterrcnn.evaluation.detections import validate_coco_results

        results = validate_coco_results(
            dets,
            source=what,
            image_ids=gt.index.keys(),
            category_ids=category_ids,
            num_classes=num_classes,
        )
        mapping = category_to_label_map(category_ids)
        n = len(results)
        image_index = np.fromiter((gt.index[r["image_id"]] for r in results), np.int64, n)
        labels = np.fromiter(
            (r["category_id"] if mapping is None else mapping[r["category_id"]] for r in results),
            np.int64,
            n,
        )
        scores = np.fromiter((r["score"] for r in results), np.float64, n)
        xywh = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(n, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return FlatDetections(image_index, boxes, labels, scores)

    positional = len(dets) > 0 and all(isinstance(d, Mapping) and "image_id" not in d for d in dets)
    if positional and len(dets) != len(gt.image_ids):
        raise DataError(
            f"{what}: entries have no image_id, so they must line up with the ground truth "
            f"one per image; got {len(dets)} for {len(gt.image_ids)} images"
        )
    parts_idx, parts_boxes, parts_labels, parts_scores = [], [], [], []
    for pos, entry in enumerate(dets):
        if not isinstance(entry, Mapping):
            raise DataError(f"{what}[{pos}]: expected a dict, got {type(entry).__name__}")
        if positional:
            image_pos = pos
            where = f"{what} for image_id {gt.image_ids[pos]}"
        else:
            if "image_id" not in entry:
                raise DataError(f"{what}[{pos}]: missing 'image_id'")
            image_id = as_image_id(entry["image_id"], f"{what}[{pos}]")
            where = f"{what} for image_id {image_id}"
            if image_id not in gt.index:
                raise DataError(f"{where}: image_id is not in the ground truth")
            image_pos = gt.index[image_id]
        for key in ("boxes", "labels", "scores"):
            if key not in entry:
                raise DataError(f"{where}: missing '{key}'")
        boxes = _boxes(entry["boxes"], where)
        labels = _labels(entry["labels"], boxes.shape[0], num_classes, where)
        scores = to_numpy(entry["scores"], np.float64, f"{where} scores").reshape(-1)
        if scores.shape[0] != boxes.shape[0]:
            raise DataError(f"{where}: {scores.shape[0]} scores for {boxes.shape[0]} boxes")
        if not np.isfinite(scores).all():
            i = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise DataError(f"{where}: score {i} is not finite ({scores[i]})")
        parts_idx.append(np.full(boxes.shape[0], image_pos, dtype=np.int64))
        parts_boxes.append(boxes)
        parts_labels.append(labels)
        parts_scores.append(scores)
    if not parts_idx:
        return FlatDetections(
            np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
        )
    return FlatDetections(
        np.concatenate(parts_idx),
        np.concatenate(parts_boxes),
        np.concatenate(parts_labels),
        np.concatenate(parts_scores),
    )


def check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise DataError(f"classes must be a list of class names, got {type(classes).__name__}")
    if len(classes) == 0:
        raise DataError(
            "classes is empty: give the name of each object class (label i is classes[i-1])"
        )
    return [str(c) for c in classes]


def is_finite_number(value) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
