"""An experiment's result: the paper's table beside the measured one, the trends, the files.

`ExperimentResult` is what every experiment returns; `write_result` writes it as
`result.json` (everything, for BENCHMARKS.md and for comparing runs) and `result.md` (the
table and the trends, ready to paste), and `markdown` is the text printed by the command.
Plots use matplotlib's object API on the Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fasterrcnn.errors import ConfigError
from fasterrcnn.experiments.trends import TrendResult

__all__ = ["RESULT_FILES", "Column", "ExperimentResult", "figure", "markdown", "read_result", "write_result"]

RESULT_FILES = ("result.json", "result.md")


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str = "{:.3f}"  # numbers; text is shown as it is


@dataclass
class ExperimentResult:
    name: str
    title: str  # what the experiment reproduces, with the paper's table or figure
    budget: str
    data: str
    columns: list[Column]
    rows: list[dict[str, Any]]  # the table: paper's and measured columns side by side
    trends: list[TrendResult]
    seconds: float = 0.0  # the whole experiment, wall time (runs reused from the folder take no time)
    command: str = ""
    notes: list[str] = field(default_factory=list)
    plot: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # curves and per-run details
    budget_detail: str = ""  # what a run of the budget is (Budget.describe)
    runs: list[dict[str, Any]] = field(default_factory=list)  # the runs it used: label, reused (from the folder), seconds

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": self.name, "title": self.title, "budget": self.budget, "budget_detail": self.budget_detail,
                "data": self.data,
                "command": self.command, "seconds": round(self.seconds, 1),
                "columns": [{"key": c.key, "header": c.header, "fmt": c.fmt} for c in self.columns],
                "rows": [{k: _plain(v) for k, v in r.items()} for r in self.rows],
                "trends": [t.to_dict() for t in self.trends],
                "trends_held": sum(t.held for t in self.trends), "trends_total": len(self.trends),
                "runs": self.runs, "notes": self.notes, "plot": self.plot, "extra": _plain(self.extra)}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt.format(value)
    return str(value)


def markdown_table(columns: list[dict[str, str]], rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(c["header"] for c in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_cell(r.get(c["key"]), c.get("fmt", "{:.3f}")) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def markdown(result: dict[str, Any]) -> str:
    """The Markdown of a result (as `ExperimentResult.to_dict()` or result.json holds it):
    a heading, the table, every trend with its verdict, the notes, the time and the command."""
    held, total = result["trends_held"], result["trends_total"]
    lines = [f"#### `{result['experiment']}`: {result['title']} ({result['budget']} budget)", "",
             markdown_table(result["columns"], result["rows"]), "",
             f"Trends ({held} of {total} held):", ""]
    lines += [f"- {t['claim']}: **{t['status']}** ({t['detail']})" for t in result["trends"]]
    if result["notes"]:
        lines += [""] + [f"Note: {n}" for n in result["notes"]]
    detail = f" ({result['budget_detail']})" if result.get("budget_detail") else ""
    runs = result.get("runs", [])
    reused = sum(r["reused"] for r in runs)
    trained = len(runs) - reused
    counted = (f" ({trained} run{'s' * (trained != 1)} trained, {reused} reused from the folder)" if runs else "")
    lines += ["", f"Data: {result['data']}{detail}. Time: {result['seconds']:.0f} s{counted}. Command: `{result['command']}`"]
    if result.get("plot"):
        lines.append(f"Plot: {result['plot']}")
    return "\n".join(lines) + "\n"


def write_result(result: ExperimentResult, folder: Path) -> dict[str, Any]:
    """result.json and result.md in `folder`; returns the dict written."""
    from fasterrcnn.fileio import atomic_write_text

    data = result.to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "result.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(folder / "result.md", markdown(data))
    return data


def read_result(folder: Path) -> dict[str, Any]:
    """The result.json in `folder`; ConfigError naming the file when there is none."""
    path = folder / "result.json"
    if not path.is_file():
        raise ConfigError(f"--out: {path} does not exist (run the experiment first, without --show)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def figure(width: float, height: float, ncols: int = 1) -> tuple[Any, list[Any]]:
    """A matplotlib Figure on the Agg canvas with `ncols` axes side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save_figure(fig: Any, path: Path) -> str:
    """Save `fig` as a PNG at `path` (atomically) and return the path."""
    from fasterrcnn.fileio import atomic_write

    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return str(path)
