"""Training metrics: a JSONL log (always) and TensorBoard scalars (optional)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fasterrcnn.fileio import atomic_write_text


class MetricsLogger:
    """Appends one JSON object per record to `path`; mirrors numbers to TensorBoard if asked."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is an optional extra (TrainConfig.validate checks it first)
                from fasterrcnn._optional import install_hint
                from fasterrcnn.errors import ConfigError

                raise ConfigError(f"--tensorboard needs the tensorboard package: {install_hint('tensorboard')}") from exc
            self._tb = SummaryWriter(str(tensorboard_dir))
        if _ends_mid_line(self.path):  # a crash cut the last write short: drop the fragment
            atomic_write_text(self.path, "".join(line + "\n" for line in _complete_lines(self.path.read_text())))

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
        keep = [line for line in _complete_lines(self.path.read_text()) if json.loads(line).get("global_iter", 0) <= iteration]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))  # a kill here keeps the old log

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file."""
    return [json.loads(line) for line in _complete_lines(Path(path).read_text())]


def _complete_lines(text: str) -> list[str]:
    """The non-blank lines of a JSONL text, less a last line a crash cut short (one without
    its newline that is not valid JSON); every record is written whole, newline included."""
    *lines, tail = text.split("\n")
    lines = [line for line in lines if line.strip()]
    if tail.strip():
        try:
            json.loads(tail)
            lines.append(tail)
        except json.JSONDecodeError:
            pass
    return lines


def _ends_mid_line(path: Path) -> bool:
    """Whether the file at `path` exists, is not empty and does not end with a newline."""
    try:
        with path.open("rb") as f:
            if f.seek(0, 2) == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False
