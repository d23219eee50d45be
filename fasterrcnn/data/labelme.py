"""LabelMe JSON reader: one JSON file per image, as the LabelMe annotation tool saves them.

    ROOT/[<split>/]NAME.json   {"imagePath": "NAME.jpg" (relative to the JSON's folder),
                                "imageHeight": H, "imageWidth": W,
                                "shapes": [{"label": "cat", "points": [[x, y], ...],
                                            "shape_type": "rectangle" | "polygon" | ...}]}

Points are continuous pixel coordinates. A rectangle (its 2 opposite corners, in any order)
is a box; a polygon stands for its bounding box (counted in the report); other shapes (point,
line, linestrip, circle, mask) are skipped and counted. A shape without `shape_type` is a
polygon (LabelMe's default). The image must be a file: an image only embedded in the JSON
(`imageData`) is an error saying so. `imageHeight`/`imageWidth` are checked against the file
(the file's size is used, counted).

Class names: the sorted labels of the split's boxes and polygons, or the given `classes`
(objects of other classes are skipped and counted). Splits: the subfolders holding JSON
files (train/, val/, test/); a folder holding the JSON files itself is one split, read
whatever split is asked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence

import numpy as np

from fasterrcnn.data import report as R
from fasterrcnn.data.base import (
    DetectionDataset,
    check_classes,
    check_size,
    clean_boxes,
    empty_record_check,
    make_record,
    probe_image,
)
from fasterrcnn.data.coco import _int, _is_finite_number, _listing, _short, read_json
from fasterrcnn.data.formats import Reader
from fasterrcnn.data.report import DataReport
from fasterrcnn.errors import DataError

__all__ = ["LabelMeDataset", "READER", "parse_labelme_json"]

BOX_SHAPES = ("rectangle", "polygon")
_PEEK_BYTES = 1 << 16
_SHAPES_KEY = re.compile(rb'"shapes"\s*:')


# ---------------------------------------------------------------------------------- layout


def _json_files(folder: str) -> list[str]:
    """The .json files of a folder (not its subfolders), sorted."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(".json") and os.path.isfile(os.path.join(folder, f)))


def _layout(root: str) -> dict[str | None, str]:
    """{split: folder}: {None: ROOT} when ROOT holds JSON files, else its subfolders that do."""
    if _json_files(root):
        return {None: root}
    subs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    return {d: os.path.join(root, d) for d in subs if _json_files(os.path.join(root, d))}


def _looks_like_labelme(path: str) -> bool:
    """The file starts as a JSON object with a "shapes" key (read: its first 64 KiB)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK_BYTES)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and _SHAPES_KEY.search(head) is not None


def _detect(path: str, split: str | None) -> dict | None:
    if not os.path.isdir(path):
        return None
    layout = _layout(path)
    if not layout:
        return None
    first = _json_files(next(iter(layout.values())))[0]
    return {"root": path} if _looks_like_labelme(first) else None


# ------------------------------------------------------------------------------ JSON files


def _read_json(path: str):
    return read_json(path, encoding="utf-8-sig")  # annotation tools may write a byte-order mark


def parse_labelme_json(path: str, image_dir: str | None = None) -> dict:
    """{"json", "image", "embedded", "size" (H, W) or None, "labels" [N], "boxes" [N, 4]
    float64 (x1 y1 x2 y2), "polygon" [N] bool, "index" [N] (of the shape), "skipped"
    [(index, shape_type, label)]}; DataError naming the file and field for anything malformed.

    `image` is imagePath relative to the JSON's folder (or, when that does not exist, its file
    name beside the JSON), or its file name in `image_dir`."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a LabelMe JSON object with 'shapes' and 'imagePath', got {_short(data)}")
    if "shapes" not in data:
        raise DataError(f"{path}: missing required field 'shapes'")
    if not isinstance(data["shapes"], list):
        raise DataError(f"{path}: field 'shapes' must be a list, got {_short(data['shapes'])}")
    labels, points, kinds, index, skipped = [], [], [], [], []
    for k, shape in enumerate(data["shapes"]):
        where = f"shapes[{k}]"
        if not isinstance(shape, dict):
            raise DataError(f"{path}: {where} is not an object")
        kind = shape.get("shape_type")
        kind = "polygon" if kind is None else kind  # LabelMe's default
        if not isinstance(kind, str):
            raise DataError(f"{path}: {where}.shape_type must be a string, got {_short(kind)}")
        if kind not in BOX_SHAPES:
            skipped.append((k, kind, shape.get("label")))
            continue
        labels.append(_label(path, where, shape))
        points.append(_points(path, where, shape, kind))
        kinds.append(kind)
        index.append(k)
    boxes = _bounding_boxes(points)
    return {
        "json": path,
        "image": _image_path(path, data, image_dir),
        "embedded": bool(data.get("imageData")),
        "size": _size(path, data),
        "labels": labels,
        "boxes": boxes,
        "polygon": np.array([kind == "polygon" for kind in kinds], dtype=bool),
        "index": index,
        "skipped": skipped,
    }


def _label(path: str, where: str, shape: dict) -> str:
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        raise DataError(f"{path}: {where}.label must be a non-empty string, got {_short(label)}")
    return label.strip()


def _points(path: str, where: str, shape: dict, kind: str) -> np.ndarray:
    """The shape's points as float64 [P, 2]: pairs of finite numbers (a rectangle: 2 corners)."""
    if "points" not in shape:
        raise DataError(f"{path}: {where} is missing required field 'points'")
    pts = shape["points"]
    if (
        not isinstance(pts, list)
        or not pts
        or not all(isinstance(p, list) and len(p) == 2 and all(_is_finite_number(v) for v in p) for p in pts)
    ):
        raise DataError(f"{path}: {where}.points must be a list of [x, y] pairs of finite numbers, got {_short(pts)}")
    if kind == "rectangle" and len(pts) not in (2, 4):
        raise DataError(f"{path}: {where} is a rectangle of {len(pts)} points; expected 2 (opposite corners)")
    return np.array(pts, dtype=np.float64)


def _bounding_boxes(points: list[np.ndarray]) -> np.ndarray:
    """[N, 4] (x1 y1 x2 y2): the min and max of each shape's points, in one reduction."""
    if not points:
        return np.zeros((0, 4), dtype=np.float64)
    starts = np.cumsum([0] + [len(p) for p in points[:-1]])
    flat = np.concatenate(points)
    return np.concatenate([np.minimum.reduceat(flat, starts), np.maximum.reduceat(flat, starts)], axis=1)


def _image_path(path: str, data: dict, image_dir: str | None) -> str:
    value = data.get("imagePath")
    if value is None or value == "":
        if data.get("imageData"):
            raise DataError(f"{path}: no imagePath: the image is only embedded as imageData, which is not read; "
                            f"save it as an image file and set imagePath")
        raise DataError(f"{path}: missing required field 'imagePath'")
    if not isinstance(value, str):
        raise DataError(f"{path}: imagePath must be a string, got {_short(value)}")
    value = value.replace("\\", "/")  # LabelMe on Windows
    if image_dir is not None:
        return os.path.join(image_dir, os.path.basename(value))
    image = os.path.normpath(os.path.join(os.path.dirname(path), value))
    beside = os.path.join(os.path.dirname(path), os.path.basename(value))
    # an absolute path of the machine it was annotated on ("C:/Users/..."): the file beside the JSON
    return beside if not os.path.isfile(image) and os.path.isfile(beside) else image


def _size(path: str, data: dict) -> tuple[int, int] | None:
    """(imageHeight, imageWidth) when both are given and positive (each checked when given)."""
    h, w = (None if data.get(k) is None else _int(data[k], path, k) for k in ("imageHeight", "imageWidth"))
    return (h, w) if h is not None and w is not None and h >= 1 and w >= 1 else None


# ---------------------------------------------------------------------------------- reader


class LabelMeDataset(DetectionDataset):
    """A folder of LabelMe JSON files (see the module docstring).

    Args:
        root: the folder of JSON files, or of split subfolders holding them.
        split: the split subfolder; None: every split. A folder holding the JSON files
            itself is one split, read whatever `split` is.
        classes: class names to use (label i is classes[i-1]); None: the sorted labels of
            the split's boxes and polygons. Objects of other classes are skipped and counted.
        transforms, seed, skip_empty: as for `VOCDataset`.
        image_dir: look the images up by file name in this folder instead of imagePath.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        transforms: Callable | None = None,
        *,
        seed: int = 0,
        skip_empty: bool = False,
        image_dir: str | os.PathLike | None = None,
    ):
        root = os.fspath(root)
        classes = check_classes(classes)
        self.root, self.split = root, split
        if not os.path.isdir(root):
            raise DataError(f"{root}: data set directory not found")
        image_dir = None if image_dir is None else os.fspath(image_dir)
        if image_dir is not None and not os.path.isdir(image_dir):
            raise DataError(f"{image_dir}: image directory not found")
        files = _split_files(root, split)
        parsed = [parse_labelme_json(f, image_dir) for f in files]
        _check_images(root, parsed)
        if classes is None:
            classes = sorted({label for p in parsed for label in p["labels"]})
        report = DataReport(name=f"{os.path.basename(os.path.normpath(root))}/{split or 'all'}")
        label_of = {c: i for i, c in enumerate(classes, start=1)}
        records = [self._record(k, p, label_of, report) for k, p in enumerate(parsed)]
        super().__init__(records, classes, transforms=transforms, seed=seed, skip_empty=skip_empty, report=report)

    def _record(self, index: int, ann: dict, label_of: dict[str, int], report: DataReport):
        """One image's record: sizes checked, shapes converted, boxes clipped, all counted."""
        path, jpath = ann["image"], ann["json"]
        height, width = probe_image(path, report)
        check_size(jpath, ann["size"], (height, width), "imageHeight/imageWidth", report)
        _report_shapes(jpath, ann, report)
        names = np.array(ann["labels"], dtype=str)
        labels = _labels(names, label_of)
        for k in np.flatnonzero(labels == 0):
            report.add(R.UNKNOWN_CLASS, jpath, f"shapes[{ann['index'][k]}] has class '{names[k]}', not one of the "
                       f"{len(label_of)} classes; skipped")
        known = labels > 0
        descriptions = _ShapeNames(np.asarray(ann["index"], dtype=np.int64)[known], names[known])
        clipped, keep = clean_boxes(ann["boxes"][known], descriptions, height, width, jpath, report)
        kept = labels[known][keep]
        name = os.path.splitext(os.path.relpath(jpath, self.root))[0].replace(os.sep, "/")
        rec = make_record(path, index, name, height, width, clipped[keep], kept, np.zeros(len(kept), bool))
        empty_record_check(rec, report)
        return rec


class _ShapeNames(Sequence):
    """clean_boxes' descriptions, "shapes[3] (cat)", made only for the boxes it reports."""

    def __init__(self, index: np.ndarray, names: np.ndarray):
        self.index, self.names = index, names

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k):
        return f"shapes[{self.index[k]}] ({self.names[k]})"


def _labels(names: np.ndarray, label_of: dict[str, int]) -> np.ndarray:
    """The label of each name (0: not one of the classes), one lookup per distinct name."""
    if not len(names):
        return np.zeros(0, dtype=np.int64)
    distinct, inverse = np.unique(names, return_inverse=True)
    return np.array([label_of.get(str(n), 0) for n in distinct], dtype=np.int64)[inverse.reshape(-1)]


def _report_shapes(jpath: str, ann: dict, report: DataReport) -> None:
    """Count the polygons (one message per file) and each skipped shape."""
    polygons = int(ann["polygon"].sum())
    if polygons:
        report.add(R.POLYGON, jpath, f"{polygons} polygon(s): their bounding boxes are used", n=polygons)
    for k, kind, label in ann["skipped"]:
        label = label.strip() if isinstance(label, str) else _short(label, 30)
        report.add(R.SHAPE_SKIPPED, jpath, f"shapes[{k}] ({label[:30]}) is a '{kind[:30]}' shape, not a rectangle "
                   f"or polygon; skipped")


def _split_files(root: str, split: str | None) -> list[str]:
    """The JSON files of the split (every split for None; a flat folder's for any split)."""
    layout = _layout(root)
    if not layout:
        raise DataError(f"{root}: no LabelMe .json files (in the folder or in split subfolders)")
    if None in layout or split is None:
        folders = list(layout.values())
    elif split in layout:
        folders = [layout[split]]
    else:
        raise DataError(f"{root}: no split '{split}'; available splits: {', '.join(str(s) for s in layout)}")
    return [f for folder in folders for f in _json_files(folder)]


def _check_images(root: str, parsed: list[dict]) -> None:
    """DataError listing every JSON whose image file is missing (all at once)."""
    missing = [p for p in parsed if not os.path.isfile(p["image"])]
    if not missing:
        return
    shown = [f"{os.path.relpath(p['json'], root)} -> {p['image']}" for p in missing]
    embedded = sum(p["embedded"] for p in missing)
    hint = (f"; {embedded} of them embed the image as imageData, which is not read: save the images as files "
            f"next to their JSON") if embedded else ""
    raise DataError(f"{len(missing)} image file(s) named by the LabelMe files in {root} not found: "
                    f"{_listing(shown)}{hint}")


# ------------------------------------------------------------- the format's registry entry


def _build(where: dict, split: str | None, *, classes=None, transforms=None, seed: int = 0,
           skip_empty: bool = False, image_dir=None) -> LabelMeDataset:
    """The registry's build: a LabelMeDataset."""
    return LabelMeDataset(where["root"], split, classes, transforms, seed=seed, skip_empty=skip_empty,
                          image_dir=image_dir)


def _splits(path: str) -> list[str] | None:
    """The split subfolders; None for a flat folder or another layout."""
    if _detect(path, None) is None:
        return None
    layout = _layout(path)
    return None if None in layout else list(layout)


def _has_split(path: str, split: str) -> bool | None:
    found = _splits(path)
    return None if found is None else split in found


def _single_split(path: str) -> bool:
    """A folder holding the JSON files itself is one split."""
    return _detect(path, None) is not None and None in _layout(path)


READER = Reader(detect=_detect, build=_build, splits=_splits, has_split=_has_split, single_split=_single_split)
