"""The one place where `fasterrcnn explain` touches the detector's internals.

Every picture reads the model through these functions only, so that when the detector's
assembly changes (its transform, backbone, RPN and RoI heads are public attributes; the
backbone may return a tensor or an ordered dict of feature levels) only this module needs
updating. Nothing here changes a model's weights; settings that a picture varies (the test
size, the proposal counts) are changed inside context managers and restored.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# The paper's values (Sec. 3.1): "the effective receptive field on the input image is large
# (171 and 228 pixels for ZF and VGG, respectively)" for the 3x3 window on the last conv layer.
PAPER_WINDOW_RF = {"zf": 171, "vgg16": 228}


# ------------------------------------------------------------------------------ loading


def build(preset: str = "small", num_classes: int = 20, seed: int = 0, **overrides: Any) -> nn.Module:
    """A freshly built model (random weights drawn after `torch.manual_seed(seed)`), eval mode."""
    from fasterrcnn.modeling.faster_rcnn import build_model

    torch.manual_seed(seed)
    return build_model(preset, num_classes, **overrides).eval()


def load(checkpoint: str | Path | None, preset: str = "small", seed: int = 0, **overrides: Any) -> tuple[nn.Module, str]:
    """(model in eval mode, a sentence saying which model it is)."""
    if checkpoint is None:
        model = build(preset, 20, seed, **overrides)
        return model, f"no --checkpoint: a freshly built `{preset}` model with random weights"
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint, map_location="cpu", **overrides)
    return model.eval(), f"checkpoint {checkpoint} ({preset_name(model)})"


def preset_name(model: nn.Module) -> str:
    name = getattr(getattr(model, "config", None), "backbone", None)
    return str(name or getattr(getattr(model, "backbone_info", None), "name", "model"))


def class_names(model: nn.Module) -> list[str]:
    names = getattr(model, "class_names", None)
    k = int(getattr(model, "num_classes", 0) or 0)
    return list(names) if names else [f"class {i}" for i in range(1, k + 1)]


# ------------------------------------------------------------------------------ anchors


def anchor_generator(model: nn.Module) -> Any:
    """The anchor generator of the (first) feature level: an `anchors.AnchorGenerator`."""
    gen = model.rpn.anchor_generator
    return gen.levels[0] if hasattr(gen, "levels") else gen


def stride(model: nn.Module) -> int:
    return int(anchor_generator(model).stride)


def base_anchors(model: nn.Module) -> Tensor:
    """The model's k anchors of one position (Tensor[k, 4], network-input pixels)."""
    return anchor_generator(model).base_anchors.detach().float().cpu().clone()


def anchor_settings(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(ratios h/w, scales x stride) of the model's anchors."""
    gen = anchor_generator(model)
    return tuple(gen.ratios), tuple(gen.scales)


def grid(model: nn.Module, feature_size: tuple[int, int]) -> Tensor:
    """All anchors of a feature map in the RPN's (y, x, a) order."""
    out = anchor_generator(model)(tuple(int(v) for v in feature_size))
    return (out[0] if isinstance(out, tuple) else out).float().cpu()


# ------------------------------------------------------------------------------ forward parts


@dataclass
class Prepared:
    """One image through the model's transform: `tensor` [1, 3, H, W] (padded), `size` (h, w)
    inside the padding, `scale` (sy, sx) = network pixels per input pixel, `rgb` the resized
    image (Tensor[3, h, w] in [0, 1]) for drawing."""

    tensor: Tensor
    size: tuple[int, int]
    scale: tuple[float, float]
    rgb: Tensor

    @property
    def mean_scale(self) -> float:
        return (self.scale[0] + self.scale[1]) / 2


@torch.no_grad()
def prepare(model: nn.Module, image: Tensor) -> Prepared:
    batch = model.transform([image])
    h, w = batch.image_sizes[0]
    rgb = model.transform.resize(image.float()) if hasattr(model.transform, "resize") else image
    return Prepared(batch.tensor, (int(h), int(w)), tuple(float(s) for s in batch.scales[0]), rgb.clamp(0, 1))


def _main_level(out: Any) -> Tensor:
    """The backbone's (first) feature level: the paper's single stride-16 map."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        return next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        return out[0]
    raise TypeError(f"the backbone returned {type(out).__name__}, expected a Tensor or a dict of them")


@torch.no_grad()
def features(model: nn.Module, tensor: Tensor) -> Tensor:
    """The stride-16 feature map the RPN and the RoI pooling read: Tensor[1, C, h, w]."""
    return _main_level(model.backbone(tensor))


@dataclass
class RPNRaw:
    """The RPN head's outputs on one image: maps and their per-anchor flattening."""

    cls_map: Tensor  # [1, 2k or k, h, w]
    reg_map: Tensor  # [1, 4k, h, w]
    hidden: Tensor  # [1, D, h, w] the 3x3 conv's output (after ReLU)
    logits: Tensor  # [A] objectness logit (sigmoid = object probability)
    deltas: Tensor  # [A, 4]
    anchors: Tensor  # [A, 4]
    k: int
    feature_size: tuple[int, int]

    @property
    def probs(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def decoded(self, model: nn.Module) -> Tensor:
        """Every anchor's regressed box (Eq. 2 inverted), network-input pixels, unclipped."""
        return model.rpn.box_coder.decode(self.deltas, self.anchors).float()


@torch.no_grad()
def rpn_raw(model: nn.Module, feats: Tensor) -> RPNRaw:
    head = model.rpn.head
    cls_map, reg_map = head(feats)
    hidden = torch.relu(head.conv(feats))
    for conv in getattr(head, "more_convs", ()):
        hidden = torch.relu(conv(hidden))
    logits, deltas = head.flatten(cls_map, reg_map)
    size = (int(feats.shape[-2]), int(feats.shape[-1]))
    anchors = grid(model, size)
    return RPNRaw(cls_map, reg_map, hidden, logits[0].float(), deltas[0].float(), anchors, int(head.num_anchors), size)


def sampling_rule(model: nn.Module) -> Any:
    """The RPN's anchor labelling and sampling settings (pos/neg IoU thresholds, border,
    batch size, positive fraction): a dataclass."""
    rule = getattr(model.rpn, "sampling", None)
    return rule if rule is not None else model.rpn.cfg


def proposal_counts(model: nn.Module) -> tuple[int, int, float]:
    """(top-N before NMS, top-M after NMS, NMS IoU threshold) at test time."""
    layer = copy.copy(model.rpn.proposal_layer).eval()
    pre, post = layer.counts()
    thresh = layer.cfg.nms_thresh if hasattr(layer, "cfg") else layer.nms_thresh
    return int(pre), int(post), float(thresh)


def _proposal_layer(model: nn.Module, pre_n: int, nms_thresh: float) -> nn.Module:
    """A copy of the model's proposal layer with another top-N and NMS threshold."""
    layer = copy.copy(model.rpn.proposal_layer)
    if hasattr(layer, "cfg"):
        layer.cfg = dataclasses.replace(layer.cfg, pre_nms_top_n_test=pre_n, nms_thresh=nms_thresh)
    else:
        layer.pre_nms_top_n = {**layer.pre_nms_top_n, "testing": pre_n}
        layer.nms_thresh = nms_thresh
    return layer.eval()


@torch.no_grad()
def proposals(model: nn.Module, raw: RPNRaw, prep: Prepared, *, nms: bool = True,
              pre_n: int | None = None, post_n: int | None = None) -> tuple[Tensor, Tensor]:
    """The library's proposal layer on one image (test-mode counts unless given): boxes
    (network-input pixels) and probabilities, best first. `nms=False` runs the same layer
    with NMS disabled (threshold 1.0 keeps every box): the ranked top-N candidates."""
    pre, post, thresh = proposal_counts(model)
    pre = pre if pre_n is None else pre_n
    post = (post if nms else pre) if post_n is None else post_n
    layer = _proposal_layer(model, pre, thresh if nms else 1.0)
    boxes, scores = layer(raw.anchors, raw.logits[None], raw.deltas[None], [prep.size], [prep.mean_scale], post_n=max(post, 1))
    return boxes[0], scores[0]


def anchor_targets(model: nn.Module, anchors: Tensor, gt_boxes: Tensor, size: tuple[int, int], **changes: Any) -> Any:
    """The library's RPN target function (`rpn_anchor_targets`) with the model's labelling
    and sampling rule (`changes` replace some of its fields)."""
    from fasterrcnn.modeling.rpn import rpn_anchor_targets

    rule = dataclasses.replace(sampling_rule(model), **changes)
    return rpn_anchor_targets(anchors, gt_boxes.float(), size, rule, model.rpn.box_coder)


def anchors_inside(model: nn.Module, anchors: Tensor, size: tuple[int, int]) -> Tensor:
    from fasterrcnn.anchors import anchors_inside as inside

    return inside(anchors, size, sampling_rule(model).allowed_border)


# ------------------------------------------------------------------------------ RoI head


@dataclass
class Pooler:
    kind: str  # "roi_pool", "roi_align", or "multi-scale roi_align" (a feature pyramid's)
    output_size: int
    spatial_scale: float  # of the single map (0 for a pyramid: per level)
    sampling_ratio: int
    aligned: bool
    levels: int = 1  # feature levels RoIs are pooled from


def pooler(model: nn.Module) -> Pooler:
    rh = model.roi_heads
    p = getattr(rh, "pooler", None)
    if p is not None and hasattr(p, "kind"):
        return Pooler(str(p.kind), int(p.output_size), float(p.spatial_scale), int(p.sampling_ratio), bool(p.aligned))
    if p is not None and hasattr(p, "names"):  # MultiScaleRoIPooler: RoIAlign on each RoI's FPN level
        return Pooler("multi-scale roi_align", int(p.output_size), 0.0, int(p.sampling_ratio), bool(p.aligned), len(p.names))
    return Pooler(str(rh.cfg.pooler), int(rh.output_size), float(rh.spatial_scale), int(rh.cfg.sampling_ratio),
                  bool(rh.cfg.aligned))


def feature_levels(model: nn.Module) -> int:
    """How many feature maps the RPN runs on (1: the paper's single stride-16 map)."""
    gen = model.rpn.anchor_generator
    return len(gen.levels) if hasattr(gen, "levels") else 1


@torch.no_grad()
def pool_input(model: nn.Module, feats: Tensor) -> Tensor:
    """The map the RoI pooling reads (the trunk's, or a head's reduced map)."""
    f = getattr(model.roi_heads.box_head, "pool_input", None)
    return f(feats) if f is not None else feats


@torch.no_grad()
def pool(model: nn.Module, feats: Tensor, rois: Tensor) -> Tensor:
    """The model's own RoI pooling of `rois` (Tensor[R, 4], network pixels) on `feats` (the
    map from `pool_input`)."""
    return model.roi_heads.pool(feats, [rois.float()])


@torch.no_grad()
def head(model: nn.Module, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(box-head features [R, D], class logits [R, K+1], class-specific deltas [R, 4(K+1)])."""
    x = model.roi_heads.box_head(pooled).flatten(1)
    cls, deltas = model.roi_heads.predictor(x)
    return x, cls, deltas


def detection_nms(model: nn.Module) -> tuple[float, int]:
    """(per-class NMS threshold, detections per image) of the detector's post-processing."""
    rh = model.roi_heads
    cfg = getattr(rh, "cfg", rh)
    return float(cfg.nms_thresh), int(cfg.detections_per_img)


def parts(model: nn.Module) -> dict[str, nn.Module]:
    """The detector's parts in pipeline order, for parameter counts."""
    rh = model.roi_heads
    return {
        "backbone": model.backbone,
        "RPN 3x3 conv": nn.ModuleList([model.rpn.head.conv, *getattr(model.rpn.head, "more_convs", ())]),
        "RPN cls + reg (output layer)": nn.ModuleList([model.rpn.head.cls_logits, model.rpn.head.bbox_pred]),
        "box head (fc6, fc7)": rh.box_head,
        "predictor (cls_score, bbox_pred)": rh.predictor,
    }


def rpn_output_layer(model: nn.Module) -> dict[str, int]:
    """The RPN's two sibling 1x1 layers: channels D, anchors k, weights and biases."""
    h = model.rpn.head
    weights = h.cls_logits.weight.numel() + h.bbox_pred.weight.numel()
    biases = sum(b.numel() for b in (h.cls_logits.bias, h.bbox_pred.bias) if b is not None)
    return {"channels": int(h.conv.out_channels), "k": int(h.num_anchors),
            "cls_outputs": int(h.cls_logits.out_channels), "reg_outputs": int(h.bbox_pred.out_channels),
            "weights": int(weights), "biases": int(biases)}


# ------------------------------------------------------------------------------ whole model


@contextlib.contextmanager
def test_size(model: nn.Module, min_size: int | None, max_size: int | None = None) -> Iterator[None]:
    """Temporarily resize images to shorter side `min_size` (longer side at most `max_size`,
    default keeping the model's ratio of the two)."""
    t = model.transform
    old = (t.min_size, t.max_size)
    if min_size is not None:
        t.min_size = int(min_size)
        t.max_size = int(max_size if max_size is not None else round(min_size * old[1] / old[0]))
    try:
        yield
    finally:
        t.min_size, t.max_size = old


def size_setting(model: nn.Module) -> tuple[int, int]:
    """(shorter side, longest side) images are resized to."""
    return int(model.transform.min_size), int(model.transform.max_size)


def set_size(model: nn.Module, min_size: int) -> None:
    """Resize images to shorter side `min_size` from now on (longer side limit scaled alike)."""
    lo, hi = size_setting(model)
    model.transform.min_size = int(min_size)
    model.transform.max_size = max(int(min_size), round(min_size * hi / lo))


def legacy_plus_one(model: nn.Module) -> bool:
    """Whether the model uses the paper code's +1 pixel convention for widths and IoU."""
    return bool(model.rpn.box_coder.legacy_plus_one)


@torch.no_grad()
def detect(model: nn.Module, image: Tensor, proposals: Tensor | None = None) -> dict[str, Tensor]:
    """Detections on one image (input-image coordinates); `proposals` (input-image pixels)
    replace the RPN's, as Fast R-CNN on Selective Search boxes."""
    if proposals is None:
        return model([image])[0]
    return model([image], proposals=[proposals.float()])[0]


@torch.no_grad()
def stage_times(model: nn.Module, image: Tensor, proposals: Tensor | None = None, repeat: int = 1,
                warmup: bool = True) -> dict[str, float]:
    """Median seconds per stage of the model's forward pass (its stage clock) on one image:
    transform, backbone, rpn_head, proposals, roi_pool, det_head, postprocess; after one
    untimed run when `warmup`."""
    from fasterrcnn.benchmark.model import INFERENCE_STAGES, StageTimer

    timer = StageTimer(torch.device("cpu"))
    old = model.clock
    model.clock = timer
    try:
        if warmup:
            detect(model, image, proposals)  # oneDNN kernels, caches
        timer.runs.clear()
        for _ in range(max(1, repeat)):
            timer.start_run()
            detect(model, image, proposals)
    finally:
        model.clock = old
    return {k: v / 1000.0 for k, v in timer.medians_ms(INFERENCE_STAGES).items()}


# ------------------------------------------------------------------------------ receptive field


def receptive_field(model: nn.Module) -> dict[str, Any]:
    """Receptive field (px, on the network input) of one feature-map cell and of the RPN's
    3x3 window, computed from the trunk's own layers: a one-channel copy of the trunk (every
    conv keeps its kernel, stride, padding and dilation, with equal positive weights; max
    pooling becomes average pooling with the same window; normalisations become identities)
    is back-propagated from the centre cell, and the input pixels that receive a gradient
    are counted. Falls back to the paper's value where the trunk cannot be copied so."""
    name = preset_name(model)
    convs = 1 + len(getattr(model.rpn.head, "more_convs", ()))  # 3x3 convs of the RPN head
    try:
        trunk_rf, window_rf = _measure_rf(model.backbone, convs)
        how = "computed from the trunk's layers"
    except Exception:  # noqa: BLE001 - an unusual trunk: state the known value
        if name not in PAPER_WINDOW_RF:
            return {"trunk": None, "window": None, "how": "unknown for this backbone", "paper": None}
        window_rf = PAPER_WINDOW_RF[name]
        trunk_rf = window_rf - 2 * stride(model)
        window_rf = trunk_rf + 2 * convs * stride(model)
        how = "the paper's value"
    return {"trunk": trunk_rf, "window": window_rf, "how": how, "paper": PAPER_WINDOW_RF.get(name)}


# normalisations (batch, group, frozen, local response: also Caffe's within-channel LRN, whose
# 3x3 energy window the paper's receptive fields do not count) and dropout become identities
_NORM_NAME = re.compile(r"(Norm(\d?d)?|LRN)$")
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d, nn.LocalResponseNorm, nn.Dropout)


def _one_channel(module: nn.Module) -> nn.Module:
    """A copy of `module` with every layer replaced as `receptive_field` describes."""

    def convert(m: nn.Module) -> None:
        for name, child in list(m.named_children()):
            if isinstance(child, nn.Conv2d):
                conv = nn.Conv2d(1, 1, child.kernel_size, child.stride, child.padding, child.dilation, bias=False,
                                 padding_mode=child.padding_mode)
                nn.init.constant_(conv.weight, 1.0 / conv.weight.numel())
                setattr(m, name, conv)
            elif isinstance(child, nn.MaxPool2d):
                setattr(m, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, ceil_mode=child.ceil_mode))
            elif isinstance(child, _NORMS) or _NORM_NAME.search(type(child).__name__):
                setattr(m, name, nn.Identity())
            else:
                convert(child)

    m = copy.deepcopy(module)
    convert(m)
    return m


def _measure_rf(trunk: nn.Module, window: int = 1) -> tuple[int, int]:
    """(receptive field of the centre cell, of the (2 window + 1)^2 cells around it), px."""
    probe = _one_channel(trunk).double().eval()
    size = 512
    while True:
        x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        out = _main_level(probe(x))
        h, w = out.shape[-2:]
        cy, cx = h // 2, w // 2
        extents = []
        for r in (0, window):  # the cell alone, then the RPN's window around it
            g, = torch.autograd.grad(out[0, :, cy - r:cy + r + 1, cx - r:cx + r + 1].sum(), x, retain_graph=True)
            rows = torch.where(g[0, 0].abs().sum(1) > 0)[0]
            cols = torch.where(g[0, 0].abs().sum(0) > 0)[0]
            touches = rows.min() == 0 or cols.min() == 0 or rows.max() == size - 1 or cols.max() == size - 1
            extents.append((int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1), bool(touches)))
        if not any(e[2] for e in extents):
            return max(extents[0][:2]), max(extents[1][:2])
        if size >= 4096:
            raise RuntimeError("receptive field larger than 4096 px")
        size *= 2


# ------------------------------------------------------------------------------ one traced forward pass


def _shape(x: Any) -> Any:
    if isinstance(x, Tensor):
        return list(x.shape)
    if isinstance(x, Mapping):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_shape(v) for v in x]
    if hasattr(x, "tensor"):  # an ImageBatch
        return _shape(x.tensor)
    return None


@torch.no_grad()
def trace(model: nn.Module, image: Tensor) -> dict[str, Any]:
    """The tensor shapes inside one real forward pass `model([image])`, recorded by forward
    hooks on its parts: {part: {"in": shapes, "out": shapes}}, plus "detections"."""
    parts_ = {"transform": model.transform, "backbone": model.backbone, "rpn_head": model.rpn.head,
              "rpn_conv": model.rpn.head.conv, "box_head": model.roi_heads.box_head,
              "predictor": model.roi_heads.predictor}
    shapes: dict[str, Any] = {}
    handles = []
    for name, module in parts_.items():
        def hook(_m, args, output, name=name):
            shapes.setdefault(name, {"in": _shape(args[0]) if args else None, "out": _shape(output)})
        handles.append(module.register_forward_hook(hook))
    try:
        det = model([image])[0]
    finally:
        for h in handles:
            h.remove()
    shapes["detections"] = {"boxes": list(det["boxes"].shape), "labels": list(det["labels"].shape)}
    return shapes
