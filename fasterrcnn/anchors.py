"""Anchors: the reference boxes the RPN regresses from (paper, Sec. 3.1.1).

At every position of the stride-16 feature map the RPN predicts k = 9 proposals, each
relative to an anchor centred on that position: 3 scales (areas 128², 256², 512²) x 3 aspect
ratios (1:2, 1:1, 2:1). The same anchors (and the same weights) at every position make the
method translation invariant.

`generate_base_anchors()` returns the canonical nine anchors of the paper's code (SPEC.md)
for one position; `grid_anchors()` tiles them over an H x W feature map. The order of the
tiled anchors is **(y, x, a)**: row by row over the feature map, then the k anchors of each
position, i.e. anchor index ``(y * W + x) * k + a``. The RPN head's outputs are flattened in
the same order (`permute(0, 2, 3, 1)` of an ``[N, k*C, H, W]`` map viewed as ``[N, H, W, k, C]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "AnchorGenerator",
    "MultiLevelAnchors",
    "anchors_inside",
    "centred_base_anchors",
    "generate_base_anchors",
    "grid_anchors",
]


def generate_base_anchors(
    base_size: int = 16,
    ratios: Sequence[float] = (0.5, 1.0, 2.0),
    scales: Sequence[float] = (8, 16, 32),
) -> Tensor:
    """The k = len(ratios) * len(scales) anchors of one feature-map position, Tensor[k, 4].

    The algorithm of the paper's code (py-faster-rcnn `generate_anchors`): start from a
    `base_size` x `base_size` box; for each ratio (h/w) keep its area and set
    w = round(sqrt(area / ratio)), h = round(w * ratio); then multiply w and h by each scale.
    Boxes are centred on the base box and written (x1, y1, x2, y2) in the +1 pixel
    convention (x2 = x1 + w - 1). Ratios are enumerated first, then scales.

    The centre is that of the base box in 1-based pixel indices, (1 + base_size) / 2 = 8.5
    for stride 16, which gives exactly the nine canonical anchors the paper's code lists
    (SPEC.md): [-83, -39, 100, 56], [-175, -87, 192, 104], ... (running py-faster-rcnn's Python
    port on the 0-based box [0, 0, 15, 15] gives the same boxes shifted by one pixel). Rounding
    is half-to-even, like numpy's. Returns float32.
    """
    if base_size <= 0 or not ratios or not scales:
        raise ValueError(
            f"base_size must be positive and ratios/scales non-empty; got {base_size}, {ratios}, {scales}"
        )
    if any(r <= 0 for r in ratios) or any(s <= 0 for s in scales):
        raise ValueError(f"ratios and scales must be positive; got {ratios}, {scales}")
    ratios_t = torch.as_tensor(ratios, dtype=torch.float64)
    scales_t = torch.as_tensor(scales, dtype=torch.float64)
    centre = (1 + base_size) / 2.0
    area = float(base_size * base_size)
    ws = torch.round(torch.sqrt(area / ratios_t))  # [R]
    hs = torch.round(ws * ratios_t)
    ws = (ws[:, None] * scales_t[None, :]).reshape(-1)  # ratio-major, then scale
    hs = (hs[:, None] * scales_t[None, :]).reshape(-1)
    half_w, half_h = 0.5 * (ws - 1), 0.5 * (hs - 1)
    anchors = torch.stack((centre - half_w, centre - half_h, centre + half_w, centre + half_h), dim=1)
    return anchors.to(torch.float32)


def centred_base_anchors(sizes: Sequence[float], ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> Tensor:
    """The anchors of one position in the feature-pyramid convention (FPN, Lin et al. 2017,
    Sec. 4.1; torchvision's and detectron2's generators): for each ratio r = h / w and size
    s, a box of area s^2 with w = s / sqrt(r), h = s * sqrt(r), centred on (0, 0) and rounded to
    whole pixels, continuous coordinates. Ratios are enumerated first, then sizes (torchvision's
    order). Tensor[len(ratios) * len(sizes), 4], float32."""
    if not sizes or not ratios or any(s <= 0 for s in sizes) or any(r <= 0 for r in ratios):
        raise ValueError(f"sizes and ratios must be non-empty and positive; got {sizes}, {ratios}")
    sizes_t = torch.as_tensor(sizes, dtype=torch.float32)
    h_ratios = torch.sqrt(torch.as_tensor(ratios, dtype=torch.float32))
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * sizes_t[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes_t[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def grid_anchors(
    base_anchors: Tensor,
    feature_size: tuple[int, int],
    stride: int | tuple[int, int] = 16,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Tile `base_anchors` (Tensor[k, 4]) over a feature map of `feature_size` = (H, W).

    The anchor of position (y, x) is the base anchor shifted by (x * stride_x, y * stride_y).
    Returns Tensor[H * W * k, 4] in (y, x, a) order (see the module docstring).
    """
    if base_anchors.dim() != 2 or base_anchors.shape[1] != 4:
        raise ValueError(f"base_anchors must be Tensor[k, 4], got {tuple(base_anchors.shape)}")
    height, width = (int(v) for v in feature_size)
    if height < 0 or width < 0:
        raise ValueError(f"feature_size must be non-negative (H, W), got {feature_size!r}")
    sy, sx = (stride, stride) if isinstance(stride, (int, float)) else stride
    device = base_anchors.device if device is None else device
    shift_x = torch.arange(width, device=device, dtype=dtype) * sx
    shift_y = torch.arange(height, device=device, dtype=dtype) * sy
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
    return (shifts + base_anchors.to(device=device, dtype=dtype)[None]).reshape(-1, 4)


def anchors_inside(anchors: Tensor, image_size: tuple[int, int], allowed_border: float = 0.0) -> Tensor:
    """Boolean mask of anchors lying inside an image of `image_size` = (H, W).

    The paper ignores cross-boundary anchors in training (Sec. 3.3; the code's allowed border
    is 0): an anchor counts only if x1, y1 >= -border and x2 <= W + border, y2 <= H + border.
    A negative `allowed_border` disables the test (every anchor is kept), as in detectron.
    """
    if allowed_border < 0:
        return torch.ones(anchors.shape[0], dtype=torch.bool, device=anchors.device)
    height, width = image_size
    return (
        (anchors[:, 0] >= -allowed_border)
        & (anchors[:, 1] >= -allowed_border)
        & (anchors[:, 2] <= width + allowed_border)
        & (anchors[:, 3] <= height + allowed_border)
    )


class AnchorGenerator(nn.Module):
    """Anchors for a feature map, cached per (size, device, dtype).

    Holds the base anchors of `generate_base_anchors(base_size=stride, ratios, scales)` as a
    buffer (so `.to(device)` moves them) and tiles them on demand. The cache is per instance
    and bounded, never global.
    """

    def __init__(
        self,
        stride: int = 16,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales: Sequence[float] = (8, 16, 32),
        base_size: int | None = None,
        cache_size: int = 16,
        *,
        base_anchors: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.stride = int(stride)
        self.ratios = tuple(float(r) for r in ratios)
        self.scales = tuple(float(s) for s in scales)
        if base_anchors is None:  # the paper's code: scales x stride, +1 pixel convention
            base_anchors = generate_base_anchors(base_size or self.stride, self.ratios, self.scales)
        self.register_buffer("base_anchors", base_anchors.to(torch.float32), persistent=False)
        self._cache: dict[tuple, Tensor] = {}
        self._cache_size = cache_size

    @property
    def num_anchors(self) -> int:
        """k, the number of anchors per feature-map position."""
        return int(self.base_anchors.shape[0])

    def forward(
        self, feature_size: tuple[int, int], dtype: torch.dtype = torch.float32, stride: tuple[int, int] | None = None
    ) -> Tensor:
        """The anchors of a map of `feature_size` = (H, W), shifted by `stride` = (sy, sx)
        pixels per position (default: this generator's stride on both axes)."""
        step = (self.stride, self.stride) if stride is None else (int(stride[0]), int(stride[1]))
        key = (int(feature_size[0]), int(feature_size[1]), self.base_anchors.device, dtype, step)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = grid_anchors(self.base_anchors, key[:2], step, dtype=dtype)
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = anchors
        return anchors

    def extra_repr(self) -> str:
        return f"stride={self.stride}, ratios={self.ratios}, scales={self.scales}"


class MultiLevelAnchors(nn.Module):
    """One `AnchorGenerator` per feature level (each with its stride and anchors, the same
    number k per position, since one RPN head is shared by all levels: FPN, Sec. 4.1).

    `stride_rule` says how far apart a level's anchors are: "declared", each generator's
    stride (the paper's code: `feat_stride`); "input", the padded input size divided (floor)
    by the map's size on each axis, as torchvision's `AnchorGenerator` does. They differ where
    a map is rounded up, e.g. an FPN's max-pooled level of a 480-px input: 8 rows, 480 // 8 = 60
    px apart, not 64.

    `forward(feature_sizes)` returns the anchors of every level concatenated in level order
    (within a level, (y, x, a) order), and the number of anchors of each level. With one level
    this is exactly that level's `AnchorGenerator`."""

    def __init__(self, generators: Sequence[AnchorGenerator], stride_rule: str = "declared") -> None:
        super().__init__()
        if stride_rule not in ("declared", "input"):
            raise ValueError(f"stride_rule must be 'declared' or 'input', got {stride_rule!r}")
        self.stride_rule = stride_rule
        if not generators:
            raise ValueError("MultiLevelAnchors needs at least one AnchorGenerator")
        ks = {g.num_anchors for g in generators}
        if len(ks) != 1:
            raise ValueError(f"every level needs the same number of anchors per position (one shared head), got {sorted(ks)}")
        self.levels = nn.ModuleList(generators)

    @classmethod
    def centred(
        cls, strides: Sequence[int], sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]],
        stride_rule: str = "declared",
    ) -> MultiLevelAnchors:
        """The feature-pyramid anchors: level l has stride strides[l], sizes[l] and ratios[l]
        (`centred_base_anchors`), e.g. torchvision's R50-FPN: sizes ((32,), (64,), ...)."""
        if not (len(strides) == len(sizes) == len(ratios)):
            raise ValueError(f"one sizes and ratios entry per level: {len(strides)} strides, {len(sizes)} sizes, {len(ratios)} ratios")
        return cls([AnchorGenerator(st, r, [s / st for s in sz], base_anchors=centred_base_anchors(sz, r))
                    for st, sz, r in zip(strides, sizes, ratios)], stride_rule)

    @property
    def num_anchors(self) -> int:
        """k, the anchors per position (every level's)."""
        return self.levels[0].num_anchors

    @property
    def strides(self) -> list[int]:
        return [g.stride for g in self.levels]

    def extra_repr(self) -> str:
        return f"stride_rule={self.stride_rule!r}"

    def forward(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        dtype: torch.dtype = torch.float32,
        input_size: tuple[int, int] | None = None,
    ) -> tuple[Tensor, list[int]]:
        """`input_size`: the padded batch's (H, W), needed by the "input" stride rule."""
        if len(feature_sizes) != len(self.levels):
            raise ValueError(f"got {len(feature_sizes)} feature maps for {len(self.levels)} anchor levels")
        strides = [None] * len(self.levels)
        if self.stride_rule == "input":
            if input_size is None:
                raise ValueError("stride_rule='input' needs the padded input size (input_size=(H, W))")
            strides = [(int(input_size[0]) // max(int(h), 1), int(input_size[1]) // max(int(w), 1))
                       for h, w in feature_sizes]
        per_level = [g(tuple(size), dtype, st) for g, size, st in zip(self.levels, feature_sizes, strides)]
        anchors = per_level[0] if len(per_level) == 1 else torch.cat(per_level)
        return anchors, [a.shape[0] for a in per_level]
