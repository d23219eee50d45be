"""`fasterrcnn eval`: PASCAL VOC / COCO metrics of a checkpoint, or of any detector's output."""

from __future__ import annotations

import argparse

from fasterrcnn.cli._models import TORCHVISION_HELP, add_weights_argument
from fasterrcnn.data import formats
from fasterrcnn.modeling.torchvision_archs import TORCHVISION_ARCHS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint or a detections file (VOC07/VOC10 mAP, COCO AP, proposal recall)",
        description=(
            "Evaluate on a data split: PASCAL VOC mAP@0.5 with the VOC2007 11-point AP (the paper's) "
            "and the VOC2010+ area AP, per class, 'difficult' objects ignored; COCO AP@[.5:.95], AP50, "
            "AP75 via pycocotools; and, for a checkpoint, the RPN's proposal recall at IoU 0.5/0.7 for "
            "50..2000 proposals. Give --checkpoint to run a model, or --detections to score a COCO "
            "results file ([{image_id, category_id, bbox: [x, y, w, h], score}]) from any detector. "
            "Writes OUT/report.json and one PR curve PNG per class."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="a fasterrcnn checkpoint (model_final.pt / last.pt), or an ONNX file from `fasterrcnn export` (run by onnxruntime)")
    src.add_argument("--torchvision", metavar="ARCH", choices=sorted(TORCHVISION_ARCHS), help=TORCHVISION_HELP)
    src.add_argument("--detections", help="a detections JSON (COCO results format, or per-image boxes/labels/scores)")
    add_weights_argument(p)
    p.add_argument("--data", required=True, help="the data set: a VOC root, COCO JSON, YOLO folder or data.yaml, "
                                                  "LabelMe folder, ... (see --format)")
    p.add_argument("--split", default=None,
                   help="split to evaluate (default: test; a single COCO JSON file, or a flat YOLO / LabelMe "
                        "folder, has no splits: all of it)")
    p.add_argument("--format", default="auto", choices=formats.choices(), help=formats.help_text())
    p.add_argument("--image-dir", default=None, help="COCO, LabelMe: folder of the images")
    p.add_argument("--out", default="runs/eval", help="output folder for report.json and PR curves (default runs/eval)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="inference precision (default fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster with bf16 on CPU)")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--no-recall", dest="recall", action="store_false", help="skip the proposal recall (checkpoint only)")
    p.add_argument("--no-coco", dest="coco", action="store_false", help="skip the COCO metrics")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PR curve PNGs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="inference setting override for the checkpoint, e.g. post_nms_top_n_test=1000 or "
                        "roi_heads.box_vote_thresh=0.5 (box voting) (repeatable)")
    p.add_argument("--flip-tta", action="store_true",
                   help="test-time augmentation: also run each image mirrored and merge the detections "
                        "(per-class NMS; twice the inference time)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace report.json and pr_curves/ of an earlier evaluation in --out (refused without it)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fasterrcnn.cli.train import parse_overrides
    from fasterrcnn.data import build_dataset, is_single_file
    from fasterrcnn.engine.distributed import Context
    from fasterrcnn.engine.evaluate import evaluate_detections, evaluate_model
    from fasterrcnn.engine.precision import autocast_dtype, resolve_device, resolve_precision
    from fasterrcnn.errors import ConfigError
    from fasterrcnn.evaluation import format_results_table, load_detections_file
    from fasterrcnn.outputs import claim_outputs

    ctx = Context.from_env()  # under torchrun: this process's share of the images
    say = print if ctx.is_main else _silent
    if args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--batch-size must be >= 1 and --workers >= 0")
    if args.flip_tta and args.detections:
        raise ConfigError("--flip-tta runs a model: it needs --checkpoint or --torchvision, not --detections")
    onnx_model = bool(args.checkpoint) and str(args.checkpoint).lower().endswith(".onnx")
    if onnx_model and args.flip_tta:
        raise ConfigError("--flip-tta runs a PyTorch checkpoint; an ONNX file runs as it was exported")
    if onnx_model and args.recall:
        say("note: proposal recall is not measured for an ONNX model (it returns detections only)")
        args.recall = False
    if is_single_file(args.data, args.format):
        if args.split is not None:
            raise ConfigError(f"--split {args.split}: {args.data} is a single annotation file (or a folder without "
                              "splits), which has no splits (all of it is evaluated); leave out --split, or give the "
                              "data set of that split")
    elif args.split is None:
        args.split = "test"
    planned = ["report.json", *(["pr_curves"] if args.plots else [])]
    if ctx.is_main:
        claim_outputs(args.out, planned, inputs=[args.checkpoint, args.weights, args.detections, args.data],
                      overwrite=args.overwrite, what="evaluation outputs")
    extra = {"split": args.split, "data": args.data}
    if args.checkpoint or args.torchvision:
        from fasterrcnn.cli._models import load_model
        from fasterrcnn.engine.distributed import setup

        ctx, device = setup(resolve_device(args.device), ctx)
        precision = resolve_precision(args.precision, device)
        model, source = load_model(args, device, parse_overrides(args.overrides))
        model.prepare_for_inference(channels_last=args.channels_last, autocast_dtype=autocast_dtype(precision))
        classes = model.class_names
        scale = model.transform  # the test scale, before a wrapper hides it
        if args.flip_tta:
            from fasterrcnn.modeling.tta import FlipTTA

            model = FlipTTA(model)
        dataset = build_dataset(args.data, args.split, format=args.format, train=False, classes=classes,
                                min_size=scale.min_size, max_size=scale.max_size,
                                **({"image_dir": args.image_dir} if args.image_dir else {}))
        say(f"evaluating {source} on {args.data} [{args.split or 'the whole file'}]: {len(dataset)} images, {len(dataset.classes)} classes")
        results, _ = evaluate_model(
            model, dataset, device=device, precision=precision, batch_size=args.batch_size, num_workers=args.workers,
            recall=args.recall, out_dir=args.out, coco=args.coco, plots=args.plots, progress=args.progress,
            extra={"checkpoint": source, "flip_tta": args.flip_tta, **extra}, log=say, ctx=ctx,
        )
    else:
        dataset = build_dataset(args.data, args.split, format=args.format, train=False,
                                **({"image_dir": args.image_dir} if args.image_dir else {}))
        image_ids = [dataset.annotation(i)["image_id"] for i in range(len(dataset))]
        dets = load_detections_file(args.detections, image_ids=image_ids, category_ids=getattr(dataset, "category_ids", None),
                                    num_classes=len(dataset.classes))
        if not ctx.is_main:  # a detections file is scored once
            return 0
        say(f"evaluating {args.detections} on {args.data} [{args.split or 'the whole file'}]: {len(dataset)} images, {len(dataset.classes)} classes")
        results = evaluate_detections(dets, dataset, out_dir=args.out, coco=args.coco, plots=args.plots,
                                      extra={"detections": args.detections, **extra})
    say(format_results_table(results))
    if ctx.is_main:
        say(f"\nreport: {results['report_path']}")
    if results.get("pr_curves"):  # not when matplotlib is missing (noted at the start)
        say(f"PR curves: {args.out}/pr_curves/")
    return 0


def _silent(*args: object, **kwargs: object) -> None:
    """The output of the ranks other than 0 under torchrun."""
