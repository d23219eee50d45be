"""YOLO txt reader: the layout of Ultralytics, and of the YOLO exports of Roboflow, CVAT and
Label Studio.

    ROOT/data.yaml                   names: [a, b] or {0: a, 1: b} (optional nc: 2); train: /
                                     val: / test: an image folder, a .txt list of image paths,
                                     or a list of those, relative to the `path:` key (itself
                                     relative to the yaml's folder) or to the yaml's folder
    ROOT/classes.txt                 without data.yaml names: one class name per line (id 0 first;
                                     also looked for in ROOT/labels/)
    ROOT/images/[<split>/]NAME.jpg   images, flat or in split subfolders (or ROOT/<split>/images/)
    ROOT/labels/[<split>/]NAME.txt   one object per line: class_id x_center y_center width height,
                                     fractions of the image's width and height, in [0, 1]

The label file of an image is its path with the last `images` folder replaced by `labels` and
the extension by .txt (Ultralytics' rule; beside the image when its path has no `images`
folder). An image without a label file is an image without objects (counted). A line of more
than 5 numbers, `class_id x1 y1 x2 y2 ... xn yn` (a segmentation polygon, n >= 3), stands for
its bounding box (counted). Values outside [0, 1] by more than `TOLERANCE` are an error naming
the file and line; within it, boxes are clipped to the image (counted), like VOC and COCO boxes.

Splits: data.yaml's train/val/test keys; without them, the subfolders of images/ (or the
ROOT/<split>/images/ folders). A flat images/ folder is one split, read whatever split is asked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fasterrcnn._optional import install_hint, optional_import
from fasterrcnn.data import report as R
from fasterrcnn.data.base import (
    DetectionDataset,
    check_classes,
    clean_boxes,
    empty_record_check,
    make_record,
    probe_image,
)
from fasterrcnn.data.coco import _listing, _short
from fasterrcnn.data.formats import Reader
from fasterrcnn.data.report import DataReport
from fasterrcnn.data.voc import IMAGE_EXTENSIONS
from fasterrcnn.errors import DataError

__all__ = ["YOLODataset", "LabelLines", "READER", "TOLERANCE", "label_path", "read_label_file"]

#: How far outside [0, 1] a normalised value may lie (rounding in exporters) and be clipped.
TOLERANCE = 0.01
YAML_NAMES = ("data.yaml", "data.yml")
SPLIT_KEYS = ("train", "val", "test")
_EXTENSIONS = frozenset(e.lower() for e in IMAGE_EXTENSIONS)
_FIELDS = ("x_center", "y_center", "width", "height")
_NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER_RE = re.compile(_NUMBER)
_LINE_RE = re.compile(rf"\s*{_NUMBER}(?:\s+{_NUMBER})*\s*")


# ------------------------------------------------------------------------------ label files


@dataclass
class LabelLines:
    """The objects of one label file: class ids, normalised (x1, y1, x2, y2) boxes, the line
    number of each, and whether it was a polygon."""

    class_ids: np.ndarray  # int64 [N]
    boxes: np.ndarray  # float64 [N, 4], fractions of the image size
    lines: np.ndarray  # int64 [N], 1-based
    polygon: np.ndarray  # bool [N]


def read_label_file(path: str, tolerance: float = TOLERANCE) -> LabelLines:
    """Parse a YOLO label file; DataError naming the file and line for a line that is not
    `class x_center y_center width height` or `class x1 y1 ... xn yn` with values in [0, 1]."""
    rows = _label_rows(path)
    by_length: dict[int, list[tuple[int, list[str]]]] = {}
    for number, fields in rows:
        by_length.setdefault(len(fields), []).append((number, fields))
    parts = [_parse_group(path, group, tolerance) for group in by_length.values()]
    if not parts:
        return LabelLines(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, bool))
    order = np.argsort(np.concatenate([p.lines for p in parts]), kind="stable")
    return LabelLines(*(np.concatenate([getattr(p, f) for p in parts])[order]
                        for f in ("class_ids", "boxes", "lines", "polygon")))


def _label_rows(path: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-empty lines; DataError for a line of non-numbers."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the label file ({exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if not _LINE_RE.fullmatch(line):
            bad = next((t for t in line.split() if not _NUMBER_RE.fullmatch(t)), line.strip())
            raise DataError(f"{path}: line {number}: {_short(bad)} is not a number (expected "
                            f"class_id x_center y_center width height)")
        rows.append((number, line.split()))
    return rows


def _parse_group(path: str, group: list[tuple[int, list[str]]], tolerance: float) -> LabelLines:
    """Lines with the same number of fields, converted and checked at once."""
    lines = np.array([n for n, _ in group], dtype=np.int64)
    width = len(group[0][1])
    if width != 5 and (width < 7 or width % 2 == 0):
        raise DataError(f"{path}: line {lines[0]}: {width} fields; expected 5 (class_id x_center y_center "
                        f"width height) or a polygon (class_id x1 y1 x2 y2 ... xn yn, 3 points or more)")
    values = np.array([fields for _, fields in group]).astype(np.float64)
    class_ids = _class_ids(path, lines, values[:, 0], [f[0] for _, f in group])
    coords = values[:, 1:]
    names = _FIELDS if width == 5 else [f"{'xy'[k % 2]}{k // 2 + 1}" for k in range(width - 1)]
    _check_range(path, lines, coords, names, tolerance)
    if width == 5:
        cx, cy, w, h = coords.T
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    else:
        points = coords.reshape(len(group), -1, 2)
        boxes = np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1)
    return LabelLines(class_ids, boxes, lines, np.full(len(group), width != 5))


def _class_ids(path: str, lines: np.ndarray, values: np.ndarray, texts: list[str]) -> np.ndarray:
    """The first column as non-negative integers (3 or 3.0); DataError naming the line."""
    bad = ~(np.isfinite(values) & (values >= 0) & (values == np.floor(values)) & (values < 2**53))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {lines[k]}: class id {_short(texts[k])} is not a non-negative integer")
    return values.astype(np.int64)


def _check_range(path: str, lines: np.ndarray, coords: np.ndarray, names: Sequence[str], tolerance: float) -> None:
    """Every value finite and in [-tolerance, 1 + tolerance]; DataError naming line and field."""
    finite = np.isfinite(coords)
    bad = ~finite | (coords < -tolerance) | (coords > 1 + tolerance)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = coords[row, col]
    if not finite[row, col]:
        raise DataError(f"{path}: line {lines[row]}: {names[col]} is {value}, not a finite number")
    raise DataError(f"{path}: line {lines[row]}: {names[col]} {value:g} is outside [0, 1] (YOLO coordinates are "
                    f"fractions of the image's width and height)")


def label_path(image: str) -> str:
    """The label file of an image: the last `images` folder of its path replaced by `labels`,
    the extension by .txt (beside the image when there is no `images` folder)."""
    folder, name = os.path.split(image)
    return os.path.join(_labels_folder(folder), os.path.splitext(name)[0] + ".txt")


def _labels_folder(folder: str) -> str:
    parts = folder.split(os.sep)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "images":
            return os.sep.join(parts[:k] + ["labels"] + parts[k + 1:])
    return folder


# ---------------------------------------------------------------------------------- layout


def find_yaml(path: str) -> str | None:
    """PATH itself when it is a .yaml/.yml file, else PATH/data.yaml (or data.yml)."""
    if os.path.isfile(path):
        return path if path.lower().endswith((".yaml", ".yml")) else None
    for name in YAML_NAMES:
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _detect(path: str, split: str | None) -> dict | None:
    """{"root", "yaml"} for a data.yaml (file or in the folder), or a folder with images/ and
    labels/ (or <split>/images and <split>/labels); None otherwise."""
    yaml_file = find_yaml(path)
    if yaml_file is not None:
        root = os.path.dirname(os.path.abspath(yaml_file)) if os.path.isfile(path) else path
        return {"root": root, "yaml": yaml_file}
    if not os.path.isdir(path):
        return None
    if os.path.isdir(os.path.join(path, "images")) and os.path.isdir(os.path.join(path, "labels")):
        return {"root": path, "yaml": None}
    if _split_folders(path, need_labels=True):
        return {"root": path, "yaml": None}
    return None


def _split_folders(root: str, need_labels: bool = False) -> list[str]:
    """The names S of ROOT/S/images folders (Roboflow's layout), sorted."""
    found = []
    for name in sorted(os.listdir(root)):
        images = os.path.join(root, name, "images")
        if os.path.isdir(images) and (not need_labels or os.path.isdir(os.path.join(root, name, "labels"))):
            found.append(name)
    return found


def _load_yaml(path: str) -> dict:
    yaml = optional_import("yaml")
    if yaml is None:
        raise DataError(f"{path}: reading it needs pyyaml, which is not installed ({install_hint('yaml')}); "
                        f"or give the class names in classes.txt instead")
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = yaml.safe_load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: malformed YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping with 'names' and 'train' / 'val' / 'test', got {_short(data)}")
    return data


def _sources(where: dict) -> tuple[dict[str | None, list[str]], dict]:
    """({split: image folders or .txt lists}, the yaml's content); the key None: a flat
    folder (one split)."""
    meta = _load_yaml(where["yaml"]) if where["yaml"] else {}
    keys = [k for k in SPLIT_KEYS if meta.get(k)]
    if keys:
        return {k: _yaml_entries(where["yaml"], meta, k) for k in keys}, meta
    root = where["root"]
    images = os.path.join(root, "images")
    if os.path.isdir(images):
        subs = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))
        flat = any(os.path.splitext(f)[1].lower() in _EXTENSIONS for f in os.listdir(images))
        if subs and not flat:
            return {d: [os.path.join(images, d)] for d in subs}, meta
        return {None: [images]}, meta
    found = {s: [os.path.join(root, s, "images")] for s in _split_folders(root)}
    if not found:
        what = f"train/val/test in {where['yaml']} or " if where["yaml"] else ""
        raise DataError(f"{root}: no images: expected {what}an images/ folder")
    return found, meta


def _yaml_entries(yaml_file: str, meta: dict, key: str) -> list[str]:
    """The existing paths of data.yaml's `key` entry (a path or a list of paths)."""
    value = meta[key]
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise DataError(f"{yaml_file}: '{key}' must be a path or a list of paths, got {_short(value)}")
    base = _yaml_base(yaml_file, meta)
    out = []
    for entry in entries:
        candidate = os.path.normpath(os.path.join(base, entry))
        if not os.path.exists(candidate) and entry.startswith("../"):  # Roboflow's "../train/images"
            candidate = os.path.normpath(os.path.join(base, entry[3:]))
        if not os.path.exists(candidate):
            raise DataError(f"{yaml_file}: '{key}': {entry} not found (looked for {candidate})")
        out.append(candidate)
    return out


def _yaml_base(yaml_file: str, meta: dict) -> str:
    """The folder data.yaml's paths are relative to: its `path:` when that exists, else its own."""
    folder = os.path.dirname(os.path.abspath(yaml_file))
    base = meta.get("path")
    if base is None or base == "":
        return folder
    if not isinstance(base, str):
        raise DataError(f"{yaml_file}: 'path' must be a folder, got {_short(base)}")
    base = base if os.path.isabs(base) else os.path.join(folder, base)
    return base if os.path.isdir(base) else folder  # a data set moved since it was written


def _images(source: str) -> list[str]:
    """The images of a source: every image file under a folder (sorted), or those a .txt
    lists (relative to the list's folder); DataError naming listed files that do not exist."""
    if os.path.isdir(source):
        found = []
        for folder, dirs, files in os.walk(source):
            dirs.sort()
            found += [os.path.join(folder, f) for f in sorted(files) if os.path.splitext(f)[1].lower() in _EXTENSIONS]
        return found
    if not source.lower().endswith(".txt"):
        raise DataError(f"{source}: not a folder of images nor a .txt list of image paths")
    try:
        with open(source, encoding="utf-8-sig") as f:
            listed = [line.strip() for line in f.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{source}: cannot read the image list ({exc})") from None
    folder = os.path.dirname(os.path.abspath(source))
    paths = [os.path.normpath(p if os.path.isabs(p) else os.path.join(folder, p)) for p in listed]
    missing = [p for p, path in zip(listed, paths, strict=True) if not os.path.isfile(path)]
    if missing:
        raise DataError(f"{source} lists {len(missing)} image file(s) that do not exist: {_listing(missing)}")
    return list(dict.fromkeys(paths))


def _orphan_labels(source: str, labels: set[str]) -> None:
    """DataError for label files of the source's labels/ folder that belong to no image."""
    folder = _labels_folder(source)
    if folder == source or not os.path.isdir(folder):
        return
    orphans = []
    for sub, dirs, files in os.walk(folder):
        dirs.sort()
        orphans += [os.path.join(sub, f) for f in sorted(files)
                    if f.endswith(".txt") and f != "classes.txt" and os.path.join(sub, f) not in labels]
    if orphans:
        names = [os.path.relpath(p, folder) for p in orphans]
        raise DataError(f"{len(orphans)} label file(s) in {folder} have no image in {source}: {_listing(names)}")


# ---------------------------------------------------------------------------- class names


def _class_names(where: dict, meta: dict) -> tuple[dict[int, str] | None, str]:
    """({class id: name}, the file they come from) from data.yaml's names or classes.txt."""
    if meta.get("names") is not None:
        return _yaml_names(where["yaml"], meta), where["yaml"]
    for candidate in (os.path.join(where["root"], "classes.txt"), os.path.join(where["root"], "labels", "classes.txt")):
        if os.path.isfile(candidate):
            return _classes_txt(candidate), candidate
    return None, ""


def _yaml_names(yaml_file: str, meta: dict) -> dict[int, str]:
    value = meta["names"]
    if isinstance(value, list):
        items = list(enumerate(value))
    elif isinstance(value, dict):
        items = [(_class_id(yaml_file, k), v) for k, v in value.items()]
    else:
        raise DataError(f"{yaml_file}: 'names' must be a list of class names or a mapping {{id: name}}, "
                        f"got {_short(value)}")
    names = {k: _class_name(yaml_file, f"names[{k}]", v) for k, v in items}
    if len(names) != len(items):  # {0: a, "0": b}
        raise DataError(f"{yaml_file}: 'names' gives a class id twice")
    if not names:
        raise DataError(f"{yaml_file}: 'names' is empty: give at least one class")
    _no_duplicates(yaml_file, list(names.values()))
    nc = meta.get("nc")
    if nc is not None and (isinstance(nc, bool) or nc != len(names)):
        raise DataError(f"{yaml_file}: nc is {_short(nc)} but 'names' holds {len(names)} classes")
    return names


def _class_id(yaml_file: str, key) -> int:
    if isinstance(key, str) and key.strip().isdigit():
        key = int(key)
    if isinstance(key, bool) or not isinstance(key, int) or key < 0:
        raise DataError(f"{yaml_file}: 'names' key {_short(key)} is not a class id (an integer >= 0)")
    return key


def _class_name(file: str, where: str, value) -> str:
    if isinstance(value, bool):
        raise DataError(f"{file}: {where} is {value} (YAML reads yes/no/on/off as booleans): quote the name")
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{file}: {where} must be a non-empty class name, got {_short(value)}")
    return value.strip()


def _no_duplicates(file: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{file}: class names appear twice: {dupes}")


def _classes_txt(path: str) -> dict[int, str]:
    """classes.txt: one name per line (trailing empty lines ignored)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no class names (one per line)")
    names = {k: _class_name(path, f"line {k + 1}", line) for k, line in enumerate(lines)}
    _no_duplicates(path, list(names.values()))
    return names


# -------------------------------------------------------------------------------- reader


class _LineNames(Sequence):
    """clean_boxes' descriptions, "line 3 (cat)", made only for the boxes it reports."""

    def __init__(self, lines: np.ndarray, names: list[str], class_ids: np.ndarray):
        self.lines, self.names, self.class_ids = lines, names, class_ids

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, k):
        return f"line {self.lines[k]} ({self.names[self.class_ids[k]]})"


class YOLODataset(DetectionDataset):
    """A YOLO txt data set (see the module docstring).

    Args:
        path: the data set folder, or its data.yaml.
        split: a split of data.yaml (train/val/test) or a split folder; None: every split. A
            flat folder has one split, read whatever `split` is.
        classes: class names to use (label i is classes[i-1]); each must be one of the data
            set's names. None: all its names, in class-id order. Without data.yaml names or
            classes.txt, `classes` are the names of class ids 0, 1, ... Objects of other
            classes are skipped and counted.
        transforms, seed, skip_empty: as for `VOCDataset`.

    Attributes: `class_ids[label - 1]` is the YOLO class id of a label.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str | None = "train",
        classes: Sequence[str] | None = None,
        transforms: Callable | None = None,
        *,
        seed: int = 0,
        skip_empty: bool = False,
    ):
        path = os.fspath(path)
        classes = check_classes(classes)
        if not os.path.exists(path):
            raise DataError(f"{path}: data set path not found")
        where = _detect(path, split)
        if where is None:
            raise DataError(f"{path}: not a YOLO data set (expected data.yaml, or images/ and labels/ folders)")
        self.root, self.split = where["root"], split
        sources, meta = _sources(where)
        images = self._split_images(where, sources, split)
        id_names, names_file = _class_names(where, meta)
        classes, self.class_ids = _choose_classes(where, id_names, names_file, classes)
        class_map = _ClassMap(id_names or dict(enumerate(classes)), names_file or "--classes", classes)
        report = DataReport(name=f"{os.path.basename(os.path.normpath(self.root))}/{split or 'all'}")
        records = [self._record(k, image, class_map, report) for k, image in enumerate(images)]
        super().__init__(records, classes, transforms=transforms, seed=seed, skip_empty=skip_empty, report=report)

    @staticmethod
    def _split_images(where: dict, sources: dict, split: str | None) -> list[str]:
        """The split's images (all splits for None); orphan label files are an error."""
        if None in sources or split is None:
            chosen = [s for group in sources.values() for s in group]
        elif split in sources:
            chosen = sources[split]
        else:
            raise DataError(f"{where['yaml'] or where['root']}: no split '{split}'; available splits: "
                            f"{', '.join(str(s) for s in sources)}")
        images: list[str] = []
        for source in chosen:
            found = _images(source)
            if os.path.isdir(source):
                _orphan_labels(source, {label_path(p) for p in found})
            images += found
        return list(dict.fromkeys(images))

    def _record(self, index: int, image: str, class_map: _ClassMap, report: DataReport):
        """The record of one image: its label file read, checked, clipped and counted."""
        height, width = probe_image(image, report)
        label_file = label_path(image)
        name = os.path.relpath(image, self.root).replace(os.sep, "/")
        if not os.path.isfile(label_file):
            report.add(R.NO_LABEL_FILE, image, f"no label file {label_file}: an image without objects")
            rec = make_record(image, index, name, height, width, np.zeros((0, 4)), [], [])
            empty_record_check(rec, report)
            return rec
        objects = read_label_file(label_file)
        pos = class_map.positions(label_file, objects)
        labels = class_map.labels[pos]
        _report_objects(label_file, objects, labels, pos, class_map, report)
        known = labels > 0
        scale = np.array([width, height, width, height], dtype=np.float64)
        descriptions = _LineNames(objects.lines[known], class_map.names, pos[known])
        clipped, keep = clean_boxes(objects.boxes[known] * scale, descriptions, height, width, label_file, report)
        kept = labels[known][keep]
        rec = make_record(image, index, name, height, width, clipped[keep], kept, np.zeros(len(kept), bool))
        empty_record_check(rec, report)
        return rec


class _ClassMap:
    """The data set's class ids (sorted), their names, and the label (0: not used) of each."""

    def __init__(self, id_names: dict[int, str], names_file: str, classes: list[str]):
        self.ids = np.array(sorted(id_names), dtype=np.int64)
        self.names = [id_names[i] for i in self.ids.tolist()]
        self.names_file = names_file
        self.num_classes = len(classes)
        label_of = {c: k for k, c in enumerate(classes, start=1)}
        self.labels = np.array([label_of.get(n, 0) for n in self.names], dtype=np.int64)

    def positions(self, label_file: str, objects: LabelLines) -> np.ndarray:
        """The index in `ids` of every object's class id; DataError naming the line of an unknown id."""
        ids = self.ids
        pos = np.minimum(np.searchsorted(ids, objects.class_ids), len(ids) - 1)
        bad = ids[pos] != objects.class_ids
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            span = f"ids {ids[0]}-{ids[-1]}" if len(ids) > 1 else f"id {ids[0]}"
            raise DataError(f"{label_file}: line {objects.lines[k]}: class id {objects.class_ids[k]} is not one of "
                            f"the {len(ids)} classes of {self.names_file} ({span})")
        return pos


def _report_objects(label_file: str, objects: LabelLines, labels: np.ndarray, pos: np.ndarray,
                    class_map: _ClassMap, report: DataReport) -> None:
    """Count the polygons (one message per file) and the objects of classes not used."""
    polygons = objects.lines[objects.polygon]
    if len(polygons):
        shown = ", ".join(str(n) for n in polygons[:5].tolist()) + (", ..." if len(polygons) > 5 else "")
        report.add(R.POLYGON, label_file, f"{len(polygons)} polygon line(s) ({shown}): their bounding boxes are "
                   f"used", n=len(polygons))
    for k in np.flatnonzero(labels == 0):
        report.add(R.UNKNOWN_CLASS, label_file, f"line {objects.lines[k]} has class '{class_map.names[pos[k]]}', "
                   f"not one of the {class_map.num_classes} classes; skipped")


def _choose_classes(where: dict, id_names: dict[int, str] | None, names_file: str,
                    classes: list[str] | None) -> tuple[list[str], list[int]]:
    """(class names, class id of each) from the data set's names and the user's `classes`."""
    if id_names is None:
        if classes is None:
            raise DataError(f"{where['yaml'] or where['root']}: no class names: expected 'names' in data.yaml or a "
                            f"classes.txt (one name per line), or pass the classes (--classes)")
        return classes, list(range(len(classes)))
    if classes is None:
        ids = sorted(id_names)
        return [id_names[i] for i in ids], ids
    id_of = {name: i for i, name in id_names.items()}
    absent = [c for c in classes if c not in id_of]
    if absent:
        raise DataError(f"{names_file}: class(es) {absent} are not among its names "
                        f"({_listing(id_names[i] for i in sorted(id_names))})")
    return classes, [id_of[c] for c in classes]


# ------------------------------------------------------------- the format's registry entry


def _build(where: dict, split: str | None, *, classes=None, transforms=None, seed: int = 0,
           skip_empty: bool = False, image_dir=None) -> YOLODataset:
    """The registry's build (`image_dir` does not apply: the images are in the layout)."""
    return YOLODataset(where["yaml"] or where["root"], split, classes, transforms, seed=seed, skip_empty=skip_empty)


def _splits(path: str) -> list[str] | None:
    """data.yaml's splits or the split folders; None for a flat folder or another layout."""
    where = _detect(path, None) if os.path.exists(path) else None
    if where is None:
        return None
    sources, _ = _sources(where)
    return None if None in sources else list(sources)


def _has_split(path: str, split: str) -> bool | None:
    found = _splits(path)
    return None if found is None else split in found


def _single_split(path: str) -> bool:
    """A flat images/ folder (no data.yaml splits, no split folders) is one split."""
    where = _detect(path, None) if os.path.exists(path) else None
    if where is None:
        return False
    try:
        return None in _sources(where)[0]
    except DataError:  # reading it says why
        return False


READER = Reader(detect=_detect, build=_build, splits=_splits, has_split=_has_split, single_split=_single_split)
