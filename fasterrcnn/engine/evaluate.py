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
from torch.utils.data import Subset

from fasterrcnn._optional import missing_note, missing_reason, optional_import
from fasterrcnn.engine.distributed import Context
from fasterrcnn.engine.inference import Predictions, predict

__all__ = ["RECALL_PROPOSALS", "evaluate_detections", "evaluate_model", "ground_truth", "missing_outputs"]

RECALL_PROPOSALS = (50, 100, 300, 1000, 2000)

#: The optional outputs of an evaluation (their key in the results) and the module each needs.
OPTIONAL_OUTPUTS = {"coco": "pycocotools.cocoeval", "pr_curves": "matplotlib.backends.backend_agg"}
#: What the note line says is skipped without it.
SKIPPED_TEXT = {"coco": "COCO AP skipped, VOC mAP still computed", "pr_curves": "PR curve PNGs not written"}


def missing_outputs(*, coco: bool = True, plots: bool = True) -> dict[str, str]:
    """The asked-for optional outputs that cannot be made here, and why: ``{"coco": "pycocotools
    is not installed (pip install pycocotools)"}``, ``{"pr_curves": "matplotlib is not installed
    (...)"}``; empty when everything asked for can be made."""
    wanted = [key for key, on in (("coco", coco), ("pr_curves", plots)) if on]
    return {k: missing_reason(OPTIONAL_OUTPUTS[k]) for k in wanted if optional_import(OPTIONAL_OUTPUTS[k]) is None}


def _skip_missing(coco: bool, plots: bool, log: Any) -> tuple[bool, bool, dict[str, str]]:
    """(coco, plots) with the outputs whose module is missing turned off, one note line logged
    for each, and {key: why} of those."""
    skipped = missing_outputs(coco=coco, plots=plots)
    for key in skipped:
        log(missing_note(OPTIONAL_OUTPUTS[key], SKIPPED_TEXT[key]))
    return coco and "coco" not in skipped, plots and "pr_curves" not in skipped, skipped


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def _gather_predictions(preds: Predictions, ctx: Context) -> Predictions:
    """Every rank's predictions (rank r predicted images r, r + world, ...) in the data set's
    order; the time is the slowest rank's."""
    parts = ctx.gather((preds.detections, preds.proposals, preds.seconds))
    out = Predictions(seconds=max(p[2] for p in parts))
    longest = max(len(p[0]) for p in parts)
    for i in range(longest):
        for detections, proposals, _ in parts:
            if i < len(detections):
                out.detections.append(detections[i])
                if proposals:
                    out.proposals.append(proposals[i])
    out.num_images = len(out.detections)
    return out


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
    skipped: dict[str, str] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Score per-image detections (original coordinates) against `dataset`'s ground truth.

    The COCO metrics (pycocotools) and the PR curves (matplotlib) are skipped, with one note
    line each through `log`, where their module is missing; ``results["skipped"]`` then says
    which and why, together with the outputs in `skipped` (found missing by the caller)."""
    from fasterrcnn.evaluation import coco_evaluate, plot_pr_curves, proposal_recall, voc_evaluate, write_report

    coco, plots, missing = _skip_missing(coco, plots and out_dir is not None, log)
    skipped = {**(skipped or {}), **missing}
    gt = ground_truth(dataset)
    classes = list(dataset.classes)
    results: dict[str, Any] = {"voc": voc_evaluate(gt, detections, classes)}
    if coco:
        results["coco"] = coco_evaluate(gt, detections, classes)
    if proposals:
        results["proposal_recall"] = proposal_recall(gt, proposals, num_proposals=RECALL_PROPOSALS)
    results.update(extra or {})
    if skipped:
        results["skipped"] = skipped
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
    skipped: dict[str, str] | None = None,
    log: Any = print,
    ctx: Context | None = None,
) -> tuple[dict[str, Any], Predictions]:
    """Run `model` on every image of `dataset` and evaluate; returns (results, predictions).
    Outputs whose module is missing are noted before the model runs (see `evaluate_detections`).

    In a data-parallel run (`ctx` of several processes, e.g. under torchrun) each process runs
    the model on its share of the images (every world-th), the predictions are gathered in the
    data set's order, and every process gets the metrics of the whole set; only rank 0 logs and
    writes `out_dir`."""
    from fasterrcnn.data import build_loader

    ctx = ctx or Context()
    if not ctx.is_main:
        log, out_dir, progress = _silent, None, False
    coco, plots, missing = _skip_missing(coco, plots and out_dir is not None, log)
    skipped = {**(skipped or {}), **missing}
    share = Subset(dataset, range(ctx.rank, len(dataset), ctx.world)) if ctx.active else dataset
    loader = build_loader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    preds = predict(
        model, loader, device, precision, num_proposals=max(RECALL_PROPOSALS) if recall else None, progress=progress, desc="evaluate"
    )
    if ctx.active:
        preds = _gather_predictions(preds, ctx)
    info = {
        "images": preds.num_images,
        "seconds": round(preds.seconds, 3),
        "seconds_per_image": round(preds.seconds / max(preds.num_images, 1), 4),
        "precision": precision,
        "device": str(device),
        **({"processes": ctx.world} if ctx.active else {}),
    }
    results = evaluate_detections(
        preds.detections, dataset, proposals=preds.proposals or None, out_dir=out_dir, coco=coco, plots=plots,
        extra={"inference": info, **(extra or {})}, skipped=skipped, log=log,
    )
    return results, preds
