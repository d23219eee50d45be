"""`proposals`: Selective Search (2,000) against RPN (300) proposals for the same detector
(Ren et al. 2015, Sec. 4.1, Tables 2, 3 and 5).

Two detectors of the same network with the same training budget: Fast R-CNN trained and
tested on Selective Search's boxes (OpenCV, fast mode, the first 2,000 per image, computed once
and cached: `SelectiveSearchCache`), and Faster R-CNN (approximate joint training, shared
convs) tested with its RPN's 300 proposals. Beside the mAP, the time per image of the proposal
stage alone: Selective Search on the CPU against the RPN's head and proposal layer (the paper's
"proposal" column of Table 5, shared convs excluded).

The paper (VGG-16, VOC 2007 test): SS + Fast R-CNN 66.9 mAP, RPN + Fast R-CNN 69.9 (Table 3);
proposals 1,510 ms (SS, CPU) against 10 ms (RPN, K40 GPU) per image (Table 5).
"""

from __future__ import annotations

from pathlib import Path

from fasterrcnn.experiments.report import Column, ExperimentResult, figure, save_figure
from fasterrcnn.experiments.trends import Trend, check_all
from fasterrcnn.experiments.workspace import Workspace

NAME = "proposals"
TITLE = "Selective Search (2,000) against RPN (300) proposals (Sec. 4.1, Tables 3 and 5)"
SS_ROW, RPN_ROW = "SS + Fast R-CNN", "RPN + Fast R-CNN (shared)"

TRENDS: tuple[Trend, ...] = (
    Trend("RPN (300) beats Selective Search (2,000) proposals in mAP", "beats", (RPN_ROW, SS_ROW), "map"),
    Trend("RPN proposals are faster to compute than Selective Search's", "beats", (RPN_ROW, SS_ROW), "proposal_ms",
          margin=0.0, higher_is_better=False, fmt="{:.1f} ms"),
)

COLUMNS = [Column("method", "method"), Column("paper_proposals", "paper: proposals", "{:.0f}"),
           Column("paper_map", "paper mAP (%)", "{:.1f}"), Column("paper_ms", "paper: proposal ms", "{:.0f}"),
           Column("proposals", "proposals/image here", "{:.0f}"), Column("map", "mAP@0.5 (VOC07)"),
           Column("proposal_ms", "proposal ms/image here", "{:.1f}"), Column("train_s", "train (s)", "{:.0f}")]


def run(ws: Workspace) -> ExperimentResult:
    ss_run = ws.train("proposals-ss-fast-rcnn", selective_search=True)
    ss = ws.evaluate(ss_run, selective_search=True)
    rpn_run = ws.train("baseline")
    rpn = ws.evaluate(rpn_run)
    rows = [
        {"method": SS_ROW, "paper_proposals": 2000, "paper_map": 66.9, "paper_ms": 1510, "proposals": ss.proposals_per_image,
         "map": ss.map07, "map10": ss.map10, "proposal_ms": 1000 * ss.proposal_seconds_per_image, "train_s": ss_run.seconds},
        {"method": RPN_ROW, "paper_proposals": 300, "paper_map": 69.9, "paper_ms": 10, "proposals": rpn.proposals_per_image,
         "map": rpn.map07, "map10": rpn.map10, "proposal_ms": 1000 * rpn.proposal_seconds_per_image, "train_s": rpn_run.seconds},
    ]
    table = {r["method"]: {"map": r["map"], "proposal_ms": r["proposal_ms"]} for r in rows}
    notes = [f"Selective Search returns {ss.proposals_per_image:.0f} boxes per image here on average (at most 2,000 kept); "
             "the paper's times are a K40 GPU for the RPN and a CPU for Selective Search, ours are one CPU thread for both."]
    return ExperimentResult(NAME, TITLE, ws.budget.name, str(ws.data), COLUMNS, rows, check_all(table, TRENDS), notes=notes)


def plot(result: ExperimentResult, path: Path) -> str:
    fig, (map_ax, time_ax) = figure(9, 3.2, ncols=2)
    names = [r["method"] for r in result.rows]
    x = [0, 1]
    map_ax.bar([i - 0.2 for i in x], [r["paper_map"] / 100 for r in result.rows], 0.4, label="paper (VGG-16, VOC07)", color="#999999")
    map_ax.bar([i + 0.2 for i in x], [r["map"] for r in result.rows], 0.4, label=f"measured ({result.budget})", color="#4c72b0")
    map_ax.set_xticks(x, names, fontsize=8)
    map_ax.set_ylabel("mAP@0.5")
    map_ax.legend(fontsize=8)
    time_ax.bar([i - 0.2 for i in x], [r["paper_ms"] for r in result.rows], 0.4, label="paper (Table 5)", color="#999999")
    time_ax.bar([i + 0.2 for i in x], [r["proposal_ms"] for r in result.rows], 0.4, label="measured (1 CPU thread)", color="#dd8452")
    time_ax.set_yscale("log")
    time_ax.set_xticks(x, names, fontsize=8)
    time_ax.set_ylabel("proposal time per image (ms)")
    time_ax.legend(fontsize=8)
    return save_figure(fig, path)
