"""Image reading and the transforms of the data pipeline.

Reading (`read_image`): decode the file, apply its EXIF orientation (as PIL's
`ImageOps.exif_transpose`: annotations refer to the upright image) and convert any colour mode
(grayscale, palette, RGBA, CMYK, 16-bit, float) to 8-bit RGB. A file that cannot be decoded
(corrupt, truncated, not an image) raises `DataError` naming it.

Transforms are small callables `t(image, target, rng) -> (image, target)`: `image` is a PIL
image or a Tensor[3, H, W], `target` a dict whose "boxes" (Tensor[N, 4], x1 y1 x2 y2 in
continuous pixels) follow the image, and `rng` a `numpy.random.Generator` that the data set
seeds from (seed, epoch, index) so that random augmentation is reproducible. `Compose` chains
them. The training pipeline is `Resize` (the paper's rule, Sec. 3.3: shorter side 600, longer
side at most 1000, via `fasterrcnn.modeling.transform.resized_size`), `RandomHorizontalFlip`
(p = 0.5, the paper's only augmentation) and `ToTensor`; evaluation leaves out the flip.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from fasterrcnn.errors import DataError
from fasterrcnn.modeling.transform import resized_size
from fasterrcnn.ops.boxes import hflip_boxes  # (re-exported: the data pipeline's flip)

__all__ = [
    "Compose",
    "ExifTranspose",
    "ToRGB",
    "Resize",
    "RandomHorizontalFlip",
    "ToTensor",
    "build_transforms",
    "read_image",
    "image_header",
    "to_rgb",
    "hflip_boxes",
    "resize_boxes",
]

# Pillow >= 9.1 names its enums; older versions keep the constants on Image.
_Transpose = getattr(Image, "Transpose", Image)
_Resampling = getattr(Image, "Resampling", Image)

ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: _Transpose.FLIP_LEFT_RIGHT,
    3: _Transpose.ROTATE_180,
    4: _Transpose.FLIP_TOP_BOTTOM,
    5: _Transpose.TRANSPOSE,
    6: _Transpose.ROTATE_270,
    7: _Transpose.TRANSVERSE,
    8: _Transpose.ROTATE_90,
}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_EXIF_INFO_KEYS = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")
# Errors PIL raises for unreadable files (OSError covers truncated data and
# UnidentifiedImageError; the others come from malformed headers and huge images).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


# ------------------------------------------------------------------------------- reading


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1..8) from the header, without decoding the pixels."""
    if im.format == "PNG":
        # PngImageFile.getexif() decodes the whole image to look for a late eXIf chunk; use
        # only a chunk seen before the pixel data, both here and when reading (consistent).
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = im.getexif()
    value = exif.get(ORIENTATION_TAG, 1)
    return value if value in _TRANSPOSE else 1


def _stored_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as stored, before the EXIF orientation. Pillow's TIFF
    reader reports the size after its orientation (and applies it on load): a TIFF's stored
    size is the IFD's ImageWidth x ImageLength."""
    if im.format == "TIFF":
        width, height = im.tag_v2.get(256), im.tag_v2.get(257)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return im.size


def image_header(path: str | os.PathLike) -> tuple[int, int, str, int]:
    """(height, width, mode, orientation) of an image file from its header, without decoding
    the pixels; height and width are those after the EXIF orientation is applied. Raises
    `DataError` naming the file when it is not a readable image."""
    try:
        with Image.open(path) as im:
            width, height = _stored_size(im)
            mode = im.mode
            orientation = _orientation(im)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if orientation >= 5:  # transposing orientations swap width and height
        height, width = width, height
    return height, width, mode, orientation


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file into an upright 8-bit RGB PIL image (EXIF orientation applied).

    Raises `DataError` naming the file if it is missing, corrupt or truncated."""
    try:
        # a file object, not the path: from a path Pillow maps uncompressed TIFF strips into
        # memory at the size after the orientation, scrambling 8/16-bit grayscale TIFFs with
        # orientation 5-8
        with open(path, "rb") as f, Image.open(f) as im:
            orientation = _orientation(im)
            im.load()
            if im.format == "TIFF" and ORIENTATION_TAG not in im.tag_v2:
                orientation = 1  # Pillow's TIFF reader applied it on load (and dropped the tag)
            image = _apply_orientation(im, orientation)
            image = to_rgb(image)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except _PIL_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None
    return image


def _apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    if method is None:
        return im
    out = im.transpose(method)
    for key in _EXIF_INFO_KEYS:  # the orientation is applied: never apply it twice
        out.info.pop(key, None)
    return out


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL colour mode to 8-bit RGB.

    Grayscale ("L", "1"), CMYK, YCbCr: PIL's conversion. Palette and alpha modes: composited
    over white (transparent areas become white, not whatever colour they hide). 16-bit and
    32-bit integer grayscale: scaled to 8 bits (65535 -> 255). Float ("F"): values in [0, 1]
    are scaled by 255, others clipped to [0, 255].
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        a = np.asarray(image).astype(np.float32)
        if mode in _SIXTEEN_BIT or (mode == "I" and a.size and a.max() > 255):
            a = a / 257.0
        elif mode == "F" and a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise DataError(f"cannot convert image mode {mode!r} to RGB ({exc})") from None


# ----------------------------------------------------------------------------- box helpers


def resize_boxes(boxes: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Scale boxes from an image of (H, W) `old_size` to `new_size`, each axis by its own factor."""
    sy = new_size[0] / old_size[0]
    sx = new_size[1] / old_size[1]
    scale = torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    return boxes * scale


def _size(image: Image.Image | Tensor) -> tuple[int, int]:
    """(H, W) of a PIL image or an image tensor [..., H, W]."""
    if isinstance(image, Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return image.height, image.width


def _with_boxes(target: dict, boxes: Tensor) -> dict:
    target = dict(target)
    target["boxes"] = boxes
    return target


# ------------------------------------------------------------------------------ transforms

Transform = Callable[..., tuple]


class Compose:
    """Apply transforms in order: `Compose([Resize(), RandomHorizontalFlip(), ToTensor()])`."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image, target: dict, rng: np.random.Generator | None = None):
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class ExifTranspose:
    """Rotate/flip a PIL image to its EXIF orientation (no-op on images `read_image` returns).

    Boxes are left as they are: annotations refer to the upright image."""

    def __call__(self, image, target, rng=None):
        if isinstance(image, Image.Image):
            image = ImageOps.exif_transpose(image)
        return image, target

    def __repr__(self) -> str:
        return "ExifTranspose()"


class ToRGB:
    """Convert a PIL image of any mode to 8-bit RGB (see `to_rgb`)."""

    def __call__(self, image, target, rng=None):
        if isinstance(image, Image.Image):
            image = to_rgb(image)
        return image, target

    def __repr__(self) -> str:
        return "ToRGB()"


class Resize:
    """The paper's rescaling (Sec. 3.3): shorter side to `min_size` (600), longer side at most
    `max_size` (1000); boxes scaled per axis by the exact ratio of the new to the old size.

    `min_size` may be a sequence, from which one value is drawn per image with `rng`
    (multi-scale training); evaluation should pass a single value."""

    def __init__(self, min_size: int | Sequence[int] = 600, max_size: int = 1000):
        sizes = (min_size,) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
        if not sizes or min(sizes) <= 0 or max_size <= 0:
            raise ValueError(
                f"Resize: sizes must be positive, got min_size={min_size}, max_size={max_size}"
            )
        self.min_sizes = sizes
        self.max_size = int(max_size)

    def __call__(self, image, target, rng=None):
        h, w = _size(image)
        if len(self.min_sizes) == 1 or rng is None:
            min_size = self.min_sizes[0]
        else:
            min_size = self.min_sizes[int(rng.integers(len(self.min_sizes)))]
        nh, nw = resized_size(h, w, min_size, self.max_size)
        if (nh, nw) == (h, w):
            return image, target
        if isinstance(image, Tensor):
            image = torch.nn.functional.interpolate(
                image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
            )[0]
        else:
            image = image.resize((nw, nh), _Resampling.BILINEAR)
        if target is not None and "boxes" in target:
            target = _with_boxes(target, resize_boxes(target["boxes"], (h, w), (nh, nw)))
        return image, target

    def __repr__(self) -> str:
        m = self.min_sizes[0] if len(self.min_sizes) == 1 else list(self.min_sizes)
        return f"Resize(min_size={m}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror the image and its boxes with probability `p` (drawn from `rng`)."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image, target, rng=None):
        if self.p <= 0.0:
            return image, target
        if self.p < 1.0:
            if rng is None:
                raise ValueError("RandomHorizontalFlip needs an rng (the data set passes one)")
            if rng.random() >= self.p:
                return image, target
        return hflip(image, target)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def hflip(image, target):
    """Mirror an image (PIL or tensor) and the boxes of its target left-right."""
    h, w = _size(image)
    if isinstance(image, Tensor):
        image = image.flip(-1)
    else:
        image = image.transpose(_Transpose.FLIP_LEFT_RIGHT)
    if target is not None and "boxes" in target:
        target = _with_boxes(target, hflip_boxes(target["boxes"], w))
    return image, target


class ToTensor:
    """PIL RGB image -> Tensor[3, H, W] float32 in [0, 1]."""

    def __call__(self, image, target, rng=None):
        if isinstance(image, Image.Image):
            image = pil_to_tensor(image)
        return image, target

    def __repr__(self) -> str:
        return "ToTensor()"


def pil_to_tensor(image: Image.Image) -> Tensor:
    a = np.array(to_rgb(image))  # a writable copy (torch warns on read-only arrays)
    t = torch.from_numpy(a).permute(2, 0, 1)
    return t.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def build_transforms(
    train: bool,
    min_size: int | Sequence[int] = 600,
    max_size: int = 1000,
    flip_prob: float = 0.5,
) -> Compose:
    """The standard pipeline: Resize (+ RandomHorizontalFlip when training) + ToTensor."""
    ts: list[Transform] = [Resize(min_size, max_size)]
    if train and flip_prob > 0:
        ts.append(RandomHorizontalFlip(flip_prob))
    ts.append(ToTensor())
    return Compose(ts)
