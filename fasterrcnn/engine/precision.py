"""Numeric precision and device selection for training and inference.

`fp32` is the reference. `bf16` runs the convolutions and fully connected layers under
`torch.autocast(dtype=torch.bfloat16)` (CPUs with AVX-512-BF16 or AMX, and CUDA GPUs);
`fp16` is autocast float16 with gradient scaling, on CUDA only. The model keeps losses, box
coding and proposal selection in float32 whatever the precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fasterrcnn.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, ...)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    return dev


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX-512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> bf16 on CUDA GPUs that support it and on bf16-capable CPUs, else fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The low-precision dtype of `precision` (None for fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """The autocast context of `precision` (a no-op for fp32)."""
    if precision == "fp32":
        yield
        return
    dtype = autocast_dtype(precision)
    if dtype is None:
        raise ValueError(f"precision must be fp32, bf16 or fp16 (resolve 'auto' first), got {precision!r}")
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
