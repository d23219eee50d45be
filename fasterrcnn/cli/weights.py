"""`fasterrcnn weights`: torchvision's published detection weights (list, download)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list or download torchvision's COCO detection weights",
        description=(
            "torchvision's Faster R-CNN COCO weights, which `detect`/`eval --torchvision ARCH --weights FILE` and "
            "fasterrcnn.load_torchvision run. `download NAME` fetches one from its published address (when this "
            "machine is online) and checks the SHA-256 prefix in its file name; offline, it says which file to "
            "fetch and where to put it."
        ),
    )
    what = p.add_subparsers(dest="what", metavar="WHAT")
    ls = what.add_parser("list", help="the available weights, their files and addresses")
    ls.set_defaults(func=_run_list)
    dl = what.add_parser("download", help="download one weight file (checked by its hash prefix)")
    dl.add_argument("name", help="the architecture, e.g. fasterrcnn_resnet50_fpn")
    dl.add_argument("--dir", default=None, help="destination folder (default $FASTERRCNN_HOME/weights or "
                                                "~/.cache/fasterrcnn/weights)")
    dl.set_defaults(func=_run_download)
    p.set_defaults(func=None, _parser=p)


def _run_list(args: argparse.Namespace) -> int:
    from fasterrcnn.weights import WEIGHTS, default_dir

    for w in WEIGHTS.values():
        print(f"{w.name:40s} {w.filename:50s} {w.url}")
    print(f"default folder: {default_dir()}")
    return 0


def _run_download(args: argparse.Namespace) -> int:
    from fasterrcnn.weights import download

    path = download(args.name, args.dir)
    print(f"{args.name}: {path} (SHA-256 prefix checked)")
    print(f"run it: fasterrcnn detect IMAGES --torchvision {args.name} --weights {path}")
    return 0
