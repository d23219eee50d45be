"""The weight average (engine.ema) and the re-estimated BatchNorm statistics (engine.precise_bn)
against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fasterrcnn.engine.ema import ModelEMA
from fasterrcnn.engine.precise_bn import update_bn_stats


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_average_follows_the_formula_with_its_warmup():
    net = _net()
    ema = ModelEMA(net, decay=0.9, warmup=3)
    w = net[0].weight.detach().clone()
    expected = w.clone()
    for step in range(1, 6):
        with torch.no_grad():
            net[0].weight.add_(float(step))  # the "optimiser step"
        ema.update(net)
        d = 0.9 * (1 - math.exp(-step / 3))  # ramps up from ~0.25 to 0.9
        expected = d * expected + (1 - d) * net[0].weight.detach()
    torch.testing.assert_close(ema.module[0].weight, expected, rtol=1e-6, atol=1e-6)
    assert ema.updates == 5
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_batchnorm_statistics_are_averaged_and_counters_copied():
    net = _net().train()
    ema = ModelEMA(net, decay=0.5, warmup=0)
    mean0 = net[1].running_mean.clone()
    net(torch.randn(8, 3) * 5 + 2)  # moves the running statistics, counts one batch
    ema.update(net)
    torch.testing.assert_close(ema.module[1].running_mean, 0.5 * mean0 + 0.5 * net[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == int(net[1].num_batches_tracked) == 1


def test_state_round_trip_and_bad_arguments():
    net = _net()
    ema = ModelEMA(net, decay=0.99, warmup=10)
    with torch.no_grad():
        net[0].bias.add_(1.0)
    ema.update(net)
    other = ModelEMA(_net(), decay=0.99, warmup=10)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.module[0].bias, ema.module[0].bias)
    for decay in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="decay"):
            ModelEMA(net, decay=decay)
    with pytest.raises(ValueError, match="no longer matches"):
        ModelEMA(net).update(nn.Linear(3, 2))


def test_precise_bn_is_the_plain_average_of_the_batch_statistics():
    class FrozenLast(nn.Sequential):  # its last norm stays in eval mode, like a frozen stage's
        def train(self, mode: bool = True) -> nn.Module:
            super().train(mode)
            self[3].eval()
            return self

    torch.manual_seed(1)
    net = FrozenLast(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.BatchNorm1d(4))
    frozen_mean = net[3].running_mean.clone()
    batches = [torch.randn(6, 3) * (i + 1) + i for i in range(5)]
    used = update_bn_stats(net, batches, net, num_batches=4)
    assert used == 4
    with torch.no_grad():
        h = [net[0](b) for b in batches[:4]]
    torch.testing.assert_close(net[1].running_mean, torch.stack([x.mean(0) for x in h]).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack([x.var(0, unbiased=True) for x in h]).mean(0))
    assert net[1].momentum == 0.1  # restored
    assert torch.equal(net[3].running_mean, frozen_mean)


def test_precise_bn_without_batches_keeps_the_old_statistics():
    net = _net().train()
    net(torch.randn(8, 3) + 3)
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="no batches"):
        update_bn_stats(net, [], net, num_batches=5)
    assert torch.equal(net[1].running_mean, before) and net[1].momentum == 0.1
    assert update_bn_stats(net, [torch.randn(4, 3)], net, num_batches=0) == 0
    assert torch.equal(net[1].running_mean, before)
