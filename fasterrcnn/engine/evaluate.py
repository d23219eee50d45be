"""Evaluating a model (or a detections file) on a data split: the metrics of SPEC.md.

PASCAL VOC AP at IoU 0.5 (VOC2007 11-point, the paper's, and VOC2010+ area), COCO
AP@[.5:.95]/AP50/AP75 through pycocotools, and the RPN's proposal recall at IoU 0.5/0.7 for
50..2000 proposals. Writes `report.json` and one precision-recall PNG per class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fasterrcnn.engine.inference import Predictions, predict

__all__ = ["RECALL_PROPOSALS", "evaluate_detections", "evaluate_model", "ground_truth"]

RECALL_PROPOSALS = (50, 100, 300, 1000, 2000)


def ground_truth(dataset: Any) -> list[dict[str, Any]]:
    """The split's annotations in original image coordinates (no image decoding)."""
    return [dataset.annotation(i) for i in range(len(dataset))]


def evaluate_detections(
    detections: list[dict[str, Any]],
    dataset: Any,
    *,
    proposals: list[dict[str, Any]] | None = None,
    out_dir: str | Path | None = None,
    coco: bool = True,
    plots: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score per-image detections (original coordinates) against `dataset`'s ground truth."""
    from fasterrcnn.evaluation import coco_evaluate, plot_pr_curves, proposal_recall, voc_evaluate, write_report

    gt = ground_truth(dataset)
    classes = list(dataset.classes)
    results: dict[str, Any] = {"voc": voc_evaluate(gt, detections, classes)}
    if coco:
        results["coco"] = coco_evaluate(gt, detections, classes)
    if proposals:
        results["proposal_recall"] = proposal_recall(gt, proposals, num_proposals=RECALL_PROPOSALS)
    results.update(extra or {})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        results["report_path"] = write_report(out / "report.json", results)
        if plots:
            results["pr_curves"] = plot_pr_curves(results["voc"], out / "pr_curves")
    return results


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 1,
    num_workers: int = 2,
    recall: bool = True,
    out_dir: str | Path | None = None,
    coco: bool = True,
    plots: bool = True,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], Predictions]:
    """Run `model` on every image of `dataset` and evaluate; returns (results, predictions)."""
    from fasterrcnn.data import build_loader

    loader = build_loader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    preds = predict(
        model, loader, device, precision, num_proposals=max(RECALL_PROPOSALS) if recall else None, progress=progress, desc="evaluate"
    )
    info = {
        "images": preds.num_images,
        "seconds": round(preds.seconds, 3),
        "seconds_per_image": round(preds.seconds / max(preds.num_images, 1), 4),
        "precision": precision,
        "device": str(device),
    }
    results = evaluate_detections(
        preds.detections, dataset, proposals=preds.proposals or None, out_dir=out_dir, coco=coco, plots=plots,
        extra={"inference": info, **(extra or {})},
    )
    return results, preds
