"""The paper's experiments as commands: train, evaluate, print the paper's table beside ours.

`fasterrcnn experiment NAME` runs one of the experiments of Ren et al. 2015, Sec. 4.1, on the
embedded synthetic data set (or any data set with a train and a test split) and checks the
paper's trend on the measured table:

* ``anchors``   the anchor ablation, 6 settings of scales x ratios (Table 8)
* ``proposals`` Selective Search (2,000) against RPN (300) proposals, mAP and time (Tables 3, 5)
* ``schedule``  4-step alternating against approximate joint training (Sec. 3.2)
* ``lambda``    the RPN loss weight at 1, 10 and 100 (Table 9)
* ``recall``    proposal recall against the number of proposals and IoU (Fig. 4)

Modules: `budgets` (the data and the recipe of quick and full), `workspace` (data set, run
cache, evaluation), `proposals_source` (Selective Search cache, external proposals),
`trends` (the trend checker), `report` (result.json, result.md, plots), one module per
experiment with `run(workspace) -> ExperimentResult` and `plot(result, path)`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fasterrcnn.errors import ConfigError

__all__ = ["EXPERIMENTS", "experiment_module", "run_experiment"]

#: Experiment name -> (module, one-line description), in the order `all` runs them.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "anchors": ("fasterrcnn.experiments.anchors", "anchor ablation: 1 or 3 scales x 1 or 3 ratios (Table 8)"),
    "proposals": ("fasterrcnn.experiments.proposals", "Selective Search 2,000 against RPN 300 proposals: mAP, time (Tables 3, 5)"),
    "schedule": ("fasterrcnn.experiments.schedule", "4-step alternating against approximate joint training (Sec. 3.2)"),
    "lambda": ("fasterrcnn.experiments.loss_weight", "RPN loss weight lambda at 1, 10, 100 (Table 9)"),
    "recall": ("fasterrcnn.experiments.recall", "proposal recall against the number of proposals and IoU (Fig. 4)"),
}


def experiment_module(name: str) -> ModuleType:
    """The module of experiment `name`; ConfigError naming NAME otherwise."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment NAME {name!r}; choose one of {', '.join(EXPERIMENTS)} (or all)")
    return importlib.import_module(EXPERIMENTS[name][0])


def run_experiment(name: str, workspace: Any, command: str = "", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run experiment `name` in `workspace`, write OUT/NAME/result.json, result.md and
    NAME.png, and return the result as written."""
    from fasterrcnn.experiments.report import write_result

    module = experiment_module(name)
    log(f"== experiment {name}: {EXPERIMENTS[name][1]} ({workspace.budget.name} budget)")
    start = time.perf_counter()
    first = len(workspace.history)
    result = module.run(workspace)
    result.runs = workspace.history[first:]
    folder = Path(workspace.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    result.plot = module.plot(result, folder / f"{name}.png")
    result.seconds = time.perf_counter() - start
    result.command = command
    result.budget_detail = workspace.budget.describe()
    return write_result(result, folder)
