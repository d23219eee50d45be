"""Errors that the command line reports as one clear line (no traceback).

Library code raises these for problems in the user's input (a data file, a config field, a
checkpoint); each message names the file, field or argument at fault. Plain programming
errors (wrong tensor shapes passed to an op) raise the usual ValueError / TypeError.
"""

from __future__ import annotations


class FasterRCNNError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(FasterRCNNError, ValueError):
    """A data set, image or annotation file is missing or malformed."""


class ConfigError(FasterRCNNError, ValueError):
    """A configuration value (file, field or command-line option) is invalid."""


class CheckpointError(FasterRCNNError, ValueError):
    """A checkpoint file is missing, corrupt, or does not match the model."""
