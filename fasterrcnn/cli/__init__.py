"""The `fasterrcnn` command line: one subcommand per job.

Each subcommand lives in its own module under `fasterrcnn.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` to the function that runs it.
Modules import torch and the heavy parts of the library lazily, inside `func`, so that
`fasterrcnn --help` answers at once.

Errors in the user's input (`fasterrcnn.errors.FasterRCNNError`, including those raised in
a DataLoader worker or a training process, unwrapped) and files that cannot be read or
written (OSError) are printed as one line prefixed with `fasterrcnn: error:` and exit with
status 2; `--debug` (or FASTERRCNN_DEBUG=1) prints their traceback too. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from fasterrcnn import __version__
from fasterrcnn.errors import FasterRCNNError, error_from_traceback

# Subcommand modules, in the order `--help` lists them.
SUBCOMMANDS: tuple[str, ...] = ("demo", "train", "eval", "detect", "export", "data", "bench", "weights", "explain", "experiment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fasterrcnn",
        description=(
            "Faster R-CNN (Ren et al. 2015): train, evaluate and run a Region Proposal "
            "Network + Fast R-CNN detector. Run `fasterrcnn COMMAND --help` for each command."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fasterrcnn {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of errors too (for bug reports; or set FASTERRCNN_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"fasterrcnn.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that busy-wait between the many medium-sized ops of detection slow them
    # down many times over when another process competes for the cores; sleeping instead
    # costs nothing measurable (BENCHMARKS.md). It must be set before torch is imported, which
    # the subcommands do lazily; an explicit setting in the environment wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # oneDNN prepares (JIT-compiles) a convolution for every input shape and keeps 1,024 of them;
    # training on images of varied sizes needs more (~80 per padded batch shape: forward and two
    # backward kernels per conv), and recompiling cost 18 ms per iteration of the demo (BENCHMARKS.md).
    # Read when oneDNN first runs, so any time before the first convolution.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # `fasterrcnn` or `fasterrcnn bench` without a (sub)command: show what is available.
        (getattr(args, "_parser", None) or parser).print_help()
        return 2
    debug = args.debug or os.environ.get("FASTERRCNN_DEBUG", "") not in ("", "0")
    try:
        result = args.func(args)
    except (FasterRCNNError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"fasterrcnn: error: {user_message(exc)}", file=sys.stderr)
        return _leave(2)
    except KeyboardInterrupt:
        print("fasterrcnn: interrupted", file=sys.stderr)
        return _leave(130)
    return _leave(int(result or 0))


def _leave(code: int) -> int:
    """The exit status; a process of a data-parallel run (torchrun) leaves its process group
    first and exits at once (engine.distributed.exit_process says why)."""
    if "torch.distributed" not in sys.modules:
        return code
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return code
    from fasterrcnn.engine.distributed import exit_process, shutdown

    if code == 0:
        shutdown()  # on an error the other ranks may be gone: no collective
    exit_process(code)


def user_message(exc: BaseException) -> str:
    """The one line shown for a user's error: the original message of an error raised in
    another process; for a file system error, the file and the system's reason."""
    if isinstance(exc, OSError) and not isinstance(exc, FasterRCNNError):
        name = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        return f"{name}: {reason}" if name else reason
    inner = error_from_traceback(str(exc))
    return str(inner) if inner is not None else str(exc)
