"""Timing helpers: warm-up, then the median of repeated runs (robust on a shared machine)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Seconds per run: median and the individual runs."""

    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def ms(self) -> float:
        return 1000.0 * self.median


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], repeat: int = 7, warmup: int = 2, device: torch.device | None = None
) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeat` times timed (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return Timing(runs)
