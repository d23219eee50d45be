"""The core install end to end: the real CLI with the optional modules made unimportable.

Each command runs in a subprocess whose PYTHONPATH starts with a folder holding a
`sitecustomize.py` that puts a finder in front of `sys.meta_path` refusing matplotlib,
pycocotools, numba, yaml and tensorboard -- what an install with `--no-deps`, or on a platform
without one of their wheels, looks like. With them blocked, `data synth` -> `train` (with its
evaluation) -> `eval` -> `detect` each exit 0 with their other outputs and one note line per
skipped output; `--tensorboard` and a YAML config fail at once with a one-line error saying
what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("matplotlib", "pycocotools", "numba", "yaml", "tensorboard")

SITECUSTOMIZE = f'''
import sys

_BLOCKED = {BLOCKED!r}


class _BlockOptional:
    """Refuses the optional modules (and their submodules) as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


for _name in list(sys.modules):
    if _name.partition(".")[0] in _BLOCKED:
        del sys.modules[_name]
sys.meta_path.insert(0, _BlockOptional())
'''

# A tiny data set and a tiny model: the small preset at ~100 px, two iterations.
SYNTH = ["--train", "4", "--test", "2", "--min-size", "96", "--max-size", "128", "--max-objects", "2",
         "--min-object", "24", "--max-object", "80", "--quiet"]
TRAIN = ["--preset", "small", "--min-size", "96", "--max-size", "128", "--max-iters", "2", "--workers", "0",
         "--no-progress", "--log-every", "1"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Runs `python -m fasterrcnn ARGS` with the optional modules blocked."""
    block = tmp_path_factory.mktemp("block")
    (block / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(block), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTHONNOUSERSITE", None)

    def run(*args: str, python: list[str] | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, *(python or ["-m", "fasterrcnn", *args])]
        return subprocess.run(cmd, env=env, cwd=str(block), capture_output=True, text=True, timeout=300)

    return run


def _notes(text: str, module: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"note: {module} ")]


def test_the_optional_modules_are_blocked(cli):
    code = (
        "import importlib\n"
        f"for name in {BLOCKED!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        print(name, 'blocked')\n"
        "    else:\n"
        "        print(name, 'IMPORTED')\n"
        "import fasterrcnn\n"
        "loop, scan, boxes = (importlib.import_module(f'fasterrcnn.ops.{m}') for m in ('nms.loop', 'roi_pool.scan', 'boxes'))\n"
        "print('numba kernels:', loop._compiled_greedy_loop(), scan._compiled_scan(), boxes._compiled_iou())\n"
    )
    r = cli(python=["-c", code])
    assert r.returncode == 0, r.stderr
    for name in BLOCKED:
        assert f"{name} blocked" in r.stdout, r.stdout
    # without numba the pure-PyTorch paths are used (the compiled kernels are None)
    assert "numba kernels: None None None" in r.stdout


@pytest.fixture(scope="module")
def pipeline(cli, tmp_path_factory):
    """synth -> train (with its evaluation) -> eval -> detect, all without the optional modules."""
    root = tmp_path_factory.mktemp("core")
    data, train, ev, det = root / "data", root / "train", root / "eval", root / "detect"
    out = {"root": root, "data": data, "train": train, "eval": ev, "detect": det}
    out["synth_run"] = cli("data", "synth", "--out", str(data), *SYNTH)
    out["train_run"] = cli("train", "--data", str(data), "--out", str(train), *TRAIN)
    ckpt = str(train / "model_final.pt")
    out["eval_run"] = cli("eval", "--checkpoint", ckpt, "--data", str(data), "--out", str(ev), "--workers", "0",
                          "--no-progress")
    (root / "none.json").write_text("[]")  # a detections file (COCO results) from any detector
    out["eval_file_run"] = cli("eval", "--detections", str(root / "none.json"), "--data", str(data), "--out",
                               str(root / "eval_file"))
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:2]
    out["detect_run"] = cli("detect", *map(str, images), "--checkpoint", ckpt, "--out", str(det), "--workers", "0",
                            "--score-thresh", "0", "--no-progress")
    return out


def test_data_synth_needs_nothing_optional(pipeline):
    r = pipeline["synth_run"]
    assert r.returncode == 0, r.stderr
    assert (pipeline["data"] / "ImageSets" / "Main" / "test.txt").is_file()


def test_train_skips_the_plots_and_coco_ap_with_one_note_each(pipeline):
    r = pipeline["train_run"]
    assert r.returncode == 0, r.stdout + r.stderr
    mpl, coco = _notes(r.stdout, "matplotlib"), _notes(r.stdout, "pycocotools")
    assert len(mpl) == 1 and len(coco) == 1, r.stdout
    assert "loss_curve.png" in mpl[0] and "pip install matplotlib" in mpl[0]
    assert "COCO" in coco[0] and "pip install pycocotools" in coco[0]
    # the notes come at the start, before training and evaluation
    lines = r.stdout.splitlines()
    first_train_log = next(i for i, line in enumerate(lines) if line.startswith("training "))
    assert lines.index(mpl[0]) < first_train_log and lines.index(coco[0]) < first_train_log, r.stdout
    assert "numba" not in r.stdout + r.stderr and "yaml" not in (r.stdout + r.stderr).lower()
    train = pipeline["train"]
    for f in ("model_final.pt", "metrics.jsonl", "summary.json", "eval/report.json"):
        assert (train / f).is_file(), f
    assert not (train / "loss_curve.png").exists()
    assert not (train / "eval" / "pr_curves").exists()
    assert "VOC07 mAP@0.5" in r.stdout  # the VOC metrics are still reported
    summary = json.loads((train / "summary.json").read_text())
    assert summary["eval"]["map07"] is not None and "coco_ap" not in summary["eval"]
    assert "loss_curve" not in summary["files"] and "pr_curves" not in summary["files"]
    report = json.loads((train / "eval" / "report.json").read_text())
    assert "voc" in report and "coco" not in report
    assert "pycocotools is not installed" in report["skipped"]["coco"]
    assert "matplotlib is not installed" in report["skipped"]["pr_curves"]


def test_eval_reports_voc_and_says_why_coco_was_skipped(pipeline):
    r = pipeline["eval_run"]
    assert r.returncode == 0, r.stdout + r.stderr
    mpl, coco = _notes(r.stdout, "matplotlib"), _notes(r.stdout, "pycocotools")
    assert len(mpl) == 1 and len(coco) == 1, r.stdout
    assert "pip install matplotlib" in mpl[0] and "pip install pycocotools" in coco[0]
    assert "PASCAL VOC AP" in r.stdout and "PR curves:" not in r.stdout
    ev = pipeline["eval"]
    report = json.loads((ev / "report.json").read_text())
    assert report["voc"]["map07"] is not None and "proposal_recall" in report and "coco" not in report
    assert "pycocotools is not installed" in report["skipped"]["coco"]
    assert not (ev / "pr_curves").exists()


def test_eval_of_a_detections_file_too(pipeline):
    r = pipeline["eval_file_run"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(_notes(r.stdout, "matplotlib")) == 1 and len(_notes(r.stdout, "pycocotools")) == 1, r.stdout
    report = json.loads((pipeline["root"] / "eval_file" / "report.json").read_text())
    assert "voc" in report and "coco" not in report and set(report["skipped"]) == {"coco", "pr_curves"}


def test_detect_draws_without_matplotlib(pipeline):
    r = pipeline["detect_run"]
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note:" not in r.stdout
    det = pipeline["detect"]
    assert (det / "detections.json").is_file() and (det / "images.json").is_file()
    assert len(list(det.glob("*.jpg"))) == 2  # the annotated copies: Pillow only


def test_tensorboard_fails_at_once_and_writes_nothing(cli, pipeline):
    out = pipeline["root"] / "tb"
    start = time.perf_counter()
    r = cli("train", "--data", str(pipeline["data"]), "--out", str(out), "--tensorboard", *TRAIN)
    assert r.returncode == 2, r.stdout + r.stderr
    assert 'pip install "fasterrcnn[tensorboard]"' in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("fasterrcnn: error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()
    assert time.perf_counter() - start < 60


def test_yaml_config_without_pyyaml_is_a_clear_error(cli, pipeline):
    cfg = pipeline["root"] / "train.yaml"
    cfg.write_text(f"data: {pipeline['data']}\nout: {pipeline['root'] / 'y'}\n")
    r = cli("train", "--config", str(cfg), *TRAIN)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("fasterrcnn: error:") and "Traceback" not in r.stderr, r.stderr
    assert str(cfg) in r.stderr and "pip install pyyaml" in r.stderr
    assert "not valid YAML" not in r.stderr  # it is valid; the reader is what is missing
    assert not (pipeline["root"] / "y").exists()


def test_yaml_config_is_read_when_pyyaml_is_there(tmp_path):
    """The other side of the check above: with pyyaml, a YAML file is read, and a broken one is
    still reported as not valid YAML."""
    pytest.importorskip("yaml")
    from fasterrcnn.engine.config import load_config_file
    from fasterrcnn.errors import ConfigError

    good, bad = tmp_path / "good.yml", tmp_path / "bad.yaml"
    good.write_text("data: d\nlr: 0.02\nmodel:\n  rpn: {nms_thresh: 0.6}\n")
    bad.write_text("data: [unclosed\n")
    assert load_config_file(good) == {"data": "d", "lr": 0.02, "model": {"rpn": {"nms_thresh": 0.6}}}
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config_file(bad)
