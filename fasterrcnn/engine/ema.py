"""An exponential moving average of the model's weights (Polyak averaging), for evaluation.

Not part of the paper's recipe (off by default, `TrainConfig.ema_decay = 0`): a training aid
that detection code bases offer for short or noisy schedules (mmdetection's EMAHook, d2go's
model EMA, the YOLO trainers). After every optimiser step

    ema = d * ema + (1 - d) * weights,    d = decay * (1 - exp(-step / warmup))

so the average forgets its random start quickly (d is small for the first `warmup` steps) and
then spans about 1 / (1 - decay) steps. Every floating-point parameter and buffer is averaged,
BatchNorm's running statistics included (they are themselves averages of the recent batches);
integer buffers (BatchNorm's batch counter) are copied. The average is kept in float32 on the
model's device and is what the trainer saves as the final model when enabled.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """The moving average of `model`'s state: `update(model)` after each optimiser step,
    `module` is the averaged copy (eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: int = 2000) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if warmup < 0:
            raise ValueError(f"EMA warmup must be >= 0, got {warmup}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[int, tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]] | None = None

    def current_decay(self) -> float:
        """The decay of the next update (ramps up from 0 to `decay` over the first steps)."""
        if self.warmup == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.warmup))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        if self._pairs is None or self._pairs[0] != id(model):  # the same tensors every step: pair them once
            self._pairs = (id(model), _pairs(self.module, model))
        avg, new, copied, src = self._pairs[1]
        if avg:
            torch._foreach_lerp_(avg, new, 1.0 - d)
        for a, s in zip(copied, src):
            a.copy_(s)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay, "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def _pairs(ema: nn.Module, model: nn.Module) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """(averaged, their sources, copied, their sources): the EMA copy's floating-point state
    and the model's, then its other state (integer buffers)."""
    mine = dict(ema.state_dict(keep_vars=True))
    theirs = model.state_dict(keep_vars=True)
    if mine.keys() != theirs.keys():
        missing = sorted(set(mine) ^ set(theirs))
        raise ValueError(f"the model's state no longer matches its EMA copy (differs in {missing[:5]})")
    avg, new, copied, src = [], [], [], []
    for name, a in mine.items():
        s = theirs[name].detach()
        if a.is_floating_point():
            if s.dtype != a.dtype:
                raise ValueError(f"{name}: the model holds {s.dtype}, its average {a.dtype}")
            avg.append(a.data)
            new.append(s)
        else:
            copied.append(a.data)
            src.append(s)
    return avg, new, copied, src
