"""RoI feature extraction: each RoI pooled into a fixed p x p grid of the feature map.

`RoIPooler` is the paper's case (Fast R-CNN, Sec. 2.1): one feature map of stride 16, each
RoI projected onto it (x 1/16) and max-pooled into p x p sub-windows (`roi_pool`), or
RoIAlign's bilinear samples (`roi_align`, Mask R-CNN) as an option.

`MultiScaleRoIPooler` is the feature-pyramid case (FPN, Lin et al. 2017, Eq. 1): an RoI of
width w and height h (network-input pixels) is pooled from level

    k = floor(k0 + log2(sqrt(w h) / 224)),  k0 = 4,  clamped to the pyramid's levels,

with RoIAlign on that level's map. Its semantics are torchvision's `MultiScaleRoIAlign`:
each level's scale is inferred from its size against the largest image of the batch as a
power of two, a 1e-6 is added before the floor, and `aligned=False`, `sampling_ratio=2` by
default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fasterrcnn.ops import box_area, roi_align, roi_pool

__all__ = ["MultiScaleRoIPooler", "RoIPooler", "fpn_levels"]

POOLERS = ("roi_pool", "roi_align")


def _first_map(features: Mapping[str, Tensor] | Tensor) -> Tensor:
    return next(iter(features.values())) if isinstance(features, Mapping) else features


def _float_boxes(rois: list[Tensor]) -> list[Tensor]:
    # Coordinates stay float32 even when the features are bf16: bf16 keeps 8 bits of mantissa,
    # i.e. steps of 2-4 px at 256-1000 px, enough to move a quantised bin by a cell.
    return [r.float() if r.dtype in (torch.float16, torch.bfloat16) else r for r in rois]


class RoIPooler(nn.Module):
    """RoI max pooling (`kind="roi_pool"`, the paper's) or RoIAlign of one feature map."""

    def __init__(self, kind: str, output_size: int, spatial_scale: float, sampling_ratio: int = 2,
                 aligned: bool = True) -> None:
        super().__init__()
        if kind not in POOLERS:
            raise ValueError(f"pooler must be one of {POOLERS}, got {kind!r}")
        self.kind, self.output_size, self.spatial_scale = kind, int(output_size), float(spatial_scale)
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, features: Mapping[str, Tensor] | Tensor, rois: list[Tensor],
                image_sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
        """Tensor[sum R_i, C, p, p] for each image's RoIs (network-input coordinates)."""
        x, boxes = _first_map(features), _float_boxes(rois)
        if self.kind == "roi_align":
            return roi_align(x, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
        return roi_pool(x, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"{self.kind}, output_size={self.output_size}, spatial_scale={self.spatial_scale}"


def fpn_levels(boxes: Tensor, k_min: int, k_max: int, canonical_size: float = 224.0, canonical_level: int = 4,
               eps: float = 1e-6) -> Tensor:
    """FPN's Eq. 1: the pyramid level (k_min..k_max, as an offset from k_min) of each box."""
    size = torch.sqrt(box_area(boxes))
    k = torch.floor(canonical_level + torch.log2(size / canonical_size) + eps)
    return (k.clamp(k_min, k_max) - k_min).to(torch.int64)


class MultiScaleRoIPooler(nn.Module):
    """RoIAlign over the levels `names` of a feature pyramid, each RoI from its FPN level."""

    def __init__(self, names: Sequence[str], output_size: int, sampling_ratio: int = 2, aligned: bool = False,
                 canonical_size: float = 224.0, canonical_level: int = 4) -> None:
        super().__init__()
        self.names = list(names)
        self.output_size, self.sampling_ratio, self.aligned = int(output_size), sampling_ratio, aligned
        self.canonical_size, self.canonical_level = canonical_size, canonical_level

    @staticmethod
    def _scale(feature: Tensor, image_size: tuple[int, int]) -> float:
        """The level's scale as a power of two (its size against the largest image's)."""
        scales = [2.0 ** round(math.log2(f / s)) for f, s in zip(feature.shape[-2:], image_size)]
        if scales[0] != scales[1]:
            raise ValueError(f"feature map {tuple(feature.shape[-2:])} has different scales along y and x for {image_size}")
        return scales[0]

    def forward(self, features: Mapping[str, Tensor], rois: list[Tensor],
                image_sizes: Sequence[tuple[int, int]] | None = None) -> Tensor:
        maps = [features[n] for n in self.names]
        if image_sizes is None:
            raise ValueError("MultiScaleRoIPooler needs the images' sizes to infer the levels' scales")
        largest = (max(s[0] for s in image_sizes), max(s[1] for s in image_sizes))
        scales = [self._scale(m, largest) for m in maps]
        k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
        boxes = _float_boxes(rois)
        flat = torch.cat(boxes)
        batch_idx = torch.cat([torch.full((len(b),), i, dtype=flat.dtype, device=flat.device) for i, b in enumerate(boxes)])
        levels = fpn_levels(flat, k_min, k_max, self.canonical_size, self.canonical_level)
        out = maps[0].new_zeros((flat.shape[0], maps[0].shape[1], self.output_size, self.output_size))
        for lvl, (x, scale) in enumerate(zip(maps, scales)):
            idx = torch.where(levels == lvl)[0]
            if idx.numel():
                rois_l = torch.cat([batch_idx[idx, None], flat[idx]], dim=1)
                out[idx] = roi_align(x, rois_l, self.output_size, scale, self.sampling_ratio, self.aligned).to(out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"levels={self.names}, output_size={self.output_size}, sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
