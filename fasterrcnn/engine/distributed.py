"""Data-parallel training and evaluation in several processes, PyTorch's way (torchrun + DDP).

A run of W processes ("ranks" 0..W-1, on one machine or several) is started by PyTorch's
launcher: `torchrun` (torch.distributed.run), a SLURM or Kubernetes wrapper around it, or
`--processes N`, which calls the same launcher's API (torch.distributed.launcher) for N
processes on this machine. Each process reads its place from the launcher's environment
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; TORCHELASTIC_RESTART_COUNT after a restart)
into a `Context`, joins the process group (gloo on CPU; NCCL on CUDA, one GPU per local
rank) and trains a replica of the model wrapped in `DistributedDataParallel`: every batch of
B images is split into W shares of B / W (`data.loader.DistributedBatchSampler`), and DDP
averages the gradients during the backward pass (bucketed all-reduces that overlap it), so
every replica takes the same optimiser step.

Only rank 0 logs, draws the progress bar and writes files. The loss values are averaged over
the ranks before the backward pass, for the log and for the non-finite-loss check, so every
rank stops together on a divergence; an error in one rank ends its process, and the launcher
then stops the others (and restarts them all from the last checkpoint with `--max-restarts`).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import Tensor, nn

from fasterrcnn.errors import ConfigError, error_from_traceback

__all__ = ["Context", "exit_process", "launch_local", "restart_caveat", "setup", "shutdown", "wrap_model"]


@dataclass(frozen=True)
class Context:
    """This process's place in the run: `rank` of `world` (world 1: no group, every method a
    no-op), its `local_rank` of `local_world` on its machine, and `restart`, how many times the
    launcher has restarted the run's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    restart: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Context:
        """The place torchrun (or any launcher following its convention) put this process in."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
            restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
        except ValueError as exc:
            raise ConfigError(f"the launcher's environment variables RANK/WORLD_SIZE/LOCAL_RANK are not integers: {exc}") from exc
        if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < max(local_world, 1)):
            raise ConfigError(f"the launcher's environment is inconsistent: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}")
        return cls(rank, world, local_rank, local_world, restart)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def average_values(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """The mean over the ranks of each scalar in `values` (same keys everywhere)."""
        if not self.active:
            return values
        keys = sorted(values)
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
        dist.all_reduce(stacked)
        stacked /= self.world
        return dict(zip(keys, stacked.unbind()))

    def average_buffers(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over the ranks:
        each replica's BatchNorm layers track the statistics of its own images, and the saved
        model gets their mean."""
        if not self.active:
            return
        for b in model.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= self.world

    def gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup(device: torch.device, ctx: Context | None = None) -> tuple[Context, torch.device]:
    """Join the run's process group (once; a no-op for a single process) and return this
    process's context and device: on CUDA the GPU of its local rank."""
    ctx = ctx or Context.from_env()
    if not ctx.active:
        return ctx, device
    if device.type == "cuda":
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {ctx.local_rank} needs GPU {ctx.local_rank}, but this machine has "
                              f"{torch.cuda.device_count()}: start at most one process per GPU (--nproc-per-node)")
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _restart_safe_store(ctx)
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world, **({"store": store} if store else {}))
    return ctx, device


def _restart_safe_store(ctx: Context, env: dict[str, str] | None = None) -> dist.Store | None:
    """The store the process group meets in, when the default one would fail after a restart.

    Since torch 2.5 the training processes share torchrun's rendezvous store, and after a
    restart the new processes read the addresses the dead ones had left in it (connection
    refused; pytorch/pytorch#135712). On one machine every process of an attempt has the same
    TORCHELASTIC_RESTART_COUNT, so a prefix of it keeps the attempts apart; on several machines
    the counts may differ (an agent restarted by another's failure does not count it), so there
    the rendezvous store must not be shared: TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (see
    `restart_caveat`). None: the default store is safe."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or ctx.local_world != ctx.world:
        return None
    from torch.distributed.constants import default_pg_timeout

    shared = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), ctx.world, is_master=False, timeout=default_pg_timeout)
    return dist.PrefixStore(f"fasterrcnn/attempt_{ctx.restart}", shared)


def restart_caveat(ctx: Context, env: dict[str, str] | None = None) -> str | None:
    """A note for a multi-machine run that torchrun may restart but whose processes share its
    rendezvous store (see `_restart_safe_store`); None when restarts are safe."""
    env = os.environ if env is None else env
    shared = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if shared and ctx.local_world != ctx.world and int(env.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0:
        return ("note: a restart of this multi-machine run may fail to reconnect its processes (pytorch/pytorch#135712); "
                "launch torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment")
    return None


def shutdown() -> None:
    """Leave the process group (every rank done with its collectives first)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End a process that took part in a gloo process group, without the interpreter's teardown.

    With torch 2.13's gloo a process that has used a process group aborts at exit now and then,
    even after destroy_process_group ("terminate called without an active exception", SIGABRT:
    7 of 120 runs of a two-process test, 0 of 100 with this exit), which would turn a finished
    run into a failed one (and, under `--max-restarts`, restart it). Everything written is
    closed by then (logs closed, checkpoints written atomically)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def wrap_model(model: nn.Module, ctx: Context, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (itself for a single process).

    Every trainable parameter gets a gradient in every step: those that do not train in a
    stage are `requires_grad=False` (frozen stages, the parts of the model an alternating-training
    step does not run), and DDP leaves them out, so no search for unused parameters is needed.
    Rank 0's parameters and buffers are copied to every replica at the start; after that the
    BatchNorm buffers are not synchronised at every forward pass: each replica keeps its own
    running statistics, averaged over the ranks before each checkpoint (`Context.average_buffers`)."""
    if not ctx.active:
        return model
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    # torch >= 2.13 names the per-forward buffer sync `forward_sync_buffers`
    sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters \
        else "broadcast_buffers"
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True, **{sync: False})


_AGENT_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


@contextmanager
def _launcher_in_this_process() -> Iterator[None]:
    """Run PyTorch's elastic agent inside the caller's process, and leave that process as it was.

    The agent logs every failed child's traceback (the caller reports the error once) and
    installs its own handlers for SIGTERM, SIGINT, SIGHUP and SIGQUIT (which stop the children)
    without putting the previous ones back: processes the caller forks later (a
    multiprocessing Pool) would inherit them and no longer die on SIGTERM, so Pool.terminate()
    would wait for them forever."""
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in _AGENT_SIGNALS if hasattr(signal, name)}
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
        if threading.current_thread() is threading.main_thread():
            for name, handler in handlers.items():
                signal.signal(getattr(signal, name), handler if handler is not None else signal.SIG_DFL)


def launch_local(payload: dict[str, Any], nprocs: int, *, threads: int | None = None) -> None:
    """Run `python -m fasterrcnn.engine.worker` in `nprocs` processes on this machine through
    PyTorch's launcher API (what `torchrun --standalone --nproc-per-node N` does), each with
    `threads` intra-op threads (default: the cores divided among them), and wait for them.

    `payload` is the worker's job (engine.worker). A fasterrcnn error raised in a worker (bad
    data, a divergence) is raised here as the one-line error it was; any other failure as a
    RuntimeError with the worker's traceback."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // nprocs)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nprocs, run_id=f"fasterrcnn-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
    )
    with tempfile.TemporaryDirectory(prefix="fasterrcnn-job-") as tmp:
        job = Path(tmp, "job.json")
        job.write_text(json.dumps({**payload, "threads": threads}))
        try:
            with _launcher_in_this_process():
                elastic_launch(config, sys.executable)("-m", "fasterrcnn.engine.worker", str(job))
        except ChildFailedError as exc:
            raise _worker_error(exc) from None


def _worker_error(exc: Any) -> Exception:
    """The first failed worker's error, from the error file the launcher collected."""
    rank, failure = min(exc.failures.items())
    message = failure.message
    text = message.get("extraInfo", {}).get("py_callstack", "") if isinstance(message, dict) else str(message)
    inner = error_from_traceback(text)
    if inner is not None:
        return inner
    reason = f"exit code {failure.exitcode}" + (f" (signal {-failure.exitcode})" if failure.exitcode < 0 else "")
    return RuntimeError(f"training process {rank} failed with {reason}" + (f":\n{text}" if text else ""))
