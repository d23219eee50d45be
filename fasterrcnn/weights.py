"""Published weight files: where they come from, where they go, and their integrity check.

`download(name, dest_dir)` fetches one of torchvision's COCO detection files from its
published address when the machine is online, checks the SHA-256 prefix that the file name
carries (torchvision's convention: `NAME-<first hex digits of the sha256>.pth`), and moves it
into place atomically; a file already there is checked, not fetched again. Offline, the error
says exactly which file to fetch from where, and where to put it.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fasterrcnn.errors import CheckpointError, ConfigError
from fasterrcnn.fileio import atomic_write

__all__ = ["WEIGHTS", "WeightFile", "default_dir", "download", "verify"]


@dataclass(frozen=True)
class WeightFile:
    name: str  # the architecture (torchvision's builder name)
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        m = re.search(r"-([0-9a-f]{6,})\.pth$", self.filename)
        if m is None:
            raise ValueError(f"{self.filename} carries no hash prefix")
        return m.group(1)


_BASE = "https://download.pytorch.org/models/"
WEIGHTS: dict[str, WeightFile] = {w.name: w for w in (
    WeightFile("fasterrcnn_resnet50_fpn", _BASE + "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"),
    WeightFile("fasterrcnn_resnet50_fpn_v2", _BASE + "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"),
    WeightFile("fasterrcnn_mobilenet_v3_large_fpn", _BASE + "fasterrcnn_mobilenet_v3_large_fpn-fb6a3cc7.pth"),
    WeightFile("fasterrcnn_mobilenet_v3_large_320_fpn", _BASE + "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"),
)}


def default_dir() -> Path:
    """$FASTERRCNN_HOME/weights, else ~/.cache/fasterrcnn/weights."""
    home = os.environ.get("FASTERRCNN_HOME")
    return Path(home) / "weights" if home else Path.home() / ".cache" / "fasterrcnn" / "weights"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: str | os.PathLike, prefix: str) -> None:
    """Raise CheckpointError unless the file's SHA-256 starts with `prefix`."""
    digest = _sha256(Path(path))
    if not digest.startswith(prefix):
        raise CheckpointError(f"{path}: SHA-256 {digest[:12]}... does not start with {prefix}, the prefix its "
                              "name carries: the file is corrupt or truncated")


def _get(name: str) -> WeightFile:
    if name not in WEIGHTS:
        raise ConfigError(f"unknown weights {name!r}; available: {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


def download(name: str, dest_dir: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """The path of weight file `name` in `dest_dir` (default `default_dir()`), fetched if absent."""
    w = _get(name)
    dest = Path(dest_dir) if dest_dir is not None else default_dir()
    path = dest / w.filename
    if path.exists():
        verify(path, w.hash_prefix)
        return path
    try:
        with urllib.request.urlopen(w.url, timeout=timeout) as response:
            def write(f) -> None:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    f.write(chunk)

            atomic_write(path, write)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CheckpointError(
            f"cannot download {w.filename} ({exc}); this machine seems offline: fetch {w.url} on a machine that "
            f"is online and put it at {path} (or pass its path with --weights)"
        ) from None
    try:
        verify(path, w.hash_prefix)
    except CheckpointError:
        path.unlink(missing_ok=True)
        raise
    return path
