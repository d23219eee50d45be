"""Modules that the package can do without: found or not, and what to say when not.

matplotlib, pycocotools, numba and pyyaml are core dependencies, but an install with
``--no-deps`` or a platform without one of their wheels can still lack them; tensorboard is
an extra. Without one, a command skips the output that needs it with one note line
(`missing_note`), falls back silently (numba), or fails at its start with a `ConfigError`
saying what to install (`install_hint`) -- never after the work is done.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["install_hint", "missing_note", "missing_reason", "optional_import", "require"]

#: What to install for a module (its top-level package name), where that is not the name itself.
_INSTALL = {
    "yaml": "pyyaml",
    "tensorboard": '"fasterrcnn[tensorboard]"',
    "torch.utils.tensorboard": '"fasterrcnn[tensorboard]"',
    "onnx": '"fasterrcnn[onnx]"',
    "onnxruntime": '"fasterrcnn[onnx]"',
}


def optional_import(name: str) -> ModuleType | None:
    """The module `name` (e.g. "matplotlib", "torch.utils.tensorboard"), or None when it, or a
    module it needs, cannot be imported."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _package(name: str) -> str:
    return "tensorboard" if name == "torch.utils.tensorboard" else name.partition(".")[0]


def install_hint(name: str) -> str:
    """'pip install <what provides `name`>'."""
    return f"pip install {_INSTALL.get(name, _INSTALL.get(_package(name), _package(name)))}"


def missing_reason(name: str) -> str:
    """Why an output was skipped, for a report: '<module> is not installed (pip install ...)'."""
    return f"{_package(name)} is not installed ({install_hint(name)})"


def missing_note(name: str, skipped: str) -> str:
    """The one line a command prints when it skips `skipped` for want of module `name`:
    'note: matplotlib is not installed: loss_curve.png not written (pip install matplotlib)'."""
    return f"note: {_package(name)} is not installed: {skipped} ({install_hint(name)})"


def require(name: str, purpose: str) -> ModuleType:
    """The module `name`, or a `ConfigError` saying what to install to `purpose` (e.g. "export to ONNX")."""
    module = optional_import(name)
    if module is None:
        from fasterrcnn.errors import ConfigError

        raise ConfigError(f"{_package(name)} is needed to {purpose}: {install_hint(name)}")
    return module
