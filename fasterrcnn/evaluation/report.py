"""Evaluation reports: a JSON file (`write_report`) and a text table (`format_results_table`).

The JSON report is strict JSON: NaN and infinities become ``null`` (an AP is NaN for a class
without ground truth), numpy / torch values become plain numbers and lists, mapping keys
become strings. It is written atomically: to a temporary file in the same directory, then
renamed over the destination, so a reader never sees half a report.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

from fasterrcnn.fileio import atomic_write_text

__all__ = [
    "format_results_table",
    "read_report",
    "to_jsonable",
    "write_report",
]

#: Per-class arrays of a VOC result (one value per detection): left out of reports unless
#: asked for, as they can be long.
CURVE_KEYS = ("precision", "recall", "scores")


def to_jsonable(obj):
    """`obj` made of plain JSON types: NaN/inf -> None, arrays/tensors -> lists, keys -> str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        return {_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"cannot put a {type(obj).__name__} into a JSON report: {obj!r}")


def _key(k) -> str:
    if isinstance(k, np.generic):
        k = k.item()
    return k if isinstance(k, str) else str(k)


def _strip_curves(obj):
    if isinstance(obj, Mapping):
        if obj.get("kind") == "voc" and isinstance(obj.get("per_class"), list):
            obj = dict(obj)
            obj["per_class"] = [
                {k: v for k, v in c.items() if k not in CURVE_KEYS} for c in obj["per_class"]
            ]
            return obj
        return {k: _strip_curves(v) for k, v in obj.items()}
    return obj


def write_report(path, results, *, include_curves: bool = False) -> str:
    """Write an evaluation report as JSON (atomically) and return its path.

    `results` is one result dict (from `voc_evaluate`, `coco_evaluate`, `proposal_recall`),
    stored under its ``kind`` ("voc", "coco", "proposal_recall"), or a dict of them and of
    anything else worth keeping (settings, checkpoint name, timings), stored as it is. The
    per-detection precision/recall/score arrays of VOC results are left out unless
    `include_curves`. NaN (e.g. the AP of a class without ground truth) is written as null.
    """
    from fasterrcnn import __version__

    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    body = {results["kind"]: results} if "kind" in results else dict(results)
    if not include_curves:
        body = _strip_curves(body)
    report = {
        "fasterrcnn_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **body,
    }
    text = json.dumps(to_jsonable(report), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def read_report(path) -> dict:
    """Read a report written by `write_report` (null stays None)."""
    with open(os.fspath(path), encoding="utf-8") as f:
        return json.load(f)


def _fmt(v, scale: float = 100.0, width: int = 7) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a".rjust(width)
    return f"{v * scale:{width}.2f}"


def _voc_table(r: Mapping) -> list[str]:
    s = r.get("settings", {})
    rows = [
        f"PASCAL VOC AP (%) at IoU {s.get('iou_threshold', 0.5):g}"
        + (" (+1 pixel convention)" if s.get("legacy_plus_one") else "")
        + f", {r.get('num_images', '?')} images"
    ]
    per_class = r["per_class"]
    width = max([len("class")] + [len(str(c["name"])) for c in per_class])
    width = min(width, 30)
    head = (
        f"{'class':<{width}}  {'#gt':>6} {'#diff':>6} {'#det':>7} {'TP':>6} {'FP':>7}  "
        f"{'AP07':>7} {'AP10':>7}"
    )
    rows += [head, "-" * len(head)]
    for c in per_class:
        name = str(c["name"])[:width]
        rows.append(
            f"{name:<{width}}  {c['num_positives']:>6} {c['num_difficult']:>6} "
            f"{c['num_detections']:>7} {c['tp']:>6} {c['fp']:>7}  "
            f"{_fmt(c['ap07'])} {_fmt(c['ap10'])}"
        )
    rows.append("-" * len(head))
    n = r.get("num_classes_evaluated", len(per_class))
    label = f"mAP ({n} class{'' if n == 1 else 'es'})"
    rows.append(
        f"{label:<{max(len(head) - 15, len(label) + 1)}}{_fmt(r['map07'])} {_fmt(r['map10'])}"
    )
    rows.append(
        "AP07 = VOC2007 11-point interpolated AP (the paper's metric); AP10 = VOC2010+ area AP"
    )
    rows += [f"note: {n}" for n in r.get("notes", [])]
    return rows


def _coco_table(r: Mapping) -> list[str]:
    stats = r["stats"]
    rows = ["COCO box metrics (%), pycocotools"]
    names = list(stats)
    for i in range(0, len(names), 6):
        chunk = names[i : i + 6]
        rows.append("  ".join(f"{n:>5} {_fmt(stats[n], width=6)}" for n in chunk))
    return rows


def _recall_table(r: Mapping) -> list[str]:
    rec = r["recall"]
    ns = list(rec)
    ts = list(next(iter(rec.values()))) if rec else []
    ar = r.get("average_recall")
    rows = [
        f"Proposal recall (%) of {r.get('num_gt', '?')} non-difficult objects, "
        f"{r.get('num_images', '?')} images"
    ]
    head = (
        f"{'top-N':>7}"
        + "".join(f"  IoU>={float(t):<4g}" for t in ts)
        + ("  AR@.5:.95" if ar else "")
    )
    rows.append(head)
    for n in ns:
        line = f"{str(n):>7}" + "".join(f"  {_fmt(rec[n][t], width=9)}" for t in ts)
        if ar:
            line += f"  {_fmt(ar[n], width=9)}"
        rows.append(line)
    return rows


def format_results_table(results) -> str:
    """Human-readable tables for the CLI: a VOC result (per-class AP07/AP10 and mAP), a COCO
    result (the 12 stats), a proposal recall result, or a dict holding several of them."""
    if not isinstance(results, Mapping):
        raise TypeError(f"results must be a dict, got {type(results).__name__}")
    parts = (
        [results]
        if "kind" in results
        else [v for v in results.values() if isinstance(v, Mapping) and "kind" in v]
    )
    blocks = []
    for r in parts:
        kind = r["kind"]
        if kind == "voc":
            blocks.append(_voc_table(r))
        elif kind == "coco":
            blocks.append(_coco_table(r))
        elif kind == "proposal_recall":
            blocks.append(_recall_table(r))
    return "\n\n".join("\n".join(b) for b in blocks)
