"""`DataReport`: what a reader fixed or skipped while reading a data set, file by file.

Bad data is never silent: every repair (a box clipped to its image, an annotation's <size>
replaced by the real image size) and every omission (a zero-area box, an unknown class name,
a crowd region, an image without objects) is counted here with a message naming the file,
and logged as a warning on the `fasterrcnn.data` logger. Problems that cannot be repaired
(a missing image, malformed XML/JSON, a missing field, a corrupt image) raise
`fasterrcnn.errors.DataError` instead.

`summary()` is the short text the training summary and `fasterrcnn data check` print.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

logger = logging.getLogger("fasterrcnn.data")

# Kinds of events, in the order `summary()` lists them, with their human-readable phrase.
CLIPPED = "boxes_clipped"
DEGENERATE = "boxes_degenerate"
UNKNOWN_CLASS = "unknown_class"
CROWD = "crowd_excluded"
EMPTY = "images_without_objects"
EMPTY_SKIPPED = "images_skipped"
SIZE_MISMATCH = "size_mismatch"
CONVERTED = "images_converted"
EXIF_ROTATED = "images_exif_rotated"
NO_LABEL_FILE = "images_without_label_file"
POLYGON = "polygons_to_boxes"
SHAPE_SKIPPED = "shapes_skipped"

KINDS: dict[str, str] = {
    CLIPPED: "boxes clipped to their image",
    DEGENERATE: "boxes of zero or negative area skipped",
    UNKNOWN_CLASS: "objects of unknown classes skipped",
    CROWD: "crowd regions excluded from the targets",
    EMPTY: "images without objects",
    EMPTY_SKIPPED: "images without usable objects left out of training",
    SIZE_MISMATCH: "annotated image sizes that disagree with the image file (file's used)",
    CONVERTED: "images converted to RGB (grayscale, palette, RGBA, CMYK, 16-bit...)",
    EXIF_ROTATED: "images rotated by their EXIF orientation",
    NO_LABEL_FILE: "images without a label file (YOLO: an image without objects)",
    POLYGON: "polygons / segments replaced by their bounding box",
    SHAPE_SKIPPED: "shapes that are not boxes or polygons skipped (points, lines, circles...)",
}
# Informational kinds: normal in real data (or by design), logged at INFO, not WARNING.
_INFO_KINDS = {CONVERTED, EXIF_ROTATED, EMPTY, EMPTY_SKIPPED, CROWD, NO_LABEL_FILE, POLYGON}

# Warnings logged per kind before the rest are only counted (all stay in `messages`).
MAX_LOGGED_PER_KIND = 20


@dataclass
class DataMessage:
    kind: str
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class DataReport:
    """Counters and per-file messages of what was fixed or skipped while reading a data set.

    `counts[kind]` counts events (boxes, objects, images); `messages` keeps one message per
    event with the file it concerns. `num_images`, `num_objects` and `num_difficult` describe
    what the data set finally holds.
    """

    name: str = ""
    counts: Counter = field(default_factory=Counter)
    messages: list[DataMessage] = field(default_factory=list)
    num_images: int = 0
    num_objects: int = 0
    num_difficult: int = 0
    _per_kind: Counter = field(default_factory=Counter, repr=False, compare=False)

    def add(self, kind: str, file: str, message: str, n: int = 1) -> None:
        """Count `n` events of `kind` in `file` and keep (and log) one message for them."""
        self.counts[kind] += n
        self.messages.append(DataMessage(kind, str(file), message))
        self._per_kind[kind] += 1
        logged = self._per_kind[kind]
        level = logging.INFO if kind in _INFO_KINDS else logging.WARNING
        if logged <= MAX_LOGGED_PER_KIND:
            logger.log(level, "%s: %s", file, message)
        if logged == MAX_LOGGED_PER_KIND:
            logger.log(level, "further '%s' messages are only counted (see the data report)", kind)

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def files(self, kind: str | None = None) -> list[str]:
        """Files with a message (of `kind`, or of any kind), in order, without repeats."""
        return list(dict.fromkeys(m.file for m in self.messages if kind is None or m.kind == kind))

    @property
    def clean(self) -> bool:
        """True when nothing had to be fixed or skipped (informational events aside)."""
        return not any(n for k, n in self.counts.items() if k not in _INFO_KINDS)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_images": self.num_images,
            "num_objects": self.num_objects,
            "num_difficult": self.num_difficult,
            "counts": dict(self.counts),
            "messages": [
                {"kind": m.kind, "file": m.file, "message": m.message} for m in self.messages
            ],
        }

    def summary(self, max_files: int = 3) -> str:
        """A few lines: totals, then one line per kind of event with example files."""
        head = f"{self.name}: " if self.name else ""
        lines = [
            f"{head}{self.num_images} images, {self.num_objects} objects "
            f"({self.num_difficult} difficult)"
        ]
        kinds = list(KINDS) + sorted(k for k in self.counts if k not in KINDS)
        for kind in kinds:
            n = self.counts.get(kind, 0)
            if not n:
                continue
            files = self.files(kind)
            shown = ", ".join(_short(f) for f in files[:max_files])
            more = f", ... ({len(files)} files)" if len(files) > max_files else ""
            lines.append(f"  {n} {KINDS.get(kind, kind)}: {shown}{more}")
        if len(lines) == 1:
            lines.append("  no problems found")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _short(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]
