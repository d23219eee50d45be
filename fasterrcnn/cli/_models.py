"""The model a command runs: a fasterrcnn checkpoint, or torchvision's detection weights."""

from __future__ import annotations

import argparse
from typing import Any

TORCHVISION_HELP = (
    "run torchvision's detection weights of this architecture (fasterrcnn_resnet50_fpn, fasterrcnn_resnet50_fpn_v2, "
    "fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_mobilenet_v3_large_320_fpn) from --weights FILE"
)


def add_weights_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="FILE", help="with --torchvision: the state dict file, e.g. "
                                                      "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")


def load_model(args: argparse.Namespace, device: Any, overrides: dict[str, Any]) -> tuple[Any, str]:
    """(model in eval mode, the path it came from) for `--checkpoint` (a .pt checkpoint, or an ONNX file
    run by onnxruntime) or `--torchvision` + `--weights`."""
    from fasterrcnn.errors import ConfigError

    arch = getattr(args, "torchvision", None)
    if arch:
        if not args.weights:
            raise ConfigError(f"--torchvision {arch} needs --weights FILE (torchvision's state dict)")
        from fasterrcnn.modeling.torchvision_weights import load_torchvision

        return load_torchvision(arch, args.weights, **overrides).to(device), args.weights
    if getattr(args, "weights", None):
        raise ConfigError("--weights goes with --torchvision ARCH; a fasterrcnn checkpoint is given with --checkpoint")
    if str(args.checkpoint).lower().endswith(".onnx"):
        if overrides:
            raise ConfigError("--set changes a PyTorch checkpoint; an ONNX file runs as it was exported "
                              "(export again with `fasterrcnn export --set ...`)")
        import torch

        from fasterrcnn.export.onnx import OnnxDetector

        return OnnxDetector(args.checkpoint, threads=torch.get_num_threads()), args.checkpoint
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    model, _ = load_checkpoint(args.checkpoint, map_location=device, **overrides)
    return model, args.checkpoint
