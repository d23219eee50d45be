"""`fasterrcnn demo`: the main job on a fresh machine, offline, in about ten minutes on 2 CPU cores.

Generates the synthetic shapes data set (VOC layout), trains the `small` preset from scratch
with approximate joint training, evaluates it on the test split (VOC07/VOC10 mAP, COCO AP,
proposal recall), draws detections on test images, plots the loss and PR curves, and prints
a summary with where everything is.
"""

from __future__ import annotations

import argparse

# The demo's data: the synthetic set of SynthConfig with five of its seven shapes (hexagons and
# rings, the two most easily confused with circles at small sizes, left out), at most 5 objects
# per image, objects at least half visible, and those under 32 px or less than half visible
# marked difficult (VOC's convention for objects too small or occluded to be judged; ignored in
# scoring). Sizes 24-400 px, aspect ratios 1:3-3:1, all textures and the clutter are kept.
DEMO_DATA = {
    "num_train": 2000,
    "num_test": 200,
    "classes": ("circle", "square", "triangle", "star", "cross"),
    "max_objects": 5,
    "min_object": 24.0,
    "min_visible": 0.5,
    "difficult_visible": 0.5,
    "difficult_size": 32.0,
}
# The demo's recipe: the paper's method and its defaults (anchor ratios, 256 anchors and 128 RoIs
# per image, IoU thresholds, NMS, loss weights, 300 test proposals), with what training a small
# network from scratch on a CPU in minutes needs, each measured in BENCHMARKS.md: images
# resized to a shorter side of 448 (the synthetic images are 400-560 px; at 320 the small
# objects cover one or two cells of the stride-16 map, at 512 fewer iterations fit), anchors
# scaled to the objects' 32-256 px (scales 2, 4, 8, 16 of the 16 px base); batches of one
# orientation (less padding, fewer kernel shapes); AdamW (lr 2e-3 for batches of 4, weight
# decay 0.01; SGD from scratch learns several times slower here); a
# BatchNorm'd box head whose 1x1 conv runs before the RoI pooling (the same layers, 4x less
# data pooled); 2000 -> 500 training proposals instead of 12000 -> 2000 (the 128 sampled RoIs
# hardly change; the NMS costs a third as much); bf16 autocast with channels_last where the
# CPU supports bf16 ('auto'); batches of 4 images trained in 2 data-parallel processes of 2
# images each (every BatchNorm batch keeps 2 images; one thread per process keeps both cores
# busy: 1.25-1.4x the images per second of one process on batches of 2) at twice the learning
# rate; no residual block at stride 4 (`blocks` [0, 1, 1]: 10-15% cheaper steps, as accurate);
# 2,500 iterations, what fits in ~10 minutes; evaluation and detection at a shorter side of 576
# (the model sees the small objects larger: +1 to +2.6 mAP points over testing at the training
# size, measured on seven trained models); box voting at IoU 0.5 after the NMS (`box_vote_thresh`:
# each kept box averaged with the same-class boxes it suppressed, weighted by score; +0.5-0.9
# points on three models, COCO AP +9: the single regressed boxes are noisy, their average is not);
# the box head's regression loss plain L1 (`smooth_l1_beta` 0, detectron2's default, instead of
# Fast R-CNN's smooth L1 with beta 1; +0.5 points with voting in one run, within a seed's spread).
# (Re-estimating the BatchNorm statistics at the end, `precise_bn_iters`, and a moving average
# of the weights, `ema_decay`, were measured on this recipe and did not help: BENCHMARKS.md.)
DEMO_TRAIN = {
    "preset": "small",
    "min_size": 448,
    "max_size": 672,
    "test_min_size": 576,
    "test_max_size": 864,
    "epochs": 100,
    "max_iters": 2500,
    "batch_size": 4,
    "optimizer": "adamw",
    "lr": 0.002,
    "weight_decay": 0.01,
    "warmup_iters": 50,
    "lr_steps": [0.75],
    "model": {
        "anchors": {"scales": [2, 4, 8, 16]},
        "backbone_options": {"head_norm": "bn", "reduce_before_pool": True, "blocks": [0, 1, 1]},
        "rpn": {"pre_nms_top_n_train": 2000, "post_nms_top_n_train": 500},
        "roi_heads": {"smooth_l1_beta": 0.0, "box_vote_thresh": 0.5},
    },
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the synthetic data set, train the small model on CPU, evaluate, draw detections",
        description=(
            "The main job, offline: generate the synthetic shapes data set (VOC layout), train the "
            "'small' preset from scratch (approximate joint training, progress bar), evaluate on its "
            "test split (VOC07/VOC10 mAP@0.5, COCO AP, proposal recall), draw detections on test "
            "images, plot the loss and PR curves, and print a summary. About 10 minutes on 2 CPU cores."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--train-images", type=int, default=DEMO_DATA["num_train"],
                   help=f"synthetic training images (default {DEMO_DATA['num_train']})")
    p.add_argument("--test-images", type=int, default=DEMO_DATA["num_test"],
                   help=f"synthetic test images (default {DEMO_DATA['num_test']})")
    p.add_argument("--iters", type=int, default=DEMO_TRAIN["max_iters"],
                   help=f"training iterations of {DEMO_TRAIN['batch_size']} images (default {DEMO_TRAIN['max_iters']})")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="training/inference precision; auto: bf16 autocast where the CPU has bf16 "
                        "instructions (or on CUDA), else fp32 (default auto)")
    p.add_argument("--processes", type=int, default=None,
                   help="data-parallel training processes sharing each batch of 4 (1, 2 or 4; default 2 on a CPU "
                        "with 2 or more cores, else 1)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader worker processes per training process (default 1 with one training process, "
                        "else 0: on 2 cores more workers compete with the training threads)")
    p.add_argument("--detect-images", type=int, default=12, help="test images to draw detections on (default 12)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier demo's results in --out (refused without it; its data set is reused "
                        "when the settings match)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import time
    from pathlib import Path

    from fasterrcnn.data.synth import SynthConfig, claim_synth_outputs, config_from_dir, generate
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.engine.detect import detect_files
    from fasterrcnn.engine.precision import resolve_device, resolve_precision
    from fasterrcnn.engine.report import print_summary, train_and_evaluate
    from fasterrcnn.engine.trainer import RUN_OUTPUTS
    from fasterrcnn.errors import ConfigError
    from fasterrcnn.outputs import claim_outputs

    if args.train_images < 1 or args.test_images < 1 or args.iters < 1:
        raise ConfigError("--train-images, --test-images and --iters must be >= 1")
    if args.processes is not None and args.processes not in (1, 2, 4):
        raise ConfigError(f"--processes must be 1, 2 or 4 (they share each batch of {DEMO_TRAIN['batch_size']} images)")
    if args.workers is not None and args.workers < 0:
        raise ConfigError("--workers must be >= 0")
    start = time.perf_counter()
    out = Path(args.out)
    data_dir = out / "data"
    synth = SynthConfig(**{**DEMO_DATA, "num_train": args.train_images, "num_test": args.test_images,
                           "seed": args.seed}).validate()
    reuse = config_from_dir(data_dir) == synth
    # every output is claimed before the first is written (fasterrcnn.outputs)
    if not reuse:
        claim_synth_outputs(data_dir, overwrite=args.overwrite)
    claim_outputs(out / "detections", ["detections.json", "images.json"], overwrite=args.overwrite,
                  what="an earlier demo's detections", hint="choose another --out, or pass --overwrite to replace them")
    cfg_out = out / "train"
    claim_outputs(cfg_out, RUN_OUTPUTS, overwrite=args.overwrite, what="an earlier demo's training run",
                  hint="choose another --out, or pass --overwrite to run the demo again in it")
    if reuse:
        print(f"[1/4] synthetic data set already in {data_dir} (same settings): reusing it")
    else:
        print(f"[1/4] generating the synthetic data set into {data_dir}")
        # generating has the machine to itself: one process per core
        generate(data_dir, synth, workers=max(1, os.cpu_count() or 1), progress=args.progress)
    print("[2/4] training the 'small' preset from scratch (approximate joint training)")
    device = resolve_device("auto")
    precision = resolve_precision(args.precision, device)
    processes = args.processes
    if processes is None:  # one GPU trains alone; CPU cores are shared out between 2 processes
        processes = 2 if device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    workers = args.workers if args.workers is not None else (0 if processes > 1 else 1)
    cfg = TrainConfig(data=str(data_dir), out=str(cfg_out), seed=args.seed, precision=precision, overwrite=args.overwrite,
                      channels_last=precision != "fp32", num_workers=workers, progress=args.progress,
                      processes=processes, **{**DEMO_TRAIN, "max_iters": args.iters})
    summary = train_and_evaluate(cfg)
    print("[4/4] drawing detections on test images")
    from fasterrcnn.data import build_dataset
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    model, _ = load_checkpoint(summary["files"]["checkpoint"], map_location=device)
    test = build_dataset(data_dir, "test", train=False, classes=summary["classes"])
    files = [Path(f) for f in test.files[: args.detect_images]]
    det = detect_files(model, files, out / "detections", device=device, precision=precision,
                       num_workers=1, progress=args.progress, overwrite=args.overwrite)
    summary["files"]["detections"] = f"{out / 'detections'}/ ({len(det.annotated)} annotated images)"
    print_summary(summary)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; everything is under {out}/")
    return 0
