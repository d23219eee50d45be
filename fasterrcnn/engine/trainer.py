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

A stage reads as its parts: `_build` (model, data-parallel wrapper, optimiser, schedule),
`_restore` (from a checkpoint), `_train_epoch` of `_step`s, `_end_epoch` (log, statistics,
checks) and `_save_last` (the checkpoint), then `_finish_stage`. Every stage is logged
(metrics.jsonl, one progress bar over its iterations) and checkpointed: `last.pt` after each
epoch (atomic), `stage<k>.pt` at the end of each alternating step, and `model_final.pt`.
`--resume` restarts from `last.pt` exactly: model, optimiser, scheduler, epoch, iteration and
each process's RNG state, so a resumed run reproduces the uninterrupted one; so does a run
that its launcher restarted after a failure (torchrun --max-restarts), which resumes by itself.

Data-parallel runs (torchrun, or `processes`: engine.distributed) train one replica per
process on its share of every batch; `batch_size` is the images of one step over all of them.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from fasterrcnn.engine.config import TrainConfig
from fasterrcnn.engine.distributed import launch_local, restart_caveat, setup, wrap_model
from fasterrcnn.engine.ema import ModelEMA
from fasterrcnn.engine.logger import MetricsLogger
from fasterrcnn.engine.optim import WarmupCosineLR, WarmupStepLR, build_optimizer
from fasterrcnn.engine.precision import autocast, resolve_device, resolve_precision
from fasterrcnn.engine.sync_batchnorm import convert_sync_batchnorm, revert_sync_batchnorm
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

    def add_stage(self, state: _Stage) -> None:
        """Count a finished stage's iterations, time and images."""
        self.iterations += state.it
        self.seconds += state.seconds
        self.images += state.images
        self.final_losses = state.epoch_losses
        self.stages.append({"stage": state.spec.index, "name": state.spec.name, "epochs": state.spec.epochs,
                            "iterations": state.it, "seconds": state.seconds})


@dataclass
class _Stage:
    """What one stage trains with (`Trainer._build`), and where it stands."""

    spec: StageSpec
    model: FasterRCNN  # this process's replica (what is saved)
    net: nn.Module  # what the training step calls: the model, or the model in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: WarmupStepLR
    scaler: torch.amp.GradScaler | None
    ema: ModelEMA | None
    propose: Callable[[list[Tensor]], list[Tensor]] | None  # a detector step's proposals
    total_iters: int
    global_start: int  # iterations of the schedule's earlier stages
    epoch: int = 0  # the next epoch to train
    it: int = 0  # iterations done in this stage
    seconds: float = 0.0
    images: int = 0
    epoch_losses: dict[str, float] = field(default_factory=dict)
    window: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(lambda: deque(maxlen=20)))


class Trainer:
    """Builds data, model(s) and optimiser from a `TrainConfig` and runs the schedule."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print, *, checked: bool = False) -> None:
        """`checked`: the launching process of `processes` has already checked the data, the
        outputs and the resume checkpoint (its workers skip that)."""
        cfg.validate()
        self.ctx, self.device = setup(resolve_device(cfg.device))
        self.log = log if self.ctx.is_main else _silent
        caveat = restart_caveat(self.ctx)
        if caveat:
            self.log(caveat)
        if self.ctx.restart > 0 and not cfg.resume:  # the launcher restarted the run after a failure
            self.log(f"restart {self.ctx.restart} of this run: resuming from its last checkpoint")
            cfg = dataclasses.replace(cfg, resume=True, overwrite=False)
        self.cfg = cfg
        self._check_world()
        self.out = Path(cfg.out)
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.processes > 1 and self.device.type == "cuda" and cfg.processes > torch.cuda.device_count():
            raise ConfigError(f"processes={cfg.processes} needs as many GPUs; {torch.cuda.device_count()} found")
        if cfg.threads and not self.ctx.active and cfg.processes == 1:  # else the workers' own count
            torch.set_num_threads(cfg.threads)
        if cfg.sync_bn and not (self.ctx.active or cfg.processes > 1):
            self.log("note: --sync-bn has no effect in a single process (its BatchNorm already sees the whole batch)")
        from fasterrcnn.data import build_dataset

        common = dict(format=cfg.format, min_size=cfg.min_size, max_size=cfg.max_size, seed=cfg.seed, classes=cfg.classes)
        if cfg.image_dir is not None:
            common["image_dir"] = cfg.image_dir
        self.train_set = build_dataset(cfg.data, cfg.train_split, train=True, flip_prob=cfg.flip_prob, **common)
        self.classes: list[str] = list(self.train_set.classes)
        if len(self.train_set) == 0:
            raise ConfigError(f"the training split {cfg.train_split!r} of {cfg.data} has no images")
        self.group_aspect = cfg.group_aspect and cfg.batch_size > 1
        # the batches of an epoch as the training loop will draw them (one per orientation may
        # be incomplete), the same for any number of processes
        self.iters_per_epoch = len(self._loader(epoch=0, seed=cfg.seed, rank=0, world=1))
        # Everything is checked before anything is written: the arguments, the data (every image
        # decoded once), the resume checkpoint's compatibility, the output folder; by rank 0 (the
        # other ranks write nothing), or by the process that started the workers of `processes`.
        self._resume = self._read_resume() if cfg.resume else None
        self._replaced: list[Path] = []
        if self.ctx.is_main and not checked:
            if not cfg.resume:
                inputs = [cfg.data, cfg.image_dir, cfg.pretrained if cfg.pretrained != "auto" else None, cfg.weights, cfg.val_data]
                self._replaced = claim_outputs(
                    self.out, RUN_OUTPUTS, inputs=inputs, overwrite=cfg.overwrite, what="a previous training run's files",
                    hint="choose another --out, continue that run with --resume, or replace it with --overwrite",
                )
            if cfg.verify_images:
                self.verify_data(self.train_set, cfg.train_split)
        self._last_saved: str | None = None

    def _check_world(self) -> None:
        """The processes a launcher started must share out the batch."""
        cfg, world = self.cfg, self.ctx.world
        if not self.ctx.active:
            return
        if cfg.processes not in (1, world):
            raise ConfigError(f"--processes {cfg.processes} starts its own processes, but this one is already one of "
                              f"{world} started by a launcher (torchrun): leave --processes out")
        if cfg.batch_size % world:
            raise ConfigError(f"--batch-size {cfg.batch_size} (the images of one step over all processes) must be a "
                              f"multiple of the number of processes, {world}")

    def verify_data(self, dataset: Any, split: str | None) -> None:
        """Decode every image of `dataset` once (DetectionDataset.verify_images), logging the time."""
        t0 = time.perf_counter()
        dataset.verify_images(threads=max(1, min(4, torch.get_num_threads())))
        self.log(f"checked the {len(dataset)} images of split {split!r} ({time.perf_counter() - t0:.1f} s)")

    def _loader(self, epoch: int, seed: int, rank: int, world: int) -> Any:
        from fasterrcnn.data import build_loader

        return build_loader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True, seed=seed, epoch=epoch,
                            num_workers=self.cfg.num_workers, group_aspect=self.group_aspect, rank=rank, world=world)

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
        """Run the schedule, stage after stage, and save the final model."""
        cfg = self.cfg
        if self._replaced:  # the user asked (overwrite): the previous run's files go first
            self.log(f"--overwrite: removing the previous run's {', '.join(p.name for p in self._replaced)} from {self.out}")
            clear_outputs(self._replaced)
            self._replaced = []
        if cfg.processes > 1 and not self.ctx.active:
            return self._run_processes()
        logger = self._open_outputs()
        self.log(self._describe())
        random.seed(cfg.seed + self.ctx.rank)
        torch.manual_seed(cfg.seed + self.ctx.rank)
        result = TrainResult(model=None, out_dir=self.out)  # type: ignore[arg-type]
        resume, global_iter = self._resume, 0
        try:
            for spec in self.stages():
                if resume is not None and spec.index < resume["stage"]:
                    global_iter += self._stage_iters(spec)
                    continue
                state = self._build(spec, global_iter)
                if resume is not None and resume["stage"] == spec.index:
                    self._restore(state, resume, logger)
                resume = None
                self._train_stage(state, logger)
                model = self._finish_stage(state)
                global_iter += state.it
                result.add_stage(state)
                if cfg.schedule == "alternating" and self.ctx.is_main:
                    save_checkpoint(self.out / f"stage{spec.index}.pt", model, stage=spec.index)
                self.ctx.barrier()  # the next stage may read this one's checkpoint
        finally:
            logger.close()
        model.set_stage("joint").freeze_backbone(False).eval()
        result.model = model
        result.checkpoint = self.out / "model_final.pt"
        if self.ctx.is_main:
            save_checkpoint(result.checkpoint, model, classes=self.classes, train_config=cfg.to_dict())
        return result

    def _open_outputs(self) -> MetricsLogger | _NoLogger:
        """Rank 0: the output folder, the configuration file and the metrics log (a fresh one
        unless resuming); the other ranks write nothing."""
        cfg = self.cfg
        if not self.ctx.is_main:
            return _NoLogger()
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.out)  # those of a write a kill cut short (SIGKILL, power loss)
        atomic_write_text(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2))
        if self._resume is None and (self.out / "metrics.jsonl").exists():  # a fresh start (a resume before the first checkpoint too)
            (self.out / "metrics.jsonl").unlink()
        return MetricsLogger(self.out / "metrics.jsonl", self.out / "tensorboard" if cfg.tensorboard else None)

    def _run_processes(self) -> TrainResult:
        """`cfg.processes` data-parallel processes on this machine, started through PyTorch's
        launcher (engine.distributed.launch_local); the trained model is read back from the
        checkpoint rank 0 wrote."""
        cfg = self.cfg
        self.log(f"training in {cfg.processes} data-parallel processes")
        launch_local({"config": cfg.to_dict()}, cfg.processes, threads=cfg.threads)
        stats = json.loads((self.out / "train_result.json").read_text())
        model, _ = load_checkpoint(self.out / "model_final.pt", map_location=self.device)
        return TrainResult(model=model, out_dir=self.out, checkpoint=self.out / "model_final.pt", **stats)

    def _describe(self) -> str:
        cfg = self.cfg
        share = f" ({cfg.batch_size // self.ctx.world} in each of {self.ctx.world} processes)" if self.ctx.active else ""
        return (
            f"training {cfg.preset} ({cfg.schedule}) on {cfg.data} [{cfg.train_split}]: {len(self.train_set)} images, "
            f"{len(self.classes)} classes, batch {cfg.batch_size}{share}, {self.iters_per_epoch} iterations/epoch, "
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
        for key in ("preset", "schedule", "batch_size", "data", "train_split", "seed"):
            if saved.get(key) != getattr(self.cfg, key):
                raise CheckpointError(f"{path} was written with {key}={saved.get(key)!r}, but this run has {key}={getattr(self.cfg, key)!r}")
        saved_world = _saved_world(ckpt)
        self.log(f"resuming from {path}: stage {ckpt['stage']}, {ckpt['epoch']} epoch(s) done")
        if saved_world != self.ctx.world:
            self.log(f"note: {path} was written by {saved_world} process(es), this run has {self.ctx.world}: the weights, "
                     f"optimiser, schedule and the order of the batches of {self.cfg.batch_size} images continue exactly; "
                     "each process's random stream (anchor and RoI sampling, flips) is reseeded, and BatchNorm sees "
                     f"{self.cfg.batch_size // self.ctx.world} image(s) per process, so the run is not bit-identical to an "
                     "uninterrupted one")
        ckpt["path"] = path
        return ckpt

    # ------------------------------------------------------------------- a stage's parts

    def _build(self, spec: StageSpec, global_start: int) -> _Stage:
        """The stage's model (the parts it does not use frozen), its data-parallel wrapper,
        optimiser, learning-rate schedule, loss scaler, weight average and proposal source."""
        cfg = self.cfg
        model = spec.build().to(self.device)
        model.set_stage(spec.mode)
        model.freeze_backbone(spec.freeze_backbone)
        if spec.trainable != "all":
            model.requires_grad_(False)
            getattr(model, spec.trainable).requires_grad_(True)
        unused = {"rpn": "roi_heads", "detector": "rpn"}.get(spec.mode)
        if unused is not None:  # an RPN step does not run the detector, a detector step has its proposals
            getattr(model, unused).requires_grad_(False)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and self.ctx.active:
            model = convert_sync_batchnorm(model, self.device)
        net = wrap_model(model, self.ctx, self.device)
        optimizer = build_optimizer(model, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.bias_lr_factor, cfg.bias_weight_decay, kind=cfg.optimizer)
        total_iters = self._stage_iters(spec)
        warmup = min(cfg.warmup_iters, total_iters)
        if cfg.lr_schedule == "cosine":
            scheduler: WarmupStepLR = WarmupCosineLR(optimizer, total_iters, warmup, cfg.warmup_factor)
        else:
            scheduler = WarmupStepLR(optimizer, [int(f * total_iters) for f in cfg.lr_steps], cfg.gamma, warmup, cfg.warmup_factor)
        scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        ema = ModelEMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.log(f"[stage {spec.index}] {spec.name}: {spec.epochs} epoch(s), {total_iters} iterations, "
                 f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,} trainable parameters")
        return _Stage(spec, model, net, optimizer, scheduler, scaler, ema, self.proposal_source(spec, model), total_iters, global_start)

    def _restore(self, state: _Stage, ckpt: dict[str, Any], logger: MetricsLogger | _NoLogger) -> None:
        """Continue `state`'s stage from the checkpoint `ckpt`: weights, optimiser, schedule,
        weight average, position and (same number of processes) each process's random state."""
        state.model.load_state_dict(ckpt["model"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        state.epoch, state.it = ckpt["epoch"], ckpt["iteration"]
        if state.ema is not None:
            if "ema" not in ckpt:
                raise CheckpointError(f"{ckpt['path']} holds no weight average, but this run has ema_decay={self.cfg.ema_decay}")
            state.ema.load_state_dict(ckpt["ema"])
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if len(ranks) == self.ctx.world:
            rng = ranks[self.ctx.rank]
            torch.set_rng_state(rng["torch"])
            random.setstate(_tuple_state(rng["python"]))
            if torch.cuda.is_available() and rng.get("cuda") is not None:
                torch.cuda.set_rng_state_all(rng["cuda"])
        else:  # another number of processes (noted by _read_resume): fresh streams, still deterministic
            seed = self.cfg.seed + 7919 * (state.epoch + 1) + self.ctx.rank
            torch.manual_seed(seed)
            random.seed(seed)
        logger.truncate_after(state.global_start + state.it)

    def _train_stage(self, state: _Stage, logger: MetricsLogger | _NoLogger) -> None:
        """The stage's epochs, each followed by its end-of-epoch work and checkpoint; one
        progress bar over the stage's whole budget of iterations."""
        spec = state.spec
        bar = tqdm(total=state.total_iters, initial=state.it, desc=f"stage {spec.index} ({spec.mode})", unit="it",
                   disable=not (self.cfg.progress and self.ctx.is_main), dynamic_ncols=True)
        try:
            for epoch in range(state.epoch, spec.epochs):
                if state.it >= state.total_iters:
                    break
                t0 = time.perf_counter()
                sums, count = self._train_epoch(state, epoch, bar, logger)
                state.epoch_losses = {k: v / max(count, 1) for k, v in sums.items()}
                self._end_epoch(state, epoch, logger, time.perf_counter() - t0)
        finally:
            bar.close()

    def _train_epoch(self, state: _Stage, epoch: int, bar: tqdm, logger: MetricsLogger | _NoLogger) -> tuple[dict[str, float], int]:
        """One epoch's steps (up to the stage's budget): the summed losses and the step count."""
        cfg, spec = self.cfg, state.spec
        self.train_set.set_epoch(epoch)
        loader = self._loader(epoch, cfg.seed + spec.index, self.ctx.rank, self.ctx.world)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        for images, targets in loader:
            if state.it >= state.total_iters:
                break
            t0 = time.perf_counter()
            try:
                losses = self._step(state, images, targets)
            except (FloatingPointError, NonFiniteError) as exc:
                what = str(exc) if isinstance(exc, FloatingPointError) else f"the forward pass produced non-finite values ({exc})"
                raise self._diverged(what, spec, epoch, state.global_start + state.it + 1) from exc
            if state.ema is not None:
                state.ema.update(state.model)
            dt = time.perf_counter() - t0
            state.seconds += dt
            state.images += len(images) * self.ctx.world
            state.it += 1
            count += 1
            for k, v in losses.items():
                state.window[k].append(v)
                sums[k] += v
            bar.update(1)
            bar.set_postfix({"epoch": f"{epoch + 1}/{spec.epochs}", **{k: f"{sum(v) / len(v):.3f}" for k, v in state.window.items()}},
                            refresh=False)
            if state.it % cfg.log_every == 0 or state.it == state.total_iters:
                self._log_step(state, epoch, logger, dt, len(images) * self.ctx.world)
        return sums, count

    def _log_step(self, state: _Stage, epoch: int, logger: MetricsLogger | _NoLogger, dt: float, images: int) -> None:
        means = {k: sum(v) / len(v) for k, v in state.window.items()}
        group = state.optimizer.param_groups[0]
        rec = {"kind": "train", "stage": state.spec.index, "epoch": epoch + 1, "iter": state.it,
               "global_iter": state.global_start + state.it, "lr": group["lr"] / group.get("lr_factor", 1.0),
               "loss": sum(means.values()), **means, "sec_per_iter": dt, "images_per_s": images / dt}
        logger.log(rec, step=state.global_start + state.it)

    def _end_epoch(self, state: _Stage, epoch: int, logger: MetricsLogger | _NoLogger, seconds: float) -> None:
        """Log the epoch, average the BatchNorm statistics over the processes, check every
        weight is finite, and save `last.pt`."""
        spec, step = state.spec, state.global_start + state.it
        logger.log({"kind": "epoch", "stage": spec.index, "epoch": epoch + 1, "iter": state.it, "global_iter": step,
                    **state.epoch_losses, "seconds": seconds}, step=step)
        self.log(f"[stage {spec.index}] epoch {epoch + 1}/{spec.epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in state.epoch_losses.items()))
        self.ctx.average_buffers(state.model)
        if state.ema is not None:  # every process then holds the same average (exact resume)
            self.ctx.average_buffers(state.ema.module)
        bad = nonfinite_entries(state.model.state_dict()) + (nonfinite_entries(state.ema.module.state_dict()) if state.ema is not None else [])
        if bad:
            raise self._diverged(f"non-finite values (NaN or inf) in {', '.join(bad[:3])}", spec, epoch, step)
        self._save_last(state, epoch)

    def _save_last(self, state: _Stage, epoch: int) -> None:
        """`last.pt` (rank 0, atomic): everything a resume needs, each process's random state included."""
        rng = {"torch": torch.get_rng_state(), "python": _list_state(random.getstate()),
               "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        rng_ranks = self.ctx.gather(rng)
        if not self.ctx.is_main:
            return
        extra = {"ema": state.ema.state_dict()} if state.ema is not None else {}
        self._last_saved = f"{self.out / 'last.pt'} (stage {state.spec.index}, epoch {epoch + 1}, iteration {state.it})"
        save_checkpoint(
            self.out / "last.pt", state.model, optimizer=state.optimizer.state_dict(), scheduler=state.scheduler.state_dict(),
            stage=state.spec.index, epoch=epoch + 1, iteration=state.it, classes=self.classes, train_config=self.cfg.to_dict(),
            rng=rng, rng_ranks=rng_ranks, world_size=self.ctx.world, **extra,
        )

    def _finish_stage(self, state: _Stage) -> FasterRCNN:
        """The stage's result: the weight average if kept, BatchNorm statistics re-estimated if
        asked, plain BatchNorm layers again."""
        model = state.model
        if state.ema is not None:  # the stage's result is the average (its BatchNorm statistics included)
            model.load_state_dict(state.ema.module.state_dict())
        if self.cfg.precise_bn_iters:
            self._precise_bn(model, state.spec, state.propose)
        return revert_sync_batchnorm(model)

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

    def _step(self, state: _Stage, images: list[Tensor], targets: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser step on this process's share of a batch. The backward pass through
        DistributedDataParallel leaves every replica with the gradients averaged over the
        processes; the loss values are averaged too, so that all see the same (and stop
        together when they are not finite)."""
        model, optimizer, scaler = state.model, state.optimizer, state.scaler
        model.train()
        images, targets = self._to_device(images, targets)
        proposals = state.propose(images) if state.propose is not None else None
        with autocast(self.device, self.precision):
            losses = state.net(images, targets, proposals=proposals)
        loss = sum(losses.values())
        shown = self.ctx.average_values(losses)
        if not torch.isfinite(sum(shown.values())):
            raise FloatingPointError(
                f"the loss became {float(sum(shown.values()))} "
                f"({', '.join(f'{k}={float(v):.4g}' for k, v in shown.items())})"
            )
        optimizer.zero_grad(set_to_none=True)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
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
        state.scheduler.step()
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


def _saved_world(ckpt: dict[str, Any]) -> int:
    """How many processes wrote the checkpoint `ckpt`."""
    if "world_size" in ckpt:
        return int(ckpt["world_size"])
    return len(ckpt["rng_ranks"]) if ckpt.get("rng_ranks") else 1


def _list_state(state: Any) -> Any:
    """random.getstate() as nested lists (a weights_only-loadable value)."""
    return [_list_state(s) for s in state] if isinstance(state, tuple) else state


def _tuple_state(state: Any) -> Any:
    return tuple(_tuple_state(s) for s in state) if isinstance(state, list) else state


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    """Train with `cfg` and return the trained model and its statistics."""
    return Trainer(cfg, log).run()

