"""The detector as one traceable function of one image: the form that is exported to ONNX.

`FasterRCNN.forward` works on lists of images and Python sizes (batching, training, options).
`DeployableFasterRCNN` wraps a trained `FasterRCNN` (sharing its modules and weights) and runs
the same inference with every size a tensor, so that a trace of it holds for any image size:

    image Tensor[3, H, W] in [0, 1]
      -> resize (shorter side min_size, longer <= max_size), normalise, pad to the size divisor
      -> backbone (+ neck) -> RPN head on each level, anchors tiled for the map's size
      -> proposal layer: decode, clip, drop small boxes, top-N per level, NMS 0.7, top-M
      -> RoI pooling (max pooling or RoIAlign; a pyramid level per RoI, FPN's Eq. 1)
      -> box head, classifier + class-specific regressor -> softmax, decode, clip,
         score threshold, per-class NMS, the best detections
      -> boxes in the input image's coordinates, labels, scores.

The rules are those of the modules it wraps (the same thresholds and counts, read from them);
only the size arithmetic and the data-dependent operators (`fasterrcnn.export.ops`) are written
here. Eagerly it returns what `FasterRCNN` returns for that image (the tests check it), and the
exported graph returns what it returns (onnxruntime against eager, in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fasterrcnn.export.ops import nms_indices, pad_bottom_right, resize_bilinear, roi_align_rois, roi_max_pool
from fasterrcnn.modeling.faster_rcnn import FasterRCNN
from fasterrcnn.modeling.poolers import MultiScaleRoIPooler, fpn_levels
from fasterrcnn.modeling.roi_heads import box_vote

__all__ = ["DeployableFasterRCNN"]


def _clip(boxes: Tensor, height: Tensor, width: Tensor, one: float) -> Tensor:
    """`clip_boxes_to_image` with the size as tensors: x to [0, W - one], y to [0, H - one]."""
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), (width - one).to(boxes.dtype))
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), (height - one).to(boxes.dtype))
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


class DeployableFasterRCNN(nn.Module):
    """One image Tensor[3, H, W] (float in [0, 1]) -> (boxes Tensor[D, 4] in its pixels, labels
    Tensor[D] int64 in 1..K, scores Tensor[D]), the best first. `min_size`/`max_size` override
    the model's test-time scale."""

    def __init__(self, model: FasterRCNN, min_size: int | None = None, max_size: int | None = None) -> None:
        super().__init__()
        if model.stage == "rpn":
            raise ValueError("an RPN-stage model has no detector to export")
        self.model = model.eval()
        t = model.transform
        self.min_size, self.max_size = min_size or t.min_size, max_size or t.max_size
        self.floor_sizes = t.resize_mode == "torchvision"
        self.antialias = t.resize_mode == "paper"
        self.eval()

    # ------------------------------------------------------------------ input

    def _resize(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The resized, normalised, padded batch [1, 3, H', W'], the resized (h, w) int64 and the
        scales (sy, sx) float64 (resized / input), all tensors."""
        t = self.model.transform
        size = torch._shape_as_tensor(image)[1:]  # int64 [2]: (h0, w0)
        f = size.to(torch.float64)
        scale = torch.minimum(self.min_size / f.min(), self.max_size / f.max())
        target = torch.floor(f * scale) if self.floor_sizes else torch.round(f * scale)
        hw = target.clamp(min=1).to(torch.int64)
        img = resize_bilinear(image, hw[0], hw[1], self.antialias)
        img = (img - t.pixel_mean) / t.pixel_std
        d = t.size_divisible
        padded = torch.div(hw + (d - 1), d, rounding_mode="floor") * d
        img = pad_bottom_right(img, padded[0] - hw[0], padded[1] - hw[1])
        return img[None], hw, hw.to(torch.float64) / f, size

    # ------------------------------------------------------------------ RPN

    def _anchors(self, level: int, feature: Tensor, padded: Tensor) -> Tensor:
        """The level's anchors for this feature map, in the (y, x, a) order of `grid_anchors`."""
        gens = self.model.rpn.anchor_generator
        gen = gens.levels[level]
        fh, fw = torch._shape_as_tensor(feature)[2:].unbind()
        if gens.stride_rule == "input":
            sy = torch.div(padded[0], fh, rounding_mode="floor").float()
            sx = torch.div(padded[1], fw, rounding_mode="floor").float()
        else:
            sy = sx = torch.tensor(float(gen.stride))
        shift_x = torch.arange(fw, dtype=torch.float32) * sx
        shift_y = torch.arange(fh, dtype=torch.float32) * sy
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
        return (shifts + gen.base_anchors[None]).reshape(-1, 4)

    def _level_candidates(self, level: int, feature: Tensor, padded: Tensor, hw: Tensor,
                          min_size: Tensor) -> tuple[Tensor, Tensor]:
        """One level's top-N decoded, clipped boxes and their logits (small boxes at -inf when the
        layer filters before the top-N)."""
        rpn, layer = self.model.rpn, self.model.rpn.proposal_layer
        logits, deltas = rpn.head.flatten(*rpn.head(feature))
        logits, deltas = logits[0], deltas[0]
        one = 1.0 if layer.box_coder.legacy_plus_one else 0.0
        boxes = _clip(layer.box_coder.decode(deltas, self._anchors(level, feature, padded)), hw[0], hw[1], one)
        small = (boxes[:, 2] - boxes[:, 0] + one < min_size) | (boxes[:, 3] - boxes[:, 1] + one < min_size)
        if layer.filter_before_topk:
            logits = logits.masked_fill(small, float("-inf"))
        pre_n, _ = layer.counts()
        k = torch.clamp(torch._shape_as_tensor(logits)[0], max=pre_n)
        idx = logits.topk(k, sorted=True).indices
        return boxes[idx], logits[idx]

    def _proposals(self, maps: list[Tensor], padded: Tensor, hw: Tensor, scales: Tensor) -> Tensor:
        layer = self.model.rpn.proposal_layer
        scale = scales.mean() if layer.scale_min_size else torch.ones((), dtype=torch.float64)
        min_size = (layer.min_size * scale).float()
        per_level = [self._level_candidates(i, m, padded, hw, min_size) for i, m in enumerate(maps)]
        boxes = torch.cat([b for b, _ in per_level])
        logits = torch.cat([s for _, s in per_level])
        levels = torch.cat([torch.full_like(s, i, dtype=torch.int64) for i, (_, s) in enumerate(per_level)])
        if layer.filter_before_topk:
            keep = torch.isfinite(logits)
        else:
            one = 1.0 if layer.box_coder.legacy_plus_one else 0.0
            keep = ((boxes[:, 2] - boxes[:, 0] + one >= min_size) & (boxes[:, 3] - boxes[:, 1] + one >= min_size)
                    & (torch.sigmoid(logits) >= layer.score_thresh))
        boxes, logits, levels = boxes[keep], logits[keep], levels[keep]
        _, post_n = layer.counts()
        kept = nms_indices(boxes, logits, levels, len(maps), layer.nms_thresh, post_n,
                           layer.box_coder.legacy_plus_one)
        return boxes[kept]

    # ------------------------------------------------------------------ detector

    def _pool(self, features: Mapping[str, Tensor], proposals: Tensor) -> Tensor:
        heads = self.model.roi_heads
        pool_input = getattr(heads.box_head, "pool_input", None)
        if pool_input is not None:
            features = {k: pool_input(v) for k, v in features.items()}
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooler = heads.pooler
        if not isinstance(pooler, MultiScaleRoIPooler):
            x = next(iter(features.values()))
            if pooler.kind == "roi_pool":
                return roi_max_pool(x, rois, pooler.output_size, pooler.spatial_scale)
            return roi_align_rois(x, rois, pooler.output_size, pooler.spatial_scale, pooler.sampling_ratio,
                                  pooler.aligned)
        strides = {lv.name: lv.stride for lv in self.model.backbone.levels}
        ks = [int(strides[n]).bit_length() - 1 for n in pooler.names]  # log2 of each level's stride
        level = fpn_levels(proposals, ks[0], ks[-1], pooler.canonical_size, pooler.canonical_level)
        pooled, order = [], []
        for i, name in enumerate(pooler.names):
            idx = torch.nonzero(level == i)[:, 0]
            pooled.append(roi_align_rois(features[name], rois[idx], pooler.output_size, 1.0 / strides[name],
                                         pooler.sampling_ratio, pooler.aligned))
            order.append(idx)
        return torch.cat(pooled)[torch.argsort(torch.cat(order))]

    def _detections(self, features: Mapping[str, Tensor], proposals: Tensor, hw: Tensor
                    ) -> tuple[Tensor, Tensor, Tensor]:
        heads = self.model.roi_heads
        pooled = self._pool(features, proposals)
        cls_logits, deltas = heads.predictor(heads.box_head(pooled).flatten(1))
        probs = F.softmax(cls_logits.float(), dim=-1)
        legacy = heads.box_coder.legacy_plus_one
        one = 1.0 if legacy else 0.0
        num_cls = heads.num_classes + 1
        boxes = heads.box_coder.decode(deltas.float(), proposals).reshape(-1, 4)
        boxes = _clip(boxes, hw[0], hw[1], one).reshape(-1, num_cls, 4)[:, 1:].reshape(-1, 4)
        scores = probs[:, 1:].reshape(-1)
        labels = torch.arange(1, num_cls).repeat(torch._shape_as_tensor(probs)[0:1])
        keep = ((scores > heads.score_thresh) & (boxes[:, 2] - boxes[:, 0] + one > 1e-2)
                & (boxes[:, 3] - boxes[:, 1] + one > 1e-2))
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        kept = nms_indices(boxes, scores, labels - 1, heads.num_classes, heads.nms_thresh,
                           heads.detections_per_img, legacy)
        kept_boxes = boxes[kept]
        if heads.box_vote_thresh is not None:
            kept_boxes = box_vote(kept_boxes, labels[kept], boxes, scores, labels, heads.box_vote_thresh, legacy)
        return kept_boxes, labels[kept], scores[kept]

    # ------------------------------------------------------------------ all of it

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, hw, scales, size = self._resize(image)
        features = self.model.backbone(x)
        if not isinstance(features, Mapping):
            features = {"0": features}
        maps = list(features.values())[: len(self.model.rpn.anchor_generator.levels)]
        proposals = self._proposals(maps, torch._shape_as_tensor(x)[2:], hw, scales)
        boxes, labels, scores = self._detections(features, proposals, hw)
        inv = (1.0 / scales).float()
        boxes = boxes * torch.stack((inv[1], inv[0], inv[1], inv[0]))
        return _clip(boxes, size[0], size[1], 0.0), labels, scores
