"""The assembled detector: Faster R-CNN = shared backbone + RPN + Fast R-CNN head (Fig. 2).

`FasterRCNN` follows torchvision's calling convention:

    model.train(); losses = model(images, targets)   # {"rpn_cls", "rpn_reg", "det_cls", "det_reg"}
    model.eval();  dets = model(images)               # [{"boxes", "labels", "scores"}] per image

`images` is a list of float Tensor[3, H, W] in [0, 1], any sizes; resizing (shorter side 600,
longer at most 1000), normalisation and padding happen inside, and boxes come back in each
input image's coordinates. `targets` holds one dict per image with `boxes` (Tensor[N, 4],
x1 y1 x2 y2 in that image's pixels), `labels` (Tensor[N] int64 in 1..K) and optionally
`difficult` (Tensor[N] bool; difficult objects are not used for training, as in the paper's
code).

Training regimes (Sec. 3.2):
* approximate joint training (stage "joint", the default): the four losses are summed by the
  caller; no gradient flows through the proposal coordinates.
* 4-step alternating training uses the stages "rpn" (RPN losses only) and "detector" (Fast
  R-CNN losses on proposals given by the caller, e.g. from `propose()` of an RPN-stage model),
  with `freeze_backbone()` for steps 3 and 4 (shared convs fixed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from fasterrcnn.errors import ConfigError
from fasterrcnn.modeling.backbones import build_backbone
from fasterrcnn.modeling.backbones.base import Backbone, FeatureLevel
from fasterrcnn.modeling.clock import StageClock, no_clock
from fasterrcnn.modeling.config import ModelConfig, preset_config
from fasterrcnn.modeling.poolers import MultiScaleRoIPooler
from fasterrcnn.modeling.roi_heads import RoIHeads
from fasterrcnn.modeling.rpn import RegionProposalNetwork
from fasterrcnn.modeling.transform import DetectionTransform, ImageBatch, check_images
from fasterrcnn.ops import clip_boxes_to_image

__all__ = ["FasterRCNN", "Stage", "build_from_config", "build_model"]

Stage = Literal["joint", "rpn", "detector"]
STAGES: tuple[str, ...] = ("joint", "rpn", "detector")


class FasterRCNN(nn.Module):
    """Faster R-CNN assembled from its parts (torchvision's and detectron2's composition):
    `transform` (a `DetectionTransform`), `backbone` (a `Backbone`: body + optional neck,
    returning named feature levels), `rpn` (a `RegionProposalNetwork`) and `roi_heads`
    (`RoIHeads`). `build_model` makes them from a preset and overrides; `config`, when given,
    is the record of how they were made (saved in checkpoints), never read to run the model."""

    def __init__(
        self,
        transform: DetectionTransform,
        backbone: Backbone,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        *,
        config: ModelConfig | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.config = config
        self._class_names = list(class_names) if class_names is not None else (config.class_names if config else None)
        self.stage: Stage = "joint"
        self.clock: StageClock = no_clock  # per-stage timing hook (fasterrcnn bench model)
        # which backbone parameters train by default (its own frozen stages excluded)
        self._backbone_trainable = {n: p.requires_grad for n, p in self.backbone.named_parameters()}
        self._backbone_frozen = False

    # ------------------------------------------------------------------ configuration helpers

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    def set_stage(self, stage: Stage) -> FasterRCNN:
        """"joint" (default), "rpn" (RPN losses only) or "detector" (Fast R-CNN on given proposals)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        self.stage = stage
        return self

    def freeze_backbone(self, frozen: bool = True) -> FasterRCNN:
        """Fix (or release) the shared conv layers, as steps 3 and 4 of alternating training do.
        Releasing restores the backbone's own frozen stages (e.g. VGG-16's conv1/conv2)."""
        for n, p in self.backbone.named_parameters():
            p.requires_grad_(False if frozen else self._backbone_trainable[n])
        self._backbone_frozen = frozen
        return self.train(self.training)


    def prepare_for_inference(self, channels_last: bool = False, autocast_dtype: torch.dtype | None = None) -> FasterRCNN:
        """Eval mode plus the inference-only speed-ups: BatchNorm folded into the preceding
        convs (small, ResNets); optionally the channels_last memory format (faster with bf16
        autocast on CPU); and, for inference under bf16/fp16 autocast (`autocast_dtype`), the
        backbone's and box head's weights stored in that dtype once, instead of being cast by
        autocast on every call (VGG-16's fc6 alone is 103 M weights). The results under
        autocast are the same, since autocast casts those weights to that dtype anyway; the
        RPN and predictor layers stay float32. Irreversible: do not train or save the model
        afterwards, and run it under autocast of that dtype."""
        from fasterrcnn.modeling.backbones import fold_batchnorm

        self.eval()
        fold_batchnorm(self.backbone)
        fold_batchnorm(self.roi_heads.box_head)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if autocast_dtype is not None and autocast_dtype != torch.float32:
            self.backbone.to(autocast_dtype)
            self.roi_heads.box_head.to(autocast_dtype)
        self._inference_only = True
        return self

    def train(self, mode: bool = True) -> FasterRCNN:
        """As nn.Module.train, but a frozen backbone stays in eval mode (normalisation
        statistics fixed too); a model prepared for inference cannot train."""
        if mode and getattr(self, "_inference_only", False):
            raise RuntimeError("this model was prepared for inference (BatchNorm folded); reload it to train")
        super().train(mode)
        if mode and self._backbone_frozen:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------------------------ forward

    def forward(
        self,
        images: Sequence[Tensor] | Tensor,
        targets: Sequence[dict[str, Tensor]] | None = None,
        *,
        proposals: Sequence[Tensor] | None = None,
        return_proposals: bool = False,
        num_proposals: int | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: `model(images, targets)` -> dict of losses. Eval: `model(images)` -> one
        dict per image with `boxes`, `labels`, `scores` (and `proposals`, `proposal_scores`
        when `return_proposals=True`). `proposals` (one Tensor[P, 4] per image, input-image
        coordinates) replace the RPN's own, as the "detector" stage requires.

        `num_proposals` (eval): return that many RPN proposals (e.g. 2000 for a recall curve)
        while the detector still uses the configured top-M, i.e. the first M of them."""
        images = check_images(images)
        if self.training:
            if targets is None:
                raise ValueError("in training mode the model needs targets: model(images, targets)")
            targets = check_targets(targets, [tuple(img.shape[-2:]) for img in images], self.num_classes)
        elif targets is not None:
            targets = check_targets(targets, [tuple(img.shape[-2:]) for img in images], self.num_classes)
        if self.stage == "detector" and proposals is None:
            raise ValueError("stage 'detector' needs proposals=[Tensor[P, 4] per image]")
        clock = self.clock
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        with clock("transform"):
            batch = self.transform(images)
        device = batch.tensor.device
        gt = None
        if self.training:
            gt = [self._scaled_target(t, s, device) for t, s in zip(targets, batch.scales)]
        with clock("backbone"):
            features = self.backbone(batch.tensor)

        losses: dict[str, Tensor] = {}
        if proposals is not None:
            props = self._given_proposals(proposals, batch, device)
            prop_scores = [torch.ones(p.shape[0], device=device) for p in props]
        else:
            gt_boxes = [g["boxes"] for g in gt] if gt else None
            wanted = None if self.training or num_proposals is None else num_proposals
            out = self.rpn(features, batch.image_sizes, batch.mean_scales(), gt_boxes, num_proposals=wanted, clock=clock,
                           input_size=batch.padded_size)
            props, prop_scores = out.proposals, out.scores
            losses.update(out.losses)
        if self.training and self.stage == "rpn":
            return losses
        if self.training:
            _, det_losses = self.roi_heads(features, props, batch.image_sizes, gt, clock=clock)
            losses.update(det_losses)
            return losses
        if self.stage == "rpn":
            detections = [self._empty_detections(device) for _ in images]
        else:
            top_m = self.rpn.proposal_layer.post_nms_top_n["testing"] if proposals is None else None
            detections, _ = self.roi_heads(features, [p[:top_m] for p in props], batch.image_sizes, clock=clock)
        with clock("postprocess"):
            return self._to_input_coordinates(detections, props, prop_scores, batch, original_sizes, return_proposals)

    @torch.no_grad()
    def propose(self, images: Sequence[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        """RPN proposals only: [{"boxes": Tensor[P, 4], "scores": Tensor[P]}] per image in input
        coordinates, sorted by decreasing objectness (top-M of the current mode)."""
        images = check_images(images)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        batch = self.transform(images)
        out = self.rpn(self.backbone(batch.tensor), batch.image_sizes, batch.mean_scales(),
                       input_size=batch.padded_size)
        results = []
        for p, s, scale, size in zip(out.proposals, out.scores, batch.scales, original_sizes):
            boxes = clip_boxes_to_image(DetectionTransform.scale_boxes(p, (1 / scale[0], 1 / scale[1])), size)
            results.append({"boxes": boxes, "scores": s})
        return results

    # ------------------------------------------------------------------------------ helpers

    def _scaled_target(self, target: dict[str, Tensor], scale: tuple[float, float], device: torch.device) -> dict[str, Tensor]:
        boxes = target["boxes"].to(device=device, dtype=torch.float32)
        labels = target["labels"].to(device)
        difficult = target.get("difficult")
        if difficult is not None and difficult.numel():
            keep = ~difficult.to(device=device, dtype=torch.bool)
            boxes, labels = boxes[keep], labels[keep]
        return {"boxes": DetectionTransform.scale_boxes(boxes, scale), "labels": labels}

    def _given_proposals(self, proposals: Sequence[Tensor], batch: ImageBatch, device: torch.device) -> list[Tensor]:
        if len(proposals) != len(batch.image_sizes):
            raise ValueError(f"got proposals for {len(proposals)} images but {len(batch.image_sizes)} images")
        out = []
        for i, (p, scale, size) in enumerate(zip(proposals, batch.scales, batch.image_sizes)):
            if not isinstance(p, Tensor) or p.dim() != 2 or p.shape[-1] != 4:
                raise ValueError(f"proposals[{i}] must be Tensor[P, 4], got {getattr(p, 'shape', type(p))}")
            p = DetectionTransform.scale_boxes(p.to(device=device, dtype=torch.float32), scale)
            out.append(clip_boxes_to_image(p, size))
        return out

    @staticmethod
    def _empty_detections(device: torch.device) -> dict[str, Tensor]:
        return {
            "boxes": torch.zeros(0, 4, device=device),
            "labels": torch.zeros(0, dtype=torch.long, device=device),
            "scores": torch.zeros(0, device=device),
        }

    @staticmethod
    def _to_input_coordinates(
        detections: list[dict[str, Tensor]],
        proposals: list[Tensor],
        proposal_scores: list[Tensor],
        batch: ImageBatch,
        original_sizes: list[tuple[int, int]],
        return_proposals: bool,
    ) -> list[dict[str, Tensor]]:
        results = []
        for det, p, ps, scale, size in zip(detections, proposals, proposal_scores, batch.scales, original_sizes):
            inv = (1.0 / scale[0], 1.0 / scale[1])
            out = dict(det)
            out["boxes"] = clip_boxes_to_image(DetectionTransform.scale_boxes(det["boxes"], inv), size)
            if return_proposals:
                out["proposals"] = clip_boxes_to_image(DetectionTransform.scale_boxes(p, inv), size)
                out["proposal_scores"] = ps
            results.append(out)
        return results


def check_targets(
    targets: Sequence[dict[str, Any]], image_sizes: Sequence[tuple[int, int]], num_classes: int
) -> list[dict[str, Tensor]]:
    """Validate training targets against their images' (height, width); errors name the image
    index and the field. A box may stick out of its image (the matcher sees the part inside),
    but one with no part inside cannot be a ground-truth object of that image."""
    num_images = len(image_sizes)
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        raise ValueError(f"targets must be a list with one dict per image ({num_images}), got {type(targets).__name__} of length {len(targets) if hasattr(targets, '__len__') else '?'}")
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be Tensor[N, 4], got {getattr(boxes, 'shape', type(boxes))}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"targets[{i}]['labels'] must be Tensor[N] with N = {boxes.shape[0]}, got {getattr(labels, 'shape', type(labels))}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"targets[{i}]['labels'] must be integers, got {labels.dtype}")
        if boxes.is_complex() or boxes.dtype == torch.bool:
            raise ValueError(f"targets[{i}]['boxes'] must be real numbers (float pixels), got {boxes.dtype}")
        if boxes.numel():
            if not bool(torch.isfinite(boxes).all()):
                raise ValueError(f"targets[{i}]['boxes'] has non-finite coordinates")
            bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bool(bad.any()):
                j = int(torch.where(bad)[0][0])
                raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} has no positive width and height")
            h, w = image_sizes[i]
            outside = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
            if bool(outside.any()):
                j = int(torch.where(outside)[0][0])
                raise ValueError(f"targets[{i}]['boxes'][{j}] = {boxes[j].tolist()} lies entirely outside its {w}x{h} image (x1 y1 x2 y2 in pixels)")
            if bool(((labels < 1) | (labels > num_classes)).any()):
                raise ValueError(f"targets[{i}]['labels'] must be in 1..{num_classes} (0 is background), got {labels.tolist()}")
    return list(targets)


def build_model(preset: str = "vgg16", num_classes: int = 20, **overrides: Any) -> FasterRCNN:
    """A Faster R-CNN with the paper's defaults for `preset` ("vgg16", "zf", "small", or a
    ResNet backbone name), `num_classes` object classes, and any config field overridden by
    name, e.g. `build_model("vgg16", 20, min_size=800, rpn={"nms_thresh": 0.6})` or
    `build_model("small", 5, **{"roi_heads.pooler": "roi_align"})`."""
    return build_from_config(preset_config(preset, num_classes, **overrides))


def build_from_config(config: ModelConfig) -> FasterRCNN:
    """The only place where a `ModelConfig` becomes modules: the backbone (and its box head)
    from the backbone registry, then the transform, RPN and RoI heads, passed to `FasterRCNN`."""
    config.validate()
    try:
        body, box_head, info = build_backbone(config.backbone, frozen_stages=config.frozen_stages, **config.backbone_options)
    except ValueError as exc:
        raise ConfigError(f"backbone {config.backbone!r}: {exc}") from exc
    backbone = body if isinstance(body, Backbone) else Backbone(body, [FeatureLevel("0", info.stride, info.out_channels)])
    t = config.transform
    transform = DetectionTransform(
        t.min_size, t.max_size, t.pixel_mean or info.pixel_mean, t.pixel_std or info.pixel_std, t.size_divisible,
        train_min_sizes=t.train_min_size, train_max_size=t.train_max_size, resize_mode=t.resize_mode,
    )
    rpn_levels = [lv for lv in backbone.levels if lv.name not in info.rpn_skip_levels]
    rpn = RegionProposalNetwork.from_config(
        backbone.out_channels, [lv.stride for lv in rpn_levels], config.rpn, config.anchors,
        config.rpn.channels or info.rpn_channels, legacy_plus_one=config.legacy_plus_one,
    )
    output_size = config.roi_heads.output_size or info.roi_output_size
    pooler = None
    if len(backbone.levels) > 1:
        names = [lv.name for lv in backbone.levels if lv.name not in info.pool_skip_levels]
        pooler = MultiScaleRoIPooler(names, output_size, config.roi_heads.sampling_ratio, config.roi_heads.aligned)
    roi_heads = RoIHeads.from_config(
        box_head, info.head_features, config.num_classes, output_size, 1.0 / info.stride, config.roi_heads,
        legacy_plus_one=config.legacy_plus_one, pooler=pooler,
    )
    model = FasterRCNN(transform, backbone, rpn, roi_heads, config=config)
    model.backbone_info = info
    return model
