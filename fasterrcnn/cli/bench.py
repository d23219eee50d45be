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


def _run_ops(args: argparse.Namespace) -> int:
    import torch

    from fasterrcnn.benchmark.ops import format_table, run_ops_benchmark
    from fasterrcnn.errors import ConfigError

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run_ops_benchmark(repeat=args.repeat, device=args.device)
    if args.json:
        print(json.dumps({"threads": torch.get_num_threads(), "device": args.device, "rows": rows}, indent=2))
    else:
        print(f"fasterrcnn bench ops  (device {args.device}, {torch.get_num_threads()} threads, median of {args.repeat})")
        print(format_table(rows))
    return 0
