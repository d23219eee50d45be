"""`fasterrcnn explain`: the paper's method, shown in pictures made from the real model and data."""

from __future__ import annotations

import argparse

WHAT = {
    "anchors": "the 9 base anchors, their tiling at stride 16 (and 8), and how well they cover the objects",
    "labels": "one image's anchor labels by the RPN's training rule and the 256 sampled anchors",
    "rpn": "objectness heat-maps per anchor shape, proposals before/after NMS, the window's receptive field",
    "roi-pool": "one proposal through RoI pooling and RoIAlign (grid of sub-windows, pooled output)",
    "losses": "smooth L1 against L2 and L1: values and gradients",
    "architecture": "the pipeline with the real tensor shapes of one forward pass and parameters per part",
    "timing": "where the time goes: Selective Search + Fast R-CNN vs RPN + Fast R-CNN, per stage",
    "multiscale": "an image pyramid against one scale with the pyramid of anchors: time and detections",
    "all": "all of the above plus index.html (captions and an interactive anchor explorer)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="pictures of the method made from the real model and data (anchors, labels, RPN, RoI pooling, ...)",
        description=(
            "Draw the paper's method with a real model and image, into PNG files (and index.html for `all`) in --out;\n"
            "one line per file says what it shows. WHAT is one of:\n\n"
            + "\n".join(f"  {k:<13} {v}" for k, v in WHAT.items())
            + "\n\nWithout --checkpoint a freshly built model with random weights is used (and said so); without IMAGE\n"
            "a generated synthetic scene. Ground truth comes from a VOC XML next to the image (Annotations/ID.xml for\n"
            "JPEGImages/ID.jpg, or ID.xml beside it) or from --boxes. Example:\n\n"
            "  fasterrcnn explain all photo.jpg --checkpoint runs/demo/train/model_final.pt --out runs/explain"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=list(WHAT), metavar="WHAT", help="one of: " + ", ".join(WHAT))
    p.add_argument("image", nargs="?", default=None, metavar="IMAGE",
                   help="an image file (default: a generated synthetic scene with its ground truth)")
    p.add_argument("--checkpoint", default=None, help="a fasterrcnn checkpoint (default: a fresh --preset model, random weights)")
    p.add_argument("--preset", default="small", help="the model built when no --checkpoint is given (default small)")
    p.add_argument("--boxes", nargs="+", default=None, metavar="X1,Y1,X2,Y2",
                   help="ground-truth boxes in the image's pixels (instead of its VOC XML); put IMAGE before --boxes")
    p.add_argument("--out", default="runs/explain", help="output folder (default runs/explain)")
    p.add_argument("--min-size", type=int, default=None,
                   help="resize images to this shorter side (default: the model's own, 600 for a fresh preset)")
    p.add_argument("--presets", default="small,zf,vgg16",
                   help="timing: the presets to time, comma-separated (fresh, random weights; default small,zf,vgg16)")
    p.add_argument("--repeat", type=int, default=1, help="timing, multiscale: timed runs after a warm-up (median; default 1)")
    p.add_argument("--scales", default=None,
                   help="multiscale: the pyramid's shorter sides, comma-separated (default 480,576,688,864,1200 for a 600 px model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the anchor sample, the random weights, the synthetic scene (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier run in --out")
    p.set_defaults(func=run)


def _ints(text: str | None, option: str) -> list[int] | None:
    from fasterrcnn.errors import ConfigError

    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: expected whole numbers separated by commas, got {text!r}") from None
    if not values or any(v < 16 for v in values):
        raise ConfigError(f"{option}: expected sizes of at least 16 px, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fasterrcnn.errors import ConfigError
    from fasterrcnn.explain import PICTURES, check, planned_files, run_iter
    from fasterrcnn.explain._common import Context, parse_boxes, read_rgb, read_voc_boxes, synthetic_scene, voc_xml_for
    from fasterrcnn.modeling.config import PRESETS
    from fasterrcnn.outputs import claim_outputs, clear_outputs

    if args.repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {args.repeat}")
    if args.min_size is not None and args.min_size < 16:
        raise ConfigError(f"--min-size must be at least 16, got {args.min_size}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    from fasterrcnn.modeling.backbones import BACKBONES

    unknown = [p for p in [*presets, args.preset] if p not in PRESETS and p not in BACKBONES]
    if unknown or not presets:
        raise ConfigError(f"unknown preset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(BACKBONES)}")
    scales = _ints(args.scales, "--scales")
    # the inputs, checked before anything is written
    if args.image is None:
        image, gt, names = synthetic_scene(args.seed)
        image_note, gt_note = f"a generated synthetic scene (seed {args.seed}), no IMAGE given", "the scene's annotation"
    else:
        path = Path(args.image)
        if not path.is_file():
            raise ConfigError(f"IMAGE {path}: no such file")
        image = read_rgb(path)
        image_note, gt, names, gt_note = f"image {path}", None, [], "none"
        xml = voc_xml_for(path)
        if args.boxes is None and xml is not None:
            gt, names = read_voc_boxes(xml)
            gt_note = f"{xml}"
    if args.boxes is not None:
        gt = parse_boxes(args.boxes, tuple(image.shape[-2:]))
        names, gt_note = [], "--boxes"
    ctx = Context(image, image_note=image_note, gt_boxes=gt, gt_names=names, gt_note=gt_note, checkpoint=args.checkpoint,
                  preset=args.preset, min_size=args.min_size, seed=args.seed, presets=presets, repeat=args.repeat,
                  scales=scales)
    needs_model = args.what == "all" or PICTURES[args.what].needs_model
    if needs_model:
        ctx.model  # noqa: B018 - load (and check) the checkpoint before writing anything
    check(args.what, ctx)  # e.g. the labels without ground truth
    out = Path(args.out)
    found = claim_outputs(out, planned_files(args.what), inputs=[args.checkpoint, args.image], overwrite=args.overwrite,
                          what="explain pictures")
    clear_outputs(found)
    out.mkdir(parents=True, exist_ok=True)
    if needs_model:
        print(f"model: {ctx.model_note}")
    n = len(ctx.gt_boxes)
    print(f"image: {ctx.image_note}; ground truth: {ctx.gt_note} ({n} box{'' if n == 1 else 'es'})")
    for name, result in run_iter(args.what, ctx, out):
        if isinstance(result, Exception):
            print(f"{name}: skipped ({result})")
            continue
        for o in result.outputs:
            print(f"{out / o.file}  {o.caption}")
    return 0
