"""The quantisation of RoI max pooling, shared by both paths: RoI corners rounded half away from
zero, bins [floor(p * size / n), ceil((p + 1) * size / n)) (see `fasterrcnn.ops.roi_pool`)."""

from __future__ import annotations

import torch
from torch import Tensor

_FLT_MAX = float(torch.finfo(torch.float32).max)


def _round_half_away(v: Tensor) -> Tensor:
    """C ``round``: halves go away from zero (torch.round would send 2.5 to 2)."""
    t = torch.trunc(v)
    step = torch.where((v - t).abs() >= 0.5, torch.sign(v), torch.zeros_like(v))
    return t + step


def _bins(
    rois: Tensor, spatial_scale: float, out_h: int, out_w: int, height: int, width: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cell ranges of every bin: hstart/hend [K, out_h] and wstart/wend [K, out_w] (int64),
    computed in the dtype of `rois` with the kernel's order of operations."""
    dt = rois.dtype
    scale = torch.tensor(spatial_scale, dtype=dt, device=rois.device)
    q = _round_half_away(rois[:, 1:5] * scale).to(torch.int64)
    start_w, start_h, end_w, end_h = q.unbind(1)
    roi_w = (end_w - start_w + 1).clamp(min=1)
    roi_h = (end_h - start_h + 1).clamp(min=1)
    bin_h = roi_h.to(dt) / out_h
    bin_w = roi_w.to(dt) / out_w
    ph = torch.arange(out_h + 1, dtype=dt, device=rois.device)
    pw = torch.arange(out_w + 1, dtype=dt, device=rois.device)
    edges_h = ph * bin_h[:, None]
    edges_w = pw * bin_w[:, None]
    hs = (torch.floor(edges_h[:, :-1]).to(torch.int64) + start_h[:, None]).clamp(0, height)
    he = (torch.ceil(edges_h[:, 1:]).to(torch.int64) + start_h[:, None]).clamp(0, height)
    ws = (torch.floor(edges_w[:, :-1]).to(torch.int64) + start_w[:, None]).clamp(0, width)
    we = (torch.ceil(edges_w[:, 1:]).to(torch.int64) + start_w[:, None]).clamp(0, width)
    return hs, he, ws, we
