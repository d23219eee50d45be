"""Data-parallel training in several processes (`TrainConfig.processes`).

Each process holds a replica of the model and trains on its share of every mini-batch: of a
batch of B images, process r takes images r, r + P, ... (P processes, B a multiple of P). After
the backward pass the gradients are averaged over the processes with one all-reduce of a
flat buffer, so every replica takes the same optimiser step and stays identical; the loss
values are averaged the same way, for the log and for the non-finite-loss check (every process
stops together). BatchNorm layers normalise with their own process's images and RoIs; their
running statistics are averaged before every checkpoint.

Why on a CPU: a detector's training step is many medium-sized operations, and two threads
working on one op at a time leave cores idle (on the 2-core demo machine the training process
used ~1.2 of its 2 cores); two single-threaded processes on half the batch each keep both
busy (BENCHMARKS.md has the measured step times). On CUDA each process drives one GPU (NCCL).

Only the rank-0 process logs, shows the progress bar and writes files; `launch` starts the
processes (torch.multiprocessing's spawn: an exception in one process stops them all and is
re-raised in the caller) on a free local TCP port. Spawned processes re-import the caller's
main module, so a script that trains with `processes` > 1 must do so under
`if __name__ == "__main__":`.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Sampler

from fasterrcnn.errors import error_from_traceback

__all__ = ["Context", "launch", "shard_batches"]


class Context:
    """This process's place in the group: `rank` of `world` (world 1: no group, no-ops)."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = int(rank), int(world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def average_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """Replace each parameter's gradient by its mean over the processes (a parameter without
        a gradient in this step counts as zero, as in a single process)."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            chunk = flat[offset : offset + n].view_as(g)
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)
            offset += n

    def average_values(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """The mean over the processes of each scalar in `values` (same keys everywhere)."""
        if not self.active:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        dist.all_reduce(stacked)
        stacked /= self.world
        return dict(zip(keys, stacked.unbind()))

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over the processes."""
        if not self.active:
            return
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world

    def broadcast_model(self, model: nn.Module) -> None:
        """Every process starts from rank 0's parameters and buffers."""
        if not self.active:
            return
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, 0)

    def gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class _ShardedBatches(Sampler):
    """Process `rank`'s share of each batch of `batches`: items rank, rank + world, ...; batches
    with fewer than `world` items (an epoch's incomplete last ones) are dropped, so every process
    takes the same number of steps."""

    def __init__(self, batches: Any, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            if len(batch) >= self.world:
                yield list(batch)[self.rank :: self.world]

    def __len__(self) -> int:
        return sum(1 for batch in self.batches if len(batch) >= self.world)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self.batches.epoch


def shard_batches(batches: Any, rank: int, world: int) -> _ShardedBatches:
    """Wrap a batch sampler (with `set_epoch`) so that it yields process `rank`'s share."""
    return _ShardedBatches(batches, rank, world)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, backend: str, threads: int, fn: Callable[..., Any], args: tuple) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        fn(Context(rank, world), *args)
        dist.barrier()  # every process done with its collectives before any tears the group down
    finally:
        dist.destroy_process_group()
    # Success: leave without the interpreter's teardown. With torch 2.13's gloo a process that
    # had used a process group aborts at exit now and then, after destroy_process_group
    # ("terminate called without an active exception", SIGABRT: 7 of 120 runs of the
    # two-process test, with or without the barrier; 0 of 100 with this exit), which would turn a
    # finished training into an error. Everything `fn`
    # wrote is closed by now (the trainer closes its logs; checkpoints are written atomically).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(fn: Callable[..., Any], world: int, args: tuple = (), *, device: str = "cpu", threads: int | None = None) -> None:
    """Run `fn(Context(rank, world), *args)` in `world` new processes and wait for them.

    CPU: gloo, each process with `threads` intra-op threads (default: the cores divided
    among the processes). CUDA: NCCL, process r on GPU r."""
    backend = "nccl" if device == "cuda" else "gloo"
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world)
    try:
        torch.multiprocessing.spawn(_entry, args=(world, _free_port(), backend, threads, fn, args), nprocs=world, join=True)
    except torch.multiprocessing.ProcessRaisedException as exc:
        # a user's error in one process (bad data, a divergence) comes back as its traceback
        # text: raise it as the one-line error it was
        inner = error_from_traceback(str(exc))
        if inner is None:
            raise
        raise inner from None
