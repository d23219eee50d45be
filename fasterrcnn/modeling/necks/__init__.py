"""Necks: modules between a multi-level backbone body and the detection heads.

- `FPN`: the Feature Pyramid Network (Lin et al. 2017, Sec. 3): lateral 1x1 convs, a
  nearest-neighbour top-down pathway, 3x3 output convs and a max-pooled extra level 'pool';
  torchvision's level names and semantics, `FPN.torchvision_key_map` for its checkpoints.
"""

from __future__ import annotations

from .fpn import FPN, POOL_NAME

__all__ = ["FPN", "POOL_NAME"]
