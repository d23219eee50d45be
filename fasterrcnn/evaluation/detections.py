"""Detections in and out: per-image dicts <-> COCO results lists, and detections files.

Two formats of detections are understood everywhere in `fasterrcnn.evaluation`:

* **per-image dicts**, what the model returns (boxes already in original image pixels):
  ``{"image_id": int, "boxes": [D, 4] xyxy, "labels": [D] in 1..K, "scores": [D]}``;
* a **COCO results list**, what any detector can write to a JSON file:
  ``[{"image_id": int, "category_id": int, "bbox": [x, y, width, height], "score": float}]``.

Labels and COCO category ids are related by ``category_ids``: label ``i`` is category
``category_ids[i - 1]``; without it the mapping is the identity (category_id == label).

A detections file (`load_detections_file`) holds either format as a JSON list; each entry is
checked and a bad one raises `DataError` naming the file and the entry's index.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from fasterrcnn.errors import DataError
from fasterrcnn.evaluation._common import (
    _boxes,
    _labels,
    as_image_id,
    category_to_label_map,
    to_numpy,
)

__all__ = [
    "coco_results_to_detections",
    "detections_to_coco_results",
    "load_coco_results",
    "load_detections_file",
    "read_json_file",
    "validate_coco_results",
    "write_detections_file",
]

_COCO_KEYS = ("image_id", "category_id", "bbox", "score")


def _boxes_labels_scores(
    entry: Mapping, num_classes: int | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An entry's `boxes` [N, 4], `labels` [N] (object classes, >= 1) and finite `scores` [N],
    checked; errors name `where`."""
    boxes = _boxes(entry["boxes"], where)
    labels = _labels(entry["labels"], boxes.shape[0], num_classes, where)
    if labels.size and labels.min() < 1:
        raise DataError(f"{where}: label {int(labels.min())} is not an object class (labels start at 1)")
    scores = to_numpy(entry["scores"], np.float64, f"{where} scores").reshape(-1)
    if scores.shape[0] != boxes.shape[0]:
        raise DataError(f"{where}: {scores.shape[0]} scores for {boxes.shape[0]} boxes")
    if not np.isfinite(scores).all():
        j = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise DataError(f"{where}: score {j} is not finite ({scores[j]})")
    return boxes, labels, scores


def _number(value) -> float | None:
    """`value` as a float if it is a real number (not a bool), else None; an integer too large
    for a float becomes +-inf (so that it fails the finiteness checks)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _integer_id(value, where: str, name: str) -> int:
    """An image or category id: an integer (not a bool) that fits in 64 bits (labels and ids
    become int64 tensors); errors name `where` and the field."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{where}: {name} must be an integer, got {_short(value)}")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise DataError(f"{where}: {name} {_short(value)} does not fit in 64 bits")
    return value


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_coco_results(
    results,
    *,
    source: str = "results",
    image_ids: Iterable[int] | None = None,
    category_ids: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> list[dict]:
    """Check a COCO results list and return normalised copies of its entries.

    Each entry must be a dict with an integer ``image_id`` (one of `image_ids` when given),
    an integer ``category_id`` (one of `category_ids` when given; otherwise, with the identity
    mapping, in 1..`num_classes`), ``bbox`` = 4 finite numbers [x, y, w, h] with w, h >= 0,
    and a finite ``score``. Returned entries hold exactly those four keys, with Python ints
    and floats. Raises `DataError` naming `source` and the index of the first bad entry.
    """
    if not isinstance(results, list):
        raise DataError(
            f"{source}: expected a JSON list of detections "
            f'([{{"image_id", "category_id", "bbox", "score"}}, ...]), '
            f"got {type(results).__name__}"
        )
    known_images = None if image_ids is None else set(image_ids)
    mapping = category_to_label_map(category_ids)
    out: list[dict] = []
    for i, entry in enumerate(results):
        where = f"{source}: entry {i}"
        if not isinstance(entry, Mapping):
            raise DataError(f"{where}: expected an object, got {_short(entry)}")
        for key in _COCO_KEYS:
            if key not in entry:
                raise DataError(f"{where}: missing key '{key}' (entry: {_short(dict(entry))})")
        image_id = _integer_id(entry["image_id"], where, "image_id")
        if known_images is not None and image_id not in known_images:
            raise DataError(f"{where}: unknown image_id {image_id} (not in the ground truth)")
        cat = _integer_id(entry["category_id"], where, "category_id")
        if mapping is not None:
            if cat not in mapping:
                raise DataError(
                    f"{where}: unknown category_id {cat} (known: {sorted(mapping)[:20]})"
                )
        elif cat < 1 or (num_classes is not None and cat > num_classes):
            hi = "" if num_classes is None else f"..{num_classes}"
            raise DataError(
                f"{where}: unknown category_id {cat} (with no category_ids mapping, "
                f"category ids are the labels 1{hi})"
            )
        bbox = entry["bbox"]
        nums = [_number(v) for v in bbox] if isinstance(bbox, (list, tuple)) else None
        if nums is None or len(nums) != 4 or any(v is None for v in nums):
            raise DataError(
                f"{where}: bbox must be 4 numbers [x, y, width, height], got {_short(bbox)}"
            )
        if not all(math.isfinite(v) for v in nums):
            raise DataError(f"{where}: bbox has a non-finite value: {_short(bbox)}")
        if not (math.isfinite(nums[0] + nums[2]) and math.isfinite(nums[1] + nums[3])):
            raise DataError(f"{where}: bbox corner x + width or y + height is not finite: {_short(bbox)}")
        if nums[2] < 0:
            raise DataError(f"{where}: bbox has a negative width ({nums[2]})")
        if nums[3] < 0:
            raise DataError(f"{where}: bbox has a negative height ({nums[3]})")
        score = _number(entry["score"])
        if score is None:
            raise DataError(f"{where}: score must be a number, got {_short(entry['score'])}")
        if not math.isfinite(score):
            raise DataError(f"{where}: score is not finite ({score})")
        out.append({"image_id": image_id, "category_id": cat, "bbox": nums, "score": score})
    return out


def detections_to_coco_results(dets, category_ids: Sequence[int] | None = None) -> list[dict]:
    """Per-image detection dicts (each with "image_id") -> a COCO results list.

    bbox = [x1, y1, x2 - x1, y2 - y1] (continuous convention); category_id =
    category_ids[label - 1], or the label itself when `category_ids` is None. Order: image by
    image, detections in their given order.
    """
    mapping = list(category_ids) if category_ids is not None else None
    if mapping is not None:
        category_to_label_map(mapping)  # checks the ids
    num_classes = len(mapping) if mapping is not None else None
    if isinstance(dets, Mapping) or not isinstance(dets, Sequence):
        raise DataError(
            f"detections must be a sequence of per-image dicts, got {type(dets).__name__}"
        )
    out: list[dict] = []
    for pos, entry in enumerate(dets):
        if not isinstance(entry, Mapping) or "image_id" not in entry:
            raise DataError(f"detections[{pos}]: expected a dict with an 'image_id'")
        image_id = as_image_id(entry["image_id"], f"detections[{pos}]")
        where = f"detections for image_id {image_id}"
        for key in ("boxes", "labels", "scores"):
            if key not in entry:
                raise DataError(f"{where}: missing '{key}'")
        boxes, labels, scores = _boxes_labels_scores(entry, num_classes, where)
        for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True):
            x1, y1, x2, y2 = box
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(label if mapping is None else mapping[label - 1]),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return out


def coco_results_to_detections(
    results,
    category_ids: Sequence[int] | None = None,
    *,
    image_ids: Sequence[int] | None = None,
    source: str = "results",
) -> list[dict]:
    """A COCO results list -> per-image detection dicts with torch tensors.

    Returns ``[{"image_id", "boxes": float64 [D, 4] xyxy, "labels": int64 [D],
    "scores": float64 [D]}]``, one dict per image in order of first appearance, or, when
    `image_ids` is given, exactly one per id in that order (empty for images without
    detections; an id outside `image_ids` is an error). Entries are checked as in
    `validate_coco_results`.
    """
    valid = validate_coco_results(
        results, source=source, image_ids=image_ids, category_ids=category_ids
    )
    mapping = category_to_label_map(category_ids)
    groups: dict[int, list[dict]] = {int(i): [] for i in image_ids} if image_ids is not None else {}
    for r in valid:
        groups.setdefault(r["image_id"], []).append(r)
    out = []
    for image_id, rs in groups.items():
        xywh = torch.tensor([r["bbox"] for r in rs], dtype=torch.float64).reshape(-1, 4)
        labels = [r["category_id"] if mapping is None else mapping[r["category_id"]] for r in rs]
        out.append(
            {
                "image_id": image_id,
                "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.tensor([r["score"] for r in rs], dtype=torch.float64),
            }
        )
    return out


def read_json_file(path, what: str = "file"):
    """Parse a JSON file; a missing or malformed file raises `DataError` naming it."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON {what}") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 JSON {what} ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits; too deeply nested
        raise DataError(f"{path}: invalid JSON ({exc})") from None


def load_coco_results(
    path,
    *,
    image_ids: Iterable[int] | None = None,
    category_ids: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> list[dict]:
    """Read and check a COCO results JSON file (see `validate_coco_results`)."""
    data = read_json_file(path, "detections file")
    return validate_coco_results(
        data,
        source=os.fspath(path),
        image_ids=image_ids,
        category_ids=category_ids,
        num_classes=num_classes,
    )


def _json_values(entry: Mapping, key: str, where: str) -> np.ndarray:
    """`entry[key]` of a per-image entry read from JSON, checked to hold JSON numbers: "boxes"
    a list of [x1, y1, x2, y2], "labels" a list of integers, "scores" a list of numbers
    (numpy alone would read the strings "1" and the booleans true/false as numbers)."""
    value = entry[key]
    rows = value if key == "boxes" else [value]
    if not isinstance(value, list) or not all(isinstance(r, list) and (key != "boxes" or len(r) == 4) for r in rows):
        shape = "a list of [x1, y1, x2, y2] (shape [N, 4])" if key == "boxes" else "a list of numbers"
        raise DataError(f"{where}: {key} must be {shape}, got {_short(value)}")
    floats = [[_number(v) for v in row] for row in rows]
    for row, nums in zip(rows, floats):
        for v, x in zip(row, nums):
            if x is None or (key == "labels" and not (x.is_integer() and abs(x) < 2**63)):
                raise DataError(f"{where}: {key} holds {_short(v)}, not {'an integer' if key == 'labels' else 'a number'}")
    if key == "labels":
        return np.array([int(v) for v in value], dtype=np.int64)
    if key == "boxes":
        return np.array(floats, dtype=np.float64).reshape(-1, 4)
    return np.array(floats[0], dtype=np.float64)


def _per_image_from_json(data: list, source: str, image_ids, num_classes) -> list[dict]:
    known = None if image_ids is None else set(image_ids)
    out = []
    for i, entry in enumerate(data):
        where = f"{source}: entry {i}"
        if not isinstance(entry, Mapping):
            raise DataError(f"{where}: expected an object, got {_short(entry)}")
        for key in ("image_id", "boxes", "labels", "scores"):
            if key not in entry:
                raise DataError(f"{where}: missing key '{key}'")
        image_id = _integer_id(entry["image_id"], where, "image_id")
        if known is not None and image_id not in known:
            raise DataError(f"{where}: unknown image_id {image_id} (not in the ground truth)")
        values = {key: _json_values(entry, key, where) for key in ("boxes", "labels", "scores")}
        boxes, labels, scores = _boxes_labels_scores(values, num_classes, where)
        out.append(
            {
                "image_id": image_id,
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels),
                "scores": torch.from_numpy(scores),
            }
        )
    return out


def load_detections_file(
    path,
    *,
    image_ids: Sequence[int] | None = None,
    category_ids: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> list[dict]:
    """Read a detections JSON file from any detector -> per-image detection dicts.

    The file holds a JSON list, either a COCO results list (entries with "bbox") or
    per-image entries ``{"image_id", "boxes": [[x1, y1, x2, y2], ...], "labels", "scores"}``;
    the format is recognised from the first entry. COCO category ids are mapped to labels
    through `category_ids` (label i <-> category_ids[i - 1]; identity when None).
    `image_ids` (the ground truth's) and `num_classes` make unknown images / categories an
    error. Returns dicts of torch tensors as `coco_results_to_detections` does (per-image
    entries keep their order and are not merged).

    Raises `DataError` naming the file and the first bad entry: not a list, missing key,
    bbox not 4 numbers, negative width or height, non-finite number, unknown image_id or
    category_id, mismatched lengths.
    """
    source = os.fspath(path)
    data = read_json_file(path, "detections file")
    if not isinstance(data, list):
        raise DataError(
            f"{source}: expected a JSON list of detections, got a JSON {type(data).__name__}"
            + (" (a COCO annotation file? pass the results list)" if isinstance(data, dict) else "")
        )
    if not data:
        return []
    first = data[0]
    if isinstance(first, Mapping) and "boxes" in first and "bbox" not in first:
        if num_classes is None and category_ids is not None:
            num_classes = len(category_ids)  # labels 1..K index category_ids
        return _per_image_from_json(data, source, image_ids, num_classes)
    results = validate_coco_results(
        data,
        source=source,
        image_ids=image_ids,
        category_ids=category_ids,
        num_classes=num_classes,
    )
    return coco_results_to_detections(results, category_ids, source=source)


def write_detections_file(path, dets, category_ids: Sequence[int] | None = None) -> str:
    """Write per-image detections as a COCO results JSON file (atomically); returns the path."""
    from fasterrcnn.fileio import atomic_write_text

    results = detections_to_coco_results(dets, category_ids)
    return atomic_write_text(path, json.dumps(results, separators=(",", ":")))
