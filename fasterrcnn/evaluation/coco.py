"""COCO box AP (AP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l) through pycocotools.

The ground truth given as per-image dicts is turned into a COCO data set in memory
(`ground_truth_to_coco`):

* each image becomes ``{"id": image_id, "height", "width"}`` (size from ``orig_size`` when
  given; bbox evaluation does not use it) and ``"file_name"`` from ``file`` when given;
* each object becomes an annotation with ``bbox`` = [x1, y1, x2 - x1, y2 - y1],
  ``area`` = width x height of the box (COCO's own files use the segmentation's area; area
  only decides the small/medium/large split), ids 1, 2, ... in order;
* a **difficult** object becomes ``iscrowd=1``: pycocotools then ignores any detection that
  it matches instead of counting it as a false positive, and the object is not a positive --
  the role VOC gives difficult objects. One difference remains: pycocotools measures overlap
  with a crowd region as intersection / detection area (not IoU) and lets any number of
  detections match it.
* categories are ``{"id": category_ids[i - 1] (or i), "name": classes[i - 1]}``.

Detections (per-image dicts or a COCO results list) go through ``COCO.loadRes``, and
``COCOeval(..., "bbox")`` runs evaluate / accumulate / summarize with pycocotools' default
parameters. Its prints are captured into the result's ``summary`` text.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
from collections.abc import Sequence

import numpy as np

from fasterrcnn.errors import DataError
from fasterrcnn.evaluation._common import (
    category_to_label_map,
    check_classes,
    flatten_detections,
    is_coco_results,
    normalize_ground_truth,
)
from fasterrcnn.evaluation.detections import read_json_file, validate_coco_results

__all__ = [
    "COCO_STAT_NAMES",
    "coco_evaluate",
    "coco_evaluate_files",
    "ground_truth_to_coco",
]

#: Names of the 12 numbers of ``COCOeval.stats`` (bbox), in order.
COCO_STAT_NAMES = (
    "AP",  # AP @ IoU 0.50:0.95, all areas, 100 detections
    "AP50",
    "AP75",
    "APs",  # small objects (area < 32^2)
    "APm",  # medium (32^2 .. 96^2)
    "APl",  # large (> 96^2)
    "AR1",  # AR with at most 1 detection per image
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:  # pragma: no cover - depends on the installation
        from fasterrcnn._optional import missing_reason

        # (the commands check first and skip the COCO metrics with a note: see engine.evaluate)
        raise DataError(f"COCO metrics need pycocotools: {missing_reason('pycocotools')}") from None
    return COCO, COCOeval


def ground_truth_to_coco(
    gt: Sequence[dict], classes: Sequence[str], category_ids: Sequence[int] | None = None
) -> dict:
    """Per-image ground-truth dicts -> a COCO data set dict (images, annotations, categories).

    See the module docstring for the mapping (difficult -> iscrowd=1, area = box area).
    """
    classes = check_classes(classes)
    cats = _category_list(classes, category_ids)
    return _dataset_from_truth(normalize_ground_truth(gt, len(classes)), classes, cats)


def _category_list(classes: list[str], category_ids: Sequence[int] | None) -> list[int]:
    """The COCO category id of each label 1..K (checked)."""
    if category_ids is None:
        return list(range(1, len(classes) + 1))
    category_to_label_map(category_ids)
    if len(category_ids) != len(classes):
        raise DataError(f"category_ids has {len(category_ids)} ids for {len(classes)} classes")
    return [int(c) for c in category_ids]


def _dataset_from_truth(truth, classes: list[str], cats: list[int]) -> dict:
    images, annotations = [], []
    ann_id = 0
    for pos, image_id in enumerate(truth.image_ids):
        image: dict = {"id": image_id}
        if truth.orig_sizes[pos] is not None:
            image["height"], image["width"] = truth.orig_sizes[pos]
        if truth.files[pos] is not None:
            image["file_name"] = truth.files[pos]
        images.append(image)
        boxes = truth.boxes[pos].tolist()
        for box, label, difficult in zip(
            boxes, truth.labels[pos].tolist(), truth.difficult[pos].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            ann_id += 1
            annotations.append(
                {
                    "id": ann_id,  # pycocotools needs ids > 0 (0 means "unmatched")
                    "image_id": image_id,
                    "category_id": cats[label - 1],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": int(bool(difficult)),
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for c, n in zip(cats, classes, strict=True)],
    }


def _coco_from_dataset(dataset: dict, log: io.StringIO):
    COCO, _ = _pycocotools()
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(log):
        coco.createIndex()
    return coco


def _load_results(coco_gt, results: list[dict], log: io.StringIO):
    """``coco_gt.loadRes(results)``, which also handles an empty list (pycocotools fails)."""
    COCO, _ = _pycocotools()
    if results:
        with contextlib.redirect_stdout(log):
            return coco_gt.loadRes(copy.deepcopy(results))  # loadRes adds keys in place
    coco_dt = COCO()
    coco_dt.dataset = {
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
        "annotations": [],
    }
    with contextlib.redirect_stdout(log):
        coco_dt.createIndex()
    return coco_dt


def _run_cocoeval(coco_gt, coco_dt, log: io.StringIO, *, settings: dict) -> dict:
    _, COCOeval = _pycocotools()
    evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    with contextlib.redirect_stdout(log):
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    raw = [float(v) for v in evaluator.stats]
    # pycocotools writes -1 where a number is undefined (no ground truth in that range).
    stats = {
        name: (float("nan") if v == -1 else v) for name, v in zip(COCO_STAT_NAMES, raw, strict=True)
    }

    # Per-category AP@[.5:.95] (area "all", maxDets 100), as summarize() averages it.
    precision = evaluator.eval["precision"]  # [T, R, K, A, M]
    cat_ids = list(evaluator.params.catIds)
    names = {c["id"]: c.get("name", str(c["id"])) for c in coco_gt.dataset.get("categories", [])}
    per_class = []
    for k, cat in enumerate(cat_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        p50 = precision[0, :, k, 0, -1]
        p50 = p50[p50 > -1]
        per_class.append(
            {
                "category_id": int(cat),
                "name": names.get(cat, str(cat)),
                "ap": float(np.mean(p)) if p.size else float("nan"),
                "ap50": float(np.mean(p50)) if p50.size else float("nan"),
            }
        )
    return {
        "kind": "coco",
        "settings": settings,
        "stats": stats,
        "stats_raw": raw,
        "per_class": per_class,
        "num_images": len(evaluator.params.imgIds),
        "num_detections": len(coco_dt.dataset.get("annotations", [])),
        "summary": summary.getvalue(),
        "log": log.getvalue(),
        "notes": [
            "pycocotools reports -1 for a number with no ground truth (e.g. no small "
            "objects); stats holds NaN there (null in JSON), stats_raw the original values"
        ],
    }


def coco_evaluate(
    gt: Sequence[dict],
    dets,
    classes: Sequence[str],
    *,
    category_ids: Sequence[int] | None = None,
) -> dict:
    """COCO bbox metrics of `dets` against `gt`, via pycocotools, all in memory.

    Args:
        gt: per-image ground-truth dicts (as for `voc_evaluate`); difficult -> iscrowd=1.
        dets: per-image detection dicts (in original image pixels) or a COCO results list.
        classes: class names (label i is classes[i - 1]).
        category_ids: COCO category id of each label (label i <-> category_ids[i - 1]);
            identity when None.

    Returns a dict: ``kind`` "coco"; ``stats`` {name: value} for the 12 numbers of
    ``COCOeval.stats`` (names in `COCO_STAT_NAMES`; NaN where pycocotools prints -1);
    ``stats_raw`` the 12 numbers exactly as pycocotools gives them; ``per_class`` list of
    {category_id, name, ap (AP@[.5:.95]), ap50}; ``summary`` pycocotools' printed table;
    ``log`` its other prints; ``settings``; ``num_images``; ``num_detections``; ``notes``.
    """
    classes = check_classes(classes)
    cats = _category_list(classes, category_ids)
    truth = normalize_ground_truth(gt, len(classes))
    log = io.StringIO()
    coco_gt = _coco_from_dataset(_dataset_from_truth(truth, classes, cats), log)
    if is_coco_results(dets):
        results = validate_coco_results(
            dets,
            source="detections",
            image_ids=coco_gt.getImgIds(),
            category_ids=category_ids,
            num_classes=len(classes),
        )
    else:
        # Check (unknown images, labels, shapes) with the shared rules, then convert.
        flat = flatten_detections(dets, truth, len(classes), category_ids=category_ids)
        results = _flat_to_results(flat, truth.image_ids, cats)
    settings = {
        "iou_type": "bbox",
        "iou_thresholds": "0.50:0.05:0.95",
        "max_dets": [1, 10, 100],
        "difficult_as_crowd": True,
        "box_convention": "continuous (w = x2 - x1)",
    }
    return _run_cocoeval(coco_gt, _load_results(coco_gt, results, log), log, settings=settings)


def _flat_to_results(flat, image_ids: list[int], cats: list[int]) -> list[dict]:
    """Flat detections -> COCO results, in input order (pycocotools breaks score ties by
    the order within an image)."""
    x1, y1, x2, y2 = (flat.boxes[:, i].tolist() for i in range(4))
    return [
        {
            "image_id": image_ids[i],
            "category_id": int(cats[lab - 1]),
            "bbox": [x1[d], y1[d], x2[d] - x1[d], y2[d] - y1[d]],
            "score": sc,
        }
        for d, (i, lab, sc) in enumerate(
            zip(flat.image_index.tolist(), flat.labels.tolist(), flat.scores.tolist(), strict=True)
        )
    ]


def coco_evaluate_files(annotation_json, results_json) -> dict:
    """COCO bbox metrics of a results JSON file against a COCO annotation JSON file.

    The annotation file is used as it is (its areas, crowd flags and category ids); the
    results file is checked entry by entry (`DataError` naming the file and entry) against
    the annotation file's image and category ids. Returns the same dict as `coco_evaluate`.
    """
    dataset = read_json_file(annotation_json, "COCO annotation file")
    path = os.fspath(annotation_json)
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (no 'images' list)")
    if not isinstance(dataset.get("annotations", []), list) or not isinstance(
        dataset.get("categories", []), list
    ):
        raise DataError(f"{path}: 'annotations' and 'categories' must be lists")
    log = io.StringIO()
    try:
        coco_gt = _coco_from_dataset(dataset, log)
    except (KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: malformed COCO annotation file ({type(exc).__name__}: {exc})"
        ) from None
    data = read_json_file(results_json, "detections file")
    results = validate_coco_results(
        data,
        source=os.fspath(results_json),
        image_ids=coco_gt.getImgIds(),
        category_ids=coco_gt.getCatIds(),
    )
    settings = {
        "iou_type": "bbox",
        "iou_thresholds": "0.50:0.05:0.95",
        "max_dets": [1, 10, 100],
        "annotation_file": path,
        "results_file": os.fspath(results_json),
    }
    return _run_cocoeval(coco_gt, _load_results(coco_gt, results, log), log, settings=settings)
