"""PASCAL VOC detection metric: average precision per class at IoU 0.5, and its mean (mAP).

The Faster R-CNN paper reports VOC 2007 test mAP, which uses the **11-point interpolated
AP**; VOC 2010 and later use the **area under the interpolated precision-recall curve**.
Both are computed, from the same matching, following the VOC devkit (``VOCevaldet.m``):

1. All detections of a class, over all images, are sorted by decreasing score. The sort is
   stable: ties keep their input order (image by image, as a devkit results file lists them).
2. Each detection, in that order, is compared with every ground-truth object of its class in
   its image (difficult ones included) and assigned to the one of highest IoU (first one on
   ties). If that IoU >= the threshold (0.5): a *difficult* object makes the detection
   neither a true nor a false positive (it is dropped); an object not yet matched makes it a
   true positive (and the object is now matched); an already matched object makes it a false
   positive (a duplicate detection) -- there is no fall-back to the second-best object.
   IoU below the threshold, or no object of the class in the image: false positive.
3. Recall = cumulative TP / number of positives, where positives are the non-difficult
   objects of the class; precision = cumulative TP / (cumulative TP + FP).
4. 11-point AP (VOC2007) = mean over r in {0, 0.1, ..., 1} of max{precision at recall >= r}
   (0 when no point reaches r). Area AP (VOC2010+) = area under the precision envelope
   (precision made non-increasing in recall), over recall from 0 to 1.

Deviations and conventions, all deliberate:

* ``legacy_plus_one`` (default False): our boxes are continuous (width = x2 - x1). The
  devkit, whose annotations are 1-based pixel indices, uses width = x2 - x1 + 1 in the IoU;
  pass ``legacy_plus_one=True`` to reproduce the devkit (and py-faster-rcnn) on boxes in
  that convention.
* The threshold test is ``IoU >= 0.5`` as in the devkit (py-faster-rcnn's ``voc_eval.py``
  uses ``>``; they differ only at exactly 0.5).
* The 11 recall levels are exactly k/10. py-faster-rcnn's ``np.arange(0, 1.1, 0.1)`` makes
  levels 0.3, 0.6, 0.7 slightly larger than k/10 and so ignores a point whose recall is
  exactly 0.3, 0.6 or 0.7 (e.g. 3 of 10 objects found).
* A class with no positives (no objects, or only difficult ones) has AP = NaN (recall is
  undefined) and is left out of the mean; the result lists such classes.
* Detections on difficult objects are removed from the returned precision/recall arrays
  (the devkit keeps a repeated point there, which changes neither AP).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fasterrcnn.errors import ConfigError
from fasterrcnn.evaluation._common import (
    check_classes,
    flatten_detections,
    normalize_ground_truth,
)
from fasterrcnn.ops import box_iou

__all__ = ["ap_11_point", "ap_area", "match_detections", "voc_evaluate"]

#: Status of a detection after matching.
TP, FP, IGNORED = 1, 0, -1


def ap_11_point(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 11-point interpolated AP from recall/precision arrays in score order.

    AP = (1/11) * sum over r in {0, 0.1, ..., 1.0} of max(precision[recall >= r]),
    a level that no point reaches counting 0.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return 0.0
    # Envelope: best precision at this recall or any later (higher-recall) point.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    levels = np.arange(11) / 10.0
    # recall is non-decreasing along the score order: the first index with recall >= r.
    first = np.searchsorted(recall, levels, side="left")
    values = np.where(first < recall.size, envelope[np.minimum(first, recall.size - 1)], 0.0)
    return float(values.sum() / 11.0)


def ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP: area under the interpolated (monotone) precision-recall curve.

    The curve starts at recall 0 and ends at recall 1 with precision 0; precision at each
    recall is replaced by the maximum precision at that or any higher recall; the area is
    sum over recall steps of (step width) x (envelope precision at the step's right end).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def match_detections(
    det_image: np.ndarray,
    det_boxes: np.ndarray,
    det_labels: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: Sequence[np.ndarray],
    gt_labels: Sequence[np.ndarray],
    gt_difficult: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
    legacy_plus_one: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The devkit's greedy matching, for all classes at once.

    Detections are flat arrays (image position, box, label, score) in input order; the
    ground truth is per image. Returns ``(order, status)``: `order` sorts the detections by
    decreasing score (stable) and `status[k]` is TP (1), FP (0) or IGNORED (-1, matched a
    difficult object) for detection ``order[k]``.
    """
    n = det_scores.shape[0]
    order = np.argsort(-det_scores, kind="stable")
    if n == 0:
        return order, np.zeros(0, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    # For every detection: its best same-class object (global id) and that IoU.
    offsets = np.concatenate(([0], np.cumsum([b.shape[0] for b in gt_boxes])))
    best_gt = np.full(n, -1, dtype=np.int64)
    best_iou = np.full(n, -np.inf)
    by_image = np.argsort(det_image, kind="stable")
    bounds = np.flatnonzero(np.diff(det_image[by_image])) + 1
    for idx in np.split(by_image, bounds):
        img = int(det_image[idx[0]])
        g_boxes = gt_boxes[img]
        if g_boxes.shape[0] == 0:
            continue
        iou = box_iou(
            torch.from_numpy(det_boxes[idx]),
            torch.from_numpy(g_boxes),
            legacy_plus_one=legacy_plus_one,
        ).numpy()
        # Objects of another class can never be matched; 0/0 (empty boxes) is no overlap.
        iou = np.nan_to_num(iou, nan=0.0)
        same = det_labels[idx][:, None] == gt_labels[img][None, :]
        iou = np.where(same, iou, -np.inf)
        j = np.argmax(iou, axis=1)  # first maximum, as the devkit's strict `ov > ovmax`
        best_iou[idx] = iou[np.arange(idx.size), j]
        best_gt[idx] = offsets[img] + j

    difficult_all = np.concatenate(
        [np.asarray(d, dtype=bool) for d in gt_difficult] or [np.zeros(0, bool)]
    )
    status = np.full(n, FP, dtype=np.int64)
    hit = best_iou >= iou_threshold
    on_difficult = np.zeros(n, dtype=bool)
    on_difficult[hit] = difficult_all[best_gt[hit]]
    status[on_difficult] = IGNORED
    candidates = np.flatnonzero(hit & ~on_difficult)
    if candidates.size:
        # In score order, the first detection assigned to an object is its TP; the rest
        # assigned to it are duplicates (FP).
        cand_sorted = candidates[np.argsort(rank[candidates], kind="stable")]
        _, first = np.unique(best_gt[cand_sorted], return_index=True)
        status[cand_sorted[first]] = TP
    return order, status[order]


def voc_evaluate(
    gt: Sequence[dict],
    dets,
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    *,
    legacy_plus_one: bool = False,
    category_ids: Sequence[int] | None = None,
) -> dict:
    """PASCAL VOC AP per class and mAP, both the VOC2007 11-point AP and the VOC2010+ area AP.

    Args:
        gt: per-image dicts ``{"image_id", "boxes" [N, 4] xyxy, "labels" [N] in 1..K,
            "difficult" [N] (optional)}`` (tensors, arrays or lists). They define the image
            set: images without objects count (their detections are false positives).
        dets: per-image dicts ``{"image_id", "boxes", "labels", "scores"}`` in original image
            pixels, or a COCO results list (``category_ids`` maps category ids to labels).
            Per-image dicts without "image_id" line up with `gt` by position. A detection for
            an image not in `gt` is a `DataError`.
        classes: class names; label i is ``classes[i - 1]``.
        iou_threshold: minimum IoU for a true positive (VOC: 0.5; the test is ``>=``).
        legacy_plus_one: measure IoU with the devkit's +1 pixel convention (width = x2 - x1 + 1).
            Default False: boxes are continuous, as everywhere in this library. Use True to
            reproduce the devkit / py-faster-rcnn exactly on 1-based pixel-index boxes.
        category_ids: for a COCO results list, label i <-> category_ids[i - 1].

    Matching follows the devkit (see the module docstring): stable sort by score, greedy
    assignment to the highest-IoU object, duplicates are false positives, detections of
    difficult objects are ignored, and difficult objects are not positives.

    Returns a dict:
        ``kind`` "voc"; ``settings`` {iou_threshold, legacy_plus_one};
        ``classes``; ``num_images``;
        ``per_class``: list (label order) of dicts with ``label``, ``name``, ``ap07``
        (11-point), ``ap10`` (area), ``num_positives`` (non-difficult objects),
        ``num_difficult``, ``num_detections``, ``tp``, ``fp``, ``ignored`` (detections on
        difficult objects), and numpy arrays ``precision``, ``recall``, ``scores`` (one entry
        per counted detection, in score order);
        ``ap07`` / ``ap10``: {class name: AP}; ``map07`` / ``map10``: mean over classes with
        positives (NaN if there are none); ``classes_without_positives``: names whose AP is
        NaN and which the mean leaves out; ``notes``: human-readable remarks for the report.
    """
    classes = check_classes(classes)
    if not 0.0 < float(iou_threshold) <= 1.0:
        raise ConfigError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    k = len(classes)
    truth = normalize_ground_truth(gt, k)
    flat = flatten_detections(dets, truth, k, category_ids=category_ids)
    order, status = match_detections(
        flat.image_index,
        flat.boxes,
        flat.labels,
        flat.scores,
        truth.boxes,
        truth.labels,
        truth.difficult,
        iou_threshold=iou_threshold,
        legacy_plus_one=legacy_plus_one,
    )
    all_labels = np.concatenate(truth.labels) if truth.labels else np.zeros(0, np.int64)
    all_difficult = np.concatenate(truth.difficult) if truth.difficult else np.zeros(0, bool)
    sorted_labels = flat.labels[order]
    sorted_scores = flat.scores[order]

    per_class = []
    for label in range(1, k + 1):
        in_class = sorted_labels == label
        st = status[in_class]
        counted = st != IGNORED
        tp = np.cumsum(st[counted] == TP).astype(np.float64)
        fp = np.cumsum(st[counted] == FP).astype(np.float64)
        npos = int(np.sum((all_labels == label) & ~all_difficult))
        ndiff = int(np.sum((all_labels == label) & all_difficult))
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).tiny)
        if npos > 0:
            recall = tp / npos
            ap07, ap10 = ap_11_point(recall, precision), ap_area(recall, precision)
        else:
            recall = np.full(tp.shape, np.nan)
            ap07 = ap10 = float("nan")
        per_class.append(
            {
                "label": label,
                "name": classes[label - 1],
                "ap07": ap07,
                "ap10": ap10,
                "num_positives": npos,
                "num_difficult": ndiff,
                "num_detections": int(in_class.sum()),
                "tp": int(tp[-1]) if tp.size else 0,
                "fp": int(fp[-1]) if fp.size else 0,
                "ignored": int((~counted).sum()),
                "precision": precision,
                "recall": recall,
                "scores": sorted_scores[in_class][counted],
            }
        )

    valid = [c for c in per_class if c["num_positives"] > 0]
    missing = [c["name"] for c in per_class if c["num_positives"] == 0]
    map07 = float(np.mean([c["ap07"] for c in valid])) if valid else float("nan")
    map10 = float(np.mean([c["ap10"] for c in valid])) if valid else float("nan")
    notes = []
    if missing:
        notes.append(
            f"{len(missing)} class(es) have no non-difficult ground truth, so their AP is "
            f"undefined (NaN, null in JSON) and left out of the mean: {', '.join(missing)}"
        )
    notes.append(
        "difficult objects are not counted as positives; detections matched to them are "
        "neither true nor false positives"
    )
    return {
        "kind": "voc",
        "settings": {
            "iou_threshold": float(iou_threshold),
            "legacy_plus_one": bool(legacy_plus_one),
            "ap07": "VOC2007 11-point interpolated AP (recall levels 0, 0.1, ..., 1)",
            "ap10": "VOC2010+ area under the interpolated precision-recall curve",
        },
        "classes": classes,
        "num_images": len(truth.image_ids),
        "num_detections": int(flat.scores.shape[0]),
        "per_class": per_class,
        "ap07": {c["name"]: c["ap07"] for c in per_class},
        "ap10": {c["name"]: c["ap10"] for c in per_class},
        "map07": map07,
        "map10": map10,
        "num_classes_evaluated": len(valid),
        "classes_without_positives": missing,
        "notes": notes,
    }
