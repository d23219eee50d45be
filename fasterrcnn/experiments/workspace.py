"""The shared pieces of the experiments: the data set, the training runs, the evaluation.

A `Workspace` is one `--out` folder:

    OUT/data/                  the embedded synthetic data set (when no --data is given)
    OUT/runs/LABEL-KEY/        one training run (the trainer's files + run.json)
    OUT/runs/selective_search.pt   Selective Search boxes per image, computed once
    OUT/NAME/                  an experiment's result.json, result.md and plot

Runs are keyed by everything that decides their outcome (the training config with the data
path, and a fingerprint of the annotations); a run already in OUT/runs under its key is
loaded instead of trained again, so the baseline (3 scales x 3 ratios, lambda = 10, approximate
joint training), which five experiments share, is trained once per folder. Seeds are fixed
(TrainConfig.seed), so a reloaded run is the run that would have been trained.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fasterrcnn.errors import ConfigError
from fasterrcnn.experiments.budgets import Budget, anchor_scales
from fasterrcnn.experiments.proposals_source import SelectiveSearchCache, WithProposals

__all__ = ["PAPER_RATIOS", "Evaluation", "Run", "Workspace"]

PAPER_RATIOS = (0.5, 1.0, 2.0)  # Sec. 3.1.1: 1:2, 1:1, 2:1
PAPER_LAMBDA = 10.0  # Eq. 1
RUN_FILE = "run.json"


@dataclass
class Run:
    """One trained model and how long its training steps took."""

    label: str
    model: Any  # FasterRCNN, in eval mode
    seconds: float  # the training steps' time (TrainResult.seconds: no set-up, no evaluation)
    iterations: int
    directory: Path
    cached: bool  # loaded from an earlier run in the same folder


@dataclass
class Evaluation:
    """VOC07 mAP@0.5 (the paper's metric) of a model on the test split, with its timings."""

    map07: float
    map10: float
    seconds_per_image: float
    proposals_per_image: float
    proposal_seconds_per_image: float  # the proposal stage alone (RPN head + proposal layer, or Selective Search)


@dataclass
class Workspace:
    """One --out folder of experiments: the budget, the data set (read once: `prepare`), the
    anchor scales of its objects, the cached runs and Selective Search boxes, and the history
    of the runs asked for (which were reused)."""

    out: Path
    budget: Budget
    data: Path
    log: Callable[[str], None] = print
    progress: bool = True
    threads: int = 1
    seed: int = 0
    train_set: Any = None
    test_set: Any = None
    scales: tuple[float, float, float] = (8.0, 16.0, 32.0)
    history: list[dict[str, Any]] = field(default_factory=list)  # every run asked for: label, reused or trained, seconds
    _fingerprint: str = ""
    _ss: SelectiveSearchCache | None = field(default=None, repr=False)

    # -------------------------------------------------------------------------- set-up

    @classmethod
    def prepare(cls, out: str | Path, budget: Budget, data: str | Path | None = None, *, overwrite: bool = False,
                log: Callable[[str], None] = print, progress: bool = True, threads: int = 1, seed: int = 0) -> Workspace:
        """The workspace in `out`: the data set (given, or the synthetic one generated into
        OUT/data), read and checked, and the anchor scales of its objects."""
        if threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        path = Path(data) if data is not None else cls._synthetic(out / "data", budget, overwrite, log, progress, seed)
        ws = cls(out=out, budget=budget, data=path, log=log, progress=progress, threads=threads, seed=seed)
        ws._read_data(given=data is not None)
        return ws

    @staticmethod
    def _synthetic(path: Path, budget: Budget, overwrite: bool, log: Callable[[str], None], progress: bool, seed: int) -> Path:
        from fasterrcnn.data.synth import SynthConfig, claim_synth_outputs, config_from_dir, generate

        synth = SynthConfig(**{**budget.synth, "seed": seed}).validate()
        if config_from_dir(path) == synth:
            log(f"synthetic data set already in {path} (same settings): reusing it")
            return path
        claim_synth_outputs(path, overwrite=overwrite)
        log(f"generating the synthetic data set ({synth.num_train} training, {synth.num_test} test images) into {path}")
        generate(path, synth, progress=progress)
        return path

    def _read_data(self, given: bool) -> None:
        from fasterrcnn.data import build_dataset, has_split

        where = f"--data {self.data}" if given else str(self.data)
        if not self.data.exists():
            raise ConfigError(f"{where} does not exist")
        for split in ("train", "test"):
            if has_split(self.data, split) is False:
                raise ConfigError(f"{where} has no {split!r} split: the experiments train on 'train' and evaluate on 'test'")
        b = self.budget
        self.train_set = build_dataset(self.data, "train", train=True, min_size=b.min_size, max_size=b.max_size, seed=self.seed)
        self.test_set = build_dataset(self.data, "test", train=False, min_size=b.min_size, max_size=b.max_size,
                                      classes=self.train_set.classes)
        if len(self.train_set) == 0 or len(self.test_set) == 0:
            raise ConfigError(f"{where}: the 'train' and 'test' splits need at least one image each "
                              f"(found {len(self.train_set)} and {len(self.test_set)})")
        self.train_set.verify_images(threads=self.threads)
        self.test_set.verify_images(threads=self.threads)
        self.scales = anchor_scales(self.object_sizes())
        self._fingerprint = self._annotation_fingerprint()
        px = ", ".join(f"{s * 16:g}" for s in self.scales)
        self.log(f"data: {self.data} ({len(self.train_set)} training, {len(self.test_set)} test images, "
                 f"{len(self.train_set.classes)} classes); anchors scaled to its objects: {px} px")

    def object_sizes(self) -> list[float]:
        """sqrt(w * h) of every non-difficult training object at the network's input scale."""
        sizes = []
        b = self.budget
        for rec in self.train_set.records:
            scale = min(b.min_size / min(rec.height, rec.width), b.max_size / max(rec.height, rec.width))
            for box, difficult in zip(rec.boxes, rec.difficult):
                if not difficult:
                    sizes.append(math.sqrt(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)) * scale)
        return sizes

    def _annotation_fingerprint(self) -> str:
        h = hashlib.sha1()
        for ds in (self.train_set, self.test_set):
            for rec in ds.records:
                h.update(f"{Path(rec.file).name}:{rec.height}x{rec.width}".encode())
                h.update(rec.boxes.tobytes())
                h.update(rec.labels.tobytes())
                h.update(rec.difficult.tobytes())
        return h.hexdigest()[:16]

    # -------------------------------------------------------------------------- models

    def model_overrides(self, *, scales: tuple[float, ...] | None = None, ratios: tuple[float, ...] = PAPER_RATIOS,
                        loss_lambda: float = PAPER_LAMBDA) -> dict[str, Any]:
        """The ModelConfig overrides of a run: the budget's, with these anchors and RPN loss weight
        (defaults: the data set's three scales, the paper's three ratios, lambda = 10)."""
        base = self.budget.model_fields()
        chosen = self.scales if scales is None else scales
        return {**base, "anchors": {"scales": [float(s) for s in chosen], "ratios": [float(r) for r in ratios]},
                "rpn": {**base["rpn"], "loss_lambda": float(loss_lambda)}}

    def train_config(self, label: str, *, model: dict[str, Any] | None = None, **changes: Any) -> Any:
        """The TrainConfig of run `label` (its `out` is set by `train`)."""
        from fasterrcnn.engine.config import TrainConfig

        fields = {**self.budget.train_fields(), **changes}
        # enough epochs for max_iters (the epoch count only shows in the log: max_iters ends each stage)
        per_epoch = max(1, len(self.train_set) // fields["batch_size"])
        fields["epochs"] = math.ceil(fields["max_iters"] / per_epoch) + 1
        return TrainConfig(data=str(self.data), out=str(self.out / "runs" / label), seed=self.seed, threads=self.threads,
                           num_workers=0, progress=self.progress, verify_images=False, overwrite=True, log_every=10**6,
                           model=model if model is not None else self.model_overrides(), **fields)

    def run_key(self, cfg: Any, proposals: str = "rpn") -> str:
        """What decides a run's outcome, hashed: the config (not where it is written or how it
        is shown), the annotations, and where the detector's training proposals come from."""
        decisive = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "progress", "overwrite", "log_every", "verify_images")}
        blob = json.dumps({"config": decisive, "data": self._fingerprint, "proposals": proposals}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def train(self, label: str, *, model: dict[str, Any] | None = None, selective_search: bool = False, **changes: Any) -> Run:
        """Train run `label` (or load it when the same run is in OUT/runs already).

        `selective_search`: a Fast R-CNN detector (the model's detector stage) trained on the
        Selective Search boxes of its training images in place of RPN proposals (Sec. 4.1,
        "SS + Fast R-CNN")."""
        cfg = self.train_config(label, model=model, **changes)
        key = self.run_key(cfg, "selective_search" if selective_search else "rpn")
        cached = self._load_run(label, key)
        if cached is not None:
            self.history.append({"label": label, "reused": True, "seconds": cached.seconds})
            return cached
        directory = self.out / "runs" / f"{label}-{key}"
        cfg.out = str(directory)
        self.log(f"[{label}] training ({cfg.schedule}, {cfg.max_iters} iterations per step) into {directory}")
        from fasterrcnn.experiments.proposals_source import train_on_proposals

        t0 = time.perf_counter()
        if selective_search:
            result = train_on_proposals(cfg, self.selective_search(), log=self.log)
            self.selective_search().save()
        else:
            from fasterrcnn.engine.trainer import train

            result = train(cfg, log=self.log)
        record = {"key": key, "label": label, "seconds": result.seconds, "iterations": result.iterations,
                  "wall_seconds": time.perf_counter() - t0, "stages": result.stages}
        from fasterrcnn.fileio import atomic_write_text

        atomic_write_text(directory / RUN_FILE, json.dumps(record, indent=2, default=str))
        self.log(f"[{label}] trained: {result.iterations} iterations in {result.seconds:.1f} s")
        self.history.append({"label": label, "reused": False, "seconds": result.seconds})
        return Run(label, result.model.eval(), result.seconds, result.iterations, directory, cached=False)

    def _load_run(self, label: str, key: str) -> Run | None:
        """The finished run of `key` in OUT/runs (under whichever label trained it), or None."""
        for directory in sorted((self.out / "runs").glob(f"*-{key}")):
            record_path, checkpoint = directory / RUN_FILE, directory / "model_final.pt"
            if record_path.is_file() and checkpoint.is_file():
                record = json.loads(record_path.read_text())
                if record.get("key") == key:
                    return self._reload(label, directory, record)
        return None

    def _reload(self, label: str, directory: Path, record: dict[str, Any]) -> Run:
        from fasterrcnn.modeling.checkpoint import load_checkpoint

        model, _ = load_checkpoint(directory / "model_final.pt")
        self.log(f"[{label}] reusing the run in {directory} ({record['iterations']} iterations, {record['seconds']:.1f} s)")
        return Run(label, model.eval(), float(record["seconds"]), int(record["iterations"]), directory, cached=True)

    # -------------------------------------------------------------------------- evaluation

    def selective_search(self) -> SelectiveSearchCache:
        """The folder's Selective Search boxes (OpenCV, fast mode, the first 2,000 per image)."""
        if self._ss is None:
            self._ss = SelectiveSearchCache(self.out / "runs" / "selective_search.pt", log=self.log)
        return self._ss

    def evaluate(self, run: Run, *, selective_search: bool = False) -> Evaluation:
        """VOC07/VOC10 mAP@0.5 of `run` on the test split with its own RPN's 300 proposals, or
        with the Selective Search boxes (`selective_search`); proposal time per image."""
        from fasterrcnn.benchmark.model import StageTimer
        from fasterrcnn.engine.evaluate import evaluate_model

        model = run.model.eval()
        timer = StageTimer(torch.device("cpu"))
        old_clock = model.clock
        model.clock = timer
        timer.start_run()
        source = self.selective_search() if selective_search else None
        counted = _ProposalCounter(source) if source is not None else None
        try:
            net = WithProposals(model, counted) if counted is not None else _CountingModel(model)
            results, preds = evaluate_model(net, self.test_set, device=torch.device("cpu"), num_workers=0, recall=False,
                                            coco=False, plots=False, progress=self.progress, log=self.log)
        finally:
            model.clock = old_clock
        if source is not None:
            source.save()
        n = max(preds.num_images, 1)
        stages = timer.runs[-1]
        if counted is not None:
            prop_s, props = counted.seconds / n, counted.boxes / n
        else:
            prop_s = (stages.get("rpn_head", 0.0) + stages.get("proposals", 0.0)) / n
            props = net.boxes / n
        voc = results["voc"]
        return Evaluation(float(voc["map07"]), float(voc["map10"]), preds.seconds / n, props, prop_s)

    def rpn_proposals(self, run: Run, count: int) -> list[dict[str, Any]]:
        """The RPN's top `count` test proposals per image, original coordinates, for recall."""
        from fasterrcnn.data import build_loader
        from fasterrcnn.engine.inference import predict

        loader = build_loader(self.test_set, batch_size=1, shuffle=False, num_workers=0)
        preds = predict(run.model.eval(), loader, torch.device("cpu"), num_proposals=count, progress=self.progress,
                        desc="RPN proposals")
        return preds.proposals

    def ss_proposals(self) -> list[dict[str, Any]]:
        """The Selective Search boxes of every test image, in their ranking, original coordinates."""
        from fasterrcnn.engine.inference import to_original

        source = self.selective_search()
        out = []
        for i in range(len(self.test_set)):
            image, target = self.test_set[i]
            boxes = source([image])[0]
            out.append({"image_id": target["image_id"], "boxes": to_original(boxes, image, tuple(target["orig_size"]))})
        source.save()
        return out

    def ground_truth(self) -> list[dict[str, Any]]:
        from fasterrcnn.engine.evaluate import ground_truth

        return ground_truth(self.test_set)


class _CountingModel(torch.nn.Module):
    """A detector that adds up how many proposals its RPN gave the detector (its top-M after
    NMS, at most 300 by default), with the calling convention of `FasterRCNN`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.boxes = 0

    def forward(self, images: list[Tensor], targets: Any = None, **kwargs: Any) -> Any:
        wanted = kwargs.get("return_proposals", False)
        results = self.model(images, targets, **{**kwargs, "return_proposals": True})
        self.boxes += sum(int(r["proposals"].shape[0]) for r in results)
        if not wanted:
            results = [{k: v for k, v in r.items() if k not in ("proposals", "proposal_scores")} for r in results]
        return results


class _ProposalCounter:
    """Wraps a proposal source, adding up its boxes and the seconds it took (the Selective
    Search time of an image is the one measured when it was computed, cached or not)."""

    def __init__(self, source: SelectiveSearchCache) -> None:
        self.source = source
        self.seconds = 0.0
        self.boxes = 0

    def __call__(self, images: list[Tensor]) -> list[Tensor]:
        boxes = self.source(images)
        self.seconds += sum(self.source.seconds_of(img) for img in images)
        self.boxes += sum(int(b.shape[0]) for b in boxes)
        return boxes
