"""`fasterrcnn bench`: smoke tests on tiny inputs (speed targets live in BENCHMARKS.md)."""

from __future__ import annotations

import json

import pytest

from fasterrcnn.benchmark.model import INFERENCE_STAGES, TRAIN_STAGES, profile_model
from fasterrcnn.cli import main


@pytest.mark.parametrize("mode, stages", [("inference", INFERENCE_STAGES), ("train", TRAIN_STAGES)])
def test_profile_model_reports_every_stage(mode, stages):
    p = profile_model("small", image_size=(64, 96), mode=mode, repeat=2, warmup=1, proposals=50)
    assert set(p["stages_ms"]) == set(stages)
    assert all(v >= 0 for v in p["stages_ms"].values())
    # the stages are timed inside the total (nothing counted twice)
    assert sum(p["stages_ms"].values()) <= p["total_ms"] * 1.05 + 1.0
    assert p["images_per_s"] > 0 and p["peak_memory_mb"] > 0


def test_bench_model_cli_json(capsys):
    assert main(["bench", "model", "--preset", "small", "--size", "64x80", "--repeat", "1", "--warmup", "0", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"] == "small" and out["image_size"] == [64, 80] and "proposals" in out["stages_ms"]
    assert main(["bench", "model", "--preset", "zf", "--size", "64x80", "--repeat", "1", "--warmup", "0",
                 "--precision", "bf16", "--channels-last"]) == 0
    table = capsys.readouterr().out
    assert "zf inference 64x80 batch 1 bf16 channels_last" in table and "proposals" in table


def test_bench_ops_cli_json(capsys):
    assert main(["bench", "ops", "--repeat", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    cases = {r["case"]: r for r in out["rows"]}
    assert set(cases) == {"nms", "nms_max_keep_300", "roi_pool_fwd", "roi_pool_fwd_bwd", "roi_align_fwd", "roi_align_fwd_bwd"}
    assert "5015 kept" in cases["nms"]["note"]  # the same count as torchvision's kernel on this workload


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "model", "--size", "600by800"], "expected HEIGHTxWIDTH"),
        (["bench", "model", "--size", "16x16"], "at least 32"),
        (["bench", "model", "--preset", "alexnet", "--size", "64x64", "--repeat", "1"], "unknown preset"),
    ],
)
def test_bench_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
