"""The command line: --help for every subcommand, --version, one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fasterrcnn import __version__
from fasterrcnn.cli import SUBCOMMANDS, build_parser, main

NESTED = {"bench": ["ops", "model"], "data": ["synth", "check"]}


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fasterrcnn {__version__}"


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out
    assert {"demo", "train", "eval", "detect", "data", "bench"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: fasterrcnn {name}" in out and len(out) > 200
    for nested in NESTED.get(name, []):
        if nested not in out:
            continue
        with pytest.raises(SystemExit) as exc:
            main([name, nested, "--help"])
        assert exc.value.code == 0
        assert f"usage: fasterrcnn {name} {nested}" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: fasterrcnn" in capsys.readouterr().out


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from fasterrcnn.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/voc", "--no-progress"], "/nonexistent/voc"),
        (["train", "--data", "x", "--epochs", "0"], "epochs >= 1"),
        (["train", "--data", "x", "--set", "rpn.nms_thresh"], "expected KEY=VALUE"),
        (["train", "--data", "x", "--lr-steps", "a,b"], "--lr-steps"),
        (["eval", "--checkpoint", "/nonexistent.pt", "--data", "x"], "/nonexistent.pt does not exist"),
        (["eval", "--detections", "d.json", "--data", "x", "--flip-tta"], "--flip-tta runs a model"),
        (["detect", "/nonexistent/dir", "--checkpoint", "c.pt"], "/nonexistent/dir: no such file or folder"),
        (["detect", "x.jpg", "--checkpoint", "c.pt", "--score-thresh", "2"], "--score-thresh"),
        (["bench", "ops", "--repeat", "0"], "--repeat"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fasterrcnn: error: ") and message in err
    assert "Traceback" not in err


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["train", "--config", str(bad)]) == 2
    assert f"{bad} is not valid JSON" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"data": "x", "learning_rate": 0.1}))
    assert main(["train", "--config", str(unknown)]) == 2
    assert "unknown setting 'learning_rate'" in capsys.readouterr().err
    typed = tmp_path / "typed.json"
    typed.write_text(json.dumps({"data": "x", "epochs": "ten"}))
    assert main(["train", "--config", str(typed)]) == 2
    assert "epochs must be a number" in capsys.readouterr().err


def test_config_file_and_command_line_merge(tmp_path):
    from fasterrcnn.cli.train import build_config

    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"data": "d", "epochs": 3, "lr": 0.01, "model": {"rpn": {"nms_thresh": 0.6}}}))
    args = build_parser().parse_args(["train", "--config", str(f), "--lr", "0.02", "--set", "roi_heads.pooler=roi_align"])
    cfg = build_config(args)
    assert (cfg.data, cfg.epochs, cfg.lr) == ("d", 3, 0.02)  # the command line wins over the file
    assert cfg.model == {"rpn": {"nms_thresh": 0.6}, "roi_heads.pooler": "roi_align"}
    assert (cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.min_size) == (0.9, 0.0005, 1, 600)  # the paper's


def test_multi_scale_and_test_size_options(tmp_path):
    from fasterrcnn.cli.train import build_config
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.errors import ConfigError

    cfg = build_config(build_parser().parse_args(["train", "--data", "d", "--min-size", "448"]))
    assert cfg.min_size == 448 and cfg.test_size() == (448, 1000)
    cfg = build_config(build_parser().parse_args(
        ["train", "--data", "d", "--min-size", "384", "448", "512", "--max-size", "672", "--test-min-size", "576",
         "--test-max-size", "864"]))
    assert cfg.train_sizes() == [384, 448, 512] and cfg.test_size() == (576, 864)
    assert TrainConfig(data="d", min_size=[400, 480]).test_size() == (480, 1000)  # default: the largest
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"data": "d", "min_size": [400, "big"]}))
    with pytest.raises(ConfigError, match="min_size must be an integer or a list of integers"):
        build_config(build_parser().parse_args(["train", "--config", str(f)]))
    f.write_text(json.dumps({"data": "d", "test_min_size": "big", "clip_grad_norm": 1}))
    with pytest.raises(ConfigError, match="test_min_size must be a number, got 'big'"):
        build_config(build_parser().parse_args(["train", "--config", str(f)]))
    f.write_text(json.dumps({"data": "d", "test_min_size": 512.0, "classes": ["a", "b"], "stage_epochs": None}))
    cfg = build_config(build_parser().parse_args(["train", "--config", str(f)]))
    assert cfg.test_min_size == 512 and isinstance(cfg.test_min_size, int) and cfg.classes == ["a", "b"]
    f.write_text(json.dumps({"data": "d", "classes": "a,b"}))
    with pytest.raises(ConfigError, match="classes must be a list"):
        build_config(build_parser().parse_args(["train", "--config", str(f)]))
    with pytest.raises(ConfigError, match="0 < min_size <= max_size"):
        build_config(build_parser().parse_args(["train", "--data", "d", "--min-size", "400", "1200"]))
    with pytest.raises(ConfigError, match="test_min_size"):
        build_config(build_parser().parse_args(["train", "--data", "d", "--test-min-size", "1200"]))


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    """The demo's whole path (generate, train, evaluate, draw, summary) with a few images and
    iterations; the full-size run and its figures are in BENCHMARKS.md."""
    from fasterrcnn.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--train-images", "6", "--test-images", "3", "--iters", "4",
                 "--detect-images", "2", "--workers", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "[1/4]" in printed and "[4/4]" in printed and "demo finished" in printed
    for f in ("train/model_final.pt", "train/loss_curve.png", "train/eval/report.json", "detections/detections.json"):
        assert (out / f).exists(), f
    assert len(list((out / "detections").glob("*.jpg"))) == 2
    # a second run does not replace the first one's results unless asked to ...
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["demo", "--out", str(out), "--train-images", "6", "--test-images", "3", "--iters", "2",
                 "--detect-images", "1", "--workers", "0", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    # ... and with --overwrite it reuses the generated data set
    assert main(["demo", "--out", str(out), "--train-images", "6", "--test-images", "3", "--iters", "2",
                 "--detect-images", "1", "--workers", "0", "--no-progress", "--overwrite"]) == 0
    assert "reusing it" in capsys.readouterr().out
