"""Step time of the demo recipe in 2 data-parallel processes: this checkout against another
(e.g. the release before DistributedDataParallel, checked out with `git worktree add`), in
alternation within one run (the machine's speed drifts).

    python benchmarks/ddp_step_time.py --other /tmp/old-checkout [--iters 200] [--rounds 2]

Each run trains the demo's recipe (`fasterrcnn.cli.demo.DEMO_TRAIN`: batches of 4 in 2
processes, bf16 + channels_last where the CPU has bf16) on the demo's data (runs/demo/data,
made by `fasterrcnn demo`) for --iters iterations, logging every step; the figure is rank 0's
median step time over the steps after the first 20 (warm-up), and the wall time of the whole
run (start-up included). Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def inner(data: str, out: str, iters: int, processes: int, sync_bn: bool) -> None:
    """Train in this checkout (imported from PYTHONPATH)."""
    from fasterrcnn.cli.demo import DEMO_TRAIN
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.engine.precision import resolve_device, resolve_precision
    from fasterrcnn.engine.trainer import Trainer

    precision = resolve_precision("auto", resolve_device("auto"))
    extra = {"sync_bn": True} if sync_bn else {}
    cfg = TrainConfig(data=data, out=out, val_split=None, precision=precision, channels_last=precision != "fp32",
                      num_workers=0, progress=False, processes=processes, log_every=1, verify_images=False,
                      **{**DEMO_TRAIN, "max_iters": iters}, **extra)
    Trainer(cfg, log=lambda m: None).run()


def one_run(checkout: Path, data: str, iters: int, processes: int, sync_bn: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "run")
        env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_WAIT_POLICY": "PASSIVE",
               "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "16384"}
        cmd = [sys.executable, str(HERE), "--inner", "--data", data, "--out", str(out), "--iters", str(iters),
               "--processes", str(processes), *(["--sync-bn"] if sync_bn else [])]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=checkout)
        wall = time.perf_counter() - t0
        steps = [r["sec_per_iter"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                 if r.get("kind") == "train"]
    return {"median_ms": 1000 * statistics.median(steps[20:]), "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, help="the other checkout (its root folder)")
    p.add_argument("--data", default="runs/demo/data")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--sync-bn", action="store_true", help="(this checkout) also time --sync-bn")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.inner:
        inner(a.data, a.out, a.iters, a.processes, a.sync_bn)
        return
    data = str(Path(a.data).resolve())
    variants = [("this checkout (DDP)", HERE.parents[1], False)]
    if a.sync_bn:
        variants.append(("this checkout (DDP + --sync-bn)", HERE.parents[1], True))
    if a.other:
        variants.insert(0, ("other checkout", a.other.resolve(), False))
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    for _ in range(a.rounds):
        for name, checkout, sync in variants:
            results[name].append(one_run(checkout, data, a.iters, a.processes, sync))
            print(name, results[name][-1], flush=True)
    print(f"\n| {a.iters} iterations x 4 images, {a.processes} processes | median step (ms), each round | wall (s), each round |")
    print("|---|---|---|")
    for name, runs in results.items():
        steps = " / ".join(f"{r['median_ms']:.0f}" for r in runs)
        walls = " / ".join(f"{r['wall_s']:.0f}" for r in runs)
        print(f"| {name} | {steps} | {walls} |")


if __name__ == "__main__":
    main()
