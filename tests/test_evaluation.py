"""PASCAL VOC AP and proposal recall: hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from fasterrcnn.errors import ConfigError, DataError
from fasterrcnn.evaluation import (
    ap_11_point,
    ap_area,
    detections_to_coco_results,
    proposal_recall,
    voc_evaluate,
)


def det(image_id, boxes, labels, scores):
    return {
        "image_id": image_id,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


# ---------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------

# Image 1 holds objects A and B, image 2 object C (all class 1 "a"); class 2 "b" has none.
GT3 = [
    {"image_id": 1, "boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [1, 1]},
    {"image_id": 2, "boxes": [[0, 0, 10, 10]], "labels": [1]},
]


def test_three_objects_five_detections_by_hand():
    # Detections in score order (given shuffled across images / within an image):
    #   0.9 on A exactly          -> TP (A matched)
    #   0.8 far from everything   -> FP
    #   0.7 on C exactly          -> TP
    #   0.6 on A again (IoU 0.9)  -> FP (duplicate: A already matched)
    #   0.5 on B exactly          -> TP
    dets = [
        det(2, [[0, 0, 10, 10]], [1], [0.7]),
        det(
            1,
            [[20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 9], [0, 0, 10, 10]],
            [1] * 4,
            [0.5, 0.8, 0.6, 0.9],
        ),
    ]
    r = voc_evaluate(GT3, dets, ["a", "b"])
    a = r["per_class"][0]
    # cumulative TP 1 1 2 2 3, FP 0 1 1 2 2, positives 3:
    # precision 1, 1/2, 2/3, 2/4, 3/5;   recall 1/3, 1/3, 2/3, 2/3, 3/3
    np.testing.assert_allclose(a["precision"], [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(a["recall"], [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(a["scores"], [0.9, 0.8, 0.7, 0.6, 0.5], rtol=1e-6)
    assert (a["tp"], a["fp"], a["ignored"], a["num_positives"], a["num_detections"]) == (
        3,
        2,
        0,
        3,
        5,
    )
    # Interpolated precision (max precision at recall >= r): 1 up to recall 1/3, 2/3 up to
    # recall 2/3, 3/5 up to recall 1.
    # 11-point: levels 0, .1, .2, .3 -> 1 (4 levels); .4, .5, .6 -> 2/3 (3); .7 .. 1 -> 3/5 (4)
    #   AP07 = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11
    assert a["ap07"] == pytest.approx(8.4 / 11, abs=1e-12)
    # Area: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 15/45 + 10/45 + 9/45 = 34/45
    assert a["ap10"] == pytest.approx(34 / 45, abs=1e-12)
    # The two definitions differ here (0.7636 vs 0.7556).
    assert a["ap07"] != pytest.approx(a["ap10"], abs=1e-3)
    # Class "b" has no ground truth: NaN, left out of the mean, said so in the notes.
    b = r["per_class"][1]
    assert math.isnan(b["ap07"]) and math.isnan(b["ap10"])
    assert r["classes_without_positives"] == ["b"]
    assert r["map07"] == pytest.approx(8.4 / 11) and r["map10"] == pytest.approx(34 / 45)
    assert r["num_classes_evaluated"] == 1
    assert any("b" in n and "NaN" in n for n in r["notes"])
    assert r["ap07"]["a"] == a["ap07"]


def test_difficult_detection_ignored_and_not_a_positive():
    # Object A (normal) and D (difficult) in one image.
    gt = [
        {
            "image_id": 0,
            "boxes": [[0, 0, 10, 10], [30, 30, 40, 40]],
            "labels": [1, 1],
            "difficult": [False, True],
        }
    ]
    # 0.9 on D -> ignored; 0.85 on D again -> ignored too (difficult is checked before
    # "already matched"); 0.8 on nothing -> FP; 0.7 on A -> TP.
    dets = [
        det(
            0,
            [[30, 30, 40, 40], [31, 30, 40, 40], [60, 60, 70, 70], [0, 0, 10, 10]],
            [1, 1, 1, 1],
            [0.9, 0.85, 0.8, 0.7],
        )
    ]
    a = voc_evaluate(gt, dets, ["a"])["per_class"][0]
    assert a["num_positives"] == 1 and a["num_difficult"] == 1
    assert (a["tp"], a["fp"], a["ignored"]) == (1, 1, 2)
    # Counted detections: FP, TP -> precision 0, 1/2; recall 0, 1.
    np.testing.assert_allclose(a["precision"], [0, 0.5])
    np.testing.assert_allclose(a["recall"], [0, 1])
    # 11-point: every level's best precision is 1/2 -> AP07 = 0.5; area: 1 * 1/2 = 0.5.
    # (Counting D's detections as FPs would give 1/3; counting D as a positive, 2/3 ...)
    assert a["ap07"] == pytest.approx(0.5) and a["ap10"] == pytest.approx(0.5)


def test_only_difficult_objects_is_nan():
    gt = [{"image_id": 0, "boxes": [[0, 0, 10, 10]], "labels": [1], "difficult": [True]}]
    r = voc_evaluate(gt, [det(0, [[0, 0, 10, 10]], [1], [1.0])], ["a"])
    assert math.isnan(r["per_class"][0]["ap07"]) and math.isnan(r["map07"])
    assert r["per_class"][0]["ignored"] == 1


def test_empty_and_perfect_detections():
    empty = voc_evaluate(GT3, [], ["a", "b"])
    assert empty["per_class"][0]["ap07"] == 0.0 and empty["per_class"][0]["ap10"] == 0.0
    assert empty["map07"] == 0.0
    # Images present but with no boxes at all.
    empty2 = voc_evaluate(GT3, [det(1, [], [], []), det(2, [], [], [])], ["a", "b"])
    assert empty2["map10"] == 0.0
    perfect = [
        det(1, [[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [0.3, 0.2]),
        det(2, [[0, 0, 10, 10]], [1], [0.1]),
    ]
    r = voc_evaluate(GT3, perfect, ["a", "b"])
    assert r["map07"] == 1.0 and r["map10"] == 1.0


def test_greedy_matching_has_no_fallback_to_second_best():
    # G1 and G2 overlap. det2's best object is G1 (IoU 96/104) although it also overlaps G2
    # with IoU 94/106 >= 0.5: the devkit assigns it to G1, already taken -> duplicate FP.
    gt = [{"image_id": 0, "boxes": [[0, 0, 10, 10], [1, 0, 11, 10]], "labels": [1, 1]}]
    dets = [det(0, [[0, 0, 10, 10], [0.4, 0, 10.4, 10]], [1, 1], [0.9, 0.8])]
    a = voc_evaluate(gt, dets, ["a"])["per_class"][0]
    assert (a["tp"], a["fp"]) == (1, 1)
    # precision 1, 1/2; recall 1/2, 1/2 -> levels 0 .. 0.5 get 1 (6 of 11), the rest 0.
    assert a["ap07"] == pytest.approx(6 / 11)
    assert a["ap10"] == pytest.approx(0.5)


def test_iou_threshold_inclusive_and_legacy_plus_one():
    # IoU exactly 0.5 (100 / 200) is a match (devkit: ovmax >= minoverlap).
    gt = [{"image_id": 0, "boxes": [[0, 0, 10, 20]], "labels": [1]}]
    assert voc_evaluate(gt, [det(0, [[0, 0, 10, 10]], [1], [1])], ["a"])["map07"] == 1.0
    # Continuous: [0,0,9,9] vs [0,0,9,4] -> 36/81 < 0.5 (FP). +1 convention: 10x10 object,
    # 10x5 detection -> 50/100 = 0.5 (TP).
    gt = [{"image_id": 0, "boxes": [[0, 0, 9, 9]], "labels": [1]}]
    d = [det(0, [[0, 0, 9, 4]], [1], [1])]
    assert voc_evaluate(gt, d, ["a"])["map10"] == 0.0
    r = voc_evaluate(gt, d, ["a"], legacy_plus_one=True)
    assert r["map10"] == 1.0 and r["settings"]["legacy_plus_one"] is True
    # A stricter threshold.
    assert voc_evaluate(gt, d, ["a"], iou_threshold=0.3)["map10"] == 1.0
    with pytest.raises(ConfigError):
        voc_evaluate(gt, d, ["a"], iou_threshold=1.5)


def test_eleven_point_levels_are_exact_tenths():
    # 10 objects, the 3 top detections find 3 of them: recall exactly 0.3 at precision 1.
    # Levels 0, .1, .2, .3 -> 1; others 0 -> AP07 = 4/11 (np.arange(0, 1.1, 0.1) would make
    # the level 0.30000000000000004 and give 3/11).
    boxes = [[20 * i, 0, 20 * i + 10, 10] for i in range(10)]
    gt = [{"image_id": 0, "boxes": boxes, "labels": [1] * 10}]
    r = voc_evaluate(gt, [det(0, boxes[:3], [1] * 3, [0.9, 0.8, 0.7])], ["a"])
    assert r["map07"] == pytest.approx(4 / 11)
    assert r["map10"] == pytest.approx(0.3)


def test_score_ties_keep_input_order():
    gt = [{"image_id": 0, "boxes": [[0, 0, 10, 10]], "labels": [1]}]
    hit, miss = [0, 0, 10, 10], [50, 50, 60, 60]
    # Same score: the detection given first is ranked first.
    first_hit = voc_evaluate(gt, [det(0, [hit, miss], [1, 1], [0.5, 0.5])], ["a"])
    first_miss = voc_evaluate(gt, [det(0, [miss, hit], [1, 1], [0.5, 0.5])], ["a"])
    assert first_hit["map10"] == 1.0  # TP, FP: precision 1 at recall 1
    assert first_miss["map10"] == 0.5  # FP, TP: precision 1/2 at recall 1
    # Across images: the order of the per-image entries.
    gt2 = gt + [{"image_id": 1, "boxes": [], "labels": []}]
    a = voc_evaluate(gt2, [det(1, [miss], [1], [0.5]), det(0, [hit], [1], [0.5])], ["a"])
    assert a["map10"] == 0.5


def test_class_confusion_and_images_without_objects():
    # A detection of class 2 on a class-1 object is a false positive for class 2 and does
    # not match the class-1 object.
    gt = [
        {"image_id": 0, "boxes": [[0, 0, 10, 10]], "labels": [1]},
        {"image_id": 1, "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    dets = [
        det(0, [[0, 0, 10, 10], [0, 0, 10, 10]], [2, 1], [0.9, 0.5]),
        det(1, [[0, 0, 5, 5]], [1], [0.95]),
    ]
    r = voc_evaluate(gt, dets, ["a", "b"])
    a, b = r["per_class"]
    assert (a["tp"], a["fp"]) == (1, 1) and a["ap10"] == pytest.approx(0.5)
    assert (b["tp"], b["fp"]) == (0, 1) and math.isnan(b["ap10"])


def test_coco_results_and_positional_inputs_give_same_result():
    dets = [
        det(2, [[0, 0, 10, 10]], [1], [0.7]),
        det(
            1,
            [[20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 9], [0, 0, 10, 10]],
            [1] * 4,
            [0.5, 0.8, 0.6, 0.9],
        ),
    ]
    ref = voc_evaluate(GT3, dets, ["a", "b"])
    via_coco = voc_evaluate(
        GT3, detections_to_coco_results(dets, [5, 9]), ["a", "b"], category_ids=[5, 9]
    )
    assert via_coco["map07"] == ref["map07"] and via_coco["map10"] == ref["map10"]
    positional = [{k: v for k, v in d.items() if k != "image_id"} for d in (dets[1], dets[0])]
    gt_positional = [{k: v for k, v in g.items() if k != "image_id"} for g in GT3]
    assert voc_evaluate(gt_positional, positional, ["a", "b"])["map07"] == ref["map07"]


def test_input_errors():
    with pytest.raises(DataError, match="image_id 7.*not in the ground truth"):
        voc_evaluate(GT3, [det(7, [[0, 0, 1, 1]], [1], [1])], ["a", "b"])
    with pytest.raises(DataError, match="label 3.*outside 1..2"):
        voc_evaluate(GT3, [det(1, [[0, 0, 1, 1]], [3], [1])], ["a", "b"])
    with pytest.raises(DataError, match="outside 1..2"):
        voc_evaluate([{"image_id": 0, "boxes": [[0, 0, 1, 1]], "labels": [0]}], [], ["a", "b"])
    with pytest.raises(DataError, match="not finite"):
        voc_evaluate(GT3, [det(1, [[0, 0, 1, 1]], [1], [float("nan")])], ["a", "b"])
    with pytest.raises(DataError, match="x2 < x1"):
        voc_evaluate(GT3, [det(1, [[5, 0, 1, 1]], [1], [1])], ["a", "b"])
    with pytest.raises(DataError, match="2 labels for 1 boxes"):
        voc_evaluate([{"image_id": 0, "boxes": [[0, 0, 1, 1]], "labels": [1, 1]}], [], ["a"])
    with pytest.raises(DataError, match="twice"):
        voc_evaluate(GT3 + GT3[:1], [], ["a", "b"])
    with pytest.raises(DataError, match="line up"):
        voc_evaluate(GT3, [{"boxes": [], "labels": [], "scores": []}], ["a", "b"])


def test_ap_helpers_directly():
    assert ap_11_point([], []) == 0.0 and ap_area([], []) == 0.0
    # One TP at recall 1/2: area 1/2; 11-point 6/11 (levels 0 .. 0.5).
    assert ap_area([0.5], [1.0]) == 0.5 and ap_11_point([0.5], [1.0]) == pytest.approx(6 / 11)


# ---------------------------------------------------------------------------------------
# Brute force, straight from the devkit's VOCevaldet.m / VOCap definitions
# ---------------------------------------------------------------------------------------


def brute_force_voc(gt, dets, num_classes, thr=0.5, plus_one=False):
    """Per class: (ap07, ap10, tp, fp, precision list, recall list). Exact rationals for the
    PR points and the AP formulas; IoU in floats as the devkit computes it."""
    one = 1.0 if plus_one else 0.0
    gt_by_image = {g["image_id"]: g for g in gt}
    out = {}
    for c in range(1, num_classes + 1):
        flat = []  # devkit results file: image by image, detections in order
        for d in dets:
            for box, label, score in zip(
                d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist(), strict=True
            ):
                if label == c:
                    flat.append((d["image_id"], box, score))
        order = sorted(range(len(flat)), key=lambda i: -flat[i][2])  # Python's sort is stable
        npos = 0
        objects = {}
        for image_id, g in gt_by_image.items():
            objs = [
                (b, bool(df))
                for b, l, df in zip(g["boxes"], g["labels"], g["difficult"], strict=True)
                if l == c
            ]
            objects[image_id] = objs
            npos += sum(1 for _, df in objs if not df)
        matched = {image_id: [False] * len(o) for image_id, o in objects.items()}
        tp, fp = [], []
        for i in order:
            image_id, bb, _ = flat[i]
            ovmax, jmax = -math.inf, None
            for j, (bbgt, _) in enumerate(objects[image_id]):
                iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + one
                ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + one
                if iw > 0 and ih > 0:
                    ua = (
                        (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                        + (bbgt[2] - bbgt[0] + one) * (bbgt[3] - bbgt[1] + one)
                        - iw * ih
                    )
                    ov = iw * ih / ua
                    if ov > ovmax:
                        ovmax, jmax = ov, j
            if ovmax >= thr:
                if not objects[image_id][jmax][1]:
                    if not matched[image_id][jmax]:
                        tp.append(1), fp.append(0)
                        matched[image_id][jmax] = True
                    else:
                        tp.append(0), fp.append(1)
                # difficult: neither
            else:
                tp.append(0), fp.append(1)
        if npos == 0:
            out[c] = (math.nan, math.nan, sum(tp), sum(fp), None, None)
            continue
        ctp = cfp = 0
        prec, rec = [], []
        for t, f in zip(tp, fp, strict=True):
            ctp += t
            cfp += f
            prec.append(Fraction(ctp, ctp + cfp))
            rec.append(Fraction(ctp, npos))
        ap07 = Fraction(0)
        for k in range(11):
            ps = [p for p, r in zip(prec, rec, strict=True) if r >= Fraction(k, 10)]
            ap07 += (max(ps) if ps else 0) / Fraction(11)
        mrec = [Fraction(0)] + rec + [Fraction(1)]
        mpre = [Fraction(0)] + prec + [Fraction(0)]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ap10 = sum(
            (mrec[i + 1] - mrec[i]) * mpre[i + 1]
            for i in range(len(mrec) - 1)
            if mrec[i + 1] != mrec[i]
        )
        out[c] = (float(ap07), float(ap10), sum(tp), sum(fp), prec, rec)
    return out


def random_case(rng: random.Random, num_images=40, num_classes=3):
    gt, dets = [], []
    for image_id in rng.sample(range(1000), num_images):
        n = rng.choice([0, 1, 2, 3, 5])
        boxes, labels, difficult = [], [], []
        for _ in range(n):
            x, y = rng.randint(0, 30), rng.randint(0, 30)
            boxes.append([x, y, x + rng.randint(4, 16), y + rng.randint(4, 16)])
            labels.append(rng.randint(1, num_classes))
            difficult.append(rng.random() < 0.2)
        gt.append({"image_id": image_id, "boxes": boxes, "labels": labels, "difficult": difficult})
        m = rng.choice([0, 1, 3, 6, 10])
        db, dl, ds = [], [], []
        for _ in range(m):
            if boxes and rng.random() < 0.7:  # jitter a ground-truth box (duplicates happen)
                b = boxes[rng.randrange(len(boxes))]
                db.append(
                    [
                        b[0] + rng.randint(-3, 3),
                        b[1] + rng.randint(-3, 3),
                        b[2] + rng.randint(-3, 3),
                        b[3] + rng.randint(-3, 3),
                    ]
                )
                db[-1][2] = max(db[-1][2], db[-1][0])
                db[-1][3] = max(db[-1][3], db[-1][1])
            else:
                x, y = rng.randint(0, 30), rng.randint(0, 30)
                db.append([x, y, x + rng.randint(0, 16), y + rng.randint(0, 16)])
            dl.append(rng.randint(1, num_classes))
            ds.append(rng.choice([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, rng.random()]))  # many ties
        if m or rng.random() < 0.5:
            dets.append(
                det(image_id, db, dl, ds) | {"scores": torch.tensor(ds, dtype=torch.float64)}
            )
    rng.shuffle(dets)
    return gt, dets


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_brute_force_devkit(seed):
    rng = random.Random(seed)
    gt, dets = random_case(rng)
    thr = [0.5, 0.5, 0.3, 0.7][seed % 4]
    plus_one = seed % 3 == 2
    r = voc_evaluate(gt, dets, ["x", "y", "z"], thr, legacy_plus_one=plus_one)
    ref = brute_force_voc(gt, dets, 3, thr, plus_one)
    for c in r["per_class"]:
        ap07, ap10, tp, fp, prec, rec = ref[c["label"]]
        assert (c["tp"], c["fp"]) == (tp, fp)
        if math.isnan(ap07):
            assert math.isnan(c["ap07"]) and math.isnan(c["ap10"])
            continue
        assert c["ap07"] == pytest.approx(ap07, abs=1e-12)
        assert c["ap10"] == pytest.approx(ap10, abs=1e-12)
        np.testing.assert_allclose(c["precision"], [float(p) for p in prec], atol=1e-12)
        np.testing.assert_allclose(c["recall"], [float(x) for x in rec], atol=1e-12)
    valid = [ref[k][1] for k in ref if not math.isnan(ref[k][1])]
    assert r["map10"] == pytest.approx(float(np.mean(valid)) if valid else math.nan, nan_ok=True)


# ---------------------------------------------------------------------------------------
# Proposal recall
# ---------------------------------------------------------------------------------------


def test_proposal_recall_by_hand():
    gt = [
        {
            "image_id": 0,
            "boxes": [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
            "labels": [1, 2, 1],
            "difficult": [False, False, True],
        },
        {"image_id": 1, "boxes": [[0, 0, 10, 10]], "labels": [1]},
    ]
    # Image 0, by score: p1 = object 1 exactly (IoU 1); p2 = object 2 at IoU 0.6
    # ([20,0,26,10] -> 60/100); p3 = the difficult object (never counted).
    # Image 1: only one proposal, at IoU 0.8 with its object ([0,0,8,10] -> 80/100).
    proposals = [
        {"image_id": 1, "boxes": [[0, 0, 8, 10]], "scores": [0.3]},
        {
            "image_id": 0,
            "boxes": [[40, 0, 50, 10], [20, 0, 26, 10], [0, 0, 10, 10]],
            "scores": [0.1, 0.5, 0.9],
        },
    ]
    r = proposal_recall(gt, proposals, iou_thresholds=(0.5, 0.7), num_proposals=(1, 2, 100))
    assert r["num_gt"] == 3  # the difficult object is not counted
    # top-1: image 0 finds object 1 (IoU 1), image 1 its object (0.8): 2/3 at 0.5 and 0.7.
    assert r["recall"][1] == {0.5: pytest.approx(2 / 3), 0.7: pytest.approx(2 / 3)}
    # top-2: object 2 found at IoU 0.6 -> 3/3 at 0.5 but still 2/3 at 0.7.
    assert r["recall"][2] == {0.5: 1.0, 0.7: pytest.approx(2 / 3)}
    assert r["recall"][100] == r["recall"][2]
    # AR over 0.50:0.05:0.95 for top-2: object 1 (IoU 1) counts at all 10 levels, object
    # 2 (0.6) at 0.5, 0.55, 0.6 (3 levels), image 1's (0.8) at 0.5 .. 0.8 (7 levels):
    # (10 + 3 + 7) / (3 * 10) = 2/3.
    assert r["average_recall"][2] == pytest.approx(2 / 3)
    assert r["mean_num_proposals"] == 2.0


def test_proposal_recall_positional_unsorted_and_empty():
    gt = [
        {"image_id": 5, "boxes": [[0, 0, 10, 10]], "labels": [1]},
        {"image_id": 6, "boxes": [[0, 0, 10, 10]], "labels": [1]},
    ]
    # Plain tensors line up by position; no scores: the given order is the ranking.
    r = proposal_recall(
        gt,
        [torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10]]), torch.zeros(0, 4)],
        num_proposals=(1, 2),
    )
    assert r["recall"][1][0.5] == 0.0 and r["recall"][2][0.5] == 0.5
    nothing = proposal_recall([{"image_id": 0, "boxes": [], "labels": []}], [torch.zeros(0, 4)])
    assert math.isnan(nothing["recall"][50][0.5])
    with pytest.raises(DataError, match="not in the ground truth"):
        proposal_recall(gt, [{"image_id": 9, "boxes": [[0, 0, 1, 1]]}])
    with pytest.raises(ConfigError):
        proposal_recall(gt, [torch.zeros(0, 4)] * 2, num_proposals=(0,))


def test_proposal_recall_matches_brute_force():
    rng = np.random.default_rng(0)
    gt, props = [], []
    for i in range(20):
        xy = rng.integers(0, 50, (4, 2))
        g = np.concatenate([xy, xy + rng.integers(5, 30, (4, 2))], 1).astype(float)
        gt.append({"image_id": i, "boxes": g, "labels": [1] * 4})
        pxy = rng.integers(0, 50, (60, 2))
        p = np.concatenate([pxy, pxy + rng.integers(5, 30, (60, 2))], 1).astype(float)
        props.append({"image_id": i, "boxes": p, "scores": rng.random(60)})
    r = proposal_recall(gt, props, iou_thresholds=(0.5, 0.7), num_proposals=(10, 30, 100))
    for n in (10, 30, 100):
        for t in (0.5, 0.7):
            found = 0
            for g, p in zip(gt, props, strict=True):
                top = p["boxes"][np.argsort(-p["scores"], kind="stable")][:n]
                for gb in g["boxes"]:
                    best = 0.0
                    for pb in top:
                        iw = max(0.0, min(gb[2], pb[2]) - max(gb[0], pb[0]))
                        ih = max(0.0, min(gb[3], pb[3]) - max(gb[1], pb[1]))
                        inter = iw * ih
                        union = (
                            (gb[2] - gb[0]) * (gb[3] - gb[1])
                            + (pb[2] - pb[0]) * (pb[3] - pb[1])
                            - inter
                        )
                        best = max(best, inter / union)
                    found += best >= t
            assert r["recall"][n][t] == pytest.approx(found / 80)
