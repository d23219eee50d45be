"""`fasterrcnn data`: generate the synthetic data set, check a data set."""

from __future__ import annotations

import argparse
import json

from fasterrcnn.data import formats


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="generate the synthetic data set, or check a data set",
        description="Data sets: generate the embedded synthetic shapes set (`synth`) or read "
        "a data set (" + ", ".join(formats.names()) + ") and report its classes, counts and problems (`check`).",
    )
    p.set_defaults(func=None, _parser=p)
    dsub = p.add_subparsers(dest="data_command", metavar="WHAT")

    s = dsub.add_parser(
        "synth",
        help="write the synthetic shapes data set in PASCAL VOC layout",
        description=(
            "Write the synthetic shapes data set (circle, square, triangle, star, ring, hexagon, "
            "cross on cluttered backgrounds; 1-8 objects per image, sizes 20-400 px, aspect "
            "ratios 1:3-3:1, partial occlusion, difficult flags) in PASCAL VOC layout: "
            "OUT/JPEGImages, OUT/Annotations, OUT/ImageSets/Main/{train,test}.txt, OUT/synth.json. "
            "Deterministic: the same seed and options give byte-identical files."
        ),
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    s.add_argument(
        "--train", type=int, default=600, metavar="N", help="training images (default %(default)s)"
    )
    s.add_argument(
        "--test", type=int, default=200, metavar="N", help="test images (default %(default)s)"
    )
    s.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    s.add_argument(
        "--min-size",
        type=int,
        default=400,
        metavar="PX",
        help="smallest image width/height; each side uniform in [min, max] (default %(default)s)",
    )
    s.add_argument(
        "--max-size",
        type=int,
        default=560,
        metavar="PX",
        help="largest image width/height (default %(default)s)",
    )
    s.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="subset of circle,square,triangle,star,ring,hexagon,cross (default: all 7)",
    )
    s.add_argument(
        "--textures",
        metavar="A,B,...",
        help="subset of solid,stripes,checker,noise,gradient for the object fills (default: all 5)",
    )
    s.add_argument(
        "--max-objects",
        type=int,
        default=8,
        metavar="N",
        help="objects per image at most; at least 1 (default %(default)s)",
    )
    s.add_argument(
        "--min-object",
        type=float,
        default=20.0,
        metavar="PX",
        help="smallest object size sqrt(w*h) (default %(default)s)",
    )
    s.add_argument(
        "--max-object",
        type=float,
        default=400.0,
        metavar="PX",
        help="largest object size sqrt(w*h), shrunk to fit the image (default %(default)s)",
    )
    s.add_argument(
        "--format",
        choices=("jpg", "png"),
        default="jpg",
        help="image file format (default %(default)s)",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes; the files do not depend on it (default %(default)s)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--overwrite", action="store_true",
                   help="write into a folder that already holds a data set's files (refused without it)")
    s.set_defaults(func=_run_synth)

    c = dsub.add_parser(
        "check",
        help="read a data set and report its classes, counts and problems",
        description=(
            "Read a data set (" + ", ".join(formats.names()) + ") as training would, and print its class list, "
            "image/object counts per class, difficult objects, and everything that was fixed "
            "(boxes clipped, sizes corrected) or skipped (zero-area boxes, unknown classes, crowd "
            "regions), with file names. Exits with status 2 and a one-line message on an error "
            "(missing file, malformed annotation), 1 if some images cannot be decoded."
        ),
    )
    c.add_argument(
        "path", help="VOC root (with Annotations/), COCO JSON, YOLO folder or data.yaml, LabelMe folder, or a "
        "directory holding one"
    )
    c.add_argument(
        "--split",
        default="train",
        help="split to read (VOC: ImageSets/Main/<split>.txt; YOLO: data.yaml's or images/<split>; LabelMe: "
        "<split>/; a single file or flat folder is read whole; default train)",
    )
    c.add_argument(
        "--format", choices=formats.choices(), default="auto", help=formats.help_text()
    )
    c.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="expected classes (others are reported as unknown); default: those found",
    )
    c.add_argument(
        "--image-dir", default=None, help="COCO, LabelMe: directory of the images (default: guessed)"
    )
    c.add_argument(
        "--no-decode",
        action="store_true",
        help="skip decoding every image (faster; corrupt images are then not found)",
    )
    c.add_argument(
        "--messages",
        type=int,
        default=20,
        metavar="N",
        help="print at most N per-file messages (default 20; -1: all)",
    )
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_run_check)


def _classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def _run_synth(args: argparse.Namespace) -> int:
    import os

    from fasterrcnn.data.synth import SYNTH_CLASSES, TEXTURES, SynthConfig, claim_synth_outputs, generate
    from fasterrcnn.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    classes = tuple(_classes(args.classes) or SYNTH_CLASSES)
    cfg = SynthConfig(
        num_train=args.train,
        num_test=args.test,
        seed=args.seed,
        min_size=args.min_size,
        max_size=args.max_size,
        classes=classes,
        textures=tuple(_classes(args.textures) or TEXTURES),
        max_objects=args.max_objects,
        min_object=args.min_object,
        max_object=args.max_object,
        image_format=args.format,
    ).validate()
    out = os.path.abspath(args.out)
    print(
        f"fasterrcnn data synth: {cfg.num_train} train + {cfg.num_test} test images "
        f"({cfg.min_size}-{cfg.max_size} px, seed {cfg.seed}, {len(classes)} classes) -> {out}"
    )
    claim_synth_outputs(out, overwrite=args.overwrite)
    r = generate(out, cfg, workers=args.workers, progress=not args.quiet)
    print(
        f"wrote {r['train'] + r['test']} images in {r['seconds']:.1f} s "
        f"({r['images_per_second']:.0f} images/s): {r['objects']} objects, "
        f"{r['difficult']} difficult"
    )
    print("  per class: " + ", ".join(f"{k} {v}" for k, v in r["per_class"].items()))
    print(f"  {out}/JPEGImages/        {r['train'] + r['test']} .{cfg.image_format} images")
    print(f"  {out}/Annotations/       {r['train'] + r['test']} .xml annotations (VOC)")
    print(f"  {out}/ImageSets/Main/    train.txt ({r['train']} ids), test.txt ({r['test']} ids)")
    print(f"  {out}/synth.json         the options used")
    print(f"check it with: fasterrcnn data check {out} --split train")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    import logging

    from fasterrcnn.data.loader import build_dataset
    from fasterrcnn.data.transforms import read_image
    from fasterrcnn.errors import DataError

    logging.getLogger("fasterrcnn.data").setLevel(logging.ERROR)  # the report lists them
    ds = build_dataset(
        args.path,
        args.split,
        format=args.format,
        train=False,
        classes=_classes(args.classes),
        skip_empty=False,
        image_dir=args.image_dir,
    )
    st = ds.stats()
    decode_errors: list[str] = []
    if not args.no_decode:
        from tqdm import tqdm

        for f in tqdm(ds.files, desc="decoding", unit="img", leave=False, disable=args.json):
            try:
                read_image(f)
            except DataError as exc:
                decode_errors.append(str(exc))
    if args.json:
        out = {
            "format": type(ds).__name__,
            "classes": ds.classes,
            "stats": st,
            "report": ds.report.to_dict(),
            "decode_errors": decode_errors,
        }
        print(json.dumps(out, indent=2))
        return 1 if decode_errors else 0

    print(
        f"{type(ds).__name__} {args.path} split {args.split}: {st['images']} images, "
        f"{st['objects']} objects ({st['difficult']} difficult), {len(ds.classes)} classes"
    )
    width = max([len(c) for c in ds.classes] + [5])
    print(f"  {'class':<{width}}  {'label':>5}  {'objects':>7}  {'difficult':>9}  {'images':>6}")
    for label, name in enumerate(ds.classes, start=1):
        pc = st["per_class"][name]
        print(
            f"  {name:<{width}}  {label:>5}  {pc['objects']:>7}  {pc['difficult']:>9}  "
            f"{pc['images']:>6}"
        )
    if st["images"]:
        print(
            f"  objects per image: {st['objects'] / st['images']:.2f} on average; "
            f"{st['images_without_objects']} images without objects"
        )
    print("report:")
    print("\n".join("  " + line for line in ds.report.summary().splitlines()))
    msgs = ds.report.messages
    limit = len(msgs) if args.messages < 0 else args.messages
    if msgs and limit:
        print(f"messages ({min(limit, len(msgs))} of {len(msgs)}):")
        for m in msgs[:limit]:
            print(f"  {m}")
    if not args.no_decode:
        if decode_errors:
            print(f"{len(decode_errors)} image(s) cannot be decoded:")
            for e in decode_errors:
                print(f"  {e}")
            return 1
        print(f"all {len(ds)} images decode")
    return 0
