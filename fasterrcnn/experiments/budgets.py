"""Budgets of `fasterrcnn experiment`: the data set and the training recipe of each run.

Every run of an experiment is the paper's method (Ren et al. 2015, Sec. 3: the RPN's anchor
labelling and 256-anchor sampling, Eq. 1 with lambda = 10, 128 RoIs per image, 300 test
proposals, per-class NMS 0.3) on the `small` preset trained from scratch, with the changes
that training a small network from scratch on a CPU in minutes needs, the demo's (see
fasterrcnn/cli/demo.py and BENCHMARKS.md): AdamW, a BatchNorm'd box head pooling a 1x1-reduced
map, 2,000 -> 500 training proposals. The paper's post-processing is kept (no box voting).
Anchor sizes are scaled to the data set's objects (`anchor_scales`), as the paper's 128-512 px
bracket PASCAL VOC's objects at 600 px.

Two budgets:
* ``quick``: tiny images (128-160 px), 24 training and 12 test images, 60 iterations a run:
  every experiment end to end in seconds (CI). Its figures say that the pipeline works, not
  what the trends are.
* ``full``: 300 training and 100 test images of 256-332 px, 1,000 iterations of 2 images a run,
  what BENCHMARKS.md reports, with the time it takes (runs shared between experiments are
  trained once: see `Workspace`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fasterrcnn.errors import ConfigError

__all__ = ["BUDGETS", "Budget", "anchor_scales", "budget"]

#: The demo's synthetic data settings that the experiments keep (fasterrcnn/cli/demo.py).
_SYNTH_COMMON: dict[str, Any] = {"classes": ("circle", "square", "triangle", "star", "cross"), "min_visible": 0.5,
                                 "difficult_visible": 0.5}


@dataclass(frozen=True)
class Budget:
    """The data and the training of every run of an experiment at one budget."""

    name: str
    synth: dict[str, Any]  # fasterrcnn.data.synth.SynthConfig fields of the embedded data set
    min_size: int  # training and test shorter side (one scale, as the paper: Sec. 3.3)
    max_size: int
    iters: int  # iterations of one (joint) training run; the 4-step schedule's steps are scaled from it
    batch_size: int = 2
    lr: float = 0.002
    weight_decay: float = 0.01
    warmup_iters: int = 50
    eval_images: int | None = None  # test images evaluated (None: all)
    recipe: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields

    def describe(self) -> str:
        """One line for the reports: what a run of this budget is."""
        return (f"{self.iters} iterations of {self.batch_size} images a run at a shorter side of {self.min_size} px, "
                f"{self.synth['num_train']} training and {self.synth['num_test']} test images")

    def train_fields(self) -> dict[str, Any]:
        """TrainConfig fields shared by every run of this budget (see the module docstring)."""
        return {
            "preset": "small", "min_size": self.min_size, "max_size": self.max_size, "batch_size": self.batch_size,
            "optimizer": "adamw", "lr": self.lr, "weight_decay": self.weight_decay, "warmup_iters": self.warmup_iters,
            "lr_steps": [0.75], "max_iters": self.iters, "val_split": None, **self.recipe,
        }

    @staticmethod
    def model_fields() -> dict[str, Any]:
        """ModelConfig overrides shared by every run: the demo's from-scratch changes, the
        paper's post-processing."""
        return {
            "backbone_options": {"head_norm": "bn", "reduce_before_pool": True, "blocks": [0, 1, 1]},
            "rpn": {"pre_nms_top_n_train": 2000, "post_nms_top_n_train": 500},
        }


QUICK = Budget(
    name="quick",
    synth={**_SYNTH_COMMON, "num_train": 24, "num_test": 12, "min_size": 128, "max_size": 160, "min_object": 20.0,
           "max_object": 110.0, "max_objects": 3, "difficult_size": 16.0, "seed": 0},
    min_size=128, max_size=192, iters=60, warmup_iters=10,
)
FULL = Budget(
    name="full",
    synth={**_SYNTH_COMMON, "num_train": 300, "num_test": 100, "min_size": 256, "max_size": 332, "min_object": 24.0,
           "max_object": 180.0, "max_objects": 5, "difficult_size": 20.0, "seed": 0},
    min_size=256, max_size=384, iters=1000,
)
BUDGETS: dict[str, Budget] = {b.name: b for b in (QUICK, FULL)}


def budget(name: str) -> Budget:
    """The budget called `name`; ConfigError naming --budget otherwise."""
    if name not in BUDGETS:
        raise ConfigError(f"--budget must be one of {', '.join(BUDGETS)}, got {name!r}")
    return BUDGETS[name]


def anchor_scales(object_sizes: list[float], stride: int = 16) -> tuple[float, float, float]:
    """The three anchor scales (multiples of the `stride`-pixel base anchor, as
    `AnchorConfig.scales`) for objects of `object_sizes` (sqrt(w * h) in network-input pixels).

    The paper's three scales, 128, 256 and 512 px (Sec. 3.1.1), are an octave apart around
    PASCAL VOC's objects at 600 px; here the middle one is the power of two nearest the median
    object, the others half and twice it, so that the same three-octave ladder brackets the
    data set's objects."""
    sizes = sorted(s for s in object_sizes if s > 0 and math.isfinite(s))
    if not sizes:
        raise ConfigError("the training split has no objects to scale the anchors to")
    n = len(sizes)
    median = sizes[n // 2] if n % 2 else math.sqrt(sizes[n // 2 - 1] * sizes[n // 2])
    middle = 2.0 ** round(math.log2(median))
    return (middle / 2 / stride, middle / stride, middle * 2 / stride)
