"""Configuration of the detector: dataclasses whose defaults are the paper's numbers.

Every number of SPEC.md that the network uses lives here, once. Values marked (code) come
from the paper's Caffe code (py-faster-rcnn) where the paper leaves them open. Fields that
default to None take the backbone's value (`BackboneInfo`: RPN width, RoI output size,
normalisation).

`ModelConfig.to_dict()` / `ModelConfig.from_dict()` round-trip through plain Python types,
so a checkpoint can store the config and be loaded with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from fasterrcnn.coerce import coerce, field_hints
from fasterrcnn.errors import ConfigError

__all__ = [
    "PRESETS",
    "register_preset",
    "AnchorConfig",
    "ModelConfig",
    "RPNConfig",
    "RoIHeadConfig",
    "TransformConfig",
    "apply_overrides",
    "preset_config",
]


@dataclass
class AnchorConfig:
    """Sec. 3.1.1: 3 scales x 3 aspect ratios = k = 9 anchors per position, stride 16."""

    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # h / w
    scales: tuple[float, ...] = (8.0, 16.0, 32.0)  # x stride 16 -> 128, 256, 512 px sides
    # feature pyramids (FPN, Sec. 4.1): absolute anchor sizes per level, centred anchors
    # (torchvision's convention); None: the paper's `scales` x stride on every level
    sizes: tuple[tuple[float, ...], ...] | None = None
    # how far apart a level's anchors are: "declared", the backbone's stride (the paper's
    # code); "input", padded input size // map size per axis (torchvision's AnchorGenerator)
    stride_rule: Literal["declared", "input"] = "declared"


@dataclass
class RPNConfig:
    """Region Proposal Network: head, anchor labelling, sampling, loss, proposal layer."""

    channels: int | None = None  # 3x3 conv width: 512 (VGG-16), 256 (ZF); None = backbone's
    objectness: Literal["softmax", "sigmoid"] = "softmax"  # paper: 2k scores + softmax
    # anchor labelling (Sec. 3.1.2)
    pos_iou_thresh: float = 0.7  # positive: IoU > 0.7 ...
    highest_iou_rule: bool = True  # ... or the highest IoU for some gt box (ties included)
    neg_iou_thresh: float = 0.3  # negative: IoU < 0.3 with every gt box
    allowed_border: float = 0.0  # (code) cross-boundary anchors ignored in training; < 0: keep all
    batch_size_per_image: int = 256  # anchors sampled per image
    positive_fraction: float = 0.5  # up to 1:1
    # loss: (1/Ncls) sum Lcls + lambda (1/Nreg) sum p* Lreg  (Eq. 1)
    loss_lambda: float = 10.0
    reg_normalizer: Literal["locations", "sampled"] = "locations"  # Nreg: anchor locations (paper) or sampled anchors
    smooth_l1_beta: float = 1.0 / 9.0  # (code) sigma = 3 for the RPN; the paper's Fast R-CNN loss has 1
    # proposal layer (Sec. 3.3; counts from the code)
    pre_nms_top_n_train: int = 12000
    post_nms_top_n_train: int = 2000
    pre_nms_top_n_test: int = 6000
    post_nms_top_n_test: int = 300
    nms_thresh: float = 0.7
    min_box_size: float = 16.0  # (code) px in the input image (x the resize scale at network input)
    scale_min_box_size: bool = True  # (code) min_box_size in input-image px; False: network px (torchvision)
    filter_before_topk: bool = True  # (code) small boxes dropped before the top-N; False: after (torchvision)
    proposal_score_thresh: float = 0.0  # proposals below this probability dropped (torchvision: 0)
    head_convs: int = 1  # 3x3 conv layers of the head (paper: 1; torchvision v2: 2)
    init_std: float = 0.01  # N(0, 0.01) for the new layers (Sec. 3.1.3)


@dataclass
class RoIHeadConfig:
    """Fast R-CNN head: proposal targets, RoI pooling, 2-FC head, predictors, post-processing."""

    pooler: Literal["roi_pool", "roi_align"] = "roi_pool"  # the paper's RoI max pooling
    output_size: int | None = None  # 7 (VGG-16), 6 (ZF); None = backbone's
    sampling_ratio: int = 2  # roi_align only
    aligned: bool = True  # roi_align only
    # proposal targets (code)
    batch_size_per_image: int = 128
    positive_fraction: float = 0.25
    fg_iou_thresh: float = 0.5  # foreground IoU >= 0.5
    bg_iou_thresh_hi: float = 0.5  # background IoU in [bg_lo, 0.5)
    bg_iou_thresh_lo: float = 0.1
    add_gt_as_proposals: bool = True
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # 1 / stds (0.1, 0.1, 0.2, 0.2)
    smooth_l1_beta: float = 1.0
    cls_init_std: float = 0.01
    bbox_init_std: float = 0.001
    # post-processing (code)
    score_thresh: float = 0.05
    nms_thresh: float = 0.3
    detections_per_img: int = 100
    # box voting (Gidaris & Komodakis 2015; Detectron's TEST.BBOX_VOTE), not in the paper: each
    # box kept by NMS becomes the score-weighted mean of the same-class boxes before NMS that
    # overlap it with IoU >= this threshold (itself included). None: off (the paper's code).
    box_vote_thresh: float | None = None


@dataclass
class TransformConfig:
    """Input scaling (Sec. 3.3): shorter side 600 px, longer side at most 1000 (code).

    `min_size`/`max_size` are the inference size, and the training size unless
    `train_min_size` is given: training shorter sides from which one is drawn per image
    (multi-scale training, detectron2's MIN_SIZE_TRAIN "choice"; the paper trains and tests at
    one scale, Sec. 3.3), with the longer side at most `train_max_size` (default `max_size`).
    """

    min_size: int = 600
    max_size: int = 1000
    train_min_size: tuple[int, ...] | None = None  # None: train at min_size
    train_max_size: int | None = None  # None: max_size
    pixel_mean: tuple[float, float, float] | None = None  # in [0, 1] units; None = backbone's
    pixel_std: tuple[float, float, float] | None = None
    size_divisible: int = 16  # batches are padded to a multiple of the stride
    resize_mode: Literal["paper", "torchvision"] = "paper"  # torchvision: floored sizes, no antialiasing


@dataclass
class ModelConfig:
    """The whole detector. `num_classes` is K, the number of object classes (no background)."""

    backbone: str = "vgg16"
    preset: str | None = None  # the preset it was made from (None: older checkpoints)
    num_classes: int = 20
    class_names: list[str] | None = None
    frozen_stages: int | None = None  # None = the backbone's default (VGG-16: conv1, conv2)
    backbone_options: dict[str, Any] = field(default_factory=dict)  # e.g. small: {"norm": "gn"}
    legacy_plus_one: bool = False  # the paper code's +1 pixel convention in box coding / IoU
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_heads: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (tuples become lists): safe for `weights_only` checkpoints."""

        def plain(v: Any) -> Any:
            if isinstance(v, (tuple, list)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        cfg = cls()
        apply_overrides(cfg, d, where="config")
        return cfg

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value cannot work."""
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"class_names has {len(self.class_names)} names but num_classes is {self.num_classes}"
            )
        r, h, t = self.rpn, self.roi_heads, self.transform
        checks = [
            (0.0 <= r.neg_iou_thresh <= r.pos_iou_thresh <= 1.0, "rpn.neg_iou_thresh <= rpn.pos_iou_thresh in [0, 1]"),
            (0.0 < r.positive_fraction <= 1.0, "rpn.positive_fraction in (0, 1]"),
            (r.batch_size_per_image > 0, "rpn.batch_size_per_image > 0"),
            (0 < r.post_nms_top_n_train <= r.pre_nms_top_n_train, "0 < rpn.post_nms_top_n_train <= rpn.pre_nms_top_n_train"),
            (0 < r.post_nms_top_n_test <= r.pre_nms_top_n_test, "0 < rpn.post_nms_top_n_test <= rpn.pre_nms_top_n_test"),
            (0.0 <= r.nms_thresh <= 1.0, "rpn.nms_thresh in [0, 1]"),
            (r.objectness in ("softmax", "sigmoid"), "rpn.objectness is 'softmax' or 'sigmoid'"),
            (r.reg_normalizer in ("locations", "sampled"), "rpn.reg_normalizer is 'locations' or 'sampled'"),
            (r.smooth_l1_beta >= 0 and h.smooth_l1_beta >= 0, "smooth_l1_beta >= 0"),
            (h.pooler in ("roi_pool", "roi_align"), "roi_heads.pooler is 'roi_pool' or 'roi_align'"),
            (h.output_size is None or h.output_size > 0, "roi_heads.output_size > 0"),
            (0.0 <= h.bg_iou_thresh_lo <= h.bg_iou_thresh_hi <= 1.0, "0 <= roi_heads.bg_iou_thresh_lo <= bg_iou_thresh_hi <= 1"),
            (0.0 < h.positive_fraction <= 1.0, "roi_heads.positive_fraction in (0, 1]"),
            (h.batch_size_per_image > 0, "roi_heads.batch_size_per_image > 0"),
            (0.0 <= h.nms_thresh <= 1.0, "roi_heads.nms_thresh in [0, 1]"),
            (h.box_vote_thresh is None or 0.0 < h.box_vote_thresh <= 1.0, "roi_heads.box_vote_thresh in (0, 1] or null"),
            (h.detections_per_img > 0, "roi_heads.detections_per_img > 0"),
            (len(h.bbox_reg_weights) == 4 and all(w > 0 for w in h.bbox_reg_weights), "roi_heads.bbox_reg_weights: 4 positive numbers"),
            (0 < t.min_size <= t.max_size, "0 < transform.min_size <= transform.max_size"),
            (t.train_min_size is None or (len(t.train_min_size) > 0 and all(
                isinstance(x, int) and not isinstance(x, bool) and 0 < x <= (t.train_max_size or t.max_size)
                for x in t.train_min_size)),
             "transform.train_min_size: integers in (0, transform.train_max_size (or max_size)]"),
            (t.train_max_size is None or t.train_max_size > 0, "transform.train_max_size > 0"),
            (t.size_divisible >= 1, "transform.size_divisible >= 1"),
            (len(self.anchors.ratios) > 0 and all(x > 0 for x in self.anchors.ratios), "anchors.ratios: positive numbers"),
            (len(self.anchors.scales) > 0 and all(x > 0 for x in self.anchors.scales), "anchors.scales: positive numbers"),
        ]
        for ok, rule in checks:
            if not ok:
                raise ConfigError(f"invalid model configuration: expected {rule}")


_SECTIONS = ("anchors", "rpn", "roi_heads", "transform")


def apply_overrides(cfg: ModelConfig, overrides: dict[str, Any], where: str = "override") -> ModelConfig:
    """Set fields of `cfg` in place from a (possibly nested) dict.

    Accepts nested sections (``{"rpn": {"nms_thresh": 0.6}}``), dotted keys
    (``{"rpn.nms_thresh": 0.6}``), and bare field names when they name exactly one field
    (``{"min_size": 400}`` -> transform.min_size), and ``backbone_options.KEY`` for one
    keyword of the backbone builder (``{"backbone_options.head_norm": "bn"}``; the builder
    checks the keyword). Unknown or ambiguous names raise a ConfigError listing the valid ones.
    """
    for key, value in overrides.items():
        if key in _SECTIONS and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                _set(cfg, f"{key}.{sub_key}", sub_value, where)
        else:
            _set(cfg, key, value, where)
    return cfg


def _set(cfg: ModelConfig, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "backbone_options" and parts[1]:
        cfg.backbone_options = {**cfg.backbone_options, parts[1]: value}
        return
    if len(parts) == 1:
        top = {f.name for f in dataclasses.fields(ModelConfig)} - set(_SECTIONS)
        if key in top:
            parts = [key]
        else:
            owners = [s for s in _SECTIONS if key in {f.name for f in dataclasses.fields(getattr(cfg, s))}]
            if len(owners) == 1:
                parts = [owners[0], key]
            elif len(owners) > 1:
                raise ConfigError(
                    f"{where} {key!r} is ambiguous: write one of " + ", ".join(f"{o}.{key}" for o in owners)
                )
            else:
                raise ConfigError(f"unknown {where} {key!r}; valid names: {', '.join(sorted(_all_names()))}")
    if len(parts) == 2 and parts[0] in _SECTIONS:
        obj = getattr(cfg, parts[0])
    elif len(parts) == 1:
        obj = cfg
    else:
        raise ConfigError(f"unknown {where} {key!r}; valid names: {', '.join(sorted(_all_names()))}")
    name = parts[-1]
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ConfigError(f"unknown {where} {key!r}; valid names: {', '.join(sorted(_all_names()))}")
    setattr(obj, name, coerce(value, field_hints(type(obj))[name], key))


def _all_names() -> list[str]:
    cfg = ModelConfig()
    names = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in _SECTIONS]
    for s in _SECTIONS:
        names += [f"{s}.{f.name}" for f in dataclasses.fields(getattr(cfg, s))]
    return names


# Presets: a backbone from the backbone registry and the config values that differ from the
# paper's defaults. vgg16 and zf are the paper's two models with every paper default; `small`
# is a compact CPU backbone (trained from scratch) with the same method; resnet* are the C4
# layout; the *_fpn presets are torchvision's COCO detection models, whose values are
# torchvision's (its FasterRCNN defaults and model builders).
_PRESETS: dict[str, tuple[str, dict[str, Any]]] = {}


def register_preset(name: str, backbone: str, **overrides: Any) -> None:
    """Add a preset: `backbone` (a registered backbone) with config `overrides`
    (see docs/ARCHITECTURE.md, "Adding a backbone")."""
    if name in _PRESETS:
        raise ValueError(f"preset {name!r} is registered already")
    _PRESETS[name] = (backbone, overrides)


_TORCHVISION = {
    "transform": {"min_size": 800, "max_size": 1333, "size_divisible": 32, "resize_mode": "torchvision"},
    "anchors": {"sizes": [[32], [64], [128], [256], [512]], "stride_rule": "input"},
    "rpn": {"objectness": "sigmoid", "pre_nms_top_n_train": 2000, "post_nms_top_n_train": 2000,
            "pre_nms_top_n_test": 1000, "post_nms_top_n_test": 1000, "min_box_size": 1e-3,
            "scale_min_box_size": False, "filter_before_topk": False, "allowed_border": -1.0,
            "loss_lambda": 1.0, "reg_normalizer": "sampled"},
    "roi_heads": {"pooler": "roi_align", "sampling_ratio": 2, "aligned": False, "batch_size_per_image": 512,
                  "bg_iou_thresh_lo": 0.0, "nms_thresh": 0.5, "smooth_l1_beta": 1.0 / 9.0},
}
_MOBILE = {"anchors": {"sizes": [[32, 64, 128, 256, 512]] * 3, "stride_rule": "input"}, "rpn": {"proposal_score_thresh": 0.05}}

for _p in ("vgg16", "zf", "small", "resnet18", "resnet34", "resnet50", "resnet101"):
    register_preset(_p, _p)
register_preset("resnet50_fpn", "resnet50_fpn", **_TORCHVISION)
register_preset("resnet50_fpn_v2", "resnet50_fpn_v2", **{**_TORCHVISION, "rpn": {**_TORCHVISION["rpn"], "head_convs": 2}})
register_preset("mobilenet_v3_large_fpn", "mobilenet_v3_large_fpn",
                **{**_TORCHVISION, "anchors": _MOBILE["anchors"], "rpn": {**_TORCHVISION["rpn"], **_MOBILE["rpn"]}})
register_preset("mobilenet_v3_large_320_fpn", "mobilenet_v3_large_fpn",
                **{**_TORCHVISION, "anchors": _MOBILE["anchors"],
                   "transform": {**_TORCHVISION["transform"], "min_size": 320, "max_size": 640},
                   "rpn": {**_TORCHVISION["rpn"], **_MOBILE["rpn"], "pre_nms_top_n_test": 150, "post_nms_top_n_test": 150}})


# EfficientNet-Lite, for fine-tuning from its ImageNet weights: the C4 layout keeps the paper's
# method (anchors, sampling, losses, 300 proposals) with RoIAlign in place of RoI max pooling
# (as detectron2's C4 models); the FPN layout is torchvision's FPN recipe at the paper's input
# size, with two anchor sizes an octave apart per level (strides 8..64) and 300 proposals.
_LITE_C4 = {"roi_heads": {"pooler": "roi_align", "sampling_ratio": 2, "aligned": True}}
_LITE_FPN = {**_TORCHVISION,
             "transform": {"min_size": 600, "max_size": 1000, "size_divisible": 32},
             "anchors": {"sizes": [[32, 64], [64, 128], [128, 256], [256, 512]], "stride_rule": "declared"},
             "rpn": {**_TORCHVISION["rpn"], "pre_nms_top_n_test": 1000, "post_nms_top_n_test": 300}}
for _n in (0, 1, 2):
    register_preset(f"efficientnet_lite{_n}", f"efficientnet_lite{_n}", **_LITE_C4)
    register_preset(f"efficientnet_lite{_n}_fpn", f"efficientnet_lite{_n}_fpn", **_LITE_FPN)

PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset_config(preset: str, num_classes: int, **overrides: Any) -> ModelConfig:
    """The config of a preset with `num_classes` object classes and `overrides` applied."""
    if preset not in _PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    backbone, defaults = _PRESETS[preset]
    cfg = ModelConfig(backbone=backbone, num_classes=num_classes, preset=preset)
    apply_overrides(cfg, defaults, where="preset")
    apply_overrides(cfg, overrides)
    cfg.validate()
    return cfg
