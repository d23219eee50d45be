"""PASCAL VOC layout reader.

    ROOT/Annotations/<id>.xml           <size>, <object>: <name>, <difficult>, <bndbox>
    ROOT/JPEGImages/<id>.jpg            (or the XML's <filename>, or <id>.png/.jpeg/...)
    ROOT/ImageSets/Main/<split>.txt     one id per line (first token; "#" comments allowed)

VOC coordinates are 1-based inclusive pixel indices (xmin = 1 is the first column); they are
converted to continuous coordinates by x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax, so
a box covering pixels 1..W has width W. (`one_based=False` reads them as continuous already.)
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
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

__all__ = ["VOCDataset", "VOC_CLASSES", "IMAGE_EXTENSIONS", "READER", "find_voc_root", "is_voc_root", "voc_splits"]

# The 20 PASCAL VOC object classes, in the order of the devkit (labels 1..20).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".JPG",
    ".JPEG",
    ".PNG",
)
_MAX_LISTED = 5
_XML_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def is_voc_root(path: str | os.PathLike) -> bool:
    return os.path.isdir(os.path.join(path, "Annotations"))


def voc_splits(root: str | os.PathLike) -> list[str]:
    """Names of the split files in ROOT/ImageSets/Main (without .txt)."""
    d = os.path.join(root, "ImageSets", "Main")
    if not os.path.isdir(d):
        return []
    names = [f[:-4] for f in os.listdir(d) if f.endswith(".txt")]
    # leave out VOC's per-class lists (aeroplane_train.txt, ...)
    return sorted(n for n in names if not any(n.startswith(c + "_") for c in VOC_CLASSES))


class VOCDataset(DetectionDataset):
    """A PASCAL VOC-layout data set (see the module docstring).

    Args:
        root: the directory holding Annotations/, JPEGImages/ and ImageSets/Main/.
        split: name of the split file (ImageSets/Main/<split>.txt); None reads every XML in
            Annotations/ (sorted by name).
        classes: object class names (label i is classes[i-1]); None: the sorted names found in
            this split's annotations. Pass the training set's `classes` to its test set so
            that both use the same labels. Objects of other classes are skipped and counted.
        transforms: `t(image, target, rng)`, e.g. `build_transforms(train=True)`; None returns
            the image at its original size.
        seed: seed of the random augmentation (with the epoch and index).
        skip_empty: leave out images with no non-difficult object (for training).
        one_based: VOC's 1-based inclusive coordinates (the standard); False: continuous.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        classes: Sequence[str] | None = None,
        transforms: Callable | None = None,
        *,
        seed: int = 0,
        skip_empty: bool = False,
        one_based: bool = True,
    ):
        root = os.fspath(root)
        classes = check_classes(classes)
        self.root = root
        self.split = split
        if not os.path.isdir(root):
            raise DataError(f"{root}: data set directory not found")
        ann_dir = os.path.join(root, "Annotations")
        img_dir = os.path.join(root, "JPEGImages")
        for d in (ann_dir, img_dir):
            if not os.path.isdir(d):
                raise DataError(f"{d}: directory not found (expected the PASCAL VOC layout)")
        report = DataReport(name=f"{os.path.basename(os.path.normpath(root))}/{split or 'all'}")

        ids, list_file = self._read_ids(root, split)
        missing = [i for i in ids if not os.path.isfile(os.path.join(ann_dir, i + ".xml"))]
        if missing:
            raise DataError(
                f"{list_file} lists {len(missing)} id(s) without an annotation file in "
                f"{ann_dir}: " + _listing(f"{i}.xml" for i in missing)
            )

        # Parse every annotation, then check that every image exists (all at once).
        parsed = [_parse_voc_xml(os.path.join(ann_dir, i + ".xml"), one_based) for i in ids]
        files, missing_images = [], []
        for image_id, ann in zip(ids, parsed, strict=True):
            path = _find_image(img_dir, image_id, ann["filename"])
            files.append(path)
            if path is None:
                missing_images.append(ann["filename"] or f"{image_id}.jpg")
        if missing_images:
            raise DataError(
                f"{len(missing_images)} image file(s) named by {ann_dir} not found in "
                f"{img_dir}: " + _listing(missing_images)
            )

        if classes is None:
            classes = sorted({o[0] for ann in parsed for o in ann["objects"]})
        label_of = {c: i for i, c in enumerate(classes, start=1)}

        records = []
        for index, (image_id, ann, path) in enumerate(zip(ids, parsed, files, strict=True)):
            height, width = probe_image(path, report)
            check_size(ann["xml"], ann["size"], (height, width), "<size>", report)
            names, boxes, difficult, desc = [], [], [], []
            for k, (name, box, dif) in enumerate(ann["objects"]):
                if name not in label_of:
                    report.add(
                        R.UNKNOWN_CLASS,
                        ann["xml"],
                        f"object #{k + 1} has class '{name}', not one of the {len(classes)} "
                        f"classes; skipped",
                    )
                    continue
                names.append(name)
                boxes.append(box)
                difficult.append(dif)
                desc.append(f"object #{k + 1} ({name})")
            clipped, keep = clean_boxes(
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                desc,
                height,
                width,
                ann["xml"],
                report,
            )
            rec = make_record(
                path,
                index,
                image_id,
                height,
                width,
                clipped[keep],
                [label_of[n] for n, k in zip(names, keep, strict=True) if k],
                [d for d, k in zip(difficult, keep, strict=True) if k],
            )
            empty_record_check(rec, report)
            records.append(rec)
        super().__init__(
            records, classes, transforms=transforms, seed=seed, skip_empty=skip_empty, report=report
        )

    @staticmethod
    def _read_ids(root: str, split: str | None) -> tuple[list[str], str]:
        if split is None:
            ann_dir = os.path.join(root, "Annotations")
            ids = sorted(f[:-4] for f in os.listdir(ann_dir) if f.endswith(".xml"))
            return ids, ann_dir
        list_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            have = voc_splits(root)
            hint = f"; available splits: {', '.join(have)}" if have else "; no split files found"
            raise DataError(f"{list_file}: split file not found{hint}")
        try:
            with open(list_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{list_file}: cannot read the split file ({exc})") from None
        ids = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                ids.append(line.split()[0])
        if not ids:
            raise DataError(f"{list_file}: the split file lists no images")
        return ids, list_file


def _listing(names) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _find_image(img_dir: str, image_id: str, filename: str | None) -> str | None:
    candidates = []
    if filename:
        base = os.path.basename(filename)
        candidates.append(base)
        if not os.path.splitext(base)[1]:
            candidates += [base + e for e in IMAGE_EXTENSIONS]
    candidates += [image_id + e for e in IMAGE_EXTENSIONS]
    for c in candidates:
        p = os.path.join(img_dir, c)
        if os.path.isfile(p):
            return p
    return None


def _parse_voc_xml(xml_path: str, one_based: bool) -> dict:
    """{"xml", "filename", "size" (H, W) or None, "objects": [(name, [x1,y1,x2,y2], difficult)]}"""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, LookupError) as exc:  # LookupError: an unknown encoding="..."
        raise DataError(f"{xml_path}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{xml_path}: cannot read ({exc})") from None
    if root.tag != "annotation":
        raise DataError(f"{xml_path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or None

    size = None
    size_el = root.find("size")
    if size_el is not None:
        w = _number(size_el, "width", xml_path, "<size>", required=False)
        h = _number(size_el, "height", xml_path, "<size>", required=False)
        if w is not None and h is not None and round(w) >= 1 and round(h) >= 1:
            size = (int(round(h)), int(round(w)))  # (some tools write 0 when unknown)

    objects = []
    off = 1.0 if one_based else 0.0
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"<object> #{k}"
        name_el = obj.find("name")
        if name_el is None or not (name_el.text or "").strip():
            raise DataError(f"{xml_path}: {where} has no <name>")
        name = name_el.text.strip()
        where = f"<object> #{k} ({name})"
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml_path}: {where} has no <bndbox>")
        xmin = _number(bb, "xmin", xml_path, where)
        ymin = _number(bb, "ymin", xml_path, where)
        xmax = _number(bb, "xmax", xml_path, where)
        ymax = _number(bb, "ymax", xml_path, where)
        dif_text = (obj.findtext("difficult") or "0").strip().lower()
        if dif_text not in ("0", "1", "true", "false", "0.0", "1.0"):
            raise DataError(f"{xml_path}: {where} <difficult> is {dif_text!r}, expected 0 or 1")
        difficult = dif_text in ("1", "true", "1.0")
        objects.append((name, [xmin - off, ymin - off, xmax, ymax], difficult))
    return {"xml": xml_path, "filename": filename, "size": size, "objects": objects}


def _number(parent: ET.Element, tag: str, xml_path: str, where: str, required: bool = True):
    el = parent.find(tag)
    if el is None or el.text is None or not el.text.strip():
        if not required:
            return None
        raise DataError(f"{xml_path}: {where} has no <{tag}>")
    text = el.text.strip()
    # float() alone would also read "1_0" as 10 and non-ASCII digits ("١٢" as 12)
    if not _XML_NUMBER.fullmatch(text) and text.lower().lstrip("+-") not in ("inf", "infinity", "nan"):
        raise DataError(f"{xml_path}: {where} <{tag}> is {text!r}, not a number")
    value = float(text)
    if not math.isfinite(value):
        raise DataError(f"{xml_path}: {where} <{tag}> is {el.text.strip()!r}, not a finite number")
    return value


# ------------------------------------------------------------- the format's registry entry


def find_voc_root(path: str) -> str | None:
    """The VOC root at `path`: PATH itself (with Annotations/), or its one VOC*/ directory (as
    in VOCdevkit/, also looked for in PATH/VOCdevkit). DataError when there are several."""
    if is_voc_root(path):
        return path
    for parent in (path, os.path.join(path, "VOCdevkit")):
        if not os.path.isdir(parent):
            continue
        subs = sorted(
            os.path.join(parent, d)
            for d in os.listdir(parent)
            if d.upper().startswith("VOC") and is_voc_root(os.path.join(parent, d))
        )
        if len(subs) == 1:
            return subs[0]
        if len(subs) > 1:
            raise DataError(
                f"{path}: holds several VOC data sets "
                f"({', '.join(os.path.basename(s) for s in subs)}); give one of them"
            )
    return None


def _detect(path: str, split: str | None) -> dict | None:
    root = find_voc_root(path) if os.path.isdir(path) else None
    return None if root is None else {"root": root}


def _locate(path: str, split: str | None) -> dict:
    where = _detect(path, split)
    if where is None:
        raise DataError(f"{path}: not a PASCAL VOC directory (no Annotations/ found)")
    return where


def _build(where: dict, split: str | None, *, classes=None, transforms=None, seed: int = 0,
           skip_empty: bool = False, image_dir=None) -> VOCDataset:
    """The registry's build: a VOCDataset (`image_dir` does not apply: JPEGImages/)."""
    return VOCDataset(where["root"], split, classes, transforms, seed=seed, skip_empty=skip_empty)


def _splits(path: str) -> list[str] | None:
    root = find_voc_root(path) if os.path.isdir(path) else None
    return None if root is None else voc_splits(root)


def _has_split(path: str, split: str) -> bool | None:
    found = _splits(path)
    return None if found is None else split in found


READER = Reader(detect=_detect, build=_build, splits=_splits, has_split=_has_split, locate=_locate)
