"""`anchors`: the anchor ablation (Ren et al. 2015, Sec. 4.1, "Ablation Experiments", Table 8).

Six anchor settings, each a detector trained with the same budget (approximate joint
training) and evaluated on the test split: one scale and one ratio (the paper's 128^2 and
256^2, 1:1), one scale and three ratios, three scales and one ratio, three scales and three
ratios (the default). The scales are the data set's (`anchor_scales`: three octaves around its
median object, as 128-512 px bracket VOC's objects at 600 px); "small" and "middle" stand for
the paper's 128^2 and 256^2.

The paper (VGG-16, VOC 2007 test): 65.8, 66.7, 68.8, 67.9, 69.8 and 69.9 mAP: several anchor
shapes beat one, and "3 scales, 1 ratio" is as good as "3 scales, 3 ratios" (scales and
ratios are not independent ways to cover the boxes).
"""

from __future__ import annotations

from dataclasses import dataclass

from fasterrcnn.experiments.report import Column, ExperimentResult, figure, save_figure
from fasterrcnn.experiments.trends import SIMILAR_MARGIN, Trend, check_all
from fasterrcnn.experiments.workspace import PAPER_RATIOS, Workspace

NAME = "anchors"
TITLE = "anchor scales and ratios (Sec. 4.1, Table 8)"


@dataclass(frozen=True)
class AnchorSetting:
    label: str
    scales: tuple[int, ...]  # indices into the data set's three scales (0 small, 1 middle, 2 large)
    ratios: tuple[float, ...]
    paper_anchors: str
    paper_map: float  # %, VOC 2007 test, VGG-16


SETTINGS: tuple[AnchorSetting, ...] = (
    AnchorSetting("1 scale (small), 1 ratio", (0,), (1.0,), "128^2, 1:1", 65.8),
    AnchorSetting("1 scale (middle), 1 ratio", (1,), (1.0,), "256^2, 1:1", 66.7),
    AnchorSetting("1 scale (small), 3 ratios", (0,), PAPER_RATIOS, "128^2, {2:1, 1:1, 1:2}", 68.8),
    AnchorSetting("1 scale (middle), 3 ratios", (1,), PAPER_RATIOS, "256^2, {2:1, 1:1, 1:2}", 67.9),
    AnchorSetting("3 scales, 1 ratio", (0, 1, 2), (1.0,), "{128^2, 256^2, 512^2}, 1:1", 69.8),
    AnchorSetting("3 scales, 3 ratios", (0, 1, 2), PAPER_RATIOS, "{128^2, 256^2, 512^2}, {2:1, 1:1, 1:2}", 69.9),
)

TRENDS: tuple[Trend, ...] = (
    Trend("3 scales, 3 ratios beat 1 scale (small), 1 ratio", "beats", ("3 scales, 3 ratios", "1 scale (small), 1 ratio"), "map"),
    Trend("3 scales, 3 ratios beat 1 scale (middle), 1 ratio", "beats", ("3 scales, 3 ratios", "1 scale (middle), 1 ratio"), "map"),
    Trend("3 ratios beat 1 ratio at one scale (small)", "beats", ("1 scale (small), 3 ratios", "1 scale (small), 1 ratio"), "map"),
    Trend("3 scales beat 1 scale with one ratio", "beats", ("3 scales, 1 ratio", "1 scale (small), 1 ratio"), "map"),
    Trend("3 scales, 1 ratio as good as 3 scales, 3 ratios", "similar", ("3 scales, 1 ratio", "3 scales, 3 ratios"), "map",
          margin=SIMILAR_MARGIN),
)

COLUMNS = [Column("setting", "setting"), Column("paper_anchors", "paper's anchors"), Column("paper_map", "paper mAP (%)", "{:.1f}"),
           Column("anchors", "anchors here (px)"), Column("map", "mAP@0.5 (VOC07)"), Column("train_s", "train (s)", "{:.0f}")]


def _describe(sizes: list[float], ratios: tuple[float, ...]) -> str:
    shown = ", ".join(f"{s:g}^2" for s in sizes)
    ratio_text = "1:1" if ratios == (1.0,) else "{2:1, 1:1, 1:2}"
    return (f"{{{shown}}}" if len(sizes) > 1 else shown) + f", {ratio_text}"


def run(ws: Workspace) -> ExperimentResult:
    rows = []
    for setting in SETTINGS:
        scales = tuple(ws.scales[i] for i in setting.scales)
        overrides = ws.model_overrides(scales=scales, ratios=setting.ratios)
        run_ = ws.train(f"anchors-{len(scales)}s{len(setting.ratios)}r-{'-'.join(str(i) for i in setting.scales)}",
                        model=overrides)
        ev = ws.evaluate(run_)
        rows.append({"setting": setting.label, "paper_anchors": setting.paper_anchors, "paper_map": setting.paper_map,
                     "anchors": _describe([s * 16 for s in scales], setting.ratios), "map": ev.map07, "map10": ev.map10,
                     "train_s": run_.seconds, "cached": run_.cached})
    table = {r["setting"]: {"map": r["map"]} for r in rows}
    return ExperimentResult(NAME, TITLE, ws.budget.name, str(ws.data), COLUMNS, rows, check_all(table, TRENDS))


def plot(result: ExperimentResult, path) -> str:
    fig, (paper_ax, ours_ax) = figure(11, 3.8, ncols=2)
    labels = [r["setting"] for r in result.rows]
    y = list(range(len(labels)))
    paper_ax.barh(y, [r["paper_map"] for r in result.rows], color="#999999")
    paper_ax.set_yticks(y, labels, fontsize=8)
    paper_ax.set_xlim(60, 71)
    paper_ax.set_xlabel("mAP (%)")
    paper_ax.set_title("paper (VGG-16, VOC 2007 test; Table 8)", fontsize=9)
    ours_ax.barh(y, [r["map"] for r in result.rows], color="#4c72b0")
    ours_ax.set_yticks(y, [""] * len(y))
    ours_ax.set_xlabel("mAP@0.5 (VOC07)")
    ours_ax.set_title(f"measured ({result.budget} budget)", fontsize=9)
    return save_figure(fig, path)
