"""Learning-rate schedules and optimiser groups (fasterrcnn.engine.optim) against hand-computed values."""

import math

import pytest
import torch

from fasterrcnn.engine.config import TrainConfig
from fasterrcnn.engine.optim import WarmupCosineLR, WarmupStepLR, build_optimizer
from fasterrcnn.errors import ConfigError


def _lrs(scheduler, optimizer, n):
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def _sgd(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_step_schedule_with_warmup_by_hand():
    opt = _sgd()
    lrs = _lrs(WarmupStepLR(opt, [6, 8], gamma=0.1, warmup_iters=4, warmup_factor=0.5), opt, 10)
    # warm-up: factor 0.5 -> 1 linearly over 4 iterations, then x0.1 at 6 and again at 8
    want = [0.05, 0.0625, 0.075, 0.0875, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert lrs == pytest.approx(want)


def test_cosine_schedule_by_hand():
    opt = _sgd()
    lrs = _lrs(WarmupCosineLR(opt, total_iters=8, warmup_iters=2, warmup_factor=0.5), opt, 10)
    cos = [0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(9)] + [0.0]
    want = [0.1 * c for c in cos]
    want[0] *= 0.5  # warm-up: factor 0.5 at 0, 0.75 at 1
    want[1] *= 0.75
    assert lrs == pytest.approx(want)
    assert lrs[8] == pytest.approx(0.0) and lrs[9] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="total_iters"):
        WarmupCosineLR(_sgd(), total_iters=0)


def test_schedule_state_round_trip():
    opt = _sgd()
    s = WarmupCosineLR(opt, total_iters=20, warmup_iters=5)
    _lrs(s, opt, 7)
    opt2 = _sgd()
    s2 = WarmupCosineLR(opt2, total_iters=20, warmup_iters=5)
    s2.load_state_dict(s.state_dict())
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    assert _lrs(s2, opt2, 5) == pytest.approx(_lrs(s, opt, 5))


def test_lr_schedule_is_validated():
    with pytest.raises(ConfigError, match="lr_schedule"):
        TrainConfig(data="x", lr_schedule="linear").validate()


def test_parameter_groups_follow_the_caffe_rules():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, lr=0.01, weight_decay=5e-4, bias_lr_factor=2.0, kind="sgd")
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    conv, bn, fc = model
    assert by_param[id(conv.weight)]["lr"] == 0.01 and by_param[id(conv.weight)]["weight_decay"] == 5e-4
    assert by_param[id(conv.bias)]["lr"] == 0.02 and by_param[id(conv.bias)]["weight_decay"] == 0.0
    assert by_param[id(bn.weight)]["weight_decay"] == 0.0 and by_param[id(fc.bias)]["lr"] == 0.02
    # one update of the fused (or default) AdamW equals the reference formula
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ref = torch.optim.AdamW([p], lr=0.1, weight_decay=0.01)
    q = torch.nn.Parameter(p.detach().clone())
    mine = build_optimizer(torch.nn.ParameterList([q]), lr=0.1, weight_decay=0.01, kind="adamw")
    assert isinstance(mine, torch.optim.AdamW)
    for opt_ in (ref, mine):
        prm = opt_.param_groups[0]["params"][0]
        prm.grad = torch.tensor([0.5, 0.25])
        opt_.step()
    torch.testing.assert_close(q.detach(), p.detach())
