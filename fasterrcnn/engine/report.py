"""Train + evaluate + summarise: what `fasterrcnn train` and the demo run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fasterrcnn.engine.config import TrainConfig

__all__ = ["print_summary", "summary_lines", "train_and_evaluate"]


def train_and_evaluate(cfg: TrainConfig, evaluate: bool = True, log: Any = print) -> dict[str, Any]:
    """Train with `cfg`, plot the loss curve, evaluate on `cfg.val_split` (or `cfg.val_data`)
    and write `summary.json`; returns the summary dict. Both data sets are read and checked
    (every image decoded) before training starts."""
    from fasterrcnn._optional import missing_note
    from fasterrcnn.engine.evaluate import SKIPPED_TEXT, evaluate_model, missing_outputs
    from fasterrcnn.engine.logger import read_metrics
    from fasterrcnn.engine.trainer import LOSS_KEYS, Trainer
    from fasterrcnn.evaluation import plot_loss_curve

    trainer = Trainer(cfg, log=log)
    log = trainer.log  # silent in the ranks other than 0 of a data-parallel run
    main = trainer.ctx.is_main
    val, on_train = _evaluation_set(cfg, trainer, log) if evaluate else (None, False)
    # Outputs whose module is missing are said before training (one note each), not after it.
    skipped = missing_outputs(coco=val is not None, plots=True)
    plots = "pr_curves" not in skipped  # matplotlib draws the loss curve and the PR curves
    if not plots:
        log(missing_note("matplotlib", f"loss_curve.png{'' if val is None else ' and the PR curve PNGs'} not written"))
    if "coco" in skipped:
        log(missing_note("pycocotools", SKIPPED_TEXT["coco"]))
    result = trainer.run()
    out = Path(cfg.out)
    files: dict[str, str] = {"checkpoint": str(result.checkpoint), "metrics": str(out / "metrics.jsonl")}
    records = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"]
    if records and plots and main:
        curve = plot_loss_curve(
            records, out / "loss_curve.png", keys=["loss", *LOSS_KEYS], x_key="global_iter", log_scale=True,
            title=f"{cfg.preset} training losses ({cfg.schedule})",
        )
        if curve:
            files["loss_curve"] = curve
    summary: dict[str, Any] = {
        "preset": cfg.preset,
        "schedule": cfg.schedule,
        "data": cfg.data,
        "classes": trainer.classes,
        "train": {
            "images": len(trainer.train_set),
            "iterations": result.iterations,
            "seconds": round(result.seconds, 1),
            "images_per_second": round(result.images_per_second, 3),
            "final_losses": {k: round(v, 4) for k, v in result.final_losses.items()},
            "stages": result.stages,
            "device": trainer.device.type,
            "precision": trainer.precision,
        },
        "data_report": trainer.train_set.report.to_dict(),
        "data_report_text": trainer.train_set.report.summary(),
        "files": files,
    }
    if val is not None:
        where = "the training images (not a held-out set)" if on_train else f"{cfg.val_data or cfg.data} [{cfg.val_split}]"
        log(f"evaluating on {where}: {len(val)} images")
        extra = {"checkpoint": str(result.checkpoint), "data": cfg.val_data or cfg.data, "split": cfg.val_split,
                 "on_training_data": on_train}
        results, _ = evaluate_model(
            result.model, val, device=trainer.device, precision=trainer.precision, num_workers=cfg.num_workers,
            out_dir=out / "eval", progress=cfg.progress, extra=extra,
            coco="coco" not in skipped, plots=plots, skipped=skipped, log=log, ctx=trainer.ctx,
        )
        summary["eval"] = {**eval_summary(results), "on_training_data": on_train}
        summary["eval_table"] = _table(results)
        if main:
            files["report"] = results["report_path"]
        if results.get("pr_curves"):
            files["pr_curves"] = str(out / "eval" / "pr_curves")
    from fasterrcnn.evaluation import to_jsonable
    from fasterrcnn.fileio import atomic_write_text

    if main:
        atomic_write_text(out / "summary.json", json.dumps(to_jsonable(summary), indent=2))
        files["summary"] = str(out / "summary.json")
    return summary


def _evaluation_set(cfg: TrainConfig, trainer: Any, log: Any) -> tuple[Any, bool]:
    """The data set evaluated after training, read and checked now (before training), and
    whether it is the training data. None (with a note) when there is nothing to evaluate on;
    a split that exists but cannot be read is an error, raised before any training."""
    from fasterrcnn.data import build_dataset, is_single_file

    if not cfg.val_split and not cfg.val_data:
        return None, False
    data = cfg.val_data or cfg.data
    single = is_single_file(data, cfg.format)
    on_train = cfg.val_data is None and (single or cfg.val_split == cfg.train_split)
    if cfg.val_data is None and single and cfg.val_split != cfg.train_split:
        log(f"note: {cfg.data} is a single annotation file with no {cfg.val_split!r} split: no evaluation after training "
            f"(give a held-out set with --val-data FILE, or evaluate on the training images with --val-split {cfg.train_split})")
        return None, False
    missing = _missing_split(data, cfg.val_split, cfg.format, single)
    if missing:
        log(f"note: no evaluation after training: {missing}")
        return None, False
    test_min, test_max = cfg.test_size()
    common = dict(format=cfg.format, min_size=test_min, max_size=test_max, seed=cfg.seed, classes=trainer.classes)
    if cfg.image_dir is not None and cfg.val_data is None:
        common["image_dir"] = cfg.image_dir
    val = build_dataset(data, None if single else cfg.val_split, train=False, **common)
    if len(val) == 0:
        log(f"note: split {cfg.val_split!r} of {data} has no images: no evaluation after training")
        return None, False
    if on_train:
        log(f"note: the evaluation after training runs on the training images ({cfg.train_split}), not a held-out set")
    if cfg.verify_images:
        trainer.verify_data(val, cfg.val_split)
    return val, on_train


def _missing_split(data: str, split: str | None, format: str, single: bool) -> str | None:
    """Why split `split` of `data` does not exist (None when it does): a missing split is a
    note, not an error, since a data set need not have a test split."""
    from fasterrcnn.data import available_splits, has_split

    if single or has_split(data, split, format) is not False:
        return None
    return f"{data} has no split {split!r} (it has: {', '.join(available_splits(data, format) or []) or 'none'})"


def eval_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation result."""
    voc = results["voc"]
    s: dict[str, Any] = {"map07": voc["map07"], "map10": voc["map10"], "split_images": voc.get("num_images")}
    if "coco" in results:
        stats = results["coco"]["stats"]
        s.update({"coco_ap": stats.get("AP"), "coco_ap50": stats.get("AP50"), "coco_ap75": stats.get("AP75")})
    if "proposal_recall" in results:
        s["recall"] = results["proposal_recall"].get("recall")
    if "inference" in results:
        s["seconds_per_image"] = results["inference"]["seconds_per_image"]
    if results.get("skipped"):
        s["skipped"] = results["skipped"]  # optional outputs not made, and why
    return s


def _table(results: dict[str, Any]) -> str:
    from fasterrcnn.evaluation import format_results_table

    return format_results_table(results)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    t = summary["train"]
    lines = [
        "",
        f"== fasterrcnn: {summary['preset']} ({summary['schedule']}) on {summary['data']}",
        f"training     {t['images']} images, {t['iterations']} iterations in {t['seconds']:.0f} s "
        f"({t['images_per_second']:.2f} images/s, {t['device']}, {t['precision']})",
        "final losses " + ", ".join(f"{k} {v:.4f}" for k, v in t["final_losses"].items()),
        "data         " + summary["data_report_text"].replace("\n", "\n             "),
    ]
    if "eval" in summary:
        e = summary["eval"]
        lines.append("")
        lines.append(summary["eval_table"])
        lines.append("")
        headline = f"VOC07 mAP@0.5 {100 * e['map07']:.1f}   VOC10 mAP@0.5 {100 * e['map10']:.1f}"
        if e.get("coco_ap") is not None:
            headline += f"   COCO AP {100 * e['coco_ap']:.1f}  AP50 {100 * e['coco_ap50']:.1f}  AP75 {100 * e['coco_ap75']:.1f}"
        lines.append(headline)
    lines.append("")
    lines.append("files")
    for k, v in summary["files"].items():
        lines.append(f"  {k:<12} {v}")
    return lines


def print_summary(summary: dict[str, Any]) -> None:
    print("\n".join(summary_lines(summary)))
