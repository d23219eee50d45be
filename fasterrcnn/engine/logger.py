"""Training metrics: a JSONL log (always) and TensorBoard scalars (optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per record to `path`; mirrors numbers to TensorBoard if asked."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is an optional extra
                from fasterrcnn.errors import ConfigError

                raise ConfigError("--tensorboard needs the tensorboard package: pip install 'fasterrcnn[tensorboard]'") from exc
            self._tb = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict[str, Any], step: int | None = None) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self._tb is not None and step is not None:
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("iter", "epoch"):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def truncate_after(self, iteration: int) -> None:
        """Drop records past `iteration` (used when resuming from an earlier checkpoint)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("global_iter", 0) <= iteration]
        self.path.write_text("".join(line + "\n" for line in keep))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
