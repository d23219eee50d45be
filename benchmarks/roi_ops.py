"""Time roi_pool / roi_align on the ops workload of issue 2 (fasterrcnn/benchmark/ops.py).

300 RoIs (random_boxes(300, seed=1), batch index 0) on a 1x512x38x50 float32 map (seed 2),
7x7 output, spatial_scale 1/16; roi_align with sampling_ratio 2, aligned=True. Forward (no
grad) and forward + backward; median (and min) wall-clock ms of --repeat runs after 2
warm-ups, and the mean process CPU ms per run (all threads; steadier on a shared machine).

    python benchmarks/roi_ops.py [--repeat 9] [--only pool|align] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from fasterrcnn.benchmark.ops import TORCHVISION_MS, random_boxes  # noqa: E402
from fasterrcnn.benchmark.timing import measure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--only", choices=["pool", "align"], default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from fasterrcnn.ops.roi_pool import roi_pool

    if args.only != "pool":
        from fasterrcnn.ops.roi_align import roi_align

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rois, _ = random_boxes(300, seed=1)
    rois = torch.cat([torch.zeros(300, 1), rois], 1).to(dev)
    feats = torch.randn(1, 512, 38, 50, generator=torch.Generator().manual_seed(2)).to(dev)
    feats_g = feats.clone().requires_grad_(True)

    def pool_fwd() -> None:
        with torch.no_grad():
            roi_pool(feats, rois, (7, 7), 1 / 16)

    def pool_fwd_bwd() -> None:
        feats_g.grad = None
        roi_pool(feats_g, rois, (7, 7), 1 / 16).sum().backward()

    def align_fwd() -> None:
        with torch.no_grad():
            roi_align(feats, rois, (7, 7), 1 / 16, sampling_ratio=2, aligned=True)

    def align_fwd_bwd() -> None:
        feats_g.grad = None
        roi_align(feats_g, rois, (7, 7), 1 / 16, sampling_ratio=2, aligned=True).sum().backward()

    cases = []
    if args.only in (None, "pool"):
        cases += [("roi_pool_fwd", pool_fwd), ("roi_pool_fwd_bwd", pool_fwd_bwd)]
    if args.only in (None, "align"):
        cases += [("roi_align_fwd", align_fwd), ("roi_align_fwd_bwd", align_fwd_bwd)]
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
