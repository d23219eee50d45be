"""Evaluation: PASCAL VOC AP (VOC2007 11-point and VOC2010+ area), COCO AP via pycocotools,
RPN proposal recall, JSON reports, text tables and plots, and detections files from any
detector.

Inputs (see `voc_evaluate` for details):

* ground truth: per-image dicts ``{"image_id", "boxes" [N, 4] xyxy (original pixels),
  "labels" [N] in 1..K, "difficult" [N] (optional), "orig_size" (H, W) (optional)}`` and
  ``classes`` (label i is ``classes[i - 1]``);
* detections: per-image dicts ``{"image_id", "boxes", "labels", "scores"}`` or a COCO results
  list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]`` with
  ``category_ids`` (label i <-> ``category_ids[i - 1]``, identity by default).

pycocotools and matplotlib (core dependencies) are used only by `coco_evaluate*` and the plots;
the commands skip those outputs with a note where they are missing.
"""

from fasterrcnn.evaluation.coco import (
    COCO_STAT_NAMES,
    coco_evaluate,
    coco_evaluate_files,
    ground_truth_to_coco,
)
from fasterrcnn.evaluation.detections import (
    coco_results_to_detections,
    detections_to_coco_results,
    load_coco_results,
    load_detections_file,
    validate_coco_results,
    write_detections_file,
)
from fasterrcnn.evaluation.plots import plot_loss_curve, plot_pr_curves, safe_filename
from fasterrcnn.evaluation.recall import AR_IOU_THRESHOLDS, proposal_recall
from fasterrcnn.evaluation.report import (
    format_results_table,
    read_report,
    to_jsonable,
    write_report,
)
from fasterrcnn.evaluation.voc import ap_11_point, ap_area, voc_evaluate

__all__ = [
    "AR_IOU_THRESHOLDS",
    "COCO_STAT_NAMES",
    "ap_11_point",
    "ap_area",
    "coco_evaluate",
    "coco_evaluate_files",
    "coco_results_to_detections",
    "detections_to_coco_results",
    "format_results_table",
    "ground_truth_to_coco",
    "load_coco_results",
    "load_detections_file",
    "plot_loss_curve",
    "plot_pr_curves",
    "proposal_recall",
    "read_report",
    "safe_filename",
    "to_jsonable",
    "validate_coco_results",
    "voc_evaluate",
    "write_detections_file",
    "write_report",
]
