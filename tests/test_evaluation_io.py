"""Detections files and converters, JSON reports, text tables, plots."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fasterrcnn.errors import DataError
from fasterrcnn.evaluation import (
    coco_results_to_detections,
    detections_to_coco_results,
    format_results_table,
    load_detections_file,
    plot_loss_curve,
    plot_pr_curves,
    proposal_recall,
    read_report,
    safe_filename,
    to_jsonable,
    voc_evaluate,
    write_detections_file,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

DETS = [
    {
        "image_id": 3,
        "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.5, 0.5, 4.0, 8.0]]),
        "labels": torch.tensor([2, 1]),
        "scores": torch.tensor([0.75, 0.5]),
    },
    {
        "image_id": 8,
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
    },
    {"image_id": 5, "boxes": [[10, 10, 20, 30]], "labels": [1], "scores": [0.25]},
]


def test_converters_round_trip():
    res = detections_to_coco_results(DETS, category_ids=[10, 20])
    assert res == [
        {"image_id": 3, "category_id": 20, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.75},
        {"image_id": 3, "category_id": 10, "bbox": [0.5, 0.5, 3.5, 7.5], "score": 0.5},
        {"image_id": 5, "category_id": 10, "bbox": [10.0, 10.0, 10.0, 20.0], "score": 0.25},
    ]
    back = coco_results_to_detections(res, category_ids=[10, 20])
    assert [d["image_id"] for d in back] == [3, 5]
    assert torch.equal(back[0]["boxes"], DETS[0]["boxes"].double())
    assert back[0]["labels"].tolist() == [2, 1] and back[1]["scores"].tolist() == [0.25]
    # With the image list: one entry per image, in that order, empty ones included.
    back = coco_results_to_detections(res, [10, 20], image_ids=[8, 5, 3])
    assert [d["image_id"] for d in back] == [8, 5, 3] and back[0]["boxes"].shape == (0, 4)
    # Identity mapping by default.
    assert detections_to_coco_results(DETS)[0]["category_id"] == 2
    with pytest.raises(DataError, match="outside 1..1"):
        detections_to_coco_results(DETS, category_ids=[10])


def test_load_detections_file_both_formats(tmp_path):
    path = write_detections_file(tmp_path / "out" / "dets.json", DETS, category_ids=[10, 20])
    loaded = load_detections_file(path, category_ids=[10, 20], image_ids=[3, 5, 8])
    assert [d["image_id"] for d in loaded] == [3, 5]
    assert torch.equal(loaded[0]["boxes"], DETS[0]["boxes"].double())
    per_image = tmp_path / "per_image.json"
    per_image.write_text(
        json.dumps([{"image_id": 3, "boxes": [[0, 0, 5, 5]], "labels": [1], "scores": [0.5]}])
    )
    (d,) = load_detections_file(per_image, num_classes=2)
    assert d["boxes"].tolist() == [[0, 0, 5, 5]] and d["labels"].tolist() == [1]
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert load_detections_file(empty) == []


GOOD = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}


@pytest.mark.parametrize(
    "content, match",
    [
        ({"annotations": []}, r"expected a JSON list .* COCO annotation file"),
        ([GOOD, 5], r"entry 1: expected an object"),
        ([{k: v for k, v in GOOD.items() if k != "score"}], r"entry 0: missing key 'score'"),
        ([{k: v for k, v in GOOD.items() if k != "image_id"}], r"entry 0: missing key 'image_id'"),
        ([GOOD | {"bbox": [0, 0, 5]}], r"entry 0: bbox must be 4 numbers"),
        ([GOOD | {"bbox": [0, 0, "5", 5]}], r"bbox must be 4 numbers"),
        ([GOOD | {"bbox": "0 0 5 5"}], r"bbox must be 4 numbers"),
        ([GOOD, GOOD | {"bbox": [0, 0, -1, 5]}], r"entry 1: bbox has a negative width"),
        ([GOOD | {"bbox": [0, 0, 1, -5]}], r"negative height"),
        ([GOOD | {"bbox": [0, 0, float("inf"), 5]}], r"non-finite"),
        ([GOOD | {"score": float("nan")}], r"entry 0: score is not finite"),
        ([GOOD | {"score": "high"}], r"score must be a number"),
        ([GOOD | {"image_id": "1.jpg"}], r"image_id must be an integer"),
        ([GOOD | {"image_id": 42}], r"entry 0: unknown image_id 42"),
        ([GOOD | {"category_id": 9}], r"entry 0: unknown category_id 9"),
        ([GOOD | {"category_id": 0}], r"unknown category_id 0"),
        (
            [{"image_id": 1, "boxes": [[0, 0, 1, 1]], "labels": [1]}],
            r"entry 0: missing key 'scores'",
        ),
        (
            [{"image_id": 1, "boxes": [[0, 0, 1, 1]], "labels": [1, 2], "scores": [1]}],
            r"2 labels for 1 boxes",
        ),
        ([{"image_id": 1, "boxes": [[0, 0, 1]], "labels": [1], "scores": [1]}], r"shape \[N, 4\]"),
        (
            [{"image_id": 1, "boxes": [[0, 0, 1, 1]], "labels": [1], "scores": [float("nan")]}],
            r"not finite",
        ),
    ],
)
def test_load_detections_file_errors(tmp_path, content, match):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=match) as info:
        load_detections_file(path, image_ids=[1, 2], num_classes=3)
    assert str(path) in str(info.value)


def test_load_detections_file_unreadable(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_detections_file(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"image_id": 1,')
    with pytest.raises(DataError, match=r"bad.json: invalid JSON at line 1"):
        load_detections_file(bad)
    with pytest.raises(DataError, match="unknown category_id 5"):
        (tmp_path / "c.json").write_text(json.dumps([GOOD | {"category_id": 5}]))
        load_detections_file(tmp_path / "c.json", category_ids=[1, 2])


def _voc_result():
    gt = [{"image_id": 0, "boxes": [[0, 0, 10, 10], [20, 0, 30, 10]], "labels": [1, 1]}]
    dets = [
        {
            "image_id": 0,
            "boxes": [[0, 0, 10, 10], [50, 0, 60, 10]],
            "labels": [1, 1],
            "scores": [0.9, 0.8],
        }
    ]
    return gt, voc_evaluate(gt, dets, ["person", "a/b: c?", "..", "chien é"])


def test_report_round_trip_and_table(tmp_path):
    gt, voc = _voc_result()
    rec = proposal_recall(gt, [torch.tensor([[0.0, 0, 10, 10]])], num_proposals=(1, 300))
    path = write_report(
        tmp_path / "sub" / "report.json", {"voc": voc, "recall": rec, "checkpoint": "x.pt"}
    )
    assert os.path.exists(path)
    assert not [f for f in os.listdir(tmp_path / "sub") if f.endswith(".tmp")]  # temp file renamed
    with open(path) as f:  # strict JSON: no NaN / Infinity constants
        json.load(f, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in the report"))
    report = read_report(path)
    assert report["voc"]["per_class"][1]["ap07"] is None  # NaN -> null
    assert report["voc"]["per_class"][0]["ap07"] == pytest.approx(voc["per_class"][0]["ap07"])
    assert report["voc"]["map10"] == pytest.approx(voc["map10"])
    assert "precision" not in report["voc"]["per_class"][0]  # curves left out by default
    assert report["recall"]["recall"]["300"]["0.5"] == 0.5
    assert report["voc"]["settings"]["legacy_plus_one"] is False
    assert report["checkpoint"] == "x.pt" and "fasterrcnn_version" in report
    # A single result goes under its kind; with curves.
    single = read_report(write_report(tmp_path / "r2.json", voc, include_curves=True))
    assert single["voc"]["per_class"][0]["precision"] == [1.0, 0.5]
    # The table prints from the live result and from the JSON read back alike.
    for r in (voc, report["voc"]):
        table = format_results_table(r)
        assert "person" in table and "n/a" in table and "mAP (1 class)" in table
    both = format_results_table(report)
    assert "Proposal recall" in both and "AP07" in both
    assert to_jsonable({1: np.float32(np.nan), "t": torch.tensor([1.5, float("inf")])}) == {
        "1": None,
        "t": [1.5, None],
    }


def _check_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) > 1000


def test_pr_plots(tmp_path):
    _, voc = _voc_result()
    paths = plot_pr_curves(voc, tmp_path / "plots")
    names = [os.path.basename(p) for p in paths]
    assert names == [
        "pr_01_person.png",
        "pr_02_a_b_c.png",
        "pr_03_class.png",
        "pr_04_chien.png",
        "pr_all.png",
    ]
    for p in paths:
        _check_png(p)
    assert safe_filename("../../etc/passwd") == "etc_passwd"
    # A report without curves cannot be plotted: clear error.
    with pytest.raises(DataError, match="include_curves"):
        plot_pr_curves(read_report(write_report(tmp_path / "r.json", voc))["voc"], tmp_path)


def test_loss_curve(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [
        {
            "iteration": i,
            "loss": 2.0 / i,
            "loss_rpn_cls": 0.5 / i,
            "loss_box_reg": 1.0 / i,
            "lr": 0.001,
        }
        for i in range(1, 40)
    ]
    lines.insert(10, {"iteration": 10, "map07": 0.1})  # an evaluation line: skipped
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = plot_loss_curve(path, tmp_path / "loss.png", log_scale=True)
    _check_png(out)
    _check_png(plot_loss_curve(lines, tmp_path / "loss2.png", keys=["loss"]))
    with pytest.raises(DataError, match="no loss values"):
        plot_loss_curve([{"iteration": 1, "lr": 0.1}], tmp_path / "x.png")
    (tmp_path / "bad.jsonl").write_text('{"loss": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        plot_loss_curve(tmp_path / "bad.jsonl", tmp_path / "x.png")
