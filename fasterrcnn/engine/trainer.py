"""Training: approximate joint training and the paper's 4-step alternating training.

Approximate joint training (Sec. 3.2, "ii"): one network; each mini-batch's RPN and Fast
R-CNN losses are summed and back-propagated together, the proposals treated as fixed.

4-step alternating training (Sec. 3.2, "iii"):
  1. train the RPN, initialised from ImageNet (stage "rpn");
  2. train a separate Fast R-CNN detector, initialised from ImageNet, on the step-1 RPN's
     proposals (stage "detector"; no sharing yet);
  3. take the detector's backbone, keep it fixed, and fine-tune the RPN layers only (the RPN
     layers start from step 1's);
  4. keep the shared convs fixed and fine-tune the Fast R-CNN layers only, on the proposals
     of the step-3 RPN. The result is one network with shared conv layers.

Every stage is logged (metrics.jsonl, the progress bar) and checkpointed: `last.pt` after
each epoch (atomic), `stage<k>.pt` at the end of each alternating step, and
`model_final.pt`. `--resume` restarts from `last.pt` exactly: model, optimiser, scheduler,
epoch, iteration and RNG state, so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from fasterrcnn.engine.config import TrainConfig
from fasterrcnn.engine.distributed import Context, launch, shard_batches
from fasterrcnn.engine.ema import ModelEMA
from fasterrcnn.engine.logger import MetricsLogger
from fasterrcnn.engine.optim import WarmupCosineLR, WarmupStepLR, build_optimizer
from fasterrcnn.engine.precision import autocast, resolve_device, resolve_precision
from fasterrcnn.errors import CheckpointError, ConfigError, TrainingDivergedError
from fasterrcnn.fileio import atomic_write_text, remove_stale_temp_files
from fasterrcnn.modeling.checkpoint import (
    load_checkpoint,
    load_imagenet_weights,
    nonfinite_entries,
    read_checkpoint,
    save_checkpoint,
)
from fasterrcnn.modeling.faster_rcnn import FasterRCNN, build_model
from fasterrcnn.ops._utils import NonFiniteError
from fasterrcnn.outputs import claim_outputs, clear_outputs
from fasterrcnn.weights import imagenet_weights

__all__ = ["StageSpec", "TrainResult", "Trainer", "train"]

LOSS_KEYS = ("rpn_cls", "rpn_reg", "det_cls", "det_reg")

# Everything a training run writes into its output folder (checked before it starts: a new run
# never replaces another run's files unless asked to with `overwrite`, or continues it with `resume`).
RUN_OUTPUTS = (
    "last.pt", "model_final.pt", "stage1.pt", "stage2.pt", "stage3.pt", "stage4.pt", "metrics.jsonl",
    "train_config.json", "train_result.json", "summary.json", "loss_curve.png", "eval", "tensorboard",
)


@dataclass
class StageSpec:
    """One stage of a schedule: what to build, what trains, where proposals come from."""

    index: int
    name: str
    mode: str  # "joint" | "rpn" | "detector"
    epochs: int
    build: Callable[[], FasterRCNN]
    trainable: str = "all"  # "all" | "rpn" | "roi_heads"
    freeze_backbone: bool = False
    proposals_from: str | None = None  # None (own RPN), "self" (own frozen RPN, detector stage), or a checkpoint path


@dataclass
class TrainResult:
    model: FasterRCNN
    out_dir: Path
    iterations: int = 0
    seconds: float = 0.0
    images: int = 0
    final_losses: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


class Trainer:
    """Builds data, model(s) and optimiser from a `TrainConfig` and runs the schedule."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print, ctx: Context | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.ctx = ctx or Context()
        self.log = log if self.ctx.is_main else _silent
        self.out = Path(cfg.out)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.ctx.active:
            self.device = torch.device("cuda", self.ctx.rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.processes > 1 and self.device.type == "cuda" and cfg.processes > torch.cuda.device_count():
            raise ConfigError(f"processes={cfg.processes} needs as many GPUs; {torch.cuda.device_count()} found")
        if cfg.threads and not self.ctx.active:
            torch.set_num_threads(cfg.threads)
        from fasterrcnn.data import build_dataset

        common = dict(format=cfg.format, min_size=cfg.min_size, max_size=cfg.max_size, seed=cfg.seed, classes=cfg.classes)
        if cfg.image_dir is not None:
            common["image_dir"] = cfg.image_dir
        self.train_set = build_dataset(cfg.data, cfg.train_split, train=True, flip_prob=cfg.flip_prob, **common)
        self.classes: list[str] = list(self.train_set.classes)
        if len(self.train_set) == 0:
            raise ConfigError(f"the training split {cfg.train_split!r} of {cfg.data} has no images")
        self.group_aspect = cfg.group_aspect and cfg.batch_size > 1
        # the batches of an epoch as the training loop will draw them (one per orientation may be
        # incomplete; with several processes, one smaller than their number is skipped)
        self.iters_per_epoch = len(self._loader(epoch=0, seed=cfg.seed, rank=0, world=cfg.processes))
        # Everything is checked before anything is written: the arguments, the data (every image
        # decoded once), the resume checkpoint's compatibility, the output folder. The processes
        # of a data-parallel run were started by a process that checked all of it.
        launcher = not self.ctx.active
        self._resume = self._read_resume() if cfg.resume else None
        self._replaced: list[Path] = []
        if launcher:
            if not cfg.resume:
                inputs = [cfg.data, cfg.image_dir, cfg.pretrained if cfg.pretrained != "auto" else None, cfg.weights, cfg.val_data]
                self._replaced = claim_outputs(
                    self.out, RUN_OUTPUTS, inputs=inputs, overwrite=cfg.overwrite, what="a previous training run's files",
                    hint="choose another --out, continue that run with --resume, or replace it with --overwrite",
                )
            if cfg.verify_images:
                self.verify_data(self.train_set, cfg.train_split)
        self._last_saved: str | None = None

    def verify_data(self, dataset: Any, split: str | None) -> None:
        """Decode every image of `dataset` once (DetectionDataset.verify_images), logging the time."""
        t0 = time.perf_counter()
        dataset.verify_images(threads=max(1, min(4, torch.get_num_threads())))
        self.log(f"checked the {len(dataset)} images of split {split!r} ({time.perf_counter() - t0:.1f} s)")

    def _loader(self, epoch: int, seed: int, rank: int, world: int) -> Any:
        from fasterrcnn.data import build_loader

        shard = (lambda b: shard_batches(b, rank, world)) if world > 1 else None
        return build_loader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True, seed=seed, epoch=epoch,
                            num_workers=self.cfg.num_workers, group_aspect=self.group_aspect, shard=shard)

    # ------------------------------------------------------------------ models and stages

    def new_model(self, seed_offset: int = 0) -> FasterRCNN:
        """A freshly initialised model (ImageNet backbone weights when `pretrained` is set);
        seeded so that the same stage always starts from the same weights."""
        torch.manual_seed(self.cfg.seed + 1000 * seed_offset)
        overrides = dict(self.cfg.model)
        test_min, test_max = self.cfg.test_size()
        overrides.setdefault("min_size", test_min)
        overrides.setdefault("max_size", test_max)
        overrides.setdefault("train_min_size", self.cfg.train_sizes())
        overrides.setdefault("train_max_size", self.cfg.max_size)
        if self.cfg.torchvision:  # fine-tuning a COCO detector: every layer but the predictor
            from fasterrcnn.modeling.torchvision_weights import load_torchvision

            model = load_torchvision(self.cfg.torchvision, self.cfg.weights, num_classes=len(self.classes),
                                     class_names=self.classes, **overrides)
            self.log(f"loaded torchvision's {self.cfg.torchvision} weights from {self.cfg.weights} (a new predictor "
                     f"for {len(self.classes)} classes)")
            return model.train().to(self.device)
        model = build_model(self.cfg.preset, len(self.classes), class_names=self.classes, **overrides)
        if self.cfg.pretrained:
            source = self.cfg.pretrained
            if source == "auto":
                source = imagenet_weights(model.config.backbone)
            report = load_imagenet_weights(model, source)
            self.log(f"loaded ImageNet weights from {source} into the backbone and box head ({len(report['missing'])} "
                     f"of their tensors not in the file, {len(report['unexpected']) + len(report['ignored'])} file entries unused)")
        return model.to(self.device)

    def stages(self) -> list[StageSpec]:
        cfg = self.cfg
        if cfg.schedule == "joint":
            return [StageSpec(1, "joint training", "joint", cfg.epochs, lambda: self.new_model(0))]
        e = cfg.stage_epochs or [cfg.epochs] * 4
        s1, s2, s3 = (self.out / f"stage{k}.pt" for k in (1, 2, 3))

        def step3() -> FasterRCNN:
            model, _ = load_checkpoint(s2, map_location=self.device)
            rpn_weights, _ = load_checkpoint(s1, map_location=self.device)
            model.rpn.load_state_dict(rpn_weights.rpn.state_dict())
            return model

        return [
            StageSpec(1, "step 1: RPN", "rpn", e[0], lambda: self.new_model(1)),
            StageSpec(2, "step 2: Fast R-CNN on step-1 proposals", "detector", e[1], lambda: self.new_model(2), proposals_from=str(s1)),
            StageSpec(3, "step 3: RPN on the detector's fixed convs", "rpn", e[2], step3, trainable="rpn", freeze_backbone=True),
            StageSpec(4, "step 4: Fast R-CNN layers on step-3 proposals", "detector", e[3],
                      lambda: load_checkpoint(s3, map_location=self.device)[0], trainable="roi_heads", freeze_backbone=True, proposals_from="self"),
        ]

    def proposal_source(self, spec: StageSpec, model: FasterRCNN) -> Callable[[list[Tensor]], list[Tensor]] | None:
        """Where a detector stage's proposals come from (the training-time counts: 2,000)."""
        if spec.proposals_from is None:
            return None
        if spec.proposals_from == "self":
            source = model
        else:
            source, _ = load_checkpoint(spec.proposals_from, map_location=self.device)
            source.set_stage("rpn")
            # the source's own proposal layer (nothing shared): the training-time counts in eval mode
            layer, ours = source.rpn.proposal_layer, model.rpn.proposal_layer
            layer.pre_nms_top_n["testing"] = ours.pre_nms_top_n["training"]
            layer.post_nms_top_n["testing"] = ours.post_nms_top_n["training"]
            source.eval()
            source.transform.train()  # the training images' scale(s), not the test size

        def propose(images: list[Tensor]) -> list[Tensor]:
            with autocast(self.device, self.precision):
                return [p["boxes"] for p in source.propose(images)]

        return propose

    # ------------------------------------------------------------------------------ run

    def run(self) -> TrainResult:
        cfg = self.cfg
        if self._replaced:  # the user asked (overwrite): the previous run's files go first
            self.log(f"--overwrite: removing the previous run's {', '.join(p.name for p in self._replaced)} from {self.out}")
            clear_outputs(self._replaced)
            self._replaced = []
        if cfg.processes > 1 and not self.ctx.active:
            return self._run_processes()
        main = self.ctx.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.out)  # those of a write a kill cut short (SIGKILL, power loss)
            atomic_write_text(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        resume = self._resume
        if main and resume is None and (self.out / "metrics.jsonl").exists():  # a fresh start (a resume before the first checkpoint too)
            (self.out / "metrics.jsonl").unlink()
        logger: MetricsLogger | _NoLogger = (
            MetricsLogger(self.out / "metrics.jsonl", self.out / "tensorboard" if cfg.tensorboard else None) if main else _NoLogger()
        )
        self.log(self._describe())
        random.seed(cfg.seed + self.ctx.rank)
        torch.manual_seed(cfg.seed + self.ctx.rank)
        result = TrainResult(model=None, out_dir=self.out)  # type: ignore[arg-type]
        global_iter = 0
        try:
            for spec in self.stages():
                if resume is not None and spec.index < resume["stage"]:
                    global_iter += self._stage_iters(spec)
                    continue
                model, iters, secs, images, losses = self._run_stage(spec, logger, resume, global_iter)
                resume = None
                global_iter += iters
                result.iterations += iters
                result.seconds += secs
                result.images += images
                result.final_losses = losses
                result.stages.append({"stage": spec.index, "name": spec.name, "epochs": spec.epochs, "iterations": iters, "seconds": secs})
                if cfg.schedule == "alternating" and main:
                    save_checkpoint(self.out / f"stage{spec.index}.pt", model, stage=spec.index)
                self.ctx.barrier()  # the next stage may read this one's checkpoint
        finally:
            logger.close()
        model.set_stage("joint").freeze_backbone(False).eval()
        result.model = model
        result.checkpoint = self.out / "model_final.pt"
        if main:
            save_checkpoint(result.checkpoint, model, classes=self.classes, train_config=cfg.to_dict())
        return result

    def _run_processes(self) -> TrainResult:
        """`cfg.processes` data-parallel processes (engine.distributed); the trained model is
        read back from the checkpoint the rank-0 process wrote."""
        cfg = self.cfg
        self.log(f"training in {cfg.processes} data-parallel processes")
        launch(_process_main, cfg.processes, (cfg,), device=self.device.type, threads=cfg.threads)
        stats = json.loads((self.out / "train_result.json").read_text())
        model, _ = load_checkpoint(self.out / "model_final.pt", map_location=self.device)
        return TrainResult(model=model, out_dir=self.out, checkpoint=self.out / "model_final.pt", **stats)

    def _describe(self) -> str:
        cfg = self.cfg
        return (
            f"training {cfg.preset} ({cfg.schedule}) on {cfg.data} [{cfg.train_split}]: {len(self.train_set)} images, "
            f"{len(self.classes)} classes, batch {cfg.batch_size}, {self.iters_per_epoch} iterations/epoch, "
            f"device {self.device.type}, precision {self.precision}, output {self.out}"
        )

    def _stage_iters(self, spec: StageSpec) -> int:
        total = spec.epochs * self.iters_per_epoch
        return min(total, self.cfg.max_iters) if self.cfg.max_iters else total

    def _read_resume(self) -> dict[str, Any] | None:
        path = self.out / "last.pt"
        if not path.exists():
            self.log(f"--resume: no {path} yet, starting from scratch")
            return None
        ckpt = read_checkpoint(path, map_location="cpu")
        saved = ckpt.get("train_config", {})
        for key in ("preset", "schedule", "batch_size", "data", "train_split", "seed", "processes"):
            if saved.get(key, 1 if key == "processes" else None) != getattr(self.cfg, key):
                raise CheckpointError(f"{path} was written with {key}={saved.get(key)!r}, but this run has {key}={getattr(self.cfg, key)!r}")
        self.log(f"resuming from {path}: stage {ckpt['stage']}, {ckpt['epoch']} epoch(s) done")
        ckpt["path"] = path
        return ckpt

    def _run_stage(
        self, spec: StageSpec, logger: MetricsLogger, resume: dict[str, Any] | None, global_start: int
    ) -> tuple[FasterRCNN, int, float, int, dict[str, float]]:
        cfg = self.cfg

        model = spec.build().to(self.device)
        model.set_stage(spec.mode)
        model.freeze_backbone(spec.freeze_backbone)
        if spec.trainable != "all":
            model.requires_grad_(False)
            getattr(model, spec.trainable).requires_grad_(True)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ctx.broadcast_model(model)
        optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.bias_lr_factor, cfg.bias_weight_decay, kind=cfg.optimizer)
        total_iters = self._stage_iters(spec)
        warmup = min(cfg.warmup_iters, total_iters)
        if cfg.lr_schedule == "cosine":
            scheduler: WarmupStepLR = WarmupCosineLR(optimizer, total_iters, warmup, cfg.warmup_factor)
        else:
            steps = [int(f * total_iters) for f in cfg.lr_steps]
            scheduler = WarmupStepLR(optimizer, steps, cfg.gamma, warmup, cfg.warmup_factor)
        scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        start_epoch, it = 0, 0
        if resume is not None and resume["stage"] == spec.index:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            start_epoch, it = resume["epoch"], resume["iteration"]
            rng = resume["rng"] if self.ctx.rank == 0 else resume["rng_ranks"][self.ctx.rank]
            torch.set_rng_state(rng["torch"])
            random.setstate(_tuple_state(rng["python"]))
            if torch.cuda.is_available() and rng.get("cuda") is not None:
                torch.cuda.set_rng_state_all(rng["cuda"])
            logger.truncate_after(global_start + it)
        ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        if ema is not None and resume is not None and resume["stage"] == spec.index:
            if "ema" not in resume:
                raise CheckpointError(f"{resume['path']} holds no weight average, but this run has ema_decay={cfg.ema_decay}")
            ema.load_state_dict(resume["ema"])
        propose = self.proposal_source(spec, model)
        self.log(f"[stage {spec.index}] {spec.name}: {spec.epochs} epoch(s), {total_iters} iterations, "
                 f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters")
        window: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=20))
        seconds, images_seen = 0.0, 0
        epoch_losses: dict[str, float] = {}
        for epoch in range(start_epoch, spec.epochs):
            if it >= total_iters:
                break
            self.train_set.set_epoch(epoch)
            loader = self._loader(epoch, cfg.seed + spec.index, self.ctx.rank, self.ctx.world)
            sums: dict[str, float] = defaultdict(float)
            count = 0
            bar = tqdm(total=min(self.iters_per_epoch, total_iters - it), desc=f"stage {spec.index} epoch {epoch + 1}/{spec.epochs}", disable=not (cfg.progress and self.ctx.is_main), unit="it", dynamic_ncols=True)
            t_epoch = time.perf_counter()
            for images, targets in loader:
                if it >= total_iters:
                    break
                t0 = time.perf_counter()
                try:
                    losses = self._step(model, optimizer, scheduler, scaler, images, targets, propose, global_start + it)
                except (FloatingPointError, NonFiniteError) as exc:
                    what = str(exc) if isinstance(exc, FloatingPointError) else f"the forward pass produced non-finite values ({exc})"
                    raise self._diverged(what, spec, epoch, global_start + it + 1) from exc
                if ema is not None:
                    ema.update(model)
                dt = time.perf_counter() - t0
                seconds += dt
                images_seen += len(images) * self.ctx.world
                it += 1
                count += 1
                for k, v in losses.items():
                    window[k].append(v)
                    sums[k] += v
                bar.update(1)
                bar.set_postfix({k: f"{sum(v) / len(v):.3f}" for k, v in window.items()}, refresh=False)
                if it % cfg.log_every == 0 or it == total_iters:
                    means = {k: sum(v) / len(v) for k, v in window.items()}
                    rec = {"kind": "train", "stage": spec.index, "epoch": epoch + 1, "iter": it, "global_iter": global_start + it,
                           "lr": optimizer.param_groups[0]["lr"] / optimizer.param_groups[0].get("lr_factor", 1.0),
                           "loss": sum(means.values()), **means, "sec_per_iter": dt, "images_per_s": len(images) / dt}
                    logger.log(rec, step=global_start + it)
            bar.close()
            epoch_losses = {k: v / max(count, 1) for k, v in sums.items()}
            logger.log({"kind": "epoch", "stage": spec.index, "epoch": epoch + 1, "iter": it, "global_iter": global_start + it,
                        **epoch_losses, "seconds": time.perf_counter() - t_epoch}, step=global_start + it)
            self.log(f"[stage {spec.index}] epoch {epoch + 1}/{spec.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in epoch_losses.items()))
            self.ctx.average_buffers(model)
            if ema is not None:  # every process then holds the same average (exact resume)
                self.ctx.average_buffers(ema.module)
            rng = {"torch": torch.get_rng_state(), "python": _list_state(random.getstate()),
                   "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
            rng_ranks = self.ctx.gather(rng)
            bad = nonfinite_entries(model.state_dict()) + (nonfinite_entries(ema.module.state_dict()) if ema is not None else [])
            if bad:
                raise self._diverged(f"non-finite values (NaN or inf) in {', '.join(bad[:3])}", spec, epoch, global_start + it)
            if self.ctx.is_main:
                extra = {"rng_ranks": rng_ranks} if self.ctx.active else {}
                if ema is not None:
                    extra["ema"] = ema.state_dict()
                self._last_saved = f"{self.out / 'last.pt'} (stage {spec.index}, epoch {epoch + 1}, iteration {it})"
                save_checkpoint(
                    self.out / "last.pt", model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    stage=spec.index, epoch=epoch + 1, iteration=it, classes=self.classes, train_config=cfg.to_dict(),
                    rng=rng, **extra,
                )
        if ema is not None:  # the stage's result is the average (its BatchNorm statistics included)
            model.load_state_dict(ema.module.state_dict())
        if cfg.precise_bn_iters:
            self._precise_bn(model, spec, propose)
        return model, it, seconds, images_seen, epoch_losses

    def _diverged(self, what: str, spec: StageSpec, epoch: int, iteration: int) -> TrainingDivergedError:
        """The one error a divergence ends the run with: what and when, the checkpoint kept, what to try."""
        cfg = self.cfg
        if self._last_saved:
            kept = f"the last good checkpoint, {self._last_saved}, is kept"
        elif self._resume is not None:
            kept = f"the checkpoint this run resumed from, {self._resume['path']}, is kept"
        else:
            kept = "no checkpoint was written (it diverged before the end of the first epoch)"
        return TrainingDivergedError(
            f"training diverged at iteration {iteration} (stage {spec.index}, epoch {epoch + 1}): {what}; {kept}. "
            f"Try a lower --lr (this run: {cfg.lr:g}), --clip-grad-norm (e.g. 10), or a longer --warmup-iters "
            f"(this run: {cfg.warmup_iters})"
        )

    def _precise_bn(self, model: FasterRCNN, spec: StageSpec, propose: Callable[[list[Tensor]], list[Tensor]] | None) -> None:
        """Re-estimate the BatchNorm statistics of the stage's final weights (engine.precise_bn)
        over `precise_bn_iters` training batches (each process on its share), then average them
        over the processes."""
        from fasterrcnn.engine.precise_bn import update_bn_stats

        t0 = time.perf_counter()
        cfg = self.cfg
        # batches and augmentations of an epoch the training did not see (build_loader sets it)
        loader = self._loader(spec.epochs, cfg.seed + spec.index, self.ctx.rank, self.ctx.world)

        def forward(batch: tuple[list[Tensor], list[dict[str, Any]]]) -> None:
            images, targets = self._to_device(*batch)
            with autocast(self.device, self.precision):
                model(images, targets, proposals=propose(images) if propose is not None else None)

        def batches() -> Any:
            while True:  # a data set smaller than the batches asked for is read again
                n = 0
                for batch in loader:
                    n += 1
                    yield batch
                if n == 0:
                    return

        used = update_bn_stats(model, batches(), forward, cfg.precise_bn_iters)
        self.ctx.average_buffers(model)
        self.log(f"[stage {spec.index}] BatchNorm statistics re-estimated over {used} batches ({time.perf_counter() - t0:.1f} s)")

    def _to_device(self, images: list[Tensor], targets: list[dict[str, Any]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [{k: (v.to(self.device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in targets]
        return images, targets

    def _step(
        self,
        model: FasterRCNN,
        optimizer: torch.optim.Optimizer,
        scheduler: WarmupStepLR,
        scaler: torch.amp.GradScaler | None,
        images: list[Tensor],
        targets: list[dict[str, Any]],
        propose: Callable[[list[Tensor]], list[Tensor]] | None,
        global_iter: int,
    ) -> dict[str, float]:
        model.train()
        images, targets = self._to_device(images, targets)
        proposals = propose(images) if propose is not None else None
        with autocast(self.device, self.precision):
            losses = model(images, targets, proposals=proposals)
        loss = sum(losses.values())
        shown = self.ctx.average_values(losses)  # every process sees the same values (and stops together)
        if not torch.isfinite(sum(shown.values())):
            raise FloatingPointError(
                f"the loss became {float(sum(shown.values()))} "
                f"({', '.join(f'{k}={float(v):.4g}' for k, v in shown.items())})"
            )
        optimizer.zero_grad(set_to_none=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if scaler is not None:
            scaler.scale(loss).backward()
            self.ctx.average_gradients(trainable)
            scaler.unscale_(optimizer)
        else:
            loss.backward()
            self.ctx.average_gradients(trainable)
        if self.cfg.clip_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(trainable, self.cfg.clip_grad_norm)
        else:
            norm = _grad_norm(trainable)
        # a step on non-finite gradients would poison every weight (fp16's scaler skips those
        # steps by design, so it is left to it)
        if scaler is None and not torch.isfinite(norm):
            raise FloatingPointError(f"the gradients became non-finite (norm {float(norm)})")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        return {k: float(v.detach()) for k, v in shown.items()}


def _grad_norm(params: list[Tensor]) -> Tensor:
    """The total L2 norm of the parameters' gradients (as clip_grad_norm_ computes it)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm([g.detach() for g in grads])  # one fused kernel, as clip_grad_norm_ uses
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def _silent(message: str) -> None:
    """The log of processes other than rank 0."""


class _NoLogger:
    """The metrics log of processes other than rank 0."""

    def log(self, record: dict[str, Any], step: int | None = None) -> None: ...

    def truncate_after(self, iteration: int) -> None: ...

    def close(self) -> None: ...


def _process_main(ctx: Context, cfg: TrainConfig) -> None:
    """One data-parallel training process; rank 0 also writes the run's statistics for the
    launching process."""
    result = Trainer(cfg, log=print, ctx=ctx).run()
    if ctx.is_main:
        stats = {"iterations": result.iterations, "seconds": result.seconds, "images": result.images,
                 "final_losses": result.final_losses, "stages": result.stages}
        atomic_write_text(Path(cfg.out) / "train_result.json", json.dumps(stats))


def _list_state(state: Any) -> Any:
    """random.getstate() as nested lists (a weights_only-loadable value)."""
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train with `cfg` and return the trained model and its statistics."""
    return Trainer(cfg, log).run()

