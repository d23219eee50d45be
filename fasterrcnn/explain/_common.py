"""What every picture of `fasterrcnn explain` shares: the input (image, ground truth, model),
the result record, and matplotlib helpers (Agg backend, titles, boxes, saving)."""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fasterrcnn.errors import ConfigError, DataError
from fasterrcnn.explain import _model

# the paper's Table 5 (K40 GPU, ms per image): conv, proposal, region-wise, total
PAPER_TABLE5 = {
    "SS + Fast R-CNN (VGG-16)": {"conv": 146, "proposals": 1510, "region-wise": 174, "total": 1830},
    "RPN + Fast R-CNN (VGG-16)": {"conv": 141, "proposals": 10, "region-wise": 47, "total": 198},
    "RPN + Fast R-CNN (ZF)": {"conv": 31, "proposals": 3, "region-wise": 25, "total": 59},
}

COLOURS = {"positive": "#1a9850", "negative": "#4575b4", "ignored": "#fdae61", "cross": "#d73027", "gt": "#ffd400"}


@dataclass
class Output:
    """One file a picture wrote (relative to the output folder) and what it shows."""

    file: str
    caption: str


@dataclass
class Result:
    """A picture's files and the numbers drawn in them (for the page and the tests)."""

    outputs: list[Output]
    data: dict[str, Any] = field(default_factory=dict)


class Context:
    """The inputs of the pictures: one image (with its ground truth, if known), the model
    (loaded once, on first use) and the options."""

    def __init__(
        self,
        image: Tensor,
        *,
        image_note: str,
        gt_boxes: Tensor | None = None,
        gt_names: Sequence[str] = (),
        gt_note: str = "no ground truth",
        checkpoint: str | os.PathLike | None = None,
        preset: str = "small",
        min_size: int | None = None,
        seed: int = 0,
        presets: Sequence[str] = ("small", "zf", "vgg16"),
        repeat: int = 1,
        scales: Sequence[int] | None = None,
    ) -> None:
        self.image = image
        self.image_note = image_note
        self.gt_boxes = gt_boxes if gt_boxes is not None else torch.zeros(0, 4)
        self.gt_names = list(gt_names) or [""] * len(self.gt_boxes)
        self.gt_note = gt_note
        self.checkpoint = checkpoint
        self.preset = preset
        self.min_size = min_size
        self.seed = seed
        self.presets = list(presets)
        self.repeat = repeat
        self.scales = list(scales) if scales else None
        self._model: Any = None
        self.model_note = ""

    @property
    def model(self) -> Any:
        """The checkpoint's model, or a fresh `preset` model (random weights), in eval mode."""
        if self._model is None:
            self._model, self.model_note = _model.load(self.checkpoint, self.preset, self.seed)
            if self.min_size is not None:
                _model.set_size(self._model, self.min_size)
        return self._model

    @property
    def has_gt(self) -> bool:
        return self.gt_boxes.numel() > 0


# ------------------------------------------------------------------------------ inputs


def read_rgb(path: str | os.PathLike) -> Tensor:
    """An image file as Tensor[3, H, W] in [0, 1] (EXIF orientation applied)."""
    import numpy as np

    from fasterrcnn.data.transforms import read_image

    arr = np.asarray(read_image(path), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def voc_xml_for(image_path: Path) -> Path | None:
    """The VOC annotation of an image: Annotations/ID.xml beside JPEGImages/ID.jpg, or ID.xml
    in the image's own folder."""
    candidates = [image_path.parent.parent / "Annotations" / (image_path.stem + ".xml"),
                  image_path.with_suffix(".xml")]
    return next((c for c in candidates if c.is_file()), None)


def read_voc_boxes(xml_path: Path) -> tuple[Tensor, list[str]]:
    """Boxes (continuous pixels: VOC's 1-based xmin/ymin minus one) and names of a VOC XML."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{xml_path}: cannot read the VOC annotation ({exc})") from None
    boxes, names = [], []
    for k, obj in enumerate(root.findall("object"), start=1):
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise DataError(f"{xml_path}: <object> #{k} has no valid <bndbox>") from None
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        names.append((obj.findtext("name") or "").strip())
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), names


def parse_boxes(values: Sequence[str], image_size: tuple[int, int]) -> Tensor:
    """--boxes x1,y1,x2,y2 ... in the image's pixels."""
    h, w = image_size
    out = []
    for v in values:
        try:
            x1, y1, x2, y2 = (float(t) for t in v.split(","))
        except ValueError:
            raise ConfigError(f"--boxes: {v!r} is not x1,y1,x2,y2 (four numbers separated by commas)") from None
        if not (x2 > x1 and y2 > y1):
            raise ConfigError(f"--boxes: {v!r} has no positive width and height (x1 < x2, y1 < y2)")
        if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
            raise ConfigError(f"--boxes: {v!r} lies outside the {w}x{h} image")
        out.append([x1, y1, x2, y2])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def synthetic_scene(seed: int = 0) -> tuple[Tensor, Tensor, list[str]]:
    """One scene of the synthetic shapes data set (as `fasterrcnn data` writes it) with its
    ground truth, for running without an IMAGE."""
    from fasterrcnn.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="fasterrcnn-explain-") as tmp:
        generate(tmp, num_train=1, num_test=0, seed=seed, max_objects=5, min_object=40.0, progress=False)
        jpg = next((Path(tmp) / "JPEGImages").iterdir())
        image = read_rgb(jpg)
        xml = voc_xml_for(jpg)
        boxes, names = read_voc_boxes(xml) if xml else (torch.zeros(0, 4), [])
    return image, boxes, names


# ------------------------------------------------------------------------------ drawing


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    try:
        import matplotlib
    except ImportError:  # a core dependency; missing only with --no-deps
        raise ConfigError("fasterrcnn explain draws with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.titlesize": 12})
    return plt


def show_image(ax: Any, rgb: Tensor, title: str | None = None) -> None:
    """Draw Tensor[3, H, W] in [0, 1] with pixel axes (y downwards, as image coordinates)."""
    ax.imshow(rgb.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="bilinear")
    h, w = rgb.shape[-2:]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    if title:
        ax.set_title(title)


def draw_boxes(ax: Any, boxes: Tensor | Sequence[Sequence[float]], colour: str, lw: float = 1.5, alpha: float = 1.0,
               style: str = "-", label: str | None = None) -> None:
    from matplotlib.patches import Rectangle

    for i, (x1, y1, x2, y2) in enumerate(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).tolist()):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, lw=lw, alpha=alpha,
                               linestyle=style, label=label if i == 0 else None))


def save(fig: Any, path: Path, dpi: int = 100) -> None:
    plt = pyplot()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def footnote(fig: Any, text: str) -> None:
    """A small line at the bottom of a figure (which model, which image); a constrained
    layout keeps room for it."""
    fig.supxlabel(text, fontsize=7, color="#555555", x=0.005, ha="left")


def scaled(boxes: Tensor, scale: tuple[float, float]) -> Tensor:
    """Boxes multiplied by (sy, sx): input-image pixels -> network pixels."""
    sy, sx = scale
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
