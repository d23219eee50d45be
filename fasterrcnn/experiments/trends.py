"""The trend checker: does a measured table show the paper's trend?

The paper's claims are comparisons between rows of its tables (Ren et al. 2015, Sec. 4.1:
"3 scales and 3 ratios" against one anchor, RPN proposals against Selective Search, joint
against alternating training, the loss weight lambda over 1..100). A `Trend` names the rows
of a measured table (row -> metric -> value) and what should hold between them:

* ``beats``: row A is better than `factor` x row B (higher, or lower with
  ``higher_is_better=False``, e.g. seconds): *held* when it is by more than `margin`, *tie*
  when the two are within `margin` of each other, *not held* otherwise;
* ``similar``: the rows' values span at most `margin` (max - min): *held* or *not held*;
* ``monotone``: the rows, in order, rise (fall with ``higher_is_better=False``): *held* when no
  step goes the wrong way by more than `margin` and the whole rise exceeds `margin`, *tie*
  when no step goes the wrong way and the whole change is within `margin` (flat), *not held*
  otherwise.

A missing value (NaN) never passes: the trend is *not held* and the line says so.

TIE_MARGIN, 0.01 (one mAP point on the [0, 1] scale), is the default margin: the paper itself
calls 69.8 against 69.9 mAP "as good" (Sec. 4.1, anchors), and the short runs of
`fasterrcnn experiment` cannot resolve differences finer than a point. SIMILAR_MARGIN, 0.02,
is the spread allowed by "similar" claims: the paper's widest "insensitive" spread is 1.0
point (lambda over 1..100, Table 9), doubled for the seed-to-seed noise of short runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from fasterrcnn.errors import ConfigError

__all__ = ["HELD", "NOT_HELD", "SIMILAR_MARGIN", "TIE", "TIE_MARGIN", "Table", "Trend", "TrendResult", "check", "check_all"]

TIE_MARGIN = 0.01
SIMILAR_MARGIN = 0.02
HELD, NOT_HELD, TIE = "held", "not held", "tie"
Status = Literal["held", "not held", "tie"]
Kind = Literal["beats", "similar", "monotone"]
KINDS: tuple[str, ...] = ("beats", "similar", "monotone")

#: A measured table: row name -> metric name -> value.
Table = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Trend:
    """One of the paper's claims as a check on a measured table (see the module docstring)."""

    claim: str  # "3 scales, 3 ratios beat 1 scale, 1 ratio" (what is printed)
    kind: Kind
    rows: tuple[str, ...]  # beats: (A, B); similar: two or more; monotone: two or more, in order of x
    metric: str  # the column compared
    margin: float = TIE_MARGIN  # beats / monotone: the tie margin; similar: the largest spread
    higher_is_better: bool = True  # beats: the direction of "better"; monotone: rising (True) or falling
    factor: float = 1.0  # beats: A is compared with factor x B (0.75: "A at least 25% lower")
    fmt: str = "{:.3f}"  # how the figures are printed

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"trend {self.claim!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        wanted = 2 if self.kind == "beats" else None
        if (wanted is not None and len(self.rows) != wanted) or len(self.rows) < 2:
            raise ConfigError(f"trend {self.claim!r}: {self.kind} needs {'two rows (A, B)' if wanted else 'two or more rows'}, "
                              f"got {len(self.rows)}")
        if not self.margin >= 0 or not self.factor > 0:
            raise ConfigError(f"trend {self.claim!r}: margin must be >= 0 and factor > 0")


@dataclass(frozen=True)
class TrendResult:
    """The verdict on one trend with the figures it was decided on."""

    trend: Trend
    status: Status
    values: tuple[float, ...]  # the rows' values, in the trend's order
    detail: str  # the figures as printed: "0.810 vs 0.740"

    @property
    def held(self) -> bool:
        return self.status == HELD

    def line(self) -> str:
        """'3 scales beat 1 scale: held (0.810 vs 0.740)'."""
        return f"{self.trend.claim}: {self.status} ({self.detail})"

    def to_dict(self) -> dict[str, object]:
        t = self.trend
        return {"claim": t.claim, "kind": t.kind, "rows": list(t.rows), "metric": t.metric, "margin": t.margin,
                "higher_is_better": t.higher_is_better, "factor": t.factor, "status": self.status,
                "values": [None if math.isnan(v) else v for v in self.values], "detail": self.detail}


def _values(table: Table, trend: Trend) -> tuple[float, ...]:
    out = []
    for row in trend.rows:
        if row not in table:
            raise ConfigError(f"trend {trend.claim!r}: the table has no row {row!r} (rows: {', '.join(table)})")
        if trend.metric not in table[row]:
            raise ConfigError(f"trend {trend.claim!r}: row {row!r} has no {trend.metric!r} (has: {', '.join(table[row])})")
        value = table[row][trend.metric]
        out.append(float("nan") if value is None else float(value))
    return tuple(out)


def _beats(trend: Trend, a: float, b: float) -> tuple[Status, str]:
    f = trend.fmt.format
    target = trend.factor * b
    shown = f(b) if trend.factor == 1.0 else f"{trend.factor:g} x {f(b)} = {f(target)}"
    detail = f"{f(a)} vs {shown}"
    lead = (a - target) if trend.higher_is_better else (target - a)
    if lead > trend.margin:
        return HELD, detail
    if abs(lead) <= trend.margin:
        return TIE, f"{detail}, within the tie margin {f(trend.margin)}"
    return NOT_HELD, detail


def _similar(trend: Trend, values: Sequence[float]) -> tuple[Status, str]:
    f = trend.fmt.format
    spread = max(values) - min(values)
    figures = ", ".join(f(v) for v in values)
    verdict = HELD if spread <= trend.margin else NOT_HELD
    sign = "<=" if verdict == HELD else ">"
    return verdict, f"{figures}: spread {f(spread)} {sign} {f(trend.margin)}"


def _monotone(trend: Trend, values: Sequence[float]) -> tuple[Status, str]:
    f = trend.fmt.format
    sign = 1.0 if trend.higher_is_better else -1.0
    steps = [sign * (b - a) for a, b in zip(values, values[1:])]
    figures = " -> ".join(f(v) for v in values)
    if min(steps) < -trend.margin:
        return NOT_HELD, figures
    if sign * (values[-1] - values[0]) > trend.margin:
        return HELD, figures
    return TIE, f"{figures}, flat within the tie margin {f(trend.margin)}"


def check(table: Table, trend: Trend) -> TrendResult:
    """The verdict on `trend` in `table` (held / not held / tie) with its figures.

    Raises ConfigError when the table lacks a row or metric the trend names."""
    values = _values(table, trend)
    if any(math.isnan(v) for v in values):
        shown = ", ".join("nan" if math.isnan(v) else trend.fmt.format(v) for v in values)
        return TrendResult(trend, NOT_HELD, values, f"{shown}: not measured")
    if trend.kind == "beats":
        status, detail = _beats(trend, *values)
    elif trend.kind == "similar":
        status, detail = _similar(trend, values)
    else:
        status, detail = _monotone(trend, values)
    return TrendResult(trend, status, values, detail)


def check_all(table: Table, trends: Sequence[Trend]) -> list[TrendResult]:
    """Every trend's verdict, in order (none left out, whatever its outcome)."""
    return [check(table, t) for t in trends]
