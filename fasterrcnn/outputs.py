"""Output folders: a command never writes over a file it did not create in this run.

Every command that writes files names them before it starts (`planned` paths, relative to
its output folder or absolute) and calls `claim_outputs`, which refuses, with one error
naming the files and the way out:

* any planned output that *is* one of the command's inputs (an annotated copy that would
  replace the photo it was drawn from, a checkpoint written over the weights it starts
  from), or an input inside a folder the command would clear, whatever the options;
* any planned output that already exists, unless the user asked for it (`--overwrite`, or
  `--resume` for training, which continues the run that wrote them).

With `overwrite=True` the command's own previous outputs that it would not write again are
removed first (`clear`), so that an old report never sits beside a new model. Nothing else
in the folder is touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from fasterrcnn.errors import ConfigError

__all__ = ["claim_outputs", "clear_outputs", "existing_outputs", "same_file"]

_SHOWN = 4


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(os.path.realpath(path)))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when `a` and `b` name the same file or folder (links and `..` resolved)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return _resolved(a) == _resolved(b)


def _inside(path: Path, folder: Path) -> bool:
    try:
        _resolved(path).relative_to(_resolved(folder))
    except ValueError:
        return False
    return True


def existing_outputs(out_dir: str | os.PathLike, planned: Iterable[str | os.PathLike]) -> list[Path]:
    """The planned outputs (relative to `out_dir`) that exist already."""
    out = Path(out_dir)
    return [out / p for p in planned if (out / p).exists() or (out / p).is_symlink()]


def claim_outputs(
    out_dir: str | os.PathLike,
    planned: Sequence[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False,
    what: str = "outputs",
    hint: str = "choose another --out, or pass --overwrite to replace them",
) -> list[Path]:
    """Check that `out_dir` can take `planned` (file or folder names relative to it); returns
    the planned outputs that exist (to be replaced: only when `overwrite`). Raises ConfigError."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    targets = [out / p for p in planned]
    for src in inputs:
        if src is None:
            continue
        for t in targets:
            if same_file(t, src) or (t.is_dir() and _inside(Path(src), t)):
                via = "" if same_file(t, src) else f" (it is inside {t})"
                raise ConfigError(
                    f"--out {out}: the {what} would be written over the input {src}{via}; "
                    "choose an output folder that holds none of the inputs"
                )
    found = existing_outputs(out, planned)
    if found and not overwrite:
        names = ", ".join(str(p) for p in found[:_SHOWN]) + (f" and {len(found) - _SHOWN} more" if len(found) > _SHOWN else "")
        raise ConfigError(f"--out {out}: {what} already exist ({names}); {hint}")
    return found


def clear_outputs(paths: Iterable[Path]) -> None:
    """Remove a previous run's outputs that the user asked to replace (files and folders)."""
    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
