"""`fasterrcnn bench`: reproducible speed measurements (see BENCHMARKS.md)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the speed of the ops or of a model",
        description="Reproducible speed measurements: warm-up, then the median of repeated runs.",
    )
    p.set_defaults(func=None, _parser=p)
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT")

    ops = bsub.add_parser(
        "ops",
        help="NMS / RoI pooling / RoIAlign on the RPN workload of issue 2",
        description=(
            "Times nms (6000 boxes, IoU 0.7, all kept and first 300 kept) and roi_pool / "
            "roi_align (300 RoIs on 1x512x38x50, 7x7, scale 1/16), forward and forward+backward, "
            "and compares with torchvision 0.29's CPU kernels measured on this machine kind."
        ),
    )
    ops.add_argument("--repeat", type=int, default=7, help="timed runs per case (median reported; default 7)")
    ops.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ops.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ops.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ops.set_defaults(func=_run_ops)

    model = bsub.add_parser(
        "model",
        help="per-stage profile of a detector (inference or a training step)",
        description=(
            "Per-stage profile of one model on random weights: transform, backbone, RPN head, proposal "
            "layer (the paper's 'proposal time'), RoI pooling, detection head, post-processing, total, "
            "images/s and peak memory; warm-up, then the median of --repeat runs. --mode train times one "
            "step (forward + backward + SGD step) on random ground truth."
        ),
    )
    model.add_argument("--preset", default="vgg16", help="vgg16, zf, small, resnet50, ... (default vgg16)")
    model.add_argument("--size", default="600x800", help="input image HEIGHTxWIDTH, used as is (default 600x800)")
    model.add_argument("--mode", default="inference", choices=("inference", "train"), help="inference or train (default inference)")
    model.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="numeric precision (default fp32)")
    model.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    model.add_argument("--batch-size", type=int, default=1, help="images per run (default 1)")
    model.add_argument("--proposals", type=int, default=300, help="RPN proposals kept at test time (default 300)")
    model.add_argument("--repeat", type=int, default=7, help="timed runs (median reported; default 7)")
    model.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    model.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    model.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    model.add_argument("--json", action="store_true", help="print JSON instead of a table")
    model.set_defaults(func=_run_model)


def _run_ops(args: argparse.Namespace) -> int:
    import torch

    from fasterrcnn.benchmark.ops import format_table, run_ops_benchmark
    from fasterrcnn.errors import ConfigError

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    _set_threads(args.threads)
    rows = run_ops_benchmark(repeat=args.repeat, device=args.device)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "device": args.device, "rows": rows}, indent=2))
    else:
        print(f"fasterrcnn bench ops  (device {args.device}, {torch.get_num_threads()} threads, median of {args.repeat})")
        print(format_table(rows))
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    from fasterrcnn.errors import ConfigError

    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 600x800") from None
    if h < 32 or w < 32:
        raise ConfigError(f"--size {text!r}: both sides must be at least 32 pixels")
    return h, w


def _run_model(args: argparse.Namespace) -> int:

    from fasterrcnn.benchmark.model import format_profile, profile_model
    from fasterrcnn.engine.precision import resolve_device, resolve_precision
    from fasterrcnn.errors import ConfigError

    if args.repeat < 1 or args.warmup < 0 or args.batch_size < 1 or args.proposals < 1:
        raise ConfigError("--repeat, --batch-size and --proposals must be >= 1 and --warmup >= 0")
    size = _parse_size(args.size)
    _set_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    try:
        result = profile_model(
            args.preset, image_size=size, mode=args.mode, precision=precision, channels_last=args.channels_last,
            device=device, batch_size=args.batch_size, repeat=args.repeat, warmup=args.warmup, proposals=args.proposals,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    print(json.dumps(result, indent=2) if args.json else format_profile(result))
    return 0


def _set_threads(threads: int | None) -> None:
    """torch's intra-op threads from --threads (None: torch's default)."""
    import torch

    from fasterrcnn.errors import ConfigError

    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
