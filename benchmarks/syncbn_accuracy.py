"""Accuracy of the demo's recipe with one image per process, with and without --sync-bn.

    python benchmarks/syncbn_accuracy.py [--sync-bn] [--iters 2700] [--out runs/syncbn]

The demo's training settings (`fasterrcnn.cli.demo.DEMO_TRAIN`) on the demo's data
(runs/demo/data, made by `fasterrcnn demo`), but in batches of 2 images split over 2 processes
(1 image per process, so each BatchNorm batch holds one image and its RoIs unless the
statistics are synchronised) at the learning rate of batches of 2 (1e-3), evaluated on the
test split at the demo's test size. Prints the VOC07 mAP and the training time.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--iters", type=int, default=2700)
    p.add_argument("--data", default="runs/demo/data")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    from fasterrcnn.cli.demo import DEMO_TRAIN
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.engine.precision import resolve_device, resolve_precision
    from fasterrcnn.engine.report import train_and_evaluate

    precision = resolve_precision("auto", resolve_device("auto"))
    out = a.out or f"runs/syncbn_{'sync' if a.sync_bn else 'plain'}"
    cfg = TrainConfig(data=a.data, out=out, precision=precision, channels_last=precision != "fp32", num_workers=0,
                      processes=2, sync_bn=a.sync_bn, overwrite=True,
                      **{**DEMO_TRAIN, "batch_size": 2, "lr": 1e-3, "max_iters": a.iters})
    summary = train_and_evaluate(cfg)
    print(json.dumps({"sync_bn": a.sync_bn, "iterations": summary["train"]["iterations"],
                      "train_seconds": summary["train"]["seconds"], "map07": summary["eval"]["map07"],
                      "map10": summary["eval"]["map10"], "recall": summary["eval"].get("recall")}))


if __name__ == "__main__":
    main()
