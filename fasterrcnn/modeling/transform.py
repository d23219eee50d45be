"""Input scaling of the paper (Sec. 3.3): "we re-scale the images such that their shorter
side is s = 600 pixels" (and, in the code, the longer side at most 1000 pixels).

`resize_scale`/`resized_size` are the single definition of that rule: the data pipeline
resizes with it in its workers, and the model applies it again inside (a no-op on an image
already at scale), so both always agree.

`DetectionTransform` is the model's side: resize, normalise, pad a list of images into one
batch tensor, and map boxes between input and network coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_scale(height: int, width: int, min_size: int = 600, max_size: int = 1000) -> float:
    """Scale factor that brings the shorter side to `min_size`, unless the longer side would
    then exceed `max_size`, in which case the longer side is brought to `max_size`."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if min_size <= 0 or max_size <= 0:
        raise ValueError(f"min_size and max_size must be positive, got {min_size} and {max_size}")
    short, long = min(height, width), max(height, width)
    return min(min_size / short, max_size / long)


def resized_size(
    height: int, width: int, min_size: int = 600, max_size: int = 1000, rounding: str = "round"
) -> tuple[int, int]:
    """(height, width) after the paper's rescaling, rounded to whole pixels (at least 1);
    `rounding="floor"` is torchvision's (its interpolation by a scale factor floors)."""
    s = resize_scale(height, width, min_size, max_size)
    r = math.floor if rounding == "floor" else round
    return max(1, r(height * s)), max(1, r(width * s))



@dataclass
class ImageBatch:
    """Images resized, normalised and padded into one tensor.

    `tensor`: Tensor[N, 3, H, W] (H, W multiples of `size_divisible`); `image_sizes`: the
    (h, w) of each image inside the padding; `scales`: each image's (sy, sx) = resized size /
    input size, to map boxes between the two.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]
    scales: list[tuple[float, float]]

    def mean_scales(self) -> list[float]:
        return [(sy + sx) / 2 for sy, sx in self.scales]

    @property
    def padded_size(self) -> tuple[int, int]:
        """(H, W) of the padded batch tensor."""
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def check_images(images: object) -> list[Tensor]:
    """The model's image argument as a list of Tensor[3, H, W] (a Tensor[N, 3, H, W] is split)."""
    if isinstance(images, Tensor):
        if images.dim() == 4:
            images = list(images.unbind(0))
        elif images.dim() == 3:
            raise ValueError("images must be a list of Tensor[3, H, W] (or one Tensor[N, 3, H, W]); got one Tensor[3, H, W]: wrap it in a list")
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise ValueError(f"images must be a non-empty list of Tensor[3, H, W], got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, Tensor):
            raise TypeError(f"images[{i}] must be a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"images[{i}] must have shape [3, H, W] (RGB, channels first), got {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(f"images[{i}] must be a float tensor with values in [0, 1], got {img.dtype} (divide uint8 images by 255)")
        if img.shape[1] < 1 or img.shape[2] < 1:
            raise ValueError(f"images[{i}] is empty: shape {tuple(img.shape)}")
    check_pixel_range(images)
    return list(images)


def check_pixel_range(images: Sequence[Tensor]) -> None:
    """Every pixel finite and in [0, 1] (the range the normalisation's mean and std assume).

    Checked before the network runs, so a NaN never reaches a BatchNorm layer's running
    statistics and a 0-255 image is not silently normalised as if it were 0-1."""
    bounds = torch.stack([torch.stack(torch.aminmax(img.detach().float())) for img in images]).cpu()
    for i, (lo, hi) in enumerate(bounds.tolist()):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"images[{i}] has non-finite pixel values (NaN or inf)")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"images[{i}] has values in [{lo:.4g}, {hi:.4g}]; expected floats in [0, 1] "
                f"(divide 8-bit images by 255)"
            )


RESIZE_MODES = ("paper", "torchvision")


class DetectionTransform(nn.Module):
    """Resize (short side `min_size`, long side <= `max_size`), normalise, pad to a batch, and
    map predictions back to the input images' coordinates (torchvision's
    GeneralizedRCNNTransform, with the paper's sizes).

    In training mode with `train_min_sizes` (multi-scale training), an image already at one of
    those scales (the data pipeline resized it) is kept as it is; any other is resized to one
    drawn at random (torch's generator), with the longer side at most `train_max_size`.
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        size_divisible: int = 16,
        train_min_sizes: tuple[int, ...] | None = None,
        train_max_size: int | None = None,
        resize_mode: str = "paper",
    ) -> None:
        super().__init__()
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        # "paper": sizes rounded, antialiased bilinear; "torchvision": floored sizes, plain bilinear
        # (GeneralizedRCNNTransform), so that torchvision's weights see the images they were trained on
        self.resize_mode = resize_mode
        self.min_size = min_size
        self.max_size = max_size
        self.train_min_sizes = tuple(train_min_sizes) if train_min_sizes else None
        self.train_max_size = train_max_size or max_size
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of this size is brought to in the current mode."""
        rounding = "floor" if self.resize_mode == "torchvision" else "round"
        if not (self.training and self.train_min_sizes):
            return resized_size(height, width, self.min_size, self.max_size, rounding)
        sizes = [resized_size(height, width, s, self.train_max_size, rounding) for s in self.train_min_sizes]
        if (height, width) in sizes:
            return height, width
        return sizes[int(torch.randint(len(sizes), ()))]

    def resize(self, image: Tensor) -> Tensor:
        h, w = image.shape[-2:]
        new = self.target_size(h, w)
        if new == (h, w):
            return image
        antialias = self.resize_mode == "paper"
        return F.interpolate(image[None], size=new, mode="bilinear", align_corners=False, antialias=antialias)[0]

    def forward(self, images: list[Tensor]) -> ImageBatch:
        device = self.pixel_mean.device
        resized, sizes, scales = [], [], []
        for img in images:
            h0, w0 = img.shape[-2:]
            img = self.resize(img.to(device=device, dtype=torch.float32))
            h, w = img.shape[-2:]
            resized.append(img)
            sizes.append((h, w))
            scales.append((h / h0, w / w0))
        d = self.size_divisible
        H = int(math.ceil(max(s[0] for s in sizes) / d) * d)
        W = int(math.ceil(max(s[1] for s in sizes) / d) * d)
        batch = torch.zeros(len(images), 3, H, W, device=device)
        for i, img in enumerate(resized):
            h, w = sizes[i]
            batch[i, :, :h, :w] = (img - self.pixel_mean) / self.pixel_std
        return ImageBatch(batch, sizes, scales)

    @staticmethod
    def scale_boxes(boxes: Tensor, scale: tuple[float, float]) -> Tensor:
        """Multiply x by sx and y by sy."""
        sy, sx = scale
        return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)
