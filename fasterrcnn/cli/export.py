"""`fasterrcnn export`: a trained detector as one ONNX file (float32 or int8) for onnxruntime."""

from __future__ import annotations

import argparse

from fasterrcnn.cli._models import TORCHVISION_HELP, add_weights_argument
from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX (whole detector, dynamic image size; optionally int8)",
        description=(
            "Write the whole detector as one ONNX graph: input `image` float32 [3, H, W] (RGB in [0, 1], any H and "
            "W), outputs `boxes` [D, 4] (x1 y1 x2 y2 in the input image's pixels), `labels` [D] (1..K) and `scores` "
            "[D]. Resizing to the test scale, normalisation, the RPN, NMS, RoI pooling and the per-class "
            "post-processing are all inside, as ONNX's standard operators, so onnxruntime (or any ONNX runtime) "
            "runs it alone. `fasterrcnn detect/eval --checkpoint FILE.onnx` run the file with onnxruntime. "
            "With --int8, the convolutions and fully connected layers are quantised to int8 (onnxruntime's static "
            "QDQ quantisation, calibrated on --calibration images); box decoding, NMS, RoI pooling and softmax stay "
            "in float. Needs `pip install \"fasterrcnn[onnx]\"`."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a fasterrcnn checkpoint (model_final.pt)")
    src.add_argument("--torchvision", metavar="ARCH", choices=sorted(TORCHVISION_ARCHS), help=TORCHVISION_HELP)
    add_weights_argument(p)
    p.add_argument("--out", required=True, help="the ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 16 or later (default 18)")
    p.add_argument("--min-size", type=int, default=None, help="test-time shorter side in pixels (default: the model's)")
    p.add_argument("--max-size", type=int, default=None, help="test-time longer-side limit (default: the model's)")
    p.add_argument("--int8", action="store_true", help="quantise the convolutions and fc layers to int8 (needs --calibration)")
    p.add_argument("--calibration", metavar="DIR", help="images to calibrate int8 on: a VOC data set folder (its train split "
                                                        "is used) or any folder of images (searched recursively)")
    p.add_argument("--calibration-images", type=int, default=32, metavar="N",
                   help="how many calibration images to use (default 32)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="inference setting override before export, e.g. post_nms_top_n_test=100 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from fasterrcnn.cli._models import load_model
    from fasterrcnn.cli.train import parse_overrides
    from fasterrcnn.errors import ConfigError

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out must name an .onnx file, got {args.out}")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} exists; give --overwrite to replace it")
    if args.checkpoint and str(args.checkpoint).lower().endswith(".onnx"):
        raise ConfigError("--checkpoint is already an ONNX file; export reads a PyTorch checkpoint (.pt)")
    if args.int8 and not args.calibration:
        raise ConfigError("--int8 needs --calibration DIR: images (ideally from the training set) to calibrate on")
    if args.calibration and not args.int8:
        raise ConfigError("--calibration goes with --int8")
    if args.calibration_images < 1:
        raise ConfigError(f"--calibration-images must be >= 1, got {args.calibration_images}")
    for name in ("min_size", "max_size", "opset"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    from fasterrcnn.export.onnx import export_onnx
    from fasterrcnn.export.ops import OPSET

    model, source = load_model(args, torch.device("cpu"), parse_overrides(args.overrides))
    start = time.perf_counter()
    float_path = out.with_name(out.stem + ".fp32.onnx") if args.int8 else out
    export_onnx(model, float_path, opset=args.opset or OPSET, min_size=args.min_size, max_size=args.max_size)
    print(f"exported {source} -> {float_path} ({float_path.stat().st_size / 1e6:.1f} MB, "
          f"{time.perf_counter() - start:.1f} s)")
    if args.int8:
        from fasterrcnn.export.quantize import calibration_images, quantize_int8

        images = calibration_images(args.calibration, args.calibration_images)
        start = time.perf_counter()
        quantize_int8(float_path, out, images, progress=args.progress)
        print(f"int8 (calibrated on {len(images)} images from {args.calibration}) -> {out} "
              f"({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    print(f"run it: fasterrcnn detect IMAGES --checkpoint {out}")
    return 0
