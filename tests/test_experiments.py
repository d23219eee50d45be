"""`fasterrcnn experiment`: the trend checker on hand-made tables, the shared pieces, and every
experiment's quick budget end to end (one generated data set and run cache for the module)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fasterrcnn.cli import main
from fasterrcnn.errors import ConfigError
from fasterrcnn.experiments import EXPERIMENTS
from fasterrcnn.experiments.budgets import anchor_scales, budget
from fasterrcnn.experiments.proposals_source import SelectiveSearchCache, WithProposals, mirror_boxes
from fasterrcnn.experiments.report import markdown
from fasterrcnn.experiments.trends import HELD, NOT_HELD, TIE, Trend, check, check_all


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The experiments run single-threaded (--threads 1); the rest of the session keeps its threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ the trend checker

TABLE = {"3x3": {"map": 0.81, "s": 40.0}, "1x1": {"map": 0.74, "s": 60.0}, "1x3": {"map": 0.805, "s": 50.0},
         "nan": {"map": float("nan"), "s": 1.0}}


def beats(a: str, b: str, **kw) -> Trend:
    return Trend(f"{a} beats {b}", "beats", (a, b), kw.pop("metric", "map"), **kw)


def test_beats_held_not_held_and_tie():
    held = check(TABLE, beats("3x3", "1x1"))
    assert held.status == HELD and held.values == (0.81, 0.74)
    assert held.line() == "3x3 beats 1x1: held (0.810 vs 0.740)"
    assert check(TABLE, beats("1x1", "3x3")).status == NOT_HELD
    tie = check(TABLE, beats("1x3", "3x3"))  # 0.005 apart, inside the 0.01 margin
    assert tie.status == TIE and "tie margin" in tie.line()
    assert check(TABLE, beats("3x3", "1x3", margin=0.001)).status == HELD


def test_beats_lower_is_better_and_factor():
    assert check(TABLE, beats("3x3", "1x1", metric="s", higher_is_better=False, margin=0.0)).status == HELD
    assert check(TABLE, beats("1x1", "3x3", metric="s", higher_is_better=False, margin=0.0)).status == NOT_HELD
    # 40 s against 0.75 x 60 s = 45 s: at least 25% less
    quarter = check(TABLE, beats("3x3", "1x1", metric="s", higher_is_better=False, factor=0.75, margin=0.0, fmt="{:.1f} s"))
    assert quarter.status == HELD and "0.75 x 60.0 s = 45.0 s" in quarter.detail
    # 50 s against 45 s: not 25% less
    assert check(TABLE, beats("1x3", "1x1", metric="s", higher_is_better=False, factor=0.75, margin=0.0)).status == NOT_HELD


def test_similar_within_tolerance():
    close = check(TABLE, Trend("close", "similar", ("3x3", "1x3"), "map", margin=0.02))
    assert close.status == HELD and "spread 0.005 <= 0.020" in close.detail
    far = check(TABLE, Trend("far", "similar", ("3x3", "1x3", "1x1"), "map", margin=0.02))
    assert far.status == NOT_HELD and "spread 0.070 > 0.020" in far.detail


def test_monotone_held_tie_and_not_held():
    rising = {"a": {"r": 0.2}, "b": {"r": 0.5}, "c": {"r": 0.5}, "d": {"r": 0.9}}
    assert check(rising, Trend("rises", "monotone", ("a", "b", "c", "d"), "r")).status == HELD
    assert check(rising, Trend("falls", "monotone", ("a", "b", "c", "d"), "r", higher_is_better=False)).status == NOT_HELD
    flat = {"a": {"r": 0.5}, "b": {"r": 0.504}, "c": {"r": 0.502}}
    assert check(flat, Trend("rises", "monotone", ("a", "b", "c"), "r")).status == TIE
    dip = {"a": {"r": 0.2}, "b": {"r": 0.1}, "c": {"r": 0.9}}  # rises overall, but one step falls by 0.1
    result = check(dip, Trend("rises", "monotone", ("a", "b", "c"), "r"))
    assert result.status == NOT_HELD and result.detail == "0.200 -> 0.100 -> 0.900"


def test_missing_values_never_pass_and_bad_specs_are_named():
    result = check(TABLE, beats("nan", "1x1"))
    assert result.status == NOT_HELD and "not measured" in result.detail
    assert check(TABLE, Trend("s", "similar", ("nan", "1x1"), "map")).status == NOT_HELD
    with pytest.raises(ConfigError, match="no row 'gone'"):
        check(TABLE, beats("gone", "1x1"))
    with pytest.raises(ConfigError, match="has no 'ap'"):
        check(TABLE, beats("3x3", "1x1", metric="ap"))
    with pytest.raises(ConfigError, match="two rows"):
        Trend("x", "beats", ("3x3",), "map")
    with pytest.raises(ConfigError, match="kind must be one of"):
        Trend("x", "better", ("3x3", "1x1"), "map")  # type: ignore[arg-type]


def test_check_all_keeps_every_trend_in_order():
    trends = [beats("1x1", "3x3"), beats("3x3", "1x1"), beats("1x3", "3x3")]
    assert [r.status for r in check_all(TABLE, trends)] == [NOT_HELD, HELD, TIE]


# ------------------------------------------------------------------ shared pieces


def test_anchor_scales_bracket_the_median_object():
    assert anchor_scales([30.0, 40.0, 50.0]) == (1.0, 2.0, 4.0)  # median 40 -> 32 px in the middle
    assert anchor_scales([200.0, 260.0]) == (8.0, 16.0, 32.0)  # the paper's 128, 256, 512 px
    with pytest.raises(ConfigError, match="no objects"):
        anchor_scales([])


def test_unknown_budget_is_named():
    assert budget("quick").name == "quick"
    with pytest.raises(ConfigError, match="--budget"):
        budget("huge")


def test_model_takes_given_proposals_at_inference():
    from fasterrcnn import build_model

    torch.manual_seed(0)
    model = build_model("small", 3, min_size=128, max_size=160).eval()
    images = [torch.rand(3, 96, 128)]
    box = torch.tensor([[10.0, 12.0, 60.0, 70.0]])
    with torch.no_grad():
        given = WithProposals(model, lambda imgs: [box for _ in imgs])(images, return_proposals=True)
        none = WithProposals(model, lambda imgs: [torch.zeros(0, 4) for _ in imgs])(images)
    assert torch.allclose(given[0]["proposals"], box, atol=1e-3)  # the detector saw these boxes, not the RPN's
    assert given[0]["proposal_scores"].tolist() == [1.0]
    assert none[0]["boxes"].shape == (0, 4)  # no proposals, no detections


def test_selective_search_cache_reuses_mirrored_images_and_the_file(tmp_path):
    pytest.importorskip("cv2.ximgproc")
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 48, 64, generator=generator)
    image[:, 10:30, 8:28] = 0.9  # one clear segment
    path = tmp_path / "ss.pt"
    cache = SelectiveSearchCache(path, log=lambda _m: None)
    boxes = cache([image])[0]
    mirrored = cache([image.flip(-1)])[0]
    assert len(cache) == 1 and boxes.shape[0] > 0  # the mirror image was not searched again
    assert torch.equal(mirrored, mirror_boxes(boxes, 64))
    cache.save()
    again = SelectiveSearchCache(path, log=lambda _m: None)
    assert len(again) == 1 and torch.equal(again([image])[0], boxes)
    assert again.seconds_of(image) >= 0.0


# ------------------------------------------------------------------ the quick budget end to end


@pytest.fixture(scope="module")
def quick_all(tmp_path_factory) -> dict:
    """`fasterrcnn experiment all --budget quick` once (one synthetic set, the runs shared)."""
    pytest.importorskip("cv2.ximgproc")
    out = tmp_path_factory.mktemp("experiments") / "quick"
    threads = torch.get_num_threads()
    try:
        code = main(["experiment", "all", "--budget", "quick", "--out", str(out), "--no-progress"])
    finally:
        torch.set_num_threads(threads)
    return {"out": out, "code": code}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_budget_writes_table_trends_and_plot(quick_all, name):
    assert quick_all["code"] == 0
    folder = quick_all["out"] / name
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["budget"] == "quick"
    assert (folder / f"{name}.png").stat().st_size > 1000
    assert result["rows"] and all(r.get("paper_map") is not None or "paper" in r for r in result["rows"])
    measured = [v for r in result["rows"] for k, v in r.items() if k in ("map", "r50")]
    assert measured and all(v is not None and 0.0 <= v <= 1.0 for v in measured)
    assert result["trends_total"] == len(result["trends"]) > 0
    assert {t["status"] for t in result["trends"]} <= {HELD, NOT_HELD, TIE}
    text = (folder / "result.md").read_text()
    assert text == markdown(result)
    for trend in result["trends"]:  # every trend is printed with its verdict, whatever it is
        assert f"- {trend['claim']}: **{trend['status']}** (" in text


def test_quick_budget_shapes(quick_all):
    out = quick_all["out"]
    rows = {name: json.loads((out / name / "result.json").read_text())["rows"] for name in EXPERIMENTS}
    assert len(rows["anchors"]) == 6 and [r["paper_map"] for r in rows["anchors"]] == [65.8, 66.7, 68.8, 67.9, 69.8, 69.9]
    assert [r["lambda"] for r in rows["lambda"]] == [1.0, 10.0, 100.0]
    ss, rpn = rows["proposals"]
    assert 0 < rpn["proposals"] <= 300 and 0 < ss["proposals"] <= 2000 and ss["proposal_ms"] > 0 and rpn["proposal_ms"] > 0
    alternating, joint = rows["schedule"]
    assert alternating["iterations"] == 4 * round(6 / 7 * 60) and joint["iterations"] == 60
    assert [r["count"] for r in rows["recall"]] == [50, 100, 300, 1000, 2000] * 2
    for method in ("SS", "RPN"):  # recall of the top N cannot fall as N grows
        r50 = [r["r50"] for r in rows["recall"] if r["method"] == method]
        assert all(b >= a for a, b in zip(r50, r50[1:]))
    # the baseline (3 scales x 3 ratios, lambda 10, joint) was trained once for all five
    baseline = [p for p in (out / "runs").iterdir() if p.is_dir() and (p / "run.json").exists()]
    assert len(baseline) == 6 + 2 + 1 + 1  # anchors, lambda 1 and 100, SS detector, alternating
    assert math.isclose(rows["anchors"][5]["map"], rows["lambda"][1]["map"]) and rows["anchors"][5]["map"] == joint["map"]


def test_rerun_is_refused_then_reuses_the_runs(quick_all, capsys):
    out = str(quick_all["out"])
    capsys.readouterr()
    assert main(["experiment", "lambda", "--out", out, "--no-progress"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["experiment", "lambda", "--out", out, "--no-progress", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing the run") == 3 and "training (" not in printed
    assert main(["experiment", "all", "--out", out, "--show"]) == 0
    shown = capsys.readouterr().out
    assert all(f"#### `{name}`" in shown for name in EXPERIMENTS)


@pytest.mark.parametrize(("argv", "named"), [
    (["experiment", "anchor"], "NAME"),
    (["experiment", "anchors", "--budget", "huge"], "--budget"),
    (["experiment", "anchors", "--threads", "0", "--out", "{tmp}/o"], "--threads"),
    (["experiment", "anchors", "--data", "{tmp}/missing", "--out", "{tmp}/o"], "--data"),
    (["experiment", "anchors", "--show", "--out", "{tmp}/empty"], "result.json"),
])
def test_bad_arguments_are_named(argv, named, tmp_path, capsys):
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    assert named in capsys.readouterr().err


def test_data_without_test_split_is_refused(tmp_path, capsys):
    from fasterrcnn.data.synth import generate

    data = tmp_path / "only_train"
    generate(data, num_train=2, num_test=0, min_size=64, max_size=80, progress=False)
    (data / "ImageSets" / "Main" / "test.txt").unlink()
    assert main(["experiment", "recall", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "no 'test' split" in capsys.readouterr().err
    assert not (Path(tmp_path) / "o" / "runs").exists()


def test_detector_trains_on_the_given_proposals(quick_all, tmp_path):
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.experiments.proposals_source import train_on_proposals

    seen: list[tuple[int, int]] = []

    def source(images):  # one box per image, recorded
        seen.extend(tuple(img.shape[-2:]) for img in images)
        return [torch.tensor([[4.0, 4.0, img.shape[-1] - 4.0, img.shape[-2] - 4.0]]) for img in images]

    cfg = TrainConfig(data=str(quick_all["out"] / "data"), out=str(tmp_path / "run"), preset="small", min_size=128, max_size=192,
                      batch_size=2, max_iters=3, epochs=2, val_split=None, num_workers=0, progress=False, verify_images=False,
                      threads=1)
    result = train_on_proposals(cfg, source, log=lambda _m: None)
    assert result.iterations == 3 and len(seen) == 6 and all(min(hw) == 128 for hw in seen)
    assert set(result.final_losses) == {"det_cls", "det_reg"}  # the detector stage: no RPN losses
    with pytest.raises(ConfigError, match="one stage"):
        train_on_proposals(TrainConfig(data=cfg.data, schedule="alternating"), source)
