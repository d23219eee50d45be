"""Input scaling of the paper (Sec. 3.3): "we re-scale the images such that their shorter
side is s = 600 pixels" (and, in the code, the longer side at most 1000 pixels).

`resize_scale`/`resized_size` are the single definition of that rule: the data pipeline
resizes with it in its workers, and the model applies it again inside (a no-op on an image
already at scale), so both always agree.
"""

from __future__ import annotations


def resize_scale(height: int, width: int, min_size: int = 600, max_size: int = 1000) -> float:
    """Scale factor that brings the shorter side to `min_size`, unless the longer side would
    then exceed `max_size`, in which case the longer side is brought to `max_size`."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if min_size <= 0 or max_size <= 0:
        raise ValueError(f"min_size and max_size must be positive, got {min_size} and {max_size}")
    short, long = min(height, width), max(height, width)
    return min(min_size / short, max_size / long)


def resized_size(height: int, width: int, min_size: int = 600, max_size: int = 1000) -> tuple[int, int]:
    """(height, width) after the paper's rescaling, rounded to whole pixels (at least 1)."""
    s = resize_scale(height, width, min_size, max_size)
    return max(1, round(height * s)), max(1, round(width * s))
