"""The processes of tests/test_distributed.py, started with torchrun: `torchrun ... tests/distributed_worker.py CHECK OUT [ARGS]`.

  grads OUT          2 processes x 2 images through DistributedDataParallel + synchronised
                     BatchNorm; each rank saves its averaged gradients (the test compares them
                     with one process on all 4 images)
  syncbn OUT         CPUSyncBatchNorm's output, input gradient and statistics on each rank's half
  cli ARGS...        `fasterrcnn ARGS...`; with FASTERRCNN_TEST_KILL_AT=N, the rank-1 process of the
                     first attempt kills itself (SIGKILL) before its N-th training step
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from distributed_cases import batch, detector, sync_bn_input  # noqa: E402


def grads(out: str) -> None:
    from fasterrcnn.engine.distributed import Context, setup, wrap_model
    from fasterrcnn.engine.sync_batchnorm import convert_sync_batchnorm

    ctx, device = setup(torch.device("cpu"))
    images, targets, proposals = batch()
    mine = slice(ctx.rank, None, ctx.world)  # the distributed sampler's share: items rank, rank + world, ...
    model = detector()
    local = {n: g for n, g in _grads(model, images[mine], targets[mine], proposals[mine]).items()}  # no averaging
    model = detector()
    net = wrap_model(convert_sync_batchnorm(model, device), ctx, device)
    averaged = _grads(net, images[mine], targets[mine], proposals[mine], params=model.named_parameters())
    torch.save({"averaged": averaged, "local": local, "world": Context.from_env().world}, Path(out, f"rank{ctx.rank}.pt"))


def _grads(net, images, targets, proposals, params=None) -> dict[str, torch.Tensor]:
    losses = net(images, targets, proposals=proposals)
    sum(losses.values()).backward()
    named = params if params is not None else net.named_parameters()
    return {n: p.grad.clone() for n, p in named if p.grad is not None}


def syncbn(out: str) -> None:
    from fasterrcnn.engine.distributed import setup
    from fasterrcnn.engine.sync_batchnorm import CPUSyncBatchNorm

    ctx, _ = setup(torch.device("cpu"))
    x, weight = sync_bn_input()
    half = x.chunk(ctx.world)[ctx.rank].clone().requires_grad_(True)
    bn = CPUSyncBatchNorm(x.shape[1], momentum=0.1).train()
    y = bn(half)
    (y * weight.chunk(ctx.world)[ctx.rank]).sum().backward()
    torch.save({"y": y.detach(), "grad": half.grad, "mean": bn.running_mean, "var": bn.running_var,
                "weight_grad": bn.weight.grad}, Path(out, f"rank{ctx.rank}.pt"))


def cli(args: list[str]) -> int:
    from fasterrcnn.cli import main
    from fasterrcnn.engine import trainer

    kill_at = int(os.environ.get("FASTERRCNN_TEST_KILL_AT", "0"))
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if kill_at and restart == 0 and int(os.environ.get("RANK", "0")) == 1:
        step = trainer.Trainer._step
        count = [0]

        def dying_step(self, *a, **k):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # a worker lost mid-run (OOM killer, a node gone)
            return step(self, *a, **k)

        trainer.Trainer._step = dying_step
    return main(args)


if __name__ == "__main__":
    check, rest = sys.argv[1], sys.argv[2:]
    if check == "cli":
        sys.exit(cli(rest))
    {"grads": grads, "syncbn": syncbn}[check](rest[0])
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # see fasterrcnn.engine.distributed.exit_process
