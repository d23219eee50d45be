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
`CPUSyncBatchNorm`: the same statistics written with the differentiable all-reduce `_AllReduceSum`, whose backward pass sums the gradients of the
statistics over the processes. Both keep BatchNorm's parameter and buffer names, so checkpoints do not change;
`revert_sync_batchnorm` gives the trained model plain BatchNorm back.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """The sum over the processes, differentiable: the gradient of every process's input is
    the sum over the processes of the gradients of the output (each process's loss depends on
    every process's input through the sum)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


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
        x = input.float()
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / max(x.shape[1], 1)], dtype=torch.float32, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        c = x.shape[1]
        n = float(stats[-1].detach())
        total = max(n, 1.0)
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp(min=0.0)  # biased, for normalising
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total)
        return y.to(input.dtype)

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
