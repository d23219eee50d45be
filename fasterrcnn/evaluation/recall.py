"""Proposal recall of the Region Proposal Network (paper, Sec. 4.1 and Fig. 2).

Recall at IoU t with the top-N proposals = fraction of the non-difficult ground-truth objects
(all classes together: proposals are class-agnostic) whose best IoU with the N highest-scored
proposals of their image is >= t. Average recall (AR, Hosang et al.) is approximated as the
mean recall over IoU thresholds 0.50, 0.55, ..., 0.95, the way COCO computes AR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fasterrcnn.errors import ConfigError, DataError
from fasterrcnn.evaluation._common import _boxes, as_image_id, normalize_ground_truth, to_numpy
from fasterrcnn.ops import box_iou

__all__ = ["AR_IOU_THRESHOLDS", "proposal_recall"]

#: IoU thresholds averaged for the average recall (AR): 0.50:0.05:0.95.
AR_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _proposal_entries(proposals, gt) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
    """-> [(gt position, boxes [P, 4], scores [P] or None)]."""
    if isinstance(proposals, Mapping) or not isinstance(proposals, Sequence):
        raise DataError(
            f"proposals must be a sequence (one entry per image), got {type(proposals).__name__}"
        )
    keyed = len(proposals) > 0 and all(
        isinstance(p, Mapping) and "image_id" in p for p in proposals
    )
    if not keyed and len(proposals) != len(gt.image_ids):
        raise DataError(
            f"proposals without image_id must line up with the ground truth one per image; "
            f"got {len(proposals)} for {len(gt.image_ids)} images"
        )
    out = []
    for pos, entry in enumerate(proposals):
        if keyed:
            image_id = as_image_id(entry["image_id"], f"proposals[{pos}]")
            if image_id not in gt.index:
                raise DataError(
                    f"proposals for image_id {image_id}: image_id is not in the ground truth"
                )
            image_pos = gt.index[image_id]
        else:
            image_pos = pos
        where = f"proposals for image_id {gt.image_ids[image_pos]}"
        if isinstance(entry, Mapping):
            if "boxes" not in entry:
                raise DataError(f"{where}: missing 'boxes'")
            boxes, scores = entry["boxes"], entry.get("scores")
        else:
            boxes, scores = entry, None
        boxes = _boxes(boxes, where, allow_inverted=True)
        if scores is not None:
            scores = to_numpy(scores, np.float64, f"{where} scores").reshape(-1)
            if scores.shape[0] != boxes.shape[0]:
                raise DataError(f"{where}: {scores.shape[0]} scores for {boxes.shape[0]} boxes")
            if np.isnan(scores).any():
                raise DataError(f"{where}: scores contain NaN")
        out.append((image_pos, boxes, scores))
    return out


def proposal_recall(
    gt: Sequence[dict],
    proposals,
    iou_thresholds: Sequence[float] = (0.5, 0.7),
    num_proposals: Sequence[int] = (50, 100, 300, 1000, 2000),
    *,
    legacy_plus_one: bool = False,
    average_recall: bool = True,
) -> dict:
    """Recall of the top-N proposals at each IoU threshold, over the whole image set.

    Args:
        gt: per-image ground-truth dicts (``boxes``, optional ``difficult``; labels are not
            used). Difficult objects are left out.
        proposals: one entry per image: a dict ``{"image_id", "boxes" [P, 4],
            "scores" [P] (optional)}`` or, lined up with `gt` by position, a dict without
            "image_id" or a plain [P, 4] tensor/array. Proposals are sorted by decreasing
            score (stable); without scores their given order is taken as the ranking. An
            image with no entry has no proposals.
        iou_thresholds: recall is reported at each of these IoUs (the test is ``>=``).
        num_proposals: the N of "top-N proposals" (an image with fewer uses all of its own).
        legacy_plus_one: IoU with the +1 pixel convention.
        average_recall: also compute AR = mean recall over IoU 0.50:0.05:0.95 for each N.

    Returns ``{"kind": "proposal_recall", "recall": {N: {t: recall}},
    "average_recall": {N: AR} (when asked), "num_images", "num_gt" (non-difficult objects),
    "mean_num_proposals" (per image, before the top-N cut), "settings"}``. Recall is NaN
    when there are no objects.
    """
    thresholds = [float(t) for t in iou_thresholds]
    counts = [int(n) for n in num_proposals]
    if not counts or min(counts) < 1:
        raise ConfigError(f"num_proposals must be positive integers, got {list(num_proposals)}")
    if not thresholds or not all(0.0 < t <= 1.0 for t in thresholds):
        raise ConfigError(f"iou_thresholds must be in (0, 1], got {list(iou_thresholds)}")
    truth = normalize_ground_truth(gt, None)
    entries = _proposal_entries(proposals, truth)
    all_t = sorted(set(thresholds) | (set(AR_IOU_THRESHOLDS) if average_recall else set()))
    t_arr = np.asarray(all_t)
    max_n = max(counts)

    hits = np.zeros((len(counts), len(all_t)), dtype=np.int64)
    num_gt = 0
    total_props = 0
    seen = np.zeros(len(truth.image_ids), dtype=bool)
    merged: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    for image_pos, boxes, scores in entries:
        merged.setdefault(image_pos, []).append((boxes, scores))
    for image_pos in range(len(truth.image_ids)):
        keep = ~truth.difficult[image_pos]
        g = truth.boxes[image_pos][keep]
        parts = merged.get(image_pos, [])
        if parts:
            seen[image_pos] = True
            boxes = np.concatenate([b for b, _ in parts])
            if any(s is not None for _, s in parts):
                if not all(s is not None for _, s in parts):
                    raise DataError(
                        f"proposals for image_id {truth.image_ids[image_pos]}: some entries "
                        "have scores and some do not"
                    )
                scores = np.concatenate([s for _, s in parts])
                boxes = boxes[np.argsort(-scores, kind="stable")]
        else:
            boxes = np.zeros((0, 4))
        total_props += boxes.shape[0]
        num_gt += g.shape[0]
        if g.shape[0] == 0:
            continue
        boxes = boxes[:max_n]
        if boxes.shape[0] == 0:
            continue
        iou = box_iou(
            torch.from_numpy(g), torch.from_numpy(boxes), legacy_plus_one=legacy_plus_one
        ).numpy()
        iou = np.nan_to_num(iou, nan=0.0)
        best_so_far = np.maximum.accumulate(iou, axis=1)  # [G, P]: best IoU among the top k+1
        for i, n in enumerate(counts):
            best = best_so_far[:, min(n, boxes.shape[0]) - 1]
            hits[i] += (best[:, None] >= t_arr[None, :]).sum(axis=0)

    with np.errstate(invalid="ignore", divide="ignore"):
        rec = hits / num_gt if num_gt else np.full(hits.shape, np.nan)
    col = {t: j for j, t in enumerate(all_t)}
    result = {
        "kind": "proposal_recall",
        "settings": {
            "iou_thresholds": thresholds,
            "num_proposals": counts,
            "legacy_plus_one": bool(legacy_plus_one),
            "average_recall_iou_thresholds": list(AR_IOU_THRESHOLDS) if average_recall else None,
        },
        "num_images": len(truth.image_ids),
        "num_images_with_proposals": int(seen.sum()),
        "num_gt": int(num_gt),
        "mean_num_proposals": total_props / len(truth.image_ids) if truth.image_ids else 0.0,
        "recall": {n: {t: float(rec[i, col[t]]) for t in thresholds} for i, n in enumerate(counts)},
    }
    if average_recall:
        ar_cols = [col[t] for t in AR_IOU_THRESHOLDS]
        result["average_recall"] = {
            n: float(np.mean(rec[i, ar_cols])) for i, n in enumerate(counts)
        }
    return result
