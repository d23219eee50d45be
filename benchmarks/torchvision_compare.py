"""Side-by-side inference speed: fasterrcnn against torchvision, same architecture and weights.

    python benchmarks/torchvision_compare.py --tv-python V/bin/python [--rounds 2] [--repeat 5]
        [--arch fasterrcnn_resnet50_fpn ...] [--markdown BENCHMARKS.md]

torchvision cannot be installed beside this project's torch, so it runs in a virtual
environment of its own (`python3 -m venv V && V/bin/pip install torch==2.14.1 torchvision==0.29.1`):
its side runs as a subprocess of that interpreter (scripts/torchvision_fixtures.py builds the
model through torchvision's builder on its COCO checkpoint's code path: FrozenBatchNorm2d, as
the official weights load), ours in this process, alternating arch by arch and round by round
(the machine's speed drifts; each ratio comes from one round). Both use the same deterministic
weights (tests/torchvision_weights.py) and the models' default sizes (800/1333 px for the R50
and MobileNet FPN models, 320/640 for the 320 model) on one 375x500 random image, median of
`--repeat` after two warm-ups, 2 threads, in fp32, fp32 + channels_last and, where the CPU
has native bf16, bf16 autocast + channels_last (ours: `prepare_for_inference`, BatchNorm folded,
bf16 weights under bf16); best = each side's fastest setting.

It also compares the detections of the two sides: fp32 against fp32 (labels in order, the
largest box and score differences), the other settings against torchvision's fp32. `--markdown FILE`
replaces the section between `<!-- torchvision-compare:begin -->` and `<!-- ...:end -->` of
FILE with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARCHS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
         "fasterrcnn_mobilenet_v3_large_320_fpn")
ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2
BEGIN, END = "<!-- torchvision-compare:begin -->", "<!-- torchvision-compare:end -->"

TV_SIDE = r"""
import json, statistics, sys, time, torch
sys.path.insert(0, sys.argv[1] + "/scripts")
import torchvision_fixtures as tvf
torch.set_num_threads(2)
arch, repeat, warmup, modes = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].split(",")
model = tvf.build(arch, {})
tvf.load_synthetic_weights(model)
image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
out = {"version": tvf.torchvision.__version__}
for mode in modes:
    if mode.endswith("_cl"):
        model = model.to(memory_format=torch.channels_last)
    times = []
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=mode.startswith("bf16")):
        for _ in range(repeat + warmup):
            t = time.perf_counter(); d = model([image])[0]; times.append(time.perf_counter() - t)
    out[mode] = statistics.median(times[warmup:])
    out[mode + "_dets"] = {k: d[k].float().tolist() for k in ("boxes", "labels", "scores")}
print(json.dumps(out))
"""


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX); without, bf16 autocast is
    emulated and several times slower than fp32."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def torchvision_side(tv_python: str, arch: str, repeat: int, modes: list[str]) -> dict:
    proc = subprocess.run([tv_python, "-c", TV_SIDE, str(ROOT), arch, str(repeat), str(WARMUP), ",".join(modes)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the torchvision side failed for {arch}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ours(arch: str, repeat: int, modes: list[str]) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from torchvision_weights import make_state_dict

    import fasterrcnn
    from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS
    from fasterrcnn.modeling.torchvision_weights import torchvision_state_dict

    torch.set_num_threads(2)
    skeleton = fasterrcnn.build_model(TORCHVISION_ARCHS[arch], 90)
    spec = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in torchvision_state_dict(skeleton).items()}
    state = make_state_dict(spec)
    image = torch.rand(3, 375, 500, generator=torch.Generator().manual_seed(0))
    out: dict = {}
    for mode in modes:
        model = fasterrcnn.load_torchvision(arch, state)
        bf16 = mode.startswith("bf16")
        model.prepare_for_inference(channels_last=mode.endswith("_cl"), autocast_dtype=torch.bfloat16 if bf16 else None)
        times = []
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            for _ in range(repeat + WARMUP):
                t = time.perf_counter()
                d = model([image])[0]
                times.append(time.perf_counter() - t)
        out[mode] = statistics.median(times[WARMUP:])
        out[mode + "_dets"] = {k: d[k].float().tolist() for k in ("boxes", "labels", "scores")}
    return out


def agreement(a: dict, b: dict) -> dict:
    """How two detection lists agree: the common prefix of equal labels, the largest box and
    score differences over it."""
    n = 0
    while n < min(len(a["labels"]), len(b["labels"])) and a["labels"][n] == b["labels"][n]:
        n += 1
    box = max((abs(x - y) for p, q in zip(a["boxes"][:n], b["boxes"][:n]) for x, y in zip(p, q)), default=0.0)
    score = max((abs(x - y) for x, y in zip(a["scores"][:n], b["scores"][:n])), default=0.0)
    return {"ours": len(a["labels"]), "theirs": len(b["labels"]), "same_labels_prefix": n,
            "same": n == len(a["labels"]) == len(b["labels"]), "max_box_px": box, "max_score": score}


NAMES = {"fp32": "fp32", "fp32_cl": "fp32 + channels_last", "bf16_cl": "bf16 autocast + channels_last"}


def _agreement_text(a: dict | None) -> str:
    if a is None:
        return "-"
    if a["same"]:
        return f"{a['ours']} = {a['theirs']}, same labels in order, boxes {a['max_box_px']:.1e} px, scores {a['max_score']:.1e}"
    return (f"{a['ours']} vs {a['theirs']}, first {a['same_labels_prefix']} labels equal (boxes {a['max_box_px']:.2f} px, "
            f"scores {a['max_score']:.3f})")


def markdown(rows: list[dict], tv_version: str, repeat: int, modes: list[str]) -> str:
    import torch

    native = "bf16_cl" in modes
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/torchvision_compare.py --tv-python V/bin/python "
        f"--markdown BENCHMARKS.md`: {os.cpu_count()} cores, torch's CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, " + ("native bf16" if native else
        "no native bf16 (bf16 autocast would be emulated, slower than fp32 on both sides, so not timed)") +
        f"; 2 threads; ours on torch {torch.__version__} with BatchNorm folded (`prepare_for_inference`), "
        f"torchvision {tv_version} in its own venv (checkpoint layout, FrozenBatchNorm2d); one 375x500 image at each "
        f"model's default size, s/image, median of {repeat} after {WARMUP} warm-ups; each row is one round (the two "
        "sides back to back, so the ratio is free of the machine's drift between rounds). Settings: "
        + ", ".join(NAMES[m] for m in modes) + "; best = each side's fastest.",
        "",
        "| round | model | " + " | ".join(f"torchvision {NAMES[m]}" for m in modes) + " | "
        + " | ".join(f"ours {NAMES[m]}" for m in modes) + " | ours best / torchvision best | target <= 0.5 "
        "| fp32 detections vs torchvision fp32 | channels_last" + (" / bf16" if native else "") + " vs torchvision fp32 |",
        "|---|---|" + "---|" * (2 * len(modes)) + "---|---|---|---|",
    ]
    for r in rows:
        other = _agreement_text(r["fp32_cl_agreement"])
        if native:
            other += " / " + _agreement_text(r["bf16_agreement"])
        lines.append(f"| {r['round']} | {r['arch'].removeprefix('fasterrcnn_')} | "
                     + " | ".join(f"{r['tv'][m]:.3f}" for m in modes) + " | "
                     + " | ".join(f"{r['us'][m]:.3f}" for m in modes)
                     + f" | {r['ratio_best']:.2f}x | {'met' if r['ratio_best'] <= 0.5 else 'not met'} | "
                     f"{_agreement_text(r['fp32_agreement'])} | {other} |")
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    content = path.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        raise SystemExit(f"{path} has no {BEGIN} ... {END} section to replace")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tv-python", required=True, help="python of a venv with torchvision 0.29")
    p.add_argument("--arch", action="append", choices=ARCHS, help="only these (repeatable; default all four)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                   help="also time bf16 autocast + channels_last (auto: where the CPU has native bf16, AVX-512 BF16 "
                        "or AMX; elsewhere it is emulated, several times slower than fp32)")
    p.add_argument("--markdown", type=Path, help="replace the torchvision-compare section of this file")
    p.add_argument("--json", type=Path, help="also write the raw rows here")
    args = p.parse_args()
    modes = ["fp32", "fp32_cl"] + (["bf16_cl"] if args.bf16 == "yes" or (args.bf16 == "auto" and cpu_has_bf16()) else [])
    rows, version = [], "?"
    for r in range(args.rounds):
        for arch in args.arch or ARCHS:
            tv = torchvision_side(args.tv_python, arch, args.repeat, modes)
            us = ours(arch, args.repeat, modes)
            version = tv["version"]
            best_tv, best_us = min(tv[m] for m in modes), min(us[m] for m in modes)
            row = {"round": r + 1, "arch": arch, "tv": tv, "us": us, "ratio_best": best_us / best_tv,
                   "fp32_agreement": agreement(us["fp32_dets"], tv["fp32_dets"]),
                   "fp32_cl_agreement": agreement(us["fp32_cl_dets"], tv["fp32_dets"]),
                   "bf16_agreement": agreement(us["bf16_cl_dets"], tv["fp32_dets"]) if "bf16_cl" in modes else None}
            rows.append(row)
            print(f"round {r + 1} {arch:38s} torchvision {', '.join(f'{m} {tv[m]:.3f} s' for m in modes)} | "
                  f"ours {', '.join(f'{m} {us[m]:.3f} s' for m in modes)} | best/best {row['ratio_best']:.2f}x | "
                  f"fp32 same detections: {row['fp32_agreement']['same']}", flush=True)
    table = markdown(rows, version, args.repeat, modes)
    print(table)
    if args.markdown:
        write_section(args.markdown, table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
