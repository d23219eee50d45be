"""Train + evaluate + summarise: what `fasterrcnn train` and the demo run end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fasterrcnn.engine.config import TrainConfig

__all__ = ["print_summary", "summary_lines", "train_and_evaluate"]


def train_and_evaluate(cfg: TrainConfig, evaluate: bool = True, log: Any = print) -> dict[str, Any]:
    """Train with `cfg`, plot the loss curve, evaluate on `cfg.val_split` (when present) and
    write `summary.json`; returns the summary dict."""
    from fasterrcnn.data import build_dataset
    from fasterrcnn.engine.evaluate import evaluate_model
    from fasterrcnn.engine.logger import read_metrics
    from fasterrcnn.engine.trainer import LOSS_KEYS, Trainer
    from fasterrcnn.evaluation import plot_loss_curve

    trainer = Trainer(cfg, log=log)
    result = trainer.run()
    out = Path(cfg.out)
    files: dict[str, str] = {"checkpoint": str(result.checkpoint), "metrics": str(out / "metrics.jsonl")}
    records = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"]
    if records:
        files["loss_curve"] = plot_loss_curve(
            records, out / "loss_curve.png", keys=["loss", *LOSS_KEYS], x_key="global_iter", log_scale=True,
            title=f"{cfg.preset} training losses ({cfg.schedule})",
        )
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
    if evaluate and cfg.val_split:
        test_min, test_max = cfg.test_size()
        common = dict(format=cfg.format, min_size=test_min, max_size=test_max, seed=cfg.seed, classes=trainer.classes)
        if cfg.image_dir is not None:
            common["image_dir"] = cfg.image_dir
        try:
            val = build_dataset(cfg.data, cfg.val_split, train=False, **common)
        except Exception as exc:  # noqa: BLE001 - a missing test split must not lose the trained model
            log(f"no evaluation: cannot read split {cfg.val_split!r} of {cfg.data} ({exc})")
            val = None
        if val is not None and len(val):
            log(f"evaluating on {cfg.val_split} ({len(val)} images)")
            results, _ = evaluate_model(
                result.model, val, device=trainer.device, precision=trainer.precision, num_workers=cfg.num_workers,
                out_dir=out / "eval", progress=cfg.progress, extra={"checkpoint": str(result.checkpoint), "split": cfg.val_split},
            )
            summary["eval"] = eval_summary(results)
            summary["eval_table"] = _table(results)
            files["report"] = results["report_path"]
            files["pr_curves"] = str(out / "eval" / "pr_curves")
    from fasterrcnn.evaluation import to_jsonable
    from fasterrcnn.fileio import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(summary), indent=2))
    files["summary"] = str(out / "summary.json")
    return summary


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
