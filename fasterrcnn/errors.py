"""Errors that the command line reports as one clear line (no traceback).

Library code raises these for problems in the user's input (a data file, a config field, a
checkpoint); each message names the file, field or argument at fault. Plain programming
errors (wrong tensor shapes passed to an op) raise the usual ValueError / TypeError.
"""

from __future__ import annotations

import re


class FasterRCNNError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(FasterRCNNError, ValueError):
    """A data set, image or annotation file is missing or malformed."""


class ConfigError(FasterRCNNError, ValueError):
    """A configuration value (file, field or command-line option) is invalid."""


class CheckpointError(FasterRCNNError, ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model."""


class TrainingDivergedError(FasterRCNNError, FloatingPointError):
    """Training produced a non-finite loss, gradient or weight; the message says when, what
    diverged, which checkpoint was kept, and what to try."""


_RAISED = re.compile(r"^fasterrcnn\.errors\.(\w+): ", re.MULTILINE)


def error_from_traceback(text: str) -> FasterRCNNError | None:
    """The fasterrcnn error that another process raised, rebuilt from the traceback text that
    crossed over (a DataLoader worker's, a training process's), or None if it was not one.

    Those errors arrive wrapped ("Caught DataError in DataLoader worker process 0. Original
    Traceback ..."); the user needs only the original one-line message."""
    hits = list(_RAISED.finditer(text))
    if not hits:
        return None
    last = hits[-1]
    cls = globals().get(last.group(1))
    if not (isinstance(cls, type) and issubclass(cls, FasterRCNNError)):
        cls = FasterRCNNError
    return cls(text[last.end():].strip())
