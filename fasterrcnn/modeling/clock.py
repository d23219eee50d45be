"""Stage markers: the detector's forward pass names its stages, so a profiler can time them.

`FasterRCNN.clock` is a callable `clock(stage) -> context manager`; the default does nothing
(one function call per stage). `fasterrcnn bench model` sets a clock that records wall time
per stage (synchronising CUDA). Stages, in order: transform, backbone, rpn_head, proposals,
rpn_loss (training), roi_targets (training), roi_pool, det_head, det_loss (training),
postprocess.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

StageClock = Callable[[str], AbstractContextManager]


def no_clock(stage: str) -> AbstractContextManager:
    """The default clock: times nothing."""
    return contextlib.nullcontext()
