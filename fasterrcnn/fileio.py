"""Atomic file writes: a crash never leaves a truncated checkpoint, report or results file.

The content goes to a temporary file in the target's folder (`.<name>.<random>.tmp`), is
flushed to disk, and is then renamed over the target (atomic on POSIX and Windows). A process
killed mid-write (SIGKILL, power loss) cannot remove its temporary file; `remove_stale_temp_files`
deletes such leftovers when a run starts writing into its folder again.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text", "is_temp_file_name", "remove_stale_temp_files"]

# `.<target name>.<8 random characters>.tmp`: ours (secrets.token_hex) and those of earlier
# versions (tempfile.mkstemp: [a-z0-9_]); a name a user would choose hardly ever matches.
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp", re.DOTALL)


def is_temp_file_name(name: str) -> bool:
    """Whether `name` is that of a temporary file `atomic_write` creates."""
    return _TEMP_NAME.fullmatch(name) is not None


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside `path`, with the permissions `open(path, "w")` would
    give a new file (0o666 less the umask; tempfile.mkstemp would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write `text` (UTF-8) to `path` atomically; returns the path as a string."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return os.fspath(path)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_write` left in `folder` (not its subfolders) when its
    process was killed mid-write; returns the paths removed. Only regular files named like ours
    (`.<name>.<random>.tmp`) are touched. Call it only where no other process is writing into
    `folder` (e.g. when a run starts writing into its output folder)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if is_temp_file_name(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed
