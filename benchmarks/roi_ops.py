"""Time roi_pool / roi_align on the ops workload of issue 2 (fasterrcnn/benchmark/ops.py).

300 RoIs (random_boxes(300, seed=1), batch index 0) on a 1x512x38x50 float32 map (seed 2),
7x7 output, spatial_scale 1/16; roi_align with sampling_ratio 2, aligned=True. Forward (no
grad) and forward + backward; median (and min) wall-clock ms of --repeat runs after 2
warm-ups, and the mean process CPU ms per run (all threads; steadier on a shared machine).

    python benchmarks/roi_ops.py [--repeat 9] [--only pool|align] [--threads N] [--device cuda]
                                 [--pool-path auto|tables]

`--pool-path tables` switches roi_pool's numba-compiled scan off (the sparse-table path answers,
as without numba installed), to compare the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from fasterrcnn.benchmark.ops import TORCHVISION_MS, roi_cases  # noqa: E402
from fasterrcnn.benchmark.timing import measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--only", choices=["pool", "align"], default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--pool-path", choices=["auto", "tables"], default="auto",
                    help="roi_pool on CPU: the compiled scan where numba is installed (auto) or the sparse tables")
    args = ap.parse_args()
    if args.pool_path == "tables":
        import importlib

        importlib.import_module("fasterrcnn.ops.roi_pool.scan")._compiled_scan = lambda: None

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cases = [(name, fn) for name, (fn, _) in roi_cases(dev).items()
             if args.only is None or name.startswith(f"roi_{args.only}_")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {dev}")
    if dev.type == "cpu":
        # Contention probe: 300 element-wise adds of 235k floats, one parallel region each. On a
        # shared machine, intra-op threads that wait for a descheduled sibling make this (and
        # every op sequence) several times slower than with one thread; compare before trusting
        # multi-thread figures.
        a, b, o = torch.randn(235_000), torch.randn(235_000), torch.empty(235_000)
        probe = measure(lambda: [torch.add(a, b, out=o) for _ in range(300)], repeat=args.repeat)
        print(f"contention probe (300 x add of 235k floats): {probe.ms:.1f} ms")
    print(f"{'case':<20} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'tv ms':>7} {'ratio':>6}")
    for name, fn in cases:
        c0 = time.process_time()
        t = measure(fn, repeat=args.repeat, device=dev)
        cpu = 1000 * (time.process_time() - c0) / (args.repeat + 2)
        tv = TORCHVISION_MS[name]
        print(
            f"{name:<20} {t.ms:>10.2f} {1000 * min(t.runs):>8.2f} {cpu:>8.2f} {tv:>7.0f} "
            f"{t.ms / tv:>6.3f}"
        )


if __name__ == "__main__":
    main()
