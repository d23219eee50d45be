"""Record torchvision's Faster R-CNN models as oracle fixtures for ``fasterrcnn.load_torchvision``.

Run from the repository root with the torchvision venv (torchvision is never a dependency of
the project; this script is its only user, with ``benchmarks/torchvision_speed.py``)::

    /work/tv/bin/python scripts/torchvision_fixtures.py            # writes tests/fixtures/torchvision/*.pt
    /work/tv/bin/python scripts/torchvision_fixtures.py --calibrate  # prints ACTIVE_BIAS for tests/torchvision_weights.py

For each architecture the model is built through torchvision's own builder on the code path of
its COCO checkpoint (``weights="DEFAULT"``), with the download replaced by nothing, so that the
module layout is the checkpoint's: FrozenBatchNorm2d where the checkpoint has it (no
``num_batches_tracked`` keys), ``eps=0.0`` for fasterrcnn_resnet50_fpn (``overwrite_eps``) and
1e-5 for the MobileNet ones, the default frozen layers. The weights then come from
``tests/torchvision_weights.make_state_dict`` (loaded strictly), the model runs in eval mode on
the images of ``IMAGES`` (from ``make_image``), one at a time and then as one batch, and the
intermediate results are written to ``tests/fixtures/torchvision/<arch>.pt`` (plain dicts,
lists and tensors: ``torch.load(path, weights_only=True)``). See the README there.

It imports torchvision but never fasterrcnn.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
from pathlib import Path
from unittest import mock

import torch
import torchvision
from torch import nn
from torchvision.models import _api as tv_api
from torchvision.models.detection import faster_rcnn as tv_frcnn
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops.misc import FrozenBatchNorm2d

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import torchvision_weights as tw  # noqa: E402

OUT_DIR = ROOT / "tests" / "fixtures" / "torchvision"

# Constructor kwargs of the fixtures (on top of weights / num_classes): the R50 models at a
# smaller size to keep the run short, the MobileNet FPN one at the 320 model's size (at 800 px
# its synthetic class scores sit far from those of the 320 model, and both share one weight
# rule), the 320 model at its defaults.
ARCHS: dict[str, dict] = {
    "fasterrcnn_resnet50_fpn": {"min_size": 320, "max_size": 512},
    "fasterrcnn_resnet50_fpn_v2": {"min_size": 320, "max_size": 512},
    "fasterrcnn_mobilenet_v3_large_fpn": {"min_size": 320, "max_size": 640},
    "fasterrcnn_mobilenet_v3_large_320_fpn": {},
}

# Landscape, portrait, square, and a 1:3 strip whose resize is bound by max_size.
IMAGES: list[dict] = [
    {"height": 240, "width": 320, "seed": 1},
    {"height": 300, "width": 200, "seed": 2},
    {"height": 256, "width": 256, "seed": 3},
    {"height": 128, "width": 400, "seed": 4},
]

NUM_SAMPLES = 2000  # sampled values per feature map / big tensor
NUM_SMALL_SAMPLES = 1000  # for the RPN head outputs, anchors, decoded proposals
NUM_ROIS = 64  # proposals whose RoIAlign / box head / predictor outputs are recorded

# --calibrate: the share of (proposal, class) pairs of each kind whose score passes 0.05.
CALIBRATION_FRACTION = {"resnet50_fpn": 0.004, "resnet50_fpn_v2": 0.006, "mobilenet_v3_large_fpn": 0.004}


# ----------------------------------------------------------------------------- building

@contextlib.contextmanager
def _no_checkpoint_download():
    """Within: a builder called with weights=... takes the checkpoint's code path but loads nothing."""
    def get_state_dict(self, *args, **kwargs):
        return {}

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None

    with mock.patch.object(tv_api.WeightsEnum, "get_state_dict", get_state_dict), \
            mock.patch.object(tv_frcnn.FasterRCNN, "load_state_dict", load_state_dict):
        yield


def build(arch: str, kwargs: dict, checkpoint_layout: bool = True) -> nn.Module:
    """torchvision's builder: with checkpoint_layout, on its COCO checkpoint's path (weights left as
    initialised); without, as ``weights=None, weights_backbone=None``."""
    fn = getattr(torchvision.models.detection, arch)
    if checkpoint_layout:
        with _no_checkpoint_download():
            model = fn(weights="DEFAULT", num_classes=91, **kwargs)
    else:
        model = fn(weights=None, weights_backbone=None, num_classes=91, **kwargs)
    return model.eval()


def spec_of(model: nn.Module) -> dict[str, tuple[list[int], str]]:
    return {k: (list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}


def load_synthetic_weights(model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = spec_of(model)
    state = tw.make_state_dict({k: (tuple(s), d) for k, (s, d) in spec.items()})
    model.load_state_dict(state, strict=True)
    return spec, state


def legacy_aliases(spec: dict) -> dict[str, str]:
    """Current key -> the pre-0.13 name that torchvision still accepts (RPNHead / FPN _load_from_state_dict)."""
    out = {}
    for key in spec:
        m = re.fullmatch(r"rpn\.head\.conv\.0\.0\.(weight|bias)", key)
        if m and not any(k.startswith("rpn.head.conv.1.") for k in spec):
            out[key] = f"rpn.head.conv.{m.group(1)}"
        m = re.fullmatch(r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.0\.(weight|bias)", key)
        if m and not any(k.startswith(f"backbone.fpn.{m.group(1)}.{m.group(2)}.1.") for k in spec):
            out[key] = f"backbone.fpn.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return out


def check_legacy_names_load(model: nn.Module, state: dict, aliases: dict) -> bool:
    """torchvision loads the state dict with the legacy names (strict) to the same values."""
    if not aliases:
        return False
    renamed = {aliases.get(k, k): v for k, v in state.items()}
    probe = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(renamed, strict=True)
    same = all(torch.equal(probe[k], v) for k, v in model.state_dict().items())
    model.load_state_dict(state, strict=True)
    return same


# ----------------------------------------------------------------------------- hyperparameters

def _norm_summary(module: nn.Module) -> list[dict]:
    counts: dict[tuple[str, float], int] = {}
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            key = (type(m).__name__, float(m.eps))
            counts[key] = counts.get(key, 0) + 1
    return [{"type": t, "eps": e, "count": n} for (t, e), n in sorted(counts.items())]


def _describe_box_head(head: nn.Module) -> dict:
    if isinstance(head, tv_frcnn.TwoMLPHead):
        return {"type": "TwoMLPHead", "fc6": [head.fc6.in_features, head.fc6.out_features],
                "fc7": [head.fc7.in_features, head.fc7.out_features], "activation": "relu after fc6 and fc7"}
    convs, fcs, norms = [], [], []
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            convs.append({"in": m.in_channels, "out": m.out_channels, "kernel": list(m.kernel_size),
                          "padding": list(m.padding), "bias": m.bias is not None})
        elif isinstance(m, nn.Linear):
            fcs.append([m.in_features, m.out_features])
        elif isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
            norms.append({"type": type(m).__name__, "eps": float(m.eps)})
    return {"type": type(head).__name__, "convs": convs, "norms": norms, "fcs": fcs,
            "order": "each conv: conv3x3 -> norm -> relu; then flatten (C, H, W order) -> each fc: linear -> relu"}


def hyperparameters(model: nn.Module) -> dict:
    t, rpn, rh = model.transform, model.rpn, model.roi_heads
    ag, pool = rpn.anchor_generator, rh.box_roi_pool
    body, fpn = model.backbone.body, model.backbone.fpn
    trainable_children = [n for n, c in body.named_children() if any(p.requires_grad for p in c.parameters())]
    frozen_children = [n for n, c in body.named_children()
                       if any(True for _ in c.parameters()) and not any(p.requires_grad for p in c.parameters())]
    fpn_norm = sorted({type(m).__name__ for m in fpn.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))})
    return {
        "transform": {
            "min_size": [int(s) for s in t.min_size], "max_size": int(t.max_size),
            "image_mean": [float(x) for x in t.image_mean], "image_std": [float(x) for x in t.image_std],
            "size_divisible": int(t.size_divisible), "fixed_size": t.fixed_size,
            "resize_mode": "bilinear, align_corners=False, scale_factor=min(min_size/short, max_size/long), "
                           "recompute_scale_factor=True (eval uses min_size[-1])",
        },
        "rpn": {
            "pre_nms_top_n_train": int(rpn._pre_nms_top_n["training"]),
            "pre_nms_top_n_test": int(rpn._pre_nms_top_n["testing"]),
            "post_nms_top_n_train": int(rpn._post_nms_top_n["training"]),
            "post_nms_top_n_test": int(rpn._post_nms_top_n["testing"]),
            "nms_thresh": float(rpn.nms_thresh), "score_thresh": float(rpn.score_thresh),
            "min_size": float(rpn.min_size),
            "fg_iou_thresh": float(rpn.proposal_matcher.high_threshold),
            "bg_iou_thresh": float(rpn.proposal_matcher.low_threshold),
            "allow_low_quality_matches": bool(rpn.proposal_matcher.allow_low_quality_matches),
            "batch_size_per_image": int(rpn.fg_bg_sampler.batch_size_per_image),
            "positive_fraction": float(rpn.fg_bg_sampler.positive_fraction),
            "box_coder_weights": [float(w) for w in rpn.box_coder.weights],
            "bbox_xform_clip": float(rpn.box_coder.bbox_xform_clip),
            "head_conv_depth": len(rpn.head.conv),
            "head_conv_norm": sorted({type(m).__name__ for m in rpn.head.conv.modules()
                                      if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}),
            "head_num_anchors": int(rpn.head.cls_logits.out_channels),
        },
        "anchors": {
            "sizes": [[int(s) for s in sz] for sz in ag.sizes],
            "aspect_ratios": [[float(r) for r in ar] for ar in ag.aspect_ratios],
            "num_anchors_per_location": [int(n) for n in ag.num_anchors_per_location()],
            "cell_anchors": [c.tolist() for c in ag.cell_anchors],
        },
        "roi_heads": {
            "score_thresh": float(rh.score_thresh), "nms_thresh": float(rh.nms_thresh),
            "detections_per_img": int(rh.detections_per_img),
            "fg_iou_thresh": float(rh.proposal_matcher.high_threshold),
            "bg_iou_thresh": float(rh.proposal_matcher.low_threshold),
            "allow_low_quality_matches": bool(rh.proposal_matcher.allow_low_quality_matches),
            "batch_size_per_image": int(rh.fg_bg_sampler.batch_size_per_image),
            "positive_fraction": float(rh.fg_bg_sampler.positive_fraction),
            "box_coder_weights": [float(w) for w in rh.box_coder.weights],
            "bbox_xform_clip": float(rh.box_coder.bbox_xform_clip),
            "min_box_size": 1e-2,  # a constant of RoIHeads.postprocess_detections
        },
        "box_roi_pool": {
            "featmap_names": list(pool.featmap_names), "output_size": [int(s) for s in pool.output_size],
            "sampling_ratio": int(pool.sampling_ratio), "canonical_scale": int(pool.canonical_scale),
            "canonical_level": int(pool.canonical_level), "aligned": False,  # roi_align's default, not passed
            "level_mapper_eps": 1e-6,
        },
        "box_head": _describe_box_head(rh.box_head),
        "representation_size": int(rh.box_predictor.cls_score.in_features),
        "box_predictor": {"num_classes": int(rh.box_predictor.cls_score.out_features),
                          "bbox_pred_out": int(rh.box_predictor.bbox_pred.out_features)},
        "backbone": {
            "body_type": type(body).__name__,
            "return_layers": {str(k): str(v) for k, v in body.return_layers.items()},
            "fpn_in_channels_list": [int(b[0].in_channels) for b in fpn.inner_blocks],
            "out_channels": int(model.backbone.out_channels),
            "fpn_extra_blocks": type(fpn.extra_blocks).__name__,
            "fpn_norm": fpn_norm,
            "body_norm": _norm_summary(body),
            "body_children": [n for n, _ in body.named_children()],
            "trainable_body_children": trainable_children,
            "frozen_body_children": frozen_children,
            "trainable_backbone_layers_default": 3,  # the builders' default when weights are given
        },
    }


# ----------------------------------------------------------------------------- recording

def _sample_indices(numel: int, n: int, name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(tw.key_seed(name))
    if numel <= n:
        return torch.arange(numel, dtype=torch.int64)
    return torch.randperm(numel, generator=g)[:n].sort().values


def summary(t: torch.Tensor, name: str, n: int = NUM_SAMPLES) -> dict:
    """shape, float64 sum, mean |x|, and the values at n fixed flat positions (row-major)."""
    t = t.detach().float().contiguous()
    idx = _sample_indices(t.numel(), n, name)
    return {"shape": list(t.shape), "sum": float(t.double().sum()), "abs_mean": float(t.double().abs().mean()),
            "index": idx.to(torch.int32), "values": t.reshape(-1)[idx].clone()}


def rows(t: torch.Tensor, name: str, n: int) -> dict:
    """Rows of a [N, K] tensor at n fixed row indices."""
    idx = _sample_indices(t.shape[0], n, name)
    return {"shape": list(t.shape), "index": idx.to(torch.int32), "rows": t[idx].detach().float().clone()}


def _dets(d: dict) -> dict:
    return {"boxes": d["boxes"].detach().float().clone(), "labels": d["labels"].clone(),
            "scores": d["scores"].detach().float().clone()}


@torch.no_grad()
def run_stepwise(model: nn.Module, images: list[torch.Tensor]) -> dict:
    """GeneralizedRCNN.forward, one call at a time, keeping what happens in between."""
    original_sizes = [tuple(int(s) for s in img.shape[-2:]) for img in images]
    image_list, _ = model.transform(images)
    features = model.backbone(image_list.tensors)
    feats = list(features.values())
    # RegionProposalNetwork.forward, step by step
    rpn = model.rpn
    objectness, deltas = rpn.head(feats)
    anchors = rpn.anchor_generator(image_list, feats)
    num_anchors_per_level = [int(o[0].numel()) for o in objectness]
    obj_flat, deltas_flat = concat_box_prediction_layers(objectness, deltas)
    decoded = rpn.box_coder.decode(deltas_flat, anchors).view(len(anchors), -1, 4)
    boxes, scores = rpn.filter_proposals(decoded, obj_flat, image_list.image_sizes, num_anchors_per_level)
    check, _ = rpn(image_list, features)
    assert all(torch.equal(a, b) for a, b in zip(boxes, check)), "stepwise RPN differs from rpn()"
    detections, _ = model.roi_heads(features, boxes, image_list.image_sizes)
    transformed = [_dets(d) for d in detections]
    detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
    return dict(image_list=image_list, features=features, objectness=objectness, deltas=deltas, anchors=anchors,
                num_anchors_per_level=num_anchors_per_level, obj_flat=obj_flat, decoded=decoded,
                proposals=boxes, proposal_scores=scores, transformed=transformed, detections=detections)


@torch.no_grad()
def record_image(model: nn.Module, arch: str, i: int, img: torch.Tensor) -> dict:
    tag = f"{arch}/image{i}"
    r = run_stepwise(model, [img])
    full = model([img])[0]
    for k in ("boxes", "labels", "scores"):
        assert torch.equal(full[k], r["detections"][0][k]), f"{tag}: stepwise {k} differ from model()"
    il, rh = r["image_list"], model.roi_heads
    props = r["proposals"][0]
    pool = rh.box_roi_pool
    levels = pool.map_levels([props]) if len(props) and pool.map_levels is not None else torch.zeros(0)
    first = [props[:NUM_ROIS]]
    roi = pool(r["features"], first, il.image_sizes)
    head = rh.box_head(roi)
    class_logits, box_regression = rh.box_predictor(head)
    return {
        "batch_shape": list(il.tensors.shape),
        "image_sizes": [list(s) for s in il.image_sizes],
        "features": {name: summary(f, f"{tag}/features/{name}") for name, f in r["features"].items()},
        "rpn_head": [{"objectness": summary(o, f"{tag}/rpn/objectness/{lvl}", NUM_SMALL_SAMPLES),
                      "deltas": summary(d, f"{tag}/rpn/deltas/{lvl}", NUM_SMALL_SAMPLES)}
                     for lvl, (o, d) in enumerate(zip(r["objectness"], r["deltas"]))],
        "num_anchors_per_level": r["num_anchors_per_level"],
        "anchors": rows(r["anchors"][0], f"{tag}/anchors", NUM_SMALL_SAMPLES),
        "objectness_flat": rows(r["obj_flat"], f"{tag}/objectness_flat", NUM_SMALL_SAMPLES),
        "proposals_decoded": rows(r["decoded"][0], f"{tag}/decoded", NUM_SMALL_SAMPLES),
        "proposals": props.float().clone(),
        "proposal_scores": r["proposal_scores"][0].float().clone(),
        "roi_scales": [float(s) for s in pool.scales],
        "roi_levels": levels.to(torch.int8),
        "roi_align_first": summary(roi, f"{tag}/roi_align"),
        "box_head_first": summary(head, f"{tag}/box_head"),
        "class_logits_first": class_logits.float().clone(),
        "box_regression_first": summary(box_regression, f"{tag}/box_regression"),
        "detections_transformed": r["transformed"][0],
        "detections": _dets(r["detections"][0]),
    }


@torch.no_grad()
def record_batch(model: nn.Module, images: list[torch.Tensor]) -> dict:
    r = run_stepwise(model, images)
    full = model(images)
    for a, b in zip(full, r["detections"]):
        assert all(torch.equal(a[k], b[k]) for k in ("boxes", "labels", "scores")), "batched stepwise != model()"
    return {
        "batch_shape": list(r["image_list"].tensors.shape),
        "image_sizes": [list(s) for s in r["image_list"].image_sizes],
        "proposals": [p.float().clone() for p in r["proposals"]],
        "proposal_scores": [s.float().clone() for s in r["proposal_scores"]],
        "detections": [_dets(d) for d in r["detections"]],
    }


def layout_notes(arch: str, kwargs: dict, spec: dict) -> dict:
    """What differs when the same builder runs with weights=None (the layout the fixtures do not use)."""
    plain = build(arch, kwargs, checkpoint_layout=False)
    plain_spec = spec_of(plain)
    return {
        "keys_only_with_weights_none": sorted(set(plain_spec) - set(spec)),
        "keys_only_in_checkpoint_layout": sorted(set(spec) - set(plain_spec)),
        "body_norm_with_weights_none": _norm_summary(plain.backbone.body),
    }


def plain(x):
    """Only dict / list / str / int / float / bool / None / Tensor, for torch.load(weights_only=True)."""
    if isinstance(x, dict):
        return {plain(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().contiguous()
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, str):
        return str(x)
    raise TypeError(f"unexpected {type(x)} in a fixture")


def make_fixture(arch: str) -> dict:
    kwargs = ARCHS[arch]
    model = build(arch, kwargs)
    spec, state = load_synthetic_weights(model)
    aliases = legacy_aliases(spec)
    images = [tw.make_image(s) for s in IMAGES]
    fixture = {
        "format": 1,
        "arch": arch,
        "torchvision_version": torchvision.__version__,
        "torch_version": torch.__version__,
        "builder_call": f"torchvision.models.detection.{arch}(weights='DEFAULT', num_classes=91, **constructor_kwargs) "
                        "with the checkpoint download and its load_state_dict replaced by no-ops, then "
                        "load_state_dict(make_state_dict(spec), strict=True), eval()",
        "constructor_kwargs": dict(kwargs),
        "spec": spec,
        "state_dict_sha256": tw.state_dict_digest(state),
        "state_dict_sums": {k: float(v.double().sum()) for k, v in state.items()},
        "weight_kind": tw.spec_kind(spec),
        "legacy_key_aliases": aliases,
        "legacy_names_load_in_torchvision": check_legacy_names_load(model, state, aliases) if aliases else None,
        "layout": layout_notes(arch, kwargs, spec),
        "hyperparameters": hyperparameters(model),
        "default_hyperparameters": hyperparameters(build(arch, {})),
        "images": [dict(s, checksum=tw.image_checksum(s)) for s in IMAGES],
        "per_image": [record_image(model, arch, i, img) for i, img in enumerate(images)],
        "batch": record_batch(model, images),
    }
    return plain(fixture)


# ----------------------------------------------------------------------------- calibration

@torch.no_grad()
def calibrate(archs: list[str]) -> None:
    """Print ACTIVE_BIAS: per weight kind, the cls_score bias of each active class such that a
    CALIBRATION_FRACTION of the (proposal, active class) pairs of the fixture images pass 0.05."""
    table, heads = {}, {}
    for arch in archs:
        model = build(arch, ARCHS[arch])
        spec, _ = load_synthetic_weights(model)
        kind = tw.spec_kind(spec)
        for img in (tw.make_image(s) for s in IMAGES):
            r = run_stepwise(model, [img])
            rh = model.roi_heads
            h = rh.box_head(rh.box_roi_pool(r["features"], r["proposals"], r["image_list"].image_sizes))
            _, box_regression = rh.box_predictor(h)
            heads.setdefault(kind, []).append((arch, model, h, box_regression, r["proposals"], r["image_list"].image_sizes))
        print(f"{arch}: {kind}", flush=True)
    for kind, items in heads.items():
        w = items[0][1].roi_heads.box_predictor.cls_score.weight
        diffs = torch.cat([(h @ w.T)[:, 1:] - (h @ w.T)[:, :1] for _, _, h, _, _, _ in items])
        frac = CALIBRATION_FRACTION[kind]
        margin = tw.BG_BIAS + math.log(0.05 / 0.95)
        table[kind] = {c: round(margin - float(torch.quantile(diffs[:, c - 1], 1 - frac)), 2) for c in tw.ACTIVE_CLASSES}
        bias = tw.make_tensor("roi_heads.box_predictor.cls_score.bias", (91,), "float32")
        for c, b in table[kind].items():
            bias[c] = b
        counts = []
        for arch, model, h, box_regression, props, sizes in items:
            logits = h @ w.T + bias
            boxes, _, _ = model.roi_heads.postprocess_detections(logits, box_regression, props, sizes)
            counts.append((arch, len(boxes[0])))
        print(kind, "detections per image with this table:", counts)
    print("ACTIVE_BIAS = {")
    for kind, t in table.items():
        print(f'    "{kind}": {{' + ", ".join(f"{c}: {b}" for c, b in t.items()) + "},")
    print("}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="print the ACTIVE_BIAS table and exit")
    parser.add_argument("--arch", action="append", choices=list(ARCHS), help="only these (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.calibrate:
        calibrate(args.arch or list(ARCHS))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.arch or list(ARCHS):
        fixture = make_fixture(arch)
        path = args.out / f"{arch}.pt"
        torch.save(fixture, path)
        torch.load(path, weights_only=True)  # loadable without pickled classes
        counts = [len(p["detections"]["boxes"]) for p in fixture["per_image"]]
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB, detections per image {counts}, "
              f"batch {[len(d['boxes']) for d in fixture['batch']['detections']]}", flush=True)


if __name__ == "__main__":
    main()
