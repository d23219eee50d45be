"""Our detection ops against torchvision's CPU kernels, side by side in one run, same inputs.

    python benchmarks/torchvision_ops_compare.py --tv-python V/bin/python [--rounds 3] [--repeat 7]
                                                 [--threads 2] [--markdown BENCHMARKS.md]

The workload is `fasterrcnn.benchmark.ops`'s (fixed seeds): NMS of 6,000 boxes at IoU 0.7 (and
batched over 5 categories, as the proposal layer batches its levels), RoI max pooling and RoIAlign
of 300 RoIs on a 1x512x38x50 map (7x7, scale 1/16; sampling_ratio 2, aligned), forward and
forward + backward, and the 300 x 6,000 IoU matrix. The inputs are made once here and saved; each
round runs three worker processes one after the other on the same file: ours (numba installed:
the compiled NMS loop, RoI pooling scan and IoU kernel), ours without numba (its PyTorch code), and
torchvision 0.29 in its own venv (torchvision is never this project's dependency). Each worker
prints medians of --repeat runs after 2 warm-ups and saves its outputs, which are compared here
(same kept indices, same pooled values). `--markdown` replaces the section between
`<!-- torchvision-ops:begin -->` and `<!-- torchvision-ops:end -->`.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = ("nms", "batched_nms", "roi_pool_fwd", "roi_pool_fwd_bwd", "roi_align_fwd", "roi_align_fwd_bwd", "box_iou")
SIDES = ("ours", "ours_no_numba", "torchvision")
TARGET = 0.5


def make_inputs(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from fasterrcnn.benchmark.ops import random_boxes

    boxes, scores = random_boxes(6000)
    rois, _ = random_boxes(300, seed=1)
    g = torch.Generator().manual_seed(3)
    torch.save({"boxes": boxes, "scores": scores, "idxs": torch.randint(0, 5, (6000,), generator=g),
                "rois": torch.cat([torch.zeros(300, 1), rois], 1),
                "feats": torch.randn(1, 512, 38, 50, generator=torch.Generator().manual_seed(2))}, path)


def _ops(side: str):
    if side == "torchvision":
        import torchvision.ops as ops

        return ops
    sys.path.insert(0, str(ROOT))
    import fasterrcnn.ops as ops

    if side == "ours_no_numba":
        import importlib

        importlib.import_module("fasterrcnn.ops.roi_pool.scan")._compiled_scan = lambda: None
        importlib.import_module("fasterrcnn.ops.nms.loop")._compiled_greedy_loop = lambda: None
        importlib.import_module("fasterrcnn.ops.boxes")._compiled_iou = lambda: None
    return ops


def _time(fn, repeat: int) -> float:
    for _ in range(2):
        fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return 1000 * statistics.median(runs)


def worker(side: str, inputs: Path, out: Path, repeat: int, threads: int) -> None:
    torch.set_num_threads(threads)
    ops = _ops(side)
    d = torch.load(inputs, weights_only=True)
    boxes, scores, idxs, rois, feats = d["boxes"], d["scores"], d["idxs"], d["rois"], d["feats"]
    feats_g = feats.clone().requires_grad_(True)

    def fwd_bwd(op, **kw):
        feats_g.grad = None
        op(feats_g, rois, (7, 7), 1 / 16, **kw).sum().backward()

    align = {"sampling_ratio": 2, "aligned": True}
    fns = {
        "nms": lambda: ops.nms(boxes, scores, 0.7),
        "batched_nms": lambda: ops.batched_nms(boxes, scores, idxs, 0.7),
        "roi_pool_fwd": lambda: ops.roi_pool(feats, rois, (7, 7), 1 / 16),
        "roi_pool_fwd_bwd": lambda: fwd_bwd(ops.roi_pool),
        "roi_align_fwd": lambda: ops.roi_align(feats, rois, (7, 7), 1 / 16, **align),
        "roi_align_fwd_bwd": lambda: fwd_bwd(ops.roi_align, **align),
        "box_iou": lambda: ops.box_iou(rois[:, 1:], boxes),
    }
    with torch.no_grad():
        outputs = {c: fns[c]() for c in ("nms", "batched_nms", "roi_pool_fwd", "roi_align_fwd", "box_iou")}
    ms = {}
    for case in CASES:
        if case.endswith("_bwd"):
            ms[case] = _time(fns[case], repeat)
        else:
            with torch.no_grad():
                ms[case] = _time(fns[case], repeat)
    torch.save(outputs, out)
    print(json.dumps({"side": side, "torch": torch.__version__, "threads": torch.get_num_threads(), "ms": ms}))


def _compare(ours: dict, tv: dict, scores: torch.Tensor) -> dict[str, str]:
    notes = {}
    for case in ("nms", "batched_nms"):
        a, b = ours[case], tv[case]
        if torch.equal(a, b):
            notes[case] = "same kept indices in the same order"
        elif set(a.tolist()) == set(b.tolist()) and torch.equal(scores[a], scores[b]):
            notes[case] = (f"the same {a.numel()} kept boxes, in the same order except among exactly equal scores "
                           f"({int((a != b).sum())} positions)")
        else:
            notes[case] = f"DIFFERENT: kept {a.numel()} vs {b.numel()}"
    for case in ("roi_pool_fwd", "roi_align_fwd", "box_iou"):
        diff = (ours[case] - tv[case]).abs().max().item()
        notes[case] = "identical" if diff == 0 else f"max abs diff {diff:.1e}"
    return notes


def _markdown(rows: list[dict], notes: dict[str, str], meta: str) -> str:
    head = ("| round | case | ours (ms) | ours, no numba (ms) | torchvision (ms) | ours / torchvision | "
            "no numba / torchvision | target <= 0.5 |\n|---|---|---:|---:|---:|---:|---:|---|")
    lines = [meta, "", head]
    for r in rows:
        for c in CASES:
            o, n, t = r["ours"][c], r["ours_no_numba"][c], r["torchvision"][c]
            lines.append(f"| {r['round']} | {c} | {o:.2f} | {n:.2f} | {t:.2f} | {o / t:.2f}x | {n / t:.2f}x | "
                         f"{'met' if o / t <= TARGET else 'not met'} |")
    lines.append("")
    lines.append("Outputs, ours against torchvision's (forward cases): "
                 + "; ".join(f"{c}: {v}" for c, v in notes.items()) + ".")
    return "\n".join(lines)


def _write_section(path: Path, text: str) -> None:
    begin, end = "<!-- torchvision-ops:begin -->", "<!-- torchvision-ops:end -->"
    doc = path.read_text()
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin) + len(begin)] + "\n" + text + "\n" + doc[doc.index(end):]
    else:
        doc += f"\n{begin}\n{text}\n{end}\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tv-python", help="python of a venv with torchvision 0.29")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--markdown", type=Path, help="replace the torchvision-ops section of this file")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.inputs, args.out, args.repeat, args.threads)
    if not args.tv_python:
        ap.error("--tv-python is required")
    tmp = Path(tempfile.mkdtemp(prefix="ops_compare_"))
    inputs = tmp / "inputs.pt"
    make_inputs(inputs)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    rows = []
    for rnd in range(1, args.rounds + 1):
        row = {"round": rnd}
        for side in SIDES:
            py = args.tv_python if side == "torchvision" else sys.executable
            cmd = [py, __file__, "--worker", side, "--inputs", str(inputs), "--out", str(tmp / f"{side}.pt"),
                   "--repeat", str(args.repeat), "--threads", str(args.threads)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
            row[side] = res["ms"]
            row[side + "_torch"] = res["torch"]
        rows.append(row)
        print(f"round {rnd}: " + ", ".join(f"{c} {row['ours'][c]:.1f}/{row['ours_no_numba'][c]:.1f}/"
                                           f"{row['torchvision'][c]:.1f} ms" for c in CASES), flush=True)
    notes = _compare(torch.load(tmp / "ours.pt", weights_only=True), torch.load(tmp / "torchvision.pt", weights_only=True),
                     torch.load(inputs, weights_only=True)["scores"])
    cap = torch.backends.cpu.get_cpu_capability()
    meta = (f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/torchvision_ops_compare.py --tv-python "
            f"V/bin/python --rounds {args.rounds} --repeat {args.repeat} --markdown BENCHMARKS.md`: {os.cpu_count()} cores, "
            f"torch's CPU capability {cap}, {args.threads} threads; ours on torch {rows[0]['ours_torch']}, torchvision "
            f"0.29 on torch {rows[0]['torchvision_torch']} in its own venv; float32, median of {args.repeat} after 2 "
            "warm-ups, ms; each round runs the three sides back to back on the same saved inputs.")
    text = _markdown(rows, notes, meta)
    print(text)
    if args.markdown:
        _write_section(args.markdown, text)


if __name__ == "__main__":
    main()
