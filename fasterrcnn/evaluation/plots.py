"""Plots: precision-recall curves per class, and training loss curves.

matplotlib is used through its object API with the Agg canvas (``Figure`` +
``FigureCanvasAgg``): no display, no pyplot global state, safe in worker threads and on
headless machines. File names are derived from class names with `safe_filename`, so any
class name (spaces, slashes, unicode, "..") gives a safe, unique file name.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from fasterrcnn.errors import DataError

__all__ = ["plot_loss_curve", "plot_pr_curves", "safe_filename"]

#: Keys tried, in order, for the x axis of a loss curve.
ITERATION_KEYS = ("iteration", "iter", "step", "global_step")


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the installation
        from fasterrcnn._optional import missing_reason

        # (the commands check first and skip their plots with a note: see engine.evaluate)
        raise DataError(f"plots need matplotlib: {missing_reason('matplotlib')}") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def safe_filename(name: str, max_len: int = 60) -> str:
    """A file-name-safe slug of `name`: ASCII letters, digits, '-', '_' and '.' only, no
    leading dot, at most `max_len` characters; "class" when nothing is left."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:max_len].strip("._-")
    return slug or "class"


def _float_array(values) -> np.ndarray:
    if values is None:
        return np.zeros(0)
    return np.array(
        [np.nan if v is None else v for v in np.asarray(values, dtype=object).reshape(-1)],
        dtype=np.float64,
    )


def _envelope(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interpolated PR curve (what area AP integrates) as points for a "post" step plot:
    on (r[i-1], r[i]] precision is the best precision at recall >= r[i]."""
    env = np.maximum.accumulate(precision[::-1])[::-1]
    return np.concatenate(([0.0], recall)), np.concatenate((env, env[-1:]))


def _ap_text(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def plot_pr_curves(
    voc_result: Mapping, out_dir, *, overview: bool = True, dpi: int = 100
) -> list[str]:
    """Write one precision-recall PNG per class of a `voc_evaluate` result; returns the paths.

    Files are ``pr_<label>_<class>.png`` (label zero-padded, class name made safe), each
    with the raw curve, its interpolated envelope and AP07/AP10 in the title; with
    `overview`, also ``pr_all.png`` with every class with ground truth on one plot. A class
    without ground truth gets a plot saying so. Works on a result read back from a JSON
    report only if it was written with ``include_curves=True``.
    """
    per_class = voc_result.get("per_class") if isinstance(voc_result, Mapping) else None
    if not isinstance(per_class, list):
        raise DataError("plot_pr_curves needs a voc_evaluate result (with 'per_class')")
    if per_class and "precision" not in per_class[0]:
        raise DataError(
            "this result has no precision/recall arrays (reports keep them only when written "
            "with include_curves=True)"
        )
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    digits = max(2, len(str(len(per_class))))
    paths = []
    curves = []
    for c in per_class:
        name = str(c["name"])
        recall, precision = _float_array(c["recall"]), _float_array(c["precision"])
        fig = _new_figure(5, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        has_gt = c.get("num_positives", 0) > 0
        if has_gt and recall.size:
            ax.plot(recall, precision, color="C0", lw=1.2, label="precision")
            er, ep = _envelope(recall, precision)
            ax.step(er, ep, where="post", color="C1", lw=1.0, ls="--", label="interpolated")
            ax.legend(loc="lower left")
            curves.append((name, recall, precision, c.get("ap10")))
        elif has_gt:
            ax.text(
                0.5, 0.5, "no detections (AP = 0)", ha="center", va="center", transform=ax.transAxes
            )
            curves.append((name, recall, precision, c.get("ap10")))
        else:
            ax.text(
                0.5,
                0.5,
                "no ground truth: AP undefined",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(True, alpha=0.3)
        ax.set_title(
            f"{name}: AP07 {_ap_text(c.get('ap07'))}, AP10 {_ap_text(c.get('ap10'))}\n"
            f"{c.get('num_positives', '?')} objects, {c.get('num_detections', '?')} detections",
            fontsize=10,
        )
        fig.tight_layout()
        path = os.path.join(out_dir, f"pr_{int(c['label']):0{digits}d}_{safe_filename(name)}.png")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    if overview:
        fig = _new_figure(7, 6)
        ax = fig.add_subplot(1, 1, 1)
        for i, (name, recall, precision, ap) in enumerate(curves):
            if recall.size:
                ax.plot(
                    recall,
                    precision,
                    lw=1.0,
                    color=f"C{i % 10}",
                    ls=("-", "--", ":")[(i // 10) % 3],
                    label=f"{name} ({_ap_text(ap)})",
                )
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(True, alpha=0.3)
        ax.set_title(
            f"all classes: mAP07 {_ap_text(voc_result.get('map07'))}, "
            f"mAP10 {_ap_text(voc_result.get('map10'))}"
        )
        if curves and len(curves) <= 30:
            ax.legend(loc="lower left", fontsize=7, ncol=2 if len(curves) > 10 else 1)
        fig.tight_layout()
        path = os.path.join(out_dir, "pr_all.png")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def _read_metrics(metrics) -> tuple[list[Mapping], str]:
    if isinstance(metrics, (str, os.PathLike)):
        path = os.fspath(metrics)
        records = []
        try:
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
                    if not isinstance(rec, Mapping):
                        raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                    records.append(rec)
        except FileNotFoundError:
            raise DataError(f"{path}: metrics file not found") from None
        return records, path
    if isinstance(metrics, Sequence) and all(isinstance(r, Mapping) for r in metrics):
        return list(metrics), "metrics"
    raise DataError("metrics must be a JSONL file path or a list of dicts")


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def plot_loss_curve(
    metrics,
    out_png,
    *,
    keys: Sequence[str] | None = None,
    x_key: str | None = None,
    log_scale: bool = False,
    title: str | None = None,
    dpi: int = 100,
) -> str:
    """Plot training losses against the iteration; returns the PNG path.

    `metrics` is a JSONL file (one JSON object per line, as the trainer's metrics log) or a
    list of dicts. Plotted: `keys`, or by default every numeric field whose name contains
    "loss" (the total "loss" drawn thicker). x axis: `x_key`, or the first of "iteration",
    "iter", "step", "global_step" found, or the record's position. Records without a value
    for a key (e.g. evaluation lines) are skipped for that key; non-finite values too.
    `log_scale` puts the y axis on a log scale (non-positive values are left out).
    """
    records, source = _read_metrics(metrics)
    if x_key is None:
        x_key = next((k for k in ITERATION_KEYS if any(k in r for r in records)), None)
    if keys is None:
        found: dict[str, None] = {}
        for r in records:
            for k, v in r.items():
                if "loss" in str(k).lower() and _is_number(v):
                    found[k] = None
        keys = list(found)
    if not keys:
        raise DataError(f"{source}: no loss values to plot (no numeric field named '*loss*')")
    fig = _new_figure(8, 5)
    ax = fig.add_subplot(1, 1, 1)
    plotted = 0
    for i, key in enumerate(keys):
        xs, ys = [], []
        for pos, r in enumerate(records):
            v = r.get(key)
            if not _is_number(v):
                continue
            if x_key is not None:
                x = r.get(x_key)
                if not _is_number(x):
                    continue
            else:
                x = pos
            if log_scale and float(v) <= 0:
                continue
            xs.append(float(x))
            ys.append(float(v))
        if not xs:
            continue
        plotted += 1
        ax.plot(xs, ys, lw=2.0 if key == "loss" else 1.0, color=f"C{i % 10}", label=str(key))
    if not plotted:
        raise DataError(f"{source}: none of {list(keys)} has a plottable value")
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(x_key or "record")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "training loss")
    fig.tight_layout()
    out_png = os.fspath(out_png)
    parent = os.path.dirname(os.path.abspath(out_png))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return out_png
