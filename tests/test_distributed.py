"""engine.distributed: gradient/value/buffer averaging and batch sharding in two real processes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fasterrcnn.engine.distributed import Context, launch, shard_batches


class _Batches:
    """A batch sampler with set_epoch, as build_loader makes."""

    def __init__(self, batches):
        self.batches, self.epoch = batches, 0

    def __iter__(self):
        return iter(self.batches)

    def set_epoch(self, epoch):
        self.epoch = epoch


def _check(ctx: Context, out: str) -> None:
    torch.manual_seed(ctx.rank)  # different initial weights: broadcast_model must align them
    layer = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ctx.broadcast_model(layer)
    lin = layer[0]
    lin.weight.grad = torch.full_like(lin.weight, ctx.rank + 1.0)
    lin.bias.grad = None if ctx.rank == 0 else torch.ones_like(lin.bias)  # no gradient counts as 0
    ctx.average_gradients(list(layer.parameters()))
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    layer[1].running_mean.fill_(2.0 * ctx.rank)
    ctx.average_buffers(layer)
    values = ctx.average_values({"a": torch.tensor(float(ctx.rank)), "b": torch.tensor(3.0)})
    sharded = shard_batches(_Batches([[0, 1, 2, 3], [4, 5], [6]]), ctx.rank, ctx.world)
    result = {
        "weight_grad": lin.weight.grad.tolist(), "bias_grad": lin.bias.grad.tolist(),
        "params": [p.tolist() for p in layer.parameters()], "running_mean": layer[1].running_mean.tolist(),
        "values": {k: float(v) for k, v in values.items()}, "gathered": ctx.gather(ctx.rank * 10),
        "batches": list(sharded), "len": len(sharded),
    }
    Path(out, f"rank{ctx.rank}.json").write_text(json.dumps(result))


def test_two_processes_average_and_shard(tmp_path):
    launch(_check, 2, (str(tmp_path),), threads=1)
    r0, r1 = (json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1))
    assert r0["weight_grad"] == [[1.5] * 3] * 2 and r0["bias_grad"] == [0.5, 0.5]
    assert r0["params"] == r1["params"]  # same start, same averaged step: the replicas agree
    assert r0["running_mean"] == r1["running_mean"] == [1.0, 1.0]
    assert r0["values"] == r1["values"] == {"a": 0.5, "b": 3.0}
    assert r0["gathered"] == r1["gathered"] == [0, 10]
    # each process takes items rank, rank + 2, ... of every batch; a batch of 1 is dropped
    assert r0["batches"] == [[0, 2], [4]] and r1["batches"] == [[1, 3], [5]]
    assert r0["len"] == r1["len"] == 2


def test_single_process_context_is_a_no_op():
    ctx = Context()
    assert ctx.is_main and not ctx.active
    p = nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 4.0)
    ctx.average_gradients([p])
    assert p.grad.tolist() == [4.0, 4.0]
    v = {"a": torch.tensor(2.0)}
    assert ctx.average_values(v) is v and ctx.gather(5) == [5]
