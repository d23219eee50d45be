"""Deployment speed side by side: eager fp32, eager bf16 + channels_last, onnxruntime fp32 and
onnxruntime int8 for our models, beside torchvision's models the way its users deploy them.

    python benchmarks/deploy_compare.py --tv-python /work/tv/bin/python \\
        --demo runs/demo/train/model_final.pt --demo-data runs/demo/data \\
        --finetuned runs/raccoon_ft1/model_final.pt --finetuned-data ../shared/datasets/raccoon \\
        [--rounds 2] [--repeat 5] [--json deploy.json]

One image for every model: the first test photo of the fine-tuning data set (its shorter side
brought to 600 px, so every model runs at 600 px, longer side <= 1000). Our models: `small`
(the demo's checkpoint), `zf` and `vgg16` (random weights, 20 classes: the timing does not
depend on the weights beyond the number of detections), and the fine-tuned EfficientNet-Lite0
FPN. int8 files are calibrated on 32 training images of their data set (the random-weight ones
on the demo's). 2 threads everywhere; s/image = median of --repeat after 2 warm-ups; the rounds
alternate ours and torchvision's (the machine's speed drifts), and the table keeps each
figure's best round. torchvision runs in its own interpreter (`benchmarks/tv_deploy_side.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 2
SCALE = {"transform.min_size": 600, "transform.max_size": 1000}


def test_image(data: Path) -> np.ndarray:
    from fasterrcnn.data.transforms import read_image
    from fasterrcnn.modeling.transform import resized_size

    stem = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    image = read_image(next((data / "JPEGImages").glob(f"{stem}.*")))
    h, w = resized_size(image.height, image.width, 600, 1000)
    image = image.resize((w, h), resample=3)  # bicubic (Pillow), antialiased
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255)


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(WARMUP + repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times[WARMUP:])


def our_models(args: argparse.Namespace) -> dict:
    from fasterrcnn.modeling.checkpoint import load_checkpoint
    from fasterrcnn.modeling.faster_rcnn import build_model

    torch.manual_seed(0)
    return {
        "small (demo model)": (lambda: load_checkpoint(args.demo, **SCALE)[0], args.demo_data),
        "zf (random weights)": (lambda: build_model("zf", 20), args.demo_data),
        "vgg16 (random weights)": (lambda: build_model("vgg16", 20), args.demo_data),
        "efficientnet_lite0_fpn (raccoon fine-tuned)": (lambda: load_checkpoint(args.finetuned, **SCALE)[0],
                                                        args.finetuned_data),
    }


def export_all(args: argparse.Namespace, work: Path) -> dict:
    from fasterrcnn.export.onnx import export_onnx
    from fasterrcnn.export.quantize import calibration_images, quantize_int8

    files = {}
    for i, (name, (make, data)) in enumerate(our_models(args).items()):
        fp32, int8 = work / f"m{i}.onnx", work / f"m{i}.int8.onnx"
        export_onnx(make(), fp32)
        quantize_int8(fp32, int8, calibration_images(data, 32), progress=False)
        files[name] = (fp32, int8)
        print(f"exported {name}", flush=True)
    return files


def ours(args: argparse.Namespace, files: dict, image: torch.Tensor) -> dict:
    from fasterrcnn.export.onnx import OnnxDetector

    torch.set_num_threads(2)
    out = {}
    for name, (make, _) in our_models(args).items():
        row = {}
        with torch.no_grad():
            model = make().prepare_for_inference()
            row["eager_fp32"] = timed(lambda m=model: m([image]), args.repeat)
            row["detections"] = len(model([image])[0]["boxes"])
            model = make().prepare_for_inference(channels_last=True, autocast_dtype=torch.bfloat16)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                row["eager_bf16_cl"] = timed(lambda m=model: m([image]), args.repeat)
        for key, path in zip(("onnxruntime_fp32", "onnxruntime_int8"), files[name]):
            detector = OnnxDetector(path, threads=2)
            row[key] = timed(lambda d=detector: d([image]), args.repeat)
        out[name] = row
        print(f"ours {name}: {row}", flush=True)
    return out


def torchvision_side(args: argparse.Namespace, image_path: Path, work: Path) -> dict:
    proc = subprocess.run([args.tv_python, str(ROOT / "benchmarks" / "tv_deploy_side.py"), str(image_path),
                           str(args.repeat), str(WARMUP), str(work)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"the torchvision side failed:\n{proc.stderr[-3000:]}")
    print(proc.stderr.strip(), flush=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best(rounds: list[dict], name: str, key: str) -> float | None:
    values = [r[name][key] for r in rounds if key in r.get(name, {})]
    return min(values) if values else None


def markdown(ours_rounds: list[dict], tv_rounds: list[dict], versions: dict) -> str:
    keys = ("eager_fp32", "eager_bf16_cl", "onnxruntime_fp32", "onnxruntime_int8")
    lines = ["| model | eager fp32 | eager bf16 + channels_last | onnxruntime fp32 | onnxruntime int8 | best |",
             "|---|---:|---:|---:|---:|---:|"]

    def cell(v: float | None) -> str:
        return f"{v:.3f}" if v is not None else "n/a"

    for name in ours_rounds[0]:
        vals = [best(ours_rounds, name, k) for k in keys]
        lines.append(f"| ours: {name} | " + " | ".join(cell(v) for v in vals) + f" | {min(v for v in vals if v):.3f} |")
    for name in (n for n in tv_rounds[0] if isinstance(tv_rounds[0][n], dict)):
        vals = [best(tv_rounds, name, k) for k in keys]
        note = tv_rounds[0][name].get("onnx_error")
        lines.append(f"| torchvision: {name} | " + " | ".join(cell(v) for v in vals)
                     + f" | {min(v for v in vals if v):.3f} |" + (f" export failed: {note}" if note else ""))
    lines.append(f"\ns/image, 2 threads; torch {torch.__version__} (ours), torchvision {versions.get('torchvision')} "
                 f"with torch {versions.get('torch')}, onnxruntime {versions.get('onnxruntime')}.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tv-python", required=True)
    p.add_argument("--demo", type=Path, required=True)
    p.add_argument("--demo-data", type=Path, required=True)
    p.add_argument("--finetuned", type=Path, required=True)
    p.add_argument("--finetuned-data", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="deploy-") as tmp:
        work = Path(tmp)
        array = test_image(args.finetuned_data)
        np.save(work / "image.npy", array)
        image = torch.from_numpy(array)
        files = export_all(args, work)
        ours_rounds, tv_rounds = [], []
        for _ in range(args.rounds):
            ours_rounds.append(ours(args, files, image))
            tv_rounds.append(torchvision_side(args, work / "image.npy", work))
    table = markdown(ours_rounds, tv_rounds, tv_rounds[0])
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"ours": ours_rounds, "torchvision": tv_rounds}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
