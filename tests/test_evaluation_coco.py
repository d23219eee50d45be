"""COCO metrics: our in-memory path agrees exactly with pycocotools run on JSON files."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random

import pytest
import torch

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from fasterrcnn.errors import DataError  # noqa: E402
from fasterrcnn.evaluation import (  # noqa: E402
    COCO_STAT_NAMES,
    coco_evaluate,
    coco_evaluate_files,
    detections_to_coco_results,
    ground_truth_to_coco,
)

CLASSES = ["cat", "dog", "bird"]
CATEGORY_IDS = [3, 7, 11]  # label i <-> CATEGORY_IDS[i - 1]


def make_case(seed: int):
    """Random ground truth (with difficult objects, small/medium/large sizes) and detections,
    with half-pixel coordinates so that xywh <-> xyxy conversions are exact."""
    rng = random.Random(seed)
    gt, dets, coco_images, coco_anns, coco_results = [], [], [], [], []
    ann_id = 100
    for image_id in rng.sample(range(1, 500), 25):
        h, w = rng.randint(200, 400), rng.randint(200, 400)
        coco_images.append(
            {"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"}
        )
        boxes, labels, difficult = [], [], []
        for _ in range(rng.choice([0, 1, 2, 4, 6])):
            bw, bh = rng.choice([rng.randint(8, 60), rng.randint(60, 240)]) / 2, rng.randint(4, 150)
            x, y = (
                rng.randint(0, 150) + rng.choice([0, 0.5]),
                rng.randint(0, 150) + rng.choice([0, 0.5]),
            )
            label, diff = rng.randint(1, 3), rng.random() < 0.15
            boxes.append([x, y, x + bw, y + bh])
            labels.append(label)
            difficult.append(diff)
            ann_id += 7  # ids need not be 1..N in a real file
            coco_anns.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label - 1],
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(diff),
                }
            )
        gt.append(
            {
                "image_id": image_id,
                "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "difficult": torch.tensor(difficult, dtype=torch.bool),
                "orig_size": (h, w),
            }
        )
        db, dl, ds = [], [], []
        for _ in range(rng.choice([0, 2, 5, 12])):
            if boxes and rng.random() < 0.75:
                b = boxes[rng.randrange(len(boxes))]
                x1, y1 = b[0] + rng.randint(-6, 6) / 2, b[1] + rng.randint(-6, 6) / 2
                bw = max(1.0, b[2] - b[0] + rng.randint(-8, 8) / 2)
                bh = max(1.0, b[3] - b[1] + rng.randint(-8, 8) / 2)
            else:
                x1, y1, bw, bh = (
                    rng.randint(0, 200),
                    rng.randint(0, 200),
                    rng.randint(2, 100),
                    rng.randint(2, 100),
                )
            label = rng.randint(1, 3)
            score = rng.choice([0.5, 0.25, round(rng.random(), 6)])
            db.append([x1, y1, x1 + bw, y1 + bh])
            dl.append(label)
            ds.append(score)
            coco_results.append(
                {
                    "image_id": image_id,
                    "category_id": CATEGORY_IDS[label - 1],
                    "bbox": [x1, y1, bw, bh],
                    "score": score,
                }
            )
        dets.append(
            {
                "image_id": image_id,
                "boxes": torch.tensor(db, dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor(dl, dtype=torch.int64),
                "scores": torch.tensor(ds, dtype=torch.float64),
            }
        )
    dataset = {
        "images": coco_images,
        "annotations": coco_anns,
        "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASSES, strict=True)],
    }
    return gt, dets, dataset, coco_results


def pycocotools_on_files(ann_path, res_path):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(ann_path))
        coco_dt = coco_gt.loadRes(str(res_path))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize("seed", [0, 1])
def test_in_memory_equals_pycocotools_on_files(tmp_path, seed):
    gt, dets, dataset, results = make_case(seed)
    ann_path, res_path = tmp_path / "instances.json", tmp_path / "results.json"
    ann_path.write_text(json.dumps(dataset))
    res_path.write_text(json.dumps(results))
    expected = pycocotools_on_files(ann_path, res_path)
    assert any(v > 0 for v in expected)  # a non-trivial case

    ours = coco_evaluate(gt, dets, CLASSES, category_ids=CATEGORY_IDS)
    assert ours["stats_raw"] == expected  # exact equality, all 12 numbers
    assert list(ours["stats"]) == list(COCO_STAT_NAMES)
    for name, v in zip(COCO_STAT_NAMES, expected, strict=True):
        assert math.isnan(ours["stats"][name]) if v == -1 else ours["stats"][name] == v
    assert "Average Precision" in ours["summary"]
    # The same detections as a COCO results list, and our converter's output.
    assert coco_evaluate(gt, results, CLASSES, category_ids=CATEGORY_IDS)["stats_raw"] == expected
    converted = detections_to_coco_results(dets, CATEGORY_IDS)
    assert coco_evaluate(gt, converted, CLASSES, category_ids=CATEGORY_IDS)["stats_raw"] == expected
    # The files path.
    assert coco_evaluate_files(ann_path, res_path)["stats_raw"] == expected
    # Per-class AP averages to the overall AP (categories with ground truth).
    per = [c["ap"] for c in ours["per_class"] if not math.isnan(c["ap"])]
    assert sum(per) / len(per) == pytest.approx(ours["stats"]["AP"])


def test_ground_truth_conversion():
    gt = [
        {
            "image_id": 4,
            "boxes": [[1, 2, 11, 22]],
            "labels": [2],
            "difficult": [True],
            "orig_size": (30, 40),
            "file": "a.jpg",
        }
    ]
    d = ground_truth_to_coco(gt, ["a", "b"])
    assert d["images"] == [{"id": 4, "height": 30, "width": 40, "file_name": "a.jpg"}]
    assert d["annotations"] == [
        {
            "id": 1,
            "image_id": 4,
            "category_id": 2,
            "bbox": [1.0, 2.0, 10.0, 20.0],
            "area": 200.0,
            "iscrowd": 1,
        }
    ]
    assert d["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    with pytest.raises(DataError, match="2 ids for 3 classes"):
        ground_truth_to_coco(gt, ["a", "b", "c"], [1, 2])


def test_difficult_detections_ignored_like_crowd():
    gt = [
        {
            "image_id": 1,
            "boxes": [[0, 0, 100, 100], [200, 0, 300, 100]],
            "labels": [1, 1],
            "difficult": [False, True],
        }
    ]
    on_both = [
        {
            "image_id": 1,
            "boxes": [[0, 0, 100, 100], [200, 0, 300, 100]],
            "labels": [1, 1],
            "scores": [0.5, 0.9],
        }
    ]
    # The detection on the difficult object (even the higher-scored one) is ignored: AP 1.
    assert coco_evaluate(gt, on_both, ["a"])["stats"]["AP"] == pytest.approx(1.0)


def test_empty_detections_and_unknown_image(tmp_path):
    gt, _, dataset, _ = make_case(3)
    r = coco_evaluate(gt, [], CLASSES, category_ids=CATEGORY_IDS)
    assert r["stats"]["AP"] == 0.0 and r["num_detections"] == 0
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "empty.json").write_text("[]")
    assert coco_evaluate_files(tmp_path / "gt.json", tmp_path / "empty.json")["stats"]["AP"] == 0.0
    (tmp_path / "bad.json").write_text(
        json.dumps([{"image_id": 99999, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}])
    )
    with pytest.raises(DataError, match=r"bad.json: entry 0: unknown image_id 99999"):
        coco_evaluate_files(tmp_path / "gt.json", tmp_path / "bad.json")
    (tmp_path / "badcat.json").write_text(
        json.dumps(
            [
                {
                    "image_id": dataset["images"][0]["id"],
                    "category_id": 1,
                    "bbox": [0, 0, 1, 1],
                    "score": 1,
                }
            ]
        )
    )
    with pytest.raises(DataError, match="unknown category_id 1"):
        coco_evaluate_files(tmp_path / "gt.json", tmp_path / "badcat.json")
    with pytest.raises(DataError, match="not found"):
        coco_evaluate_files(tmp_path / "missing.json", tmp_path / "empty.json")
