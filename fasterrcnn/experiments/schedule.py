"""`schedule`: 4-step alternating against approximate joint training (Ren et al. 2015, Sec. 3.2
and 4.1).

The same network trained with the two schedules of Sec. 3.2 and evaluated on the test split:
approximate joint training (one network, the four losses summed) for the budget's iterations,
and the 4-step alternating schedule (RPN; Fast R-CNN on its proposals; RPN on the detector's
frozen convs; Fast R-CNN layers on those proposals) with 6/7 of them for each step, which
keeps the ratio of the paper's code (80k + 40k + 80k + 40k = 240k iterations for alternating
training against 70k for joint training on VOC 2007), spread evenly since the trainer caps
every step at the same `max_iters`. Training time is the training steps' time (no set-up, no
evaluation).

The paper: alternating training 69.9 mAP (VGG-16, Table 3); approximate joint training "produces
close results" and "reduces the training time by about 25-50%" (Sec. 3.2).
"""

from __future__ import annotations

from pathlib import Path

from fasterrcnn.experiments.report import Column, ExperimentResult, figure, save_figure
from fasterrcnn.experiments.trends import SIMILAR_MARGIN, Trend, check_all
from fasterrcnn.experiments.workspace import Workspace

NAME = "schedule"
TITLE = "4-step alternating against approximate joint training (Sec. 3.2)"
ALT_ROW, JOINT_ROW = "4-step alternating", "approximate joint"
STEP_FRACTION = 6 / 7  # each of the four steps: (80k + 40k + 80k + 40k) / 4 / 70k of the joint run's iterations

TRENDS: tuple[Trend, ...] = (
    Trend("approximate joint training as accurate as 4-step alternating", "similar", (JOINT_ROW, ALT_ROW), "map",
          margin=SIMILAR_MARGIN),
    Trend("approximate joint training is faster", "beats", (JOINT_ROW, ALT_ROW), "train_s", margin=0.0,
          higher_is_better=False, fmt="{:.1f} s"),
    Trend("approximate joint training saves at least 25% of the time", "beats", (JOINT_ROW, ALT_ROW), "train_s", margin=0.0,
          higher_is_better=False, factor=0.75, fmt="{:.1f} s"),
)

COLUMNS = [Column("schedule", "schedule"), Column("paper_map", "paper mAP (%)"), Column("paper_time", "paper: time"),
           Column("iterations", "iterations here", "{:.0f}"), Column("map", "mAP@0.5 (VOC07)"),
           Column("train_s", "train (s)", "{:.1f}"), Column("time_vs_alt", "time vs alternating", "{:.2f}")]


def run(ws: Workspace) -> ExperimentResult:
    joint = ws.train("baseline")
    steps = max(1, round(STEP_FRACTION * ws.budget.iters))
    alternating = ws.train("schedule-alternating", schedule="alternating", max_iters=steps)
    rows = []
    for label, run_, paper_map, paper_time in ((ALT_ROW, alternating, "69.9", "1"), (JOINT_ROW, joint, "close", "0.5-0.75")):
        ev = ws.evaluate(run_)
        rows.append({"schedule": label, "paper_map": paper_map, "paper_time": paper_time, "iterations": run_.iterations,
                     "map": ev.map07, "map10": ev.map10, "train_s": run_.seconds,
                     "time_vs_alt": run_.seconds / alternating.seconds if alternating.seconds > 0 else float("nan")})
    table = {r["schedule"]: {"map": r["map"], "train_s": r["train_s"]} for r in rows}
    notes = [f"alternating: four steps of {steps} iterations; joint: {joint.iterations} iterations "
             "(the paper's code's 240k : 70k ratio)"]
    return ExperimentResult(NAME, TITLE, ws.budget.name, str(ws.data), COLUMNS, rows, check_all(table, TRENDS), notes=notes)


def plot(result: ExperimentResult, path: Path) -> str:
    fig, (map_ax, time_ax) = figure(8, 3.2, ncols=2)
    names = [r["schedule"] for r in result.rows]
    map_ax.bar(names, [r["map"] for r in result.rows], color="#4c72b0")
    map_ax.set_ylabel("mAP@0.5 (VOC07)")
    map_ax.set_title("accuracy (paper: close)", fontsize=9)
    time_ax.bar(names, [r["train_s"] for r in result.rows], color="#dd8452")
    time_ax.set_ylabel("training time (s)")
    time_ax.set_title("training time (paper: joint 25-50% less)", fontsize=9)
    return save_figure(fig, path)
