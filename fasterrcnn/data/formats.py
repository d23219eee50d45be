"""The registry of data-set formats: one entry per layout that `--data` accepts.

Each format registers a name (what `--format` takes), a one-line description (for --help and
for the "layout not recognised" error) and a `Reader`, the functions that know its layout:

    detect(path, split) -> where | None   does PATH look like this format? (`where`: a dict the
                                          format's own build understands; never raises for a
                                          path that is simply not of this format)
    build(where, split, *, classes, transforms, seed, skip_empty, image_dir) -> DetectionDataset
    splits(path) -> list[str] | None      the split names of a folder (None: not this format,
                                          or a layout that has no splits)
    has_split(path, split) -> bool | None
    single_split(path) -> bool            PATH is one split (a COCO JSON file, a flat folder):
                                          training and evaluating on it use the same images
    locate(path, split) -> where          optional: `--format NAME` given explicitly; raises a
                                          DataError saying why PATH is not of this format
                                          (default: detect, or a generic DataError)
    diagnose(path, split) -> str | None   optional: the message for a near miss when no format
                                          recognises PATH (COCO: JSON files, none for the split)

Adding a format is a reader module that ends with `READER = Reader(...)` and one call,

    register("kitti", "KITTI (label_2/*.txt, image_2/)", "fasterrcnn.data.kitti")

(the built-in calls are at the end of this file). A reader given as a module name is imported
only when its functions are first needed, so that the names and descriptions -- all the CLI's
--help needs -- come without importing torch; a `Reader` instance may be given directly too
(a test, a plug-in). `build_dataset`, `detect_format`, `available_splits`, `has_split`,
`is_single_file` (`fasterrcnn.data.loader`), the CLI's --format choices and the training
config's validation all read this registry. Auto-detection asks the formats in the order
they were registered; the first whose `detect` matches wins.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fasterrcnn.errors import ConfigError, DataError

__all__ = [
    "AUTO",
    "DataFormat",
    "Reader",
    "choices",
    "detect",
    "format_of",
    "get",
    "help_text",
    "locate",
    "names",
    "register",
    "unregister",
]

AUTO = "auto"
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _never(path: str) -> bool:
    """The default `single_split`: the format's data sets always have named splits."""
    return False


@dataclass(frozen=True)
class Reader:
    """The functions of one format (see the module docstring for each one's contract)."""

    detect: Callable[[str, str | None], dict | None]
    build: Callable[..., Any]
    splits: Callable[[str], list[str] | None]
    has_split: Callable[[str, str], bool | None]
    single_split: Callable[[str], bool] = _never
    locate: Callable[[str, str | None], dict] | None = None
    diagnose: Callable[[str, str | None], str | None] | None = None


@dataclass(frozen=True)
class DataFormat:
    """A registered format: its name, description, and its reader (or the reader's module)."""

    name: str
    description: str
    reader: Reader | str
    file_hint: str | None = None  # "a COCO .json file": what a single-file data set of it is

    def api(self) -> Reader:
        """The format's `Reader` (its module imported on first use)."""
        if isinstance(self.reader, Reader):
            return self.reader
        reader = getattr(importlib.import_module(self.reader), "READER", None)
        if not isinstance(reader, Reader):
            raise TypeError(f"format {self.name!r}: module {self.reader} has no READER = Reader(...)")
        return reader

    def detect(self, path: str, split: str | None) -> dict | None:
        return self.api().detect(path, split)

    def splits(self, path: str) -> list[str] | None:
        return self.api().splits(path)

    def has_split(self, path: str, split: str) -> bool | None:
        return self.api().has_split(path, split)

    def single_split(self, path: str) -> bool:
        return self.api().single_split(path)

    def diagnose(self, path: str, split: str | None) -> str | None:
        fn = self.api().diagnose
        return fn(path, split) if fn is not None else None

    def locate(self, path: str, split: str | None) -> dict:
        """Where the data set at `path` is, `--format NAME` being given: DataError if it is not one."""
        fn = self.api().locate
        if fn is not None:
            return fn(path, split)
        if not os.path.exists(path):
            raise DataError(f"{path}: data set path not found")
        where = self.detect(path, split)
        if where is None:
            raise DataError(f"{path}: not a {self.name} data set: expected {self.description}")
        return where

    def build(self, where: dict, split: str | None, **kwargs: Any) -> Any:
        """The DetectionDataset; kwargs: classes, transforms, seed, skip_empty, image_dir."""
        return self.api().build(where, split, **kwargs)


_FORMATS: dict[str, DataFormat] = {}


def register(
    name: str,
    description: str,
    reader: Reader | str,
    *,
    file_hint: str | None = None,
    replace: bool = False,
) -> DataFormat:
    """Add a format (auto-detection tries it after those registered before it).

    `reader`: a `Reader`, or the name of a module whose `READER` is one (imported lazily).
    `replace=True` replaces a format of the same name, keeping its place in the order."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == AUTO:
        raise ValueError(f"format name must be lowercase letters, digits, '-' or '_' (not 'auto'), got {name!r}")
    if not isinstance(description, str) or not description.strip() or "\n" in description:
        raise ValueError(f"format {name!r}: the description must be one non-empty line")
    if not isinstance(reader, (Reader, str)):
        raise TypeError(f"format {name!r}: reader must be a Reader or a module name, got {type(reader).__name__}")
    if name in _FORMATS and not replace:
        raise ValueError(f"format {name!r} is already registered (replace=True replaces it)")
    fmt = DataFormat(name, description.strip(), reader, file_hint)
    _FORMATS[name] = fmt
    return fmt


def unregister(name: str) -> None:
    """Remove a format (tests, plug-ins); unknown names are ignored."""
    _FORMATS.pop(name, None)


def names() -> list[str]:
    """The registered formats, in detection order."""
    return list(_FORMATS)


def choices() -> tuple[str, ...]:
    """What `--format` accepts: "auto" and every registered format."""
    return (AUTO, *_FORMATS)


def get(name: str) -> DataFormat:
    """The format called `name`; ConfigError naming the choices for any other name."""
    fmt = _FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise ConfigError(f"format must be one of {', '.join(choices())}, got {name!r}")
    return fmt


def help_text() -> str:
    """The --format help: each choice with its description (argparse-safe)."""
    parts = [f"{f.name}: {f.description}" for f in _FORMATS.values()]
    return ("data layout (default: auto, detected from the path); " + "; ".join(parts)).replace("%", "%%")


# ------------------------------------------------------------------------------ detection


def detect(path: str | os.PathLike, split: str | None = None) -> tuple[str, dict]:
    """(format name, where) of the data set at `path`: the first registered format whose
    `detect` matches. DataError when none does: a format's near-miss message if one has one,
    else one listing what every format looks like."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: data set path not found")
    for fmt in _FORMATS.values():
        where = fmt.detect(path, split)
        if where is not None:
            return fmt.name, where
    for fmt in _FORMATS.values():
        message = fmt.diagnose(path, split)
        if message:
            raise DataError(message)
    if os.path.isfile(path):
        kinds = ["a directory", *(f.file_hint for f in _FORMATS.values() if f.file_hint)]
        raise DataError(f"{path}: not a data set (expected {_or_list(kinds)})")
    descriptions = [f.description for f in _FORMATS.values()]
    raise DataError(f"{path}: layout not recognised: expected {_or_list(descriptions)}")


def _or_list(items: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    if not items:
        return "a registered format (none is)"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def locate(path: str | os.PathLike, split: str | None, format: str = AUTO) -> tuple[str, dict]:
    """(format name, where) for `build`: detected (format "auto") or the given format's."""
    path = os.fspath(path)
    if format == AUTO:
        return detect(path, split)
    return format, get(format).locate(path, split)


def format_of(path: str | os.PathLike, split: str | None = None, format: str = AUTO) -> DataFormat | None:
    """The format of an existing `path` without building it: the given one; else the first
    that detects it; else (a folder none detects for this split, e.g. a COCO folder without
    that split's file) the first that sees splits in it; else None."""
    if format != AUTO:
        return get(format)
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    for fmt in _FORMATS.values():
        if fmt.detect(path, split) is not None:
            return fmt
    for fmt in _FORMATS.values():
        if fmt.splits(path) is not None:
            return fmt
    return None


# ------------------------------------------------------------------- the built-in formats

register(
    "voc",
    "PASCAL VOC (Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt)",
    "fasterrcnn.data.voc",
)
register(
    "coco",
    "COCO (a JSON file, annotations/instances_<split>.json or <split>.json)",
    "fasterrcnn.data.coco",
    file_hint="a COCO .json file",
)
register(
    "yolo",
    "YOLO txt (data.yaml or classes.txt; images/ and labels/, flat or with split subfolders)",
    "fasterrcnn.data.yolo",
    file_hint="a YOLO data.yaml",
)
register(
    "labelme",
    "LabelMe (one .json per image, in a folder or in split subfolders)",
    "fasterrcnn.data.labelme",
)
