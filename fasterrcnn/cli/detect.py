"""`fasterrcnn detect`: run a trained detector on images and folders."""

from __future__ import annotations

import argparse

from fasterrcnn.cli._models import TORCHVISION_HELP, add_weights_argument
from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "detect",
        help="detect objects in images or folders; write annotated copies and a COCO results JSON",
        description=(
            "Run a checkpoint on image files and folders (jpg, png, bmp, webp, tif, gif). Writes an "
            "annotated copy of each image (boxes with score >= --score-thresh, class names, scores) and "
            "OUT/detections.json in COCO results format ([{image_id, category_id, bbox: [x, y, w, h], "
            "score}], every detection the model returned) with OUT/images.json mapping image ids to files. "
            "Decoding and resizing run in worker processes alongside the network."
        ),
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a fasterrcnn checkpoint (model_final.pt), or an ONNX file from `fasterrcnn export` (run by onnxruntime)")
    src.add_argument("--torchvision", metavar="ARCH", choices=sorted(TORCHVISION_ARCHS), help=TORCHVISION_HELP)
    add_weights_argument(p)
    p.add_argument("--out", default="runs/detect", help="output folder (default runs/detect)")
    p.add_argument("--score-thresh", type=float, default=0.5, help="draw detections with at least this score (default 0.5)")
    p.add_argument("--format", dest="image_format", choices=("jpg", "png"), default=None,
                   help="format of the annotated copies (default: the input's, png for others)")
    p.add_argument("--no-draw", dest="draw", action="store_false", help="only write detections.json")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="inference precision (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster with bf16 on CPU)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="inference setting override, e.g. post_nms_top_n_test=1000 (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files of an earlier run in --out (without it, existing outputs are refused; an input "
                        "image is never written over)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterrcnn.cli._models import load_model
    from fasterrcnn.cli.train import parse_overrides
    from fasterrcnn.engine.detect import detect_files, find_images
    from fasterrcnn.engine.precision import autocast_dtype, resolve_device, resolve_precision
    from fasterrcnn.errors import ConfigError

    if not 0.0 <= args.score_thresh <= 1.0:
        raise ConfigError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    if args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")
    paths = find_images(args.inputs)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    model, source = load_model(args, device, parse_overrides(args.overrides))
    model.prepare_for_inference(channels_last=args.channels_last, autocast_dtype=autocast_dtype(precision))
    fmt = f".{args.image_format}" if args.image_format else None
    res = detect_files(
        model, paths, args.out, device=device, precision=precision, score_thresh=args.score_thresh,
        batch_size=args.batch_size, num_workers=args.workers, draw=args.draw, image_format=fmt, progress=args.progress,
        overwrite=args.overwrite, inputs=[source],
    )
    print(f"{res.images} image(s) in {res.seconds:.1f} s ({res.seconds / max(res.images, 1):.3f} s/image): "
          f"{res.detections} detection(s) with score >= {args.score_thresh}")
    if res.failed:
        print(f"{len(res.failed)} file(s) could not be read and were skipped:")
        for msg in res.failed:
            print(f"  {msg}")
    if args.draw:
        print(f"annotated images: {args.out}/")
    print(f"detections: {res.results_json} (image ids: {res.images_json})")
    return 1 if res.failed and not res.images else 0
