"""Inference speed of torchvision's own Faster R-CNN models on this machine (the reference numbers).

    /work/tv/bin/python benchmarks/torchvision_speed.py [--repeat 5] [--threads 2] [--arch A ...] [--json out.json]

Needs an interpreter with torchvision (a separate venv: torchvision is never a dependency of
the project). Each model is built as scripts/torchvision_fixtures.py builds it (torchvision's
builder on its COCO checkpoint's code path, so FrozenBatchNorm2d where the checkpoint has it),
at its DEFAULT sizes (800 px shorter side for R50 and MobileNet-FPN, 320 for the 320 model),
with the synthetic weights of tests/torchvision_weights.py, in eval mode. It times one
375x500 random image (torch.rand, seed 0), s/image, median of --repeat runs after 2
warm-ups: fp32 eager, then bf16 autocast with the model converted to channels_last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import torchvision_fixtures as tvf  # noqa: E402

WARMUP = 2


def time_model(model, image: torch.Tensor, repeat: int, bf16: bool) -> tuple[float, float, int]:
    """(median wall s, median process CPU s, detections) per image."""
    wall, cpu, n = [], [], 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(WARMUP + repeat):
            t, c = time.perf_counter(), time.process_time()
            out = model([image])
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            n = len(out[0]["boxes"])
    return statistics.median(wall[WARMUP:]), statistics.median(cpu[WARMUP:]), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=list(tvf.ARCHS), help="only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights-none", action="store_true",
                        help="build as weights=None, weights_backbone=None (BatchNorm2d everywhere) instead of the "
                             "checkpoint layout (FrozenBatchNorm2d, whose float32 x*scale+bias runs outside autocast)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
    results = {}
    for arch in args.arch or list(tvf.ARCHS):
        model = tvf.build(arch, {}, checkpoint_layout=not args.weights_none)
        tvf.load_synthetic_weights(model)
        fp32, fp32_cpu, n32 = time_model(model, image, args.repeat, bf16=False)
        model = model.to(memory_format=torch.channels_last)
        bf16, bf16_cpu, n16 = time_model(model, image, args.repeat, bf16=True)
        t = model.transform
        results[arch] = {"min_size": int(t.min_size[-1]), "max_size": int(t.max_size), "fp32_s": fp32, "bf16_s": bf16,
                         "fp32_cpu_s": fp32_cpu, "bf16_cpu_s": bf16_cpu, "detections_fp32": n32, "detections_bf16": n16}
        print(f"{arch}: fp32 {fp32:.3f} s (cpu {fp32_cpu:.3f}), bf16+channels_last {bf16:.3f} s (cpu {bf16_cpu:.3f})",
              flush=True)
    layout = "weights=None layout (BatchNorm2d)" if args.weights_none else "checkpoint layout (FrozenBatchNorm2d)"
    print(f"\ntorch {torch.__version__}, torchvision {tvf.torchvision.__version__}, {args.threads} threads, "
          f"375x500 image, median of {args.repeat} after {WARMUP} warm-ups, {layout}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (a busy machine inflates the wall times; "
          f"process CPU s / threads is the idle-machine bound)")
    print("| model | size (min/max) | fp32 s/img | bf16 + channels_last s/img | bf16 speed-up | fp32 / bf16 CPU s |")
    print("|---|---|---|---|---|---|")
    for arch, r in results.items():
        print(f"| {arch} | {r['min_size']}/{r['max_size']} | {r['fp32_s']:.3f} | {r['bf16_s']:.3f} | "
              f"{r['fp32_s'] / r['bf16_s']:.2f}x | {r['fp32_cpu_s']:.2f} / {r['bf16_cpu_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
