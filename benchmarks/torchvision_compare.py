"""Side-by-side inference speed: fasterrcnn against torchvision, same architecture and weights.

    python benchmarks/torchvision_compare.py --tv-python /path/to/venv/bin/python [--rounds 3]

torchvision cannot be installed beside this project's torch, so it runs in its own virtual
environment (`python3 -m venv V && V/bin/pip install torch==2.14.1 torchvision==0.29.1`):
this script runs the torchvision side as a subprocess of that interpreter and ours in this
process, alternating round by round (the machine's speed drifts; compare the ratio of one
round). Both build the same architecture with the same deterministic weights
(tests/torchvision_weights.py rule) and time one 375x500 image resized by the models' own
rule (800 px shorter side for the R50 models), median of `--repeat` after two warm-ups, in
fp32 and in bf16 autocast + channels_last, with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn")
HERE = Path(__file__).resolve().parent

TV_SIDE = r"""
import json, statistics, sys, time, torch
from torchvision.models import detection
sys.path.insert(0, sys.argv[1])
from torchvision_weights import make_state_dict
torch.set_num_threads(2)
arch, repeat = sys.argv[2], int(sys.argv[3])
model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=91).eval()
spec = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
model.load_state_dict(make_state_dict(spec))
image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
out = {}
for mode in ("fp32", "bf16"):
    m = model.to(memory_format=torch.channels_last) if mode == "bf16" else model
    times = []
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
        for i in range(repeat + 2):
            t = time.perf_counter(); m([image]); times.append(time.perf_counter() - t)
    out[mode] = statistics.median(times[2:])
print(json.dumps(out))
"""


def ours(arch: str, repeat: int) -> dict[str, float]:
    import torch

    sys.path.insert(0, str(HERE.parent / "tests"))
    from torchvision_weights import make_state_dict

    import fasterrcnn
    from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS
    from fasterrcnn.modeling.torchvision_weights import torchvision_key_map

    torch.set_num_threads(2)
    skeleton = fasterrcnn.build_model(TORCHVISION_ARCHS[arch], 90)
    inverse = {v: k for k, v in torchvision_key_map(skeleton).items()}
    spec = {inverse[k]: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in skeleton.state_dict().items()}
    image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
    out = {}
    for mode in ("fp32", "bf16"):
        model = fasterrcnn.load_torchvision(arch, make_state_dict(spec))
        model.prepare_for_inference(channels_last=mode == "bf16",
                                    autocast_dtype=torch.bfloat16 if mode == "bf16" else None)
        times = []
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16"):
            for _ in range(repeat + 2):
                t = time.perf_counter()
                model([image])
                times.append(time.perf_counter() - t)
        out[mode] = statistics.median(times[2:])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tv-python", required=True, help="python of a venv with torchvision 0.29")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    rows = []
    for r in range(args.rounds):
        for arch in ARCHS:
            tv = json.loads(subprocess.run([args.tv_python, "-c", TV_SIDE, str(HERE.parent / "tests"), arch,
                                            str(args.repeat)], capture_output=True, text=True, check=True).stdout)
            us = ours(arch, args.repeat)
            best_tv, best_us = min(tv.values()), min(us.values())
            rows.append({"round": r + 1, "arch": arch, "torchvision": tv, "fasterrcnn": us,
                         "ratio_best": best_us / best_tv})
            print(f"round {r + 1} {arch:38s} torchvision fp32 {tv['fp32']:.3f} s, bf16+CL {tv['bf16']:.3f} s | "
                  f"fasterrcnn fp32 {us['fp32']:.3f} s, bf16+CL {us['bf16']:.3f} s | best/best {best_us / best_tv:.2f}x",
                  flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
