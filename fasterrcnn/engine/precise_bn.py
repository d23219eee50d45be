"""BatchNorm statistics re-estimated for the final weights ("PreciseBN").

BatchNorm layers normalise with batch statistics in training and with running averages at test
time. The running averages (momentum 0.1) mostly reflect the last few dozen batches, computed
with weights that kept changing; after a short schedule that still moves fast they lag behind
the final weights. Wu and Johnson ("Rethinking 'Batch' in BatchNorm", 2021; detectron2's
PreciseBN hook) recompute them at the end: reset the statistics, run the final model forward in
training mode over N training batches without gradients, and keep the plain average of the
batch means and variances (BatchNorm's cumulative mode, momentum None). Not part of the paper
(VGG-16 and ZF have no BatchNorm); off by default (`TrainConfig.precise_bn_iters = 0`).

Layers in eval mode when the model is in training mode (frozen stages) are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["update_bn_stats"]


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterable[Any], forward: Callable[[Any], Any], num_batches: int) -> int:
    """Recompute the running statistics of `model`'s trainable BatchNorm layers as the average
    over `num_batches` batches, each run as `forward(batch)` with the model in training mode.
    Returns the number of batches used (fewer if `batches` runs out; at least one is needed)."""
    was_training = model.training
    model.train()
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not layers or num_batches <= 0:
        model.train(was_training)
        return 0
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    used = 0
    try:
        for batch in batches:
            if used >= num_batches:
                break
            forward(batch)
            used += 1
        if used == 0:
            raise ValueError("update_bn_stats: no batches to estimate the BatchNorm statistics from")
    except BaseException:  # the statistics as they were, not half-estimated ones
        for m, (mean, var, count) in zip(layers, saved):
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
            m.num_batches_tracked.copy_(count)
        raise
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.train(was_training)
    return used
