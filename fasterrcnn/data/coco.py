"""COCO instances JSON reader.

The JSON holds "images" ({"id", "file_name", "width", "height"}), "categories" ({"id",
"name"}) and "annotations" ({"image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"}).
Boxes [x, y, w, h] (continuous pixels) become (x, y, x + w, y + h). Crowd regions
(`iscrowd` = 1) are excluded from the targets and counted (COCO evaluation handles them from
the JSON itself). Category ids, which need not be contiguous, map to labels 1..K in
`category_ids` order; `category_ids[label - 1]` gives the id back when writing results.
"""

from __future__ import annotations

import glob
import json
import math
import os
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
from fasterrcnn.data.formats import Reader
from fasterrcnn.data.report import DataReport
from fasterrcnn.errors import DataError

__all__ = ["COCODataset", "READER", "find_coco_json", "coco_image_dir"]
_MAX_LISTED = 5


class COCODataset(DetectionDataset):
    """A COCO-format detection data set.

    Args:
        image_dir: directory the images' `file_name`s are relative to.
        annotation_json: the instances JSON file.
        classes: class names to use (label i is classes[i-1]); each must be the name of a
            category of the JSON. None: all categories, in order of category id. Annotations
            of other categories are skipped and counted.
        transforms, seed, skip_empty: as for `VOCDataset`.
        verify_images: read every image's header up front (size, colour mode, EXIF) and use
            the real size where the JSON disagrees; False trusts the JSON's width/height
            (faster on very large sets; the existence of every file is still checked).

    Attributes: `category_ids[label - 1]` is the COCO category id of a label.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotation_json: str | os.PathLike,
        classes: Sequence[str] | None = None,
        transforms: Callable | None = None,
        *,
        seed: int = 0,
        skip_empty: bool = False,
        verify_images: bool = True,
    ):
        image_dir, jpath = os.fspath(image_dir), os.fspath(annotation_json)
        classes = check_classes(classes)
        self.image_dir, self.annotation_json = image_dir, jpath
        if not os.path.isdir(image_dir):
            raise DataError(f"{image_dir}: image directory not found")
        data = _load_json(jpath)
        report = DataReport(name=os.path.basename(jpath))

        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise DataError(f"{jpath}: missing required field '{key}'")
            if not isinstance(data[key], list):
                raise DataError(f"{jpath}: field '{key}' must be a list")

        # Categories -> labels.
        cats: dict[int, str] = {}
        for k, c in enumerate(data["categories"]):
            cid = _int(_field(c, "id", jpath, f"categories[{k}]"), jpath, f"categories[{k}].id")
            name = _field(c, "name", jpath, f"categories[{k}]")
            if not isinstance(name, str) or not name.strip():
                raise DataError(
                    f"{jpath}: categories[{k}].name must be a non-empty string, got {_short(name)}"
                )
            name = name.strip()
            if cid in cats:
                raise DataError(f"{jpath}: category id {cid} appears twice in 'categories'")
            cats[cid] = name
        if classes is None:
            category_ids = sorted(cats)
            classes = [cats[i] for i in category_ids]
            if len(set(classes)) != len(classes):
                dupes = sorted({n for n in classes if classes.count(n) > 1})
                raise DataError(f"{jpath}: category names appear twice: {dupes}")
        else:
            by_name = {}
            for cid in sorted(cats):
                by_name.setdefault(cats[cid], cid)
            absent = [c for c in classes if c not in by_name]
            if absent:
                raise DataError(
                    f"{jpath}: class(es) {absent} are not among the categories of the file "
                    f"({_listing(sorted(by_name))})"
                )
            category_ids = [by_name[c] for c in classes]
        self.category_ids: list[int] = category_ids
        label_of_cat = {cid: i for i, cid in enumerate(category_ids, start=1)}

        # Images.
        images: dict[int, dict] = {}
        order: list[int] = []
        for k, im in enumerate(data["images"]):
            where = f"images[{k}]"
            iid = _int(_field(im, "id", jpath, where), jpath, f"{where}.id")
            fname = _field(im, "file_name", jpath, where)
            if not isinstance(fname, str) or not fname:
                raise DataError(f"{jpath}: {where}.file_name must be a non-empty string")
            if iid in images:
                raise DataError(f"{jpath}: image id {iid} appears twice in 'images'")
            w = None if im.get("width") is None else _int(im["width"], jpath, f"{where}.width")
            h = None if im.get("height") is None else _int(im["height"], jpath, f"{where}.height")
            # a missing, null or non-positive size is unknown: the image file's header gives it
            size = (h, w) if w is not None and h is not None and w > 0 and h > 0 else None
            images[iid] = {
                "file": os.path.join(image_dir, fname),
                "name": fname,
                "size": size,
                "objects": [],
            }
            order.append(iid)
        missing = [images[i]["name"] for i in order if not os.path.isfile(images[i]["file"])]
        if missing:
            raise DataError(
                f"{len(missing)} image file(s) listed in {jpath} not found in {image_dir}: "
                + _listing(missing)
            )

        # Annotations.
        for k, a in enumerate(data["annotations"]):
            where = f"annotations[{k}]"
            if not isinstance(a, dict):
                raise DataError(f"{jpath}: {where} is not an object")
            aid = a.get("id", k)
            where = f"annotation id {aid}"
            iid = _int(_field(a, "image_id", jpath, where), jpath, f"{where} image_id")
            cid = _int(_field(a, "category_id", jpath, where), jpath, f"{where} category_id")
            bbox = _field(a, "bbox", jpath, where)
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(_is_finite_number(v) for v in bbox)
            ):
                raise DataError(
                    f"{jpath}: {where} bbox must be 4 finite numbers [x, y, w, h], got {_short(bbox)}"
                )
            if iid not in images:
                raise DataError(f"{jpath}: {where} refers to image id {iid}, not in 'images'")
            if cid not in cats:
                raise DataError(
                    f"{jpath}: {where} refers to category id {cid}, not in 'categories'"
                )
            crowd = a.get("iscrowd", 0)
            if type(crowd) not in (int, bool) or crowd not in (0, 1):
                raise DataError(f"{jpath}: {where} iscrowd must be 0 or 1, got {_short(crowd)}")
            images[iid]["objects"].append((aid, cid, bbox, bool(crowd)))

        records = []
        for iid in order:
            im = images[iid]
            path = im["file"]
            if verify_images or im["size"] is None:
                real = probe_image(path, report)
                check_size(path, im["size"], real, f"{os.path.basename(jpath)}", report)
                height, width = real
            else:
                height, width = im["size"]
            boxes, labels, desc = [], [], []
            for aid, cid, (x, y, w, h), crowd in im["objects"]:
                if crowd:
                    report.add(
                        R.CROWD,
                        path,
                        f"annotation id {aid} ({cats[cid]}) is a crowd region; excluded",
                    )
                    continue
                if cid not in label_of_cat:
                    report.add(
                        R.UNKNOWN_CLASS,
                        path,
                        f"annotation id {aid} has class '{cats[cid]}', not one of the "
                        f"{len(classes)} classes; skipped",
                    )
                    continue
                boxes.append([x, y, x + w, y + h])
                labels.append(label_of_cat[cid])
                desc.append(f"annotation id {aid} ({cats[cid]})")
            clipped, keep = clean_boxes(
                np.array(boxes, dtype=np.float64).reshape(-1, 4), desc, height, width, path, report
            )
            labels_kept = [lab for lab, k in zip(labels, keep, strict=True) if k]
            rec = make_record(
                path,
                iid,
                im["name"],
                height,
                width,
                clipped[keep],
                labels_kept,
                [False] * len(labels_kept),
            )
            empty_record_check(rec, report)
            records.append(rec)
        super().__init__(
            records, classes, transforms=transforms, seed=seed, skip_empty=skip_empty, report=report
        )


def read_json(path: str, encoding: str = "utf-8"):
    """A JSON annotation file's content; a missing, unreadable or malformed file is a
    DataError naming it (the COCO and LabelMe readers)."""
    try:
        with open(path, encoding=encoding) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits; too deeply nested
        raise DataError(f"{path}: malformed JSON ({exc})") from None


def _load_json(path: str) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a JSON object with 'images', 'annotations', 'categories'"
        )
    return data


def _field(obj, key: str, path: str, where: str):
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where} is not an object")
    if key not in obj:
        raise DataError(f"{path}: {where} is missing required field '{key}'")
    return obj[key]


def _int(value, path: str, where: str) -> int:
    """An integer (or a float of integral value) that fits in 64 bits (ids become int64)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))
    ):
        raise DataError(f"{path}: {where} must be an integer, got {_short(value)}")
    if not -(2**63) <= value < 2**63:
        raise DataError(f"{path}: {where} must be an integer of at most 64 bits, got {_short(value)}")
    return int(value)


def _is_finite_number(value) -> bool:
    """A JSON number (not a bool) that is finite as a float (a huge integer is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(names) -> str:
    names = list(names)
    shown = ", ".join(str(n) for n in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


# ------------------------------------------------------------- the format's registry entry


def find_coco_json(path: str, split: str | None) -> str | None:
    """The annotation file of `split` (default train) in a COCO folder: the one match of
    annotations/instances_<split>.json, annotations/instances_<split>*.json,
    annotations/<split>.json, instances_<split>.json, <split>.json. DataError when several match."""
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


def coco_image_dir(jpath: str, split: str | None, root: str | None = None) -> str:
    """The image folder of an annotation file: the first that exists of ROOT/<split>,
    ROOT/images/<split>, ROOT/<name of the JSON without instances_>, ROOT/images/<that>,
    ROOT/images, the JSON's folder (ROOT: the data set folder, by default the JSON's folder or
    its parent when that is annotations/)."""
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


def _detect(path: str, split: str | None) -> dict | None:
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            return {"annotation_json": path, "image_dir": coco_image_dir(path, split)}
        return None
    jpath = find_coco_json(path, split) if os.path.isdir(path) else None
    if jpath is None:
        return None
    return {"annotation_json": jpath, "image_dir": coco_image_dir(jpath, split, path)}


def _locate(path: str, split: str | None) -> dict:
    """`--format coco`: any file is taken for the JSON; a folder needs the split's file."""
    if os.path.isfile(path):
        jpath = path
    elif os.path.isdir(path):
        jpath = find_coco_json(path, split)
        if jpath is None:
            raise DataError(f"{path}: no COCO annotation file for split '{split}' found")
    else:
        raise DataError(f"{path}: data set path not found")
    return {"annotation_json": jpath, "image_dir": coco_image_dir(jpath, split)}


def _diagnose(path: str, split: str | None) -> str | None:
    """A folder with JSON files, none of them the split's: say which were found."""
    if not os.path.isdir(path):
        return None
    jsons = sorted(
        os.path.relpath(p, path)
        for p in glob.glob(os.path.join(path, "*.json"))
        + glob.glob(os.path.join(path, "annotations", "*.json"))
    )
    if not jsons:
        return None
    return (
        f"{path}: no COCO annotation file for split '{split or 'train'}' "
        f"(found {', '.join(jsons[:5])}); pass --split or the JSON file itself"
    )


def _build(where: dict, split: str | None, *, classes=None, transforms=None, seed: int = 0,
           skip_empty: bool = False, image_dir=None) -> COCODataset:
    """The registry's build: a COCODataset (`image_dir` replaces the guessed image folder)."""
    return COCODataset(
        image_dir if image_dir is not None else where["image_dir"],
        where["annotation_json"],
        classes,
        transforms,
        seed=seed,
        skip_empty=skip_empty,
    )


def _splits(path: str) -> list[str] | None:
    """The split names of a COCO folder's annotation files (instances_ left out); None for a
    file, or a folder without JSON files."""
    if not os.path.isdir(path):
        return None
    names = set()
    for pattern in ("annotations/instances_*.json", "annotations/*.json", "instances_*.json", "*.json"):
        for hit in glob.glob(os.path.join(path, pattern)):
            stem = os.path.splitext(os.path.basename(hit))[0]
            names.add(stem[len("instances_"):] if stem.startswith("instances_") else stem)
    return sorted(names) if names else None


def _has_split(path: str, split: str) -> bool | None:
    if not os.path.isdir(path):
        return None
    return find_coco_json(path, split) is not None


def _single_split(path: str) -> bool:
    """A COCO JSON file is one split."""
    return os.path.isfile(path)


READER = Reader(detect=_detect, build=_build, splits=_splits, has_split=_has_split,
                single_split=_single_split, locate=_locate, diagnose=_diagnose)
