"""`lambda`: the RPN loss weight lambda of Eq. 1 at 1, 10 and 100 (Ren et al. 2015, Sec. 3.1.2
and 4.1, Table 9).

L = (1/Ncls) sum Lcls + lambda (1/Nreg) sum p* Lreg, with Ncls = 256 sampled anchors and
Nreg the number of anchor locations; lambda = 10 weighs the two terms about equally. Three
detectors, the same budget, lambda 1, 10 and 100 (10 is the baseline shared with the other
experiments).

The paper (VGG-16, VOC 2007 test): 68.9, 69.9 and 69.1 mAP: "the result is insensitive to lambda
in a wide range" (1.0 point over two orders of magnitude).
"""

from __future__ import annotations

from pathlib import Path

from fasterrcnn.experiments.report import Column, ExperimentResult, figure, save_figure
from fasterrcnn.experiments.trends import SIMILAR_MARGIN, Trend, check_all
from fasterrcnn.experiments.workspace import Workspace

NAME = "lambda"
TITLE = "RPN loss weight lambda (Eq. 1, Table 9)"
PAPER: dict[float, float] = {1.0: 68.9, 10.0: 69.9, 100.0: 69.1}


def _row(value: float) -> str:
    return f"lambda = {value:g}"


TRENDS: tuple[Trend, ...] = (
    Trend("mAP insensitive to lambda over 1..100", "similar", tuple(_row(v) for v in PAPER), "map", margin=SIMILAR_MARGIN),
    Trend("lambda = 10 beats lambda = 1 (paper: by 1.0 point)", "beats", (_row(10.0), _row(1.0)), "map"),
)

COLUMNS = [Column("lambda", "lambda", "{:g}"), Column("paper_map", "paper mAP (%)", "{:.1f}"), Column("map", "mAP@0.5 (VOC07)"),
           Column("map10", "mAP@0.5 (VOC10)"), Column("train_s", "train (s)", "{:.0f}")]


def run(ws: Workspace) -> ExperimentResult:
    rows = []
    for value, paper in PAPER.items():
        label = "baseline" if value == 10.0 else f"lambda-{value:g}"
        run_ = ws.train(label, model=ws.model_overrides(loss_lambda=value))
        ev = ws.evaluate(run_)
        rows.append({"lambda": value, "paper_map": paper, "map": ev.map07, "map10": ev.map10, "train_s": run_.seconds})
    table = {_row(r["lambda"]): {"map": r["map"]} for r in rows}
    return ExperimentResult(NAME, TITLE, ws.budget.name, str(ws.data), COLUMNS, rows, check_all(table, TRENDS))


def plot(result: ExperimentResult, path: Path) -> str:
    fig, (ax,) = figure(5, 3.4)
    xs = [r["lambda"] for r in result.rows]
    ax.plot(xs, [r["paper_map"] / 100 for r in result.rows], "o--", color="#999999", label="paper (VGG-16, VOC07)")
    ax.plot(xs, [r["map"] for r in result.rows], "o-", color="#4c72b0", label=f"measured ({result.budget})")
    ax.set_xscale("log")
    ax.set_xlabel("lambda (Eq. 1)")
    ax.set_ylabel("mAP@0.5")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
