"""Data-parallel training with torchrun and DistributedDataParallel, on this machine (gloo, loopback).

Real processes throughout: torchrun runs of 2 processes, 2 "nodes" (two torchrun launches
meeting at one rendezvous on 127.0.0.1), a worker killed mid-run and restarted, the batch
sampler's shares, synchronised BatchNorm against BatchNorm on the whole batch, and the averaged
gradients of 2 processes x 2 images against 1 process x 4 images.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_cases import batch, detector, sync_bn_input
from torch import nn

from fasterrcnn.data.loader import AspectGroupedBatchSampler, DistributedBatchSampler, EpochSampler
from fasterrcnn.data.synth import generate
from fasterrcnn.engine.config import TrainConfig
from fasterrcnn.engine.distributed import Context
from fasterrcnn.engine.trainer import Trainer
from fasterrcnn.errors import ConfigError, TrainingDivergedError

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
# the quick recipe of the other training tests, as command-line options
TRAIN = ["train", "--preset", "small", "--epochs", "2", "--batch-size", "2", "--min-size", "192", "--max-size", "320",
         "--lr", "0.02", "--warmup-iters", "5", "--workers", "0", "--no-progress", "--set", "anchors.scales=[2,4,8,16]"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, env: dict[str, str] | None = None, wait: bool = True, timeout: float = 300):
    cmd = [sys.executable, "-m", "torch.distributed.run", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_dist")
    generate(root, num_train=12, num_test=4, min_size=192, max_size=256, min_object=32, max_object=150,
             max_objects=4, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def two_process_run(tiny, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --standalone --nproc-per-node 2 -m fasterrcnn train ...` (2 epochs, evaluated after)."""
    out = tmp_path_factory.mktemp("two") / "run"
    proc = _torchrun("--standalone", "--nproc-per-node", "2", "-m", "fasterrcnn", *TRAIN, "--data", str(tiny), "--out", str(out))
    return out, proc


# ---------------------------------------------------------------------------- units


def test_context_reads_the_launcher_environment():
    ctx = Context.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                            "TORCHELASTIC_RESTART_COUNT": "1"})
    assert (ctx.rank, ctx.world, ctx.local_rank, ctx.local_world, ctx.restart) == (3, 4, 1, 2, 1)
    assert ctx.active and not ctx.is_main
    single = Context.from_env({})
    assert not single.active and single.is_main and single.gather(5) == [5]
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=2"):
        Context.from_env({"RANK": "4", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="not integers"):
        Context.from_env({"RANK": "zero", "WORLD_SIZE": "2"})


def _shares(n: int, landscape: list[bool], batch_size: int, world: int, remainder: str = "pad", epoch: int = 0):
    batches = AspectGroupedBatchSampler(EpochSampler(n, shuffle=True, seed=5, epoch=epoch, with_epoch=False), landscape, batch_size)
    samplers = [DistributedBatchSampler(batches, r, world, remainder) for r in range(world)]
    return [list(s) for s in samplers], [len(s) for s in samplers], list(batches)


def test_distributed_batch_sampler_gives_disjoint_grouped_deterministic_shares():
    landscape = [i % 3 != 0 for i in range(23)]  # 15 landscape, 8 portrait: incomplete batches in both groups
    shares, lengths, batches = _shares(23, landscape, 4, 2)
    assert lengths == [len(shares[0]), len(shares[1])] == [len(batches)] * 2  # as many steps as one process takes
    for step, whole in enumerate(batches):
        mine = [shares[r][step] for r in range(2)]
        assert all(len({landscape[i] for i in m}) == 1 for m in mine)  # one orientation per batch, as without sharding
        if len(whole) == 4:
            assert sorted(mine[0] + mine[1]) == sorted(whole) and not set(mine[0]) & set(mine[1])  # disjoint halves
        else:  # 15 % 4 = 3 landscape images: padded with the batch's own first image
            assert len(mine[0]) == len(mine[1]) and set(mine[0] + mine[1]) == set(whole)
    seen = [i for r in range(2) for b in shares[r] for i in b]
    assert set(seen) == set(range(23)) and len(seen) == 24  # every image; one repeat for 3 + 8 = 4 + 4 + 3
    assert _shares(23, landscape, 4, 2)[0] == shares  # deterministic: (seed, epoch) only
    assert _shares(23, landscape, 4, 2, epoch=1)[0] != shares
    dropped, lengths, _ = _shares(23, landscape, 4, 2, remainder="drop")
    assert lengths == [5, 5] and all(len(b) == 2 for r in range(2) for b in dropped[r])
    with pytest.raises(ConfigError, match="remainder"):
        _shares(23, landscape, 4, 2, remainder="wrap")


# ------------------------------------------------------------- collectives (torchrun)


def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(tmp_path):
    _torchrun("--standalone", "--nproc-per-node", "2", str(WORKER), "syncbn", str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    x, weight = sync_bn_input()
    x = x.clone().requires_grad_(True)
    bn = nn.BatchNorm2d(x.shape[1], momentum=0.1).train()
    y = bn(x)
    (y * weight).sum().backward()
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]), x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], bn.weight.grad, rtol=1e-4, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r["mean"], bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["var"], bn.running_var, rtol=1e-5, atol=1e-6)


def test_two_processes_of_two_images_average_to_one_process_of_four(tmp_path):
    """DistributedDataParallel + synchronised BatchNorm: the gradients every replica ends up
    with are those of one process on the whole batch (float tolerance); without the averaging
    (each process's own gradients) they are not, so the comparison can fail."""
    _torchrun("--standalone", "--nproc-per-node", "2", str(WORKER), "grads", str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    model = detector()
    images, targets, proposals = batch()
    sum(model(images, targets, proposals=proposals).values()).backward()
    reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(r0["averaged"]) == set(reference) and len(reference) > 20
    assert all(torch.equal(r0["averaged"][n], r1["averaged"][n]) for n in reference)  # identical replicas
    for n, g in reference.items():
        torch.testing.assert_close(r0["averaged"][n], g, rtol=2e-4, atol=1e-6, msg=n)
    far = [n for n, g in reference.items() if not torch.allclose(r0["local"][n], g, rtol=2e-4, atol=1e-6)]
    assert len(far) > len(reference) // 2  # each process alone is far from the whole batch's gradient


# ------------------------------------------------------------------ training runs


def test_torchrun_two_processes_train_and_evaluate(two_process_run, tiny):
    """Only rank 0 prints and writes; the run's log covers its whole budget; the evaluation
    after training, sharded over the 2 processes, equals one process's on the same model;
    the run exits without warnings about leaked resources."""
    out, proc = two_process_run
    assert proc.stdout.count("training small (joint)") == 1 and "(1 in each of 2 processes)" in proc.stdout
    assert proc.stdout.count("VOC07 mAP@0.5") == 1
    assert "leaked" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for name in ("model_final.pt", "last.pt", "metrics.jsonl", "summary.json", "eval/report.json"):
        assert (out / name).exists(), name
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["world_size"] == 2 and len(last["rng_ranks"]) == 2 and last["epoch"] == 2
    summary = json.loads((out / "summary.json").read_text())
    # 7 batches of 2 per epoch (each orientation group ends with an incomplete batch, padded)
    assert summary["train"]["iterations"] == 14 and summary["train"]["images"] == 12
    from fasterrcnn.data import build_dataset
    from fasterrcnn.engine.evaluate import evaluate_model
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    model, _ = load_checkpoint(out / "model_final.pt")
    val = build_dataset(str(tiny), "test", train=False, min_size=192, max_size=320, classes=model.class_names)
    single, _ = evaluate_model(model, val, device=torch.device("cpu"), num_workers=0, progress=False, coco=False,
                               plots=False, log=lambda m: None)
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["inference"]["processes"] == 2 and report["inference"]["images"] == 4
    assert report["voc"]["map07"] == pytest.approx(single["voc"]["map07"], abs=1e-9)
    assert report["proposal_recall"] == json.loads(json.dumps(single["proposal_recall"]))


def test_two_nodes_over_loopback_match_one_node(two_process_run, tiny, tmp_path):
    """Two torchrun launches, `--nnodes 2` with node ranks 0 and 1 and one c10d rendezvous on
    127.0.0.1, one process each: the same 2-process run, so the same weights, bit for bit."""
    out = tmp_path / "run"
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
              f"127.0.0.1:{_free_port()}", "--rdzv-id", "two-nodes", "-m", "fasterrcnn", *TRAIN, "--no-eval",
              "--data", str(tiny), "--out", str(out)]
    nodes = [_torchrun("--node-rank", str(k), *common, wait=False) for k in (0, 1)]
    results = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], results
    a, b = _weights(two_process_run[0] / "model_final.pt"), _weights(out / "model_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_restart_after_a_killed_worker_resumes_from_the_checkpoint(two_process_run, tiny, tmp_path):
    """`torchrun --max-restarts 1`: the rank-1 worker kills itself (SIGKILL) in the second
    epoch; torchrun restarts both, the run resumes from the first epoch's last.pt by itself and
    finishes with the uninterrupted run's weights (only the interrupted epoch is redone)."""
    out = tmp_path / "run"
    proc = _torchrun("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.2",
                     str(WORKER), "cli", *TRAIN, "--no-eval", "--data", str(tiny), "--out", str(out),
                     env={"FASTERRCNN_TEST_KILL_AT": "10"})  # 7 steps per epoch: killed at the 3rd of epoch 2
    assert "restart 1 of this run" in proc.stdout and "1 epoch(s) done" in proc.stdout, proc.stdout[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]  # the log has no duplicate of the redone steps
    a, b = _weights(two_process_run[0] / "model_final.pt"), _weights(out / "model_final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_processes_run_exits_cleanly(tiny, tmp_path):
    """`fasterrcnn train --processes 2` (PyTorch's launcher API inside the command) finishes
    with status 0 and nothing on stderr but the progress bars it was asked not to draw: no
    leaked-semaphore warning, no launcher log, no traceback."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "fasterrcnn", *TRAIN, "--epochs", "1", "--no-eval", "--processes", "2",
                           "--data", str(tiny), "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip() == "", proc.stderr[-3000:]
    assert proc.stdout.count("training small (joint)") == 1 and (out / "model_final.pt").is_file()


def test_alternating_schedule_in_two_processes(tiny, tmp_path, quick):
    """The 4-step schedule under DistributedDataParallel: each step trains only some parameters
    (the RPN's step leaves the detector out, the detector's leaves the RPN out, steps 3-4 fix the
    backbone); they are left out of DDP, so every step finishes its gradient reduction."""
    cfg = TrainConfig(data=str(tiny), out=str(tmp_path / "run"), val_split=None, schedule="alternating",
                      stage_epochs=[1, 1, 1, 1], processes=2, threads=1, **{**quick, "max_iters": 3})
    result = Trainer(cfg, log=lambda m: None).run()
    assert [s["iterations"] for s in result.stages] == [3, 3, 3, 3]
    assert all((tmp_path / "run" / f"stage{k}.pt").is_file() for k in (1, 2, 3, 4))


def test_processes_stop_together_on_divergence(tiny, tmp_path, quick):
    """`processes=2` (PyTorch's launcher on this machine): a loss that becomes non-finite stops
    both processes, and the launching process raises the workers' one-line error."""
    cfg = TrainConfig(data=str(tiny), out=str(tmp_path / "run"), val_split=None, epochs=1, processes=2, threads=1,
                      **{**quick, "lr": 1e12, "warmup_iters": 0})
    with pytest.raises(TrainingDivergedError, match="training diverged at iteration"):
        Trainer(cfg, log=lambda m: None).run()


def test_resume_with_another_number_of_processes(tiny, tmp_path, quick):
    """A run of 2 processes continued by 1 (as after losing a node): the schedule and the data
    order go on (the batch is the same 2 images), with a note that it is not bit-identical."""
    common = dict(data=str(tiny), out=str(tmp_path / "run"), val_split=None, threads=1, **quick)
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
    first = Trainer(TrainConfig(epochs=1, processes=2, **common), log=lambda m: None).run()
    assert first.iterations == 7
    # PyTorch's launcher ran in this process: its signal handlers must not stay behind (a Pool
    # forked later would inherit them and hang in terminate())
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)] == handlers
    lines: list[str] = []
    resumed = Trainer(TrainConfig(epochs=2, processes=1, resume=True, **common), log=lines.append).run()
    assert resumed.iterations == 14 and any("written by 2 process(es), this run has 1" in m for m in lines), lines
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["world_size"] == 1


def test_processes_refused_under_a_launcher(tiny, tmp_path, quick, monkeypatch):
    """A process that torchrun started may not start processes of its own, and the batch must
    divide among the ranks."""
    from fasterrcnn.engine import trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "setup", lambda device: (Context(rank=1, world=3), device))
    common = dict(data=str(tiny), out=str(tmp_path / "run"), val_split=None, **quick)
    with pytest.raises(ConfigError, match="--processes 2 starts its own processes"):
        Trainer(TrainConfig(processes=2, **common))
    with pytest.raises(ConfigError, match="must be a multiple of the number of processes, 3"):
        Trainer(TrainConfig(**{**common, "batch_size": 4}))
