"""Follow-up runs of `fasterrcnn experiment --budget full`: why some of the paper's trends did not hold.

Two questions, each a job (run them one after the other, or in two processes: one thread each):

* ``--job iterations``: is approximate joint training behind the 4-step schedule only because it
  had fewer iterations (1,000 against 4 x 857)? Trains joint training for as long as the
  alternating schedule took, and for its total of iterations, and reports their mAP and their
  RPNs' proposal recall beside Selective Search's.
* ``--job seeds``: how large is the seed noise that the lambda trend is read through? Trains
  lambda = 1, 10, 100 again with another training seed (same data set).

Both reuse the runs and the Selective Search boxes of `--out` (the folder of
`fasterrcnn experiment ... --budget full --out OUT`), so run the experiments first:

    python benchmarks/experiments_followup.py --job iterations --out runs/experiments/full_b
    python benchmarks/experiments_followup.py --job seeds --out runs/experiments/full_b
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from fasterrcnn.evaluation.recall import AR_IOU_THRESHOLDS, proposal_recall
from fasterrcnn.experiments.budgets import budget
from fasterrcnn.experiments.schedule import STEP_FRACTION
from fasterrcnn.experiments.workspace import Workspace

RECALL_AT = 300


def recall_row(ws: Workspace, name: str, found: list) -> dict:
    """Recall at IoU 0.5 and 0.7 and AR@0.5:0.95 of the top 300 proposals."""
    r = proposal_recall(ws.ground_truth(), found, iou_thresholds=AR_IOU_THRESHOLDS, num_proposals=[RECALL_AT])
    by_iou = r["recall"][RECALL_AT]
    return {"proposals": name, "recall@0.5": by_iou[0.5], "recall@0.7": by_iou[0.7], "AR": r["average_recall"][RECALL_AT]}


def iterations(ws: Workspace) -> list[dict]:
    steps = max(1, round(STEP_FRACTION * ws.budget.iters))
    baseline = ws.train("baseline")
    alternating = ws.train("schedule-alternating", schedule="alternating", max_iters=steps)
    # the joint run that takes the alternating schedule's training time, at the baseline's step time
    equal_time = round(alternating.seconds / baseline.seconds * baseline.iterations)
    rows = []
    for label, iters in (("baseline", ws.budget.iters), ("joint-equal-time", equal_time), ("joint-long", 4 * steps)):
        run = ws.train(label, max_iters=iters)
        ev = ws.evaluate(run)
        rows.append({"run": f"joint, {iters} iterations", "map07": ev.map07, "train_s": run.seconds,
                     **recall_row(ws, "RPN", ws.rpn_proposals(run, RECALL_AT))})
    rows.append({"run": "Selective Search", **recall_row(ws, "SS", ws.ss_proposals())})
    return rows


def seeds(ws: Workspace, seed: int) -> list[dict]:
    other = dataclasses.replace(ws, seed=seed)  # the same data set, another training seed
    rows = []
    for value in (1.0, 10.0, 100.0):
        label = "baseline" if value == 10.0 else f"lambda-{value:g}"
        for w in (ws, other):
            run = w.train(label, model=w.model_overrides(loss_lambda=value))
            rows.append({"lambda": value, "seed": w.seed, "map07": w.evaluate(run).map07, "train_s": run.seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", choices=("iterations", "seeds"), required=True)
    parser.add_argument("--out", default="runs/experiments/full")
    parser.add_argument("--seed", type=int, default=1, help="the other training seed of --job seeds")
    args = parser.parse_args()
    ws = Workspace.prepare(args.out, budget("full"), progress=False)
    rows = iterations(ws) if args.job == "iterations" else seeds(ws, args.seed)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
