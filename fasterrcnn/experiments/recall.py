"""`recall`: proposal recall against the number of proposals and the IoU threshold, Selective
Search against the RPN (Ren et al. 2015, Sec. 4.1 "Analysis of Recall-to-IoU", Fig. 4).

Recall of the top-N proposals per image (N = 50 .. 2,000) at IoU 0.5 .. 0.95 on the test split
(`fasterrcnn.evaluation.proposal_recall`; non-difficult objects, all classes together), for
Selective Search (OpenCV, fast mode, in its own ranking) and for the baseline detector's RPN
(ranked by objectness, after NMS). The paper's figure has no numbers; its findings are that
the RPN's recall stays high when the proposals drop from 2,000 to 300, while Selective
Search's falls ("the RPN proposals are more accurate"), which is why 300 RPN proposals are
enough for the detector.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fasterrcnn.evaluation.recall import AR_IOU_THRESHOLDS, proposal_recall
from fasterrcnn.experiments.report import Column, ExperimentResult, figure, save_figure
from fasterrcnn.experiments.trends import Trend, check_all
from fasterrcnn.experiments.workspace import Workspace

NAME = "recall"
TITLE = "proposal recall against the number of proposals and IoU (Sec. 4.1, Fig. 4)"
COUNTS = (50, 100, 300, 1000, 2000)
METHODS = ("SS", "RPN")
PAPER_TEXT = {("SS", 300): "falls well below its 2,000", ("SS", 2000): "high", ("RPN", 300): "close to its 2,000",
              ("RPN", 2000): "high"}


def row_name(method: str, count: int) -> str:
    return f"{method}, {count}"


def drop_name(method: str) -> str:
    return f"{method}, drop 2000 -> 300"


TRENDS: tuple[Trend, ...] = (
    Trend("RPN beats Selective Search at 300 proposals (recall at IoU 0.5)", "beats", (row_name("RPN", 300), row_name("SS", 300)), "r50"),
    Trend("RPN beats Selective Search at 300 proposals (average recall, IoU 0.5:0.95)", "beats",
          (row_name("RPN", 300), row_name("SS", 300)), "ar"),
    Trend("RPN's recall drops less than Selective Search's from 2,000 to 300 proposals (IoU 0.5)", "beats",
          (drop_name("RPN"), drop_name("SS")), "r50", higher_is_better=False),
    Trend("Selective Search's recall rises with the number of proposals (IoU 0.5)", "monotone",
          tuple(row_name("SS", n) for n in COUNTS), "r50"),
)

COLUMNS = [Column("method", "proposals"), Column("count", "N", "{:.0f}"), Column("paper", "paper (Fig. 4)"),
           Column("r50", "recall@0.5"), Column("r70", "recall@0.7"), Column("ar", "AR@0.5:0.95")]


def _rows(method: str, recall: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for n in COUNTS:
        at = recall["recall"][n]
        rows.append({"method": method, "count": n, "paper": PAPER_TEXT.get((method, n), ""), "r50": at[0.5], "r70": at[0.7],
                     "ar": recall["average_recall"][n]})
    return rows


def _curves(recall: dict[str, Any]) -> dict[str, Any]:
    return {"by_count": {str(n): {f"{t:.2f}": v for t, v in recall["recall"][n].items()} for n in COUNTS},
            "mean_num_proposals": recall["mean_num_proposals"], "num_gt": recall["num_gt"]}


def run(ws: Workspace) -> ExperimentResult:
    gt = ws.ground_truth()
    baseline = ws.train("baseline")
    found = {"SS": ws.ss_proposals(), "RPN": ws.rpn_proposals(baseline, max(COUNTS))}
    recalls = {m: proposal_recall(gt, found[m], iou_thresholds=AR_IOU_THRESHOLDS, num_proposals=COUNTS) for m in METHODS}
    rows = [r for m in METHODS for r in _rows(m, recalls[m])]
    table: dict[str, dict[str, float]] = {row_name(r["method"], r["count"]): {"r50": r["r50"], "ar": r["ar"]} for r in rows}
    for m in METHODS:
        table[drop_name(m)] = {"r50": table[row_name(m, 2000)]["r50"] - table[row_name(m, 300)]["r50"]}
    notes = [f"proposals per image before the top-N cut: SS {recalls['SS']['mean_num_proposals']:.0f}, "
             f"RPN {recalls['RPN']['mean_num_proposals']:.0f} (an image with fewer than N uses all of its own); "
             f"{recalls['RPN']['num_gt']} test objects"]
    return ExperimentResult(NAME, TITLE, ws.budget.name, str(ws.data), COLUMNS, rows, check_all(table, TRENDS), notes=notes,
                            extra={"curves": {m: _curves(recalls[m]) for m in METHODS}})


def plot(result: ExperimentResult, path: Path) -> str:
    fig, (count_ax, *iou_axes) = figure(13, 3.6, ncols=3)
    colours = {"SS": "#dd8452", "RPN": "#4c72b0"}
    curves = result.extra["curves"]
    for m in METHODS:
        by_count = curves[m]["by_count"]
        for t, style in (("0.50", "-"), ("0.70", "--")):
            count_ax.plot(COUNTS, [by_count[str(n)][t] for n in COUNTS], style, marker="o", color=colours[m], label=f"{m}, IoU {t}")
        for ax, n in zip(iou_axes, (300, 2000)):
            ious = sorted(by_count[str(n)], key=float)
            ax.plot([float(t) for t in ious], [by_count[str(n)][t] for t in ious], "-", marker=".", color=colours[m], label=m)
    count_ax.set_xscale("log")
    count_ax.set_xlabel("number of proposals")
    count_ax.set_ylabel("recall")
    count_ax.legend(fontsize=7)
    for ax, n in zip(iou_axes, (300, 2000)):
        ax.set_xlabel("IoU")
        ax.set_ylabel("recall")
        ax.set_title(f"{n} proposals (paper: Fig. 4)", fontsize=9)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
