"""BatchNorm synchronised across the data-parallel processes (`--sync-bn`).

With B images per step split over W processes, each replica's BatchNorm layers would
normalise with the statistics of its own B / W images (and their RoIs in the box head); with
one image per process those statistics are too noisy to train a detector from scratch.
Synchronised BatchNorm (Peng et al., MegDet, 2018; torch.nn.SyncBatchNorm) normalises every
replica's activations with the mean and variance of the whole batch: each layer all-reduces
its per-channel sum, sum of squares and count, and its backward pass all-reduces the
matching gradient terms, so the step is that of one process on all B images.

On CUDA this is torch.nn.SyncBatchNorm (NCCL, fused kernels). torch.nn.SyncBatchNorm does not
run on CPU (DistributedDataParallel refuses it there), so CPU runs (gloo) use
`CPUSyncBatchNorm`: the same statistics and gradient (`_SyncBatchNormFunction`) on gloo's
all-reduce. Both keep BatchNorm's parameter and buffer names, so checkpoints do not change;
`revert_sync_batchnorm` gives the trained model plain BatchNorm back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm"]


def _all_reduce_sum(t: Tensor) -> Tensor:
    dist.all_reduce(t)
    return t


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation with the statistics of every process's input, forward and backward.

    Forward: this process's per-channel count n, mean and variance (one fused pass), summed over
    the processes as (n, n * mean, n * E[x^2]) to the whole batch's mean and inverse standard
    deviation; y = x * scale + shift. Backward (the gradient of BatchNorm, Ioffe & Szegedy 2015,
    with the sums taken over the whole batch): this process's sums of dy and dy * (x - mean) are
    summed over the processes (each process's loss depends on every process's input through
    the statistics; DistributedDataParallel then averages the parameters' gradients), and
    dx = w / sigma * (dy - sum_dy / N - (x - mean) / sigma^2 * sum_dy_xmu / N). The weight and
    bias gradients are this process's own sums, as for any parameter under DDP."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        xf = x if x.dtype == torch.float32 else x.float()
        dims = [0, *range(2, x.dim())]
        var_l, mean_l = torch.var_mean(xf, dims, correction=0)
        n_l = torch.full((1,), x.numel() / max(x.shape[1], 1), dtype=torch.float32, device=x.device)
        stats = _all_reduce_sum(torch.cat([n_l * mean_l, n_l * (var_l + mean_l * mean_l), n_l]))
        c = x.shape[1]
        total = max(float(stats[-1]), 1.0)
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp(min=0.0)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight.float()
        shift = -mean * scale if bias is None else bias.float() - mean * scale
        shape = [1, c] + [1] * (x.dim() - 2)
        y = torch.addcmul(shift.view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.total, ctx.dims, ctx.shape = total, dims, shape
        count = torch.tensor(total)
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    def backward(ctx: Any, dy: Tensor, *unused: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        dims, shape, n = ctx.dims, ctx.shape, ctx.total
        dyf = dy if dy.dtype == torch.float32 else dy.float()
        xf = x if x.dtype == torch.float32 else x.float()
        sum_dy = dyf.sum(dims)
        sum_dy_xmu = (dyf * xf).sum(dims) - mean * sum_dy
        grad_weight = (sum_dy_xmu * invstd).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        g = _all_reduce_sum(torch.cat([sum_dy, sum_dy_xmu]))
        g_dy, g_dy_xmu = g.chunk(2)
        w = invstd if weight is None else invstd * weight.float()
        # dx = a * dy + b * x + c, per channel
        b = -w * invstd * invstd * g_dy_xmu / n
        c0 = -w * g_dy / n - b * mean
        dx = torch.addcmul(torch.addcmul(c0.view(shape), dyf, w.view(shape)), xf, b.view(shape))
        return dx.to(x.dtype), grad_weight, grad_bias, None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over the inputs of every process of the default group (any input of >= 2
    dimensions, channels in dimension 1); in eval mode, or outside a process group, it is
    plain BatchNorm."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        y, mean, var, total = _SyncBatchNormFunction.apply(input, self.weight if self.affine else None,
                                                         self.bias if self.affine else None, self.eps)
        if self.track_running_stats:
            self._update_running_stats(mean, var, float(total))
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, total: float) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        unbiased = var * (total / max(total - 1.0, 1.0))
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased, momentum)


_SYNC = (nn.SyncBatchNorm, CPUSyncBatchNorm)


def _swap(module: _BatchNorm, make: type[_BatchNorm]) -> _BatchNorm:
    """A `make` layer holding `module`'s parameters, buffers and training mode."""
    new = make(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if module.affine:
        new.weight, new.bias = module.weight, module.bias
    if module.track_running_stats:
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
    new.train(module.training)
    return new


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace `model`'s BatchNorm layers (in place; the root too, returned) by synchronised
    ones for `device`. FrozenBatchNorm layers keep their fixed statistics."""
    make = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
    if isinstance(model, _BatchNorm) and not isinstance(model, _SYNC):
        new = _swap(model, make)
        new._plain_class = type(model)  # what revert_sync_batchnorm gives back
        return new
    for name, child in model.named_children():
        model.add_module(name, convert_sync_batchnorm(child, device))
    return model


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace synchronised BatchNorm layers (in place; the root too, returned) by the plain
    BatchNorm layers they replaced (BatchNorm2d where that is not known)."""
    if isinstance(model, _SYNC):
        return _swap(model, getattr(model, "_plain_class", nn.BatchNorm2d))
    for name, child in model.named_children():
        model.add_module(name, revert_sync_batchnorm(child))
    return model
