"""The embedded synthetic data set: coloured shapes on cluttered backgrounds, in VOC layout.

Made for the demo (generate on a fresh machine, train a small detector in minutes on a CPU)
and for tests: deterministic from a seed (same seed, same options -> byte-identical files),
fast (vectorised numpy + PIL drawing, tens of images per second on one core), and written as
PASCAL VOC (JPEGImages/, Annotations/, ImageSets/Main/{train,test}.txt) so it flows through
the same reader as real data.

Design (defaults in `SynthConfig`):

* 7 classes of shapes (`SYNTH_CLASSES`): circle, square, triangle, star, ring, hexagon,
  cross. Each is fitted to its box, so "circle" covers ellipses and "square" rectangles;
  triangles, stars and hexagons are rotated at random and keep their proportions (box aspect
  within 1:1.3, `RIGID_CLASSES`), since stretched far they would no longer look like
  themselves.
* Object size sqrt(w * h) log-uniform in [20, 400] px and aspect ratio w / h log-uniform in
  [1/3, 3] for the other classes (shrunk to fit the image): every anchor scale and ratio
  (1:2, 1:1, 2:1) is exercised.
* Textures: solid, stripes (any angle), checker, noise, gradient, in saturated colours; the
  patterns use shades of one hue, so they vary the fill without cutting across the silhouette.
* 1-8 objects per image, placed largest first, so that smaller ones partially occlude larger
  ones; a placement is rejected if it would leave any object less than 25% visible, and 15%
  of objects may be cut by the image border. Boxes are the extents of the *visible* pixels.
  An object is `difficult` when less than 40% of it is visible or its visible box is very
  small (sqrt(area) < 22 px or a side < 10 px).
* Backgrounds: a muted colour gradient, low-frequency colour blobs and pixel noise, with
  clutter that belongs to no class: lines, poly-lines and smooth irregular blobs, mostly in
  muted colours (a quarter saturated, so colour alone does not tell objects apart).
* Image sides drawn uniformly in [400, 560] px (so short side ~400-500); JPEG quality 90.

Every image is generated from its own generator seeded by (seed, split, index), so the
first N images do not depend on how many are generated and workers give identical files.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw

from fasterrcnn.errors import ConfigError

__all__ = ["RIGID_CLASSES", "SYNTH_CLASSES", "SynthConfig", "render_image", "generate", "SynthObject"]

SYNTH_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "ring",
    "hexagon",
    "cross",
)
# Shapes defined by their proportions: stretched far, a triangle or a star stops looking like
# one, so they keep an aspect ratio near their own (rotated) one. Ellipses (circle), rectangles
# (square), rings and crosses stay themselves at any ratio and carry the 1:3..3:1 boxes.
RIGID_CLASSES: frozenset[str] = frozenset({"triangle", "star", "hexagon"})
TEXTURES = ("solid", "stripes", "checker", "noise", "gradient")
_BICUBIC = getattr(Image, "Resampling", Image).BICUBIC  # Pillow < 9.1 has no enums
_SPLIT_CODE = {"train": 0, "test": 1, "val": 2}
FORMAT_VERSION = 2


@dataclass(frozen=True)
class SynthConfig:
    """Options of the synthetic data set (the defaults are the demo's)."""

    num_train: int = 600
    num_test: int = 200
    seed: int = 0
    min_size: int = 400  # image width and height drawn uniformly in [min_size, max_size]
    max_size: int = 560
    classes: tuple[str, ...] = SYNTH_CLASSES
    min_objects: int = 1
    max_objects: int = 8
    min_object: float = 20.0  # sqrt(w * h) of an object box, log-uniform in [min, max]
    max_object: float = 400.0
    max_aspect: float = 3.0  # w / h log-uniform in [1 / max_aspect, max_aspect] ...
    rigid_max_aspect: float = 1.3  # ... except for the RIGID_CLASSES, which keep their proportions
    textures: tuple[str, ...] = TEXTURES  # object fills drawn from
    image_format: str = "jpg"  # jpg or png
    jpeg_quality: int = 90
    min_visible: float = 0.25  # placements leaving an object less visible are rejected
    difficult_visible: float = 0.40  # objects less visible than this are difficult
    difficult_size: float = 22.0  # ... and those whose visible box is smaller
    truncate_prob: float = 0.15  # chance an object may extend past the image border

    def validate(self) -> SynthConfig:
        if self.num_train < 0 or self.num_test < 0:
            raise ConfigError("numbers of images must be >= 0")
        if not 16 <= self.min_size <= self.max_size:
            raise ConfigError(
                "image size range must satisfy 16 <= min <= max, "
                f"got {self.min_size}..{self.max_size}"
            )
        if not self.classes:
            raise ConfigError("classes: give at least one shape class")
        unknown = [c for c in self.classes if c not in SYNTH_CLASSES]
        if unknown:
            raise ConfigError(
                f"unknown shape class(es) {unknown}; choose from {', '.join(SYNTH_CLASSES)}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes contains duplicates: {list(self.classes)}")
        if not 1 <= self.min_objects <= self.max_objects <= 250:
            raise ConfigError(
                "objects per image must satisfy 1 <= min <= max, "
                f"got {self.min_objects}..{self.max_objects}"
            )
        if not 4 <= self.min_object <= self.max_object:
            raise ConfigError(
                "object sizes must satisfy 4 <= min <= max, "
                f"got {self.min_object}..{self.max_object}"
            )
        if self.max_aspect < 1 or self.rigid_max_aspect < 1:
            raise ConfigError(f"max_aspect and rigid_max_aspect must be >= 1, got {self.max_aspect}, {self.rigid_max_aspect}")
        bad = [t for t in self.textures if t not in TEXTURES]
        if not self.textures or bad:
            raise ConfigError(f"textures must be a non-empty subset of {', '.join(TEXTURES)}, got {list(self.textures)}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"image_format must be jpg or png, got {self.image_format!r}")
        return self


@dataclass
class SynthObject:
    name: str
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the visible pixels, continuous
    difficult: bool
    visible: float  # fraction of the shape's pixels that are visible
    texture: str = ""
    full_box: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))  # the whole shape's box


# ----------------------------------------------------------------------------- colours


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _muted(rng: np.random.Generator) -> np.ndarray:
    return _hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.9))


def _vivid(rng: np.random.Generator) -> np.ndarray:
    return _hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.rint(c), 0, 255))


# -------------------------------------------------------------------------- backgrounds


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted gradient + low-frequency colour blobs + pixel noise, uint8 [h, w, 3].

    Gradient and blobs are evaluated on a coarse grid and upsampled in one bicubic resize
    (exact for the linear gradient); the pixel noise is uniform integers (fast)."""
    c0, c1 = _muted(rng), _muted(rng)
    a = rng.uniform(0, 2 * math.pi)
    gh, gw = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    ys = np.linspace(-0.5, 0.5, gh, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, gw, dtype=np.float32)[None, :]
    t = np.clip(xs * math.cos(a) + ys * math.sin(a) + 0.5, 0.0, 1.0)[..., None]
    grid = c0 + t * (c1 - c0)
    amp = rng.uniform(10, 45)
    grid += rng.uniform(-amp, amp, size=(gh, gw, 3)).astype(np.float32)
    grid = np.clip(np.rint(grid), 0, 255).astype(np.uint8)
    img = np.asarray(Image.fromarray(grid).resize((w, h), _BICUBIC))
    sigma = int(rng.integers(0, 17))  # uniform noise in [-sigma, sigma]
    if sigma > 1:
        noise = rng.integers(-sigma, sigma + 1, size=(h, w, 1), dtype=np.int16)
        img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return img


def _clutter(rng: np.random.Generator, image: Image.Image) -> None:
    """Draw shapes of no class on the background: lines, poly-lines, smooth blobs."""
    w, h = image.size
    draw = ImageDraw.Draw(image)

    def colour():
        return _rgb(_vivid(rng) if rng.random() < 0.25 else _muted(rng))

    for _ in range(int(rng.integers(0, 9))):  # straight lines
        x0, x1 = rng.uniform(-0.1, 1.1, 2) * w
        y0, y1 = rng.uniform(-0.1, 1.1, 2) * h
        draw.line([(x0, y0), (x1, y1)], fill=colour(), width=int(rng.integers(1, 5)))
    for _ in range(int(rng.integers(0, 4))):  # random-walk poly-lines
        n = int(rng.integers(3, 9))
        start = rng.uniform(0, 1, 2) * (w, h)
        steps = rng.normal(0, 25, size=(n, 2))
        pts = start + np.cumsum(steps, axis=0)
        draw.line(
            [tuple(p) for p in pts], fill=colour(), width=int(rng.integers(1, 4)), joint="curve"
        )
    for _ in range(int(rng.integers(0, 6))):  # smooth irregular blobs
        r = rng.uniform(6, 50)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        theta = np.linspace(0, 2 * math.pi, 28, endpoint=False)
        rad = np.ones_like(theta)
        for k in (2, 3, 4):  # a few low harmonics: amoeba-like, never star- or polygon-like
            rad += rng.uniform(0.08, 0.25) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        sx, sy = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5)
        pts = np.stack([cx + r * sx * rad * np.cos(theta), cy + r * sy * rad * np.sin(theta)], 1)
        draw.polygon([tuple(p) for p in pts], fill=colour())


# ------------------------------------------------------------------------------- shapes


def _fit(points: np.ndarray, w: int, h: int) -> list[tuple[float, float]]:
    """Stretch polygon points so that their extents are exactly the w x h pixel box."""
    lo, hi = points.min(0), points.max(0)
    unit = (points - lo) / np.maximum(hi - lo, 1e-9)
    return [(float(u * (w - 1)), float(v * (h - 1))) for u, v in unit]


def _regular(n: int, rot: float, inner: float | None = None) -> np.ndarray:
    if inner is None:
        ang = rot + np.arange(n) * 2 * math.pi / n
        return np.stack([np.cos(ang), np.sin(ang)], 1)
    ang = rot + np.arange(2 * n) * math.pi / n
    rad = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)


def _shape_mask(name: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """bool [h, w] mask of shape `name` whose extents fill the w x h box."""
    if name == "square":
        return np.ones((h, w), dtype=bool)
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    if name == "circle":
        d.ellipse([0, 0, w - 1, h - 1], fill=255)
    elif name == "ring":
        d.ellipse([0, 0, w - 1, h - 1], fill=255)
        t = rng.uniform(0.2, 0.32)
        tx, ty = max(2.0, t * w), max(2.0, t * h)
        if w - 1 - 2 * tx > 1 and h - 1 - 2 * ty > 1:
            d.ellipse([tx, ty, w - 1 - tx, h - 1 - ty], fill=0)
    elif name == "triangle":
        d.polygon(_fit(_regular(3, rng.uniform(0, 2 * math.pi)), w, h), fill=255)
    elif name == "star":
        d.polygon(
            _fit(_regular(5, rng.uniform(0, 2 * math.pi), rng.uniform(0.38, 0.5)), w, h), fill=255
        )
    elif name == "hexagon":
        d.polygon(_fit(_regular(6, rng.uniform(0, math.pi / 3)), w, h), fill=255)
    elif name == "cross":
        a = rng.uniform(0.28, 0.4)
        aw, ah = max(1.0, a * w), max(1.0, a * h)
        d.rectangle([(w - aw) / 2, 0, (w + aw) / 2 - 1, h - 1], fill=255)
        d.rectangle([0, (h - ah) / 2, w - 1, (h + ah) / 2 - 1], fill=255)
    else:  # pragma: no cover - validated in SynthConfig
        raise ValueError(name)
    return np.asarray(im) > 127


def _texture(rng: np.random.Generator, h: int, w: int, textures: Sequence[str] = TEXTURES) -> tuple[np.ndarray, str]:
    """float32 [h, w, 3] fill of an object, and the texture's name."""
    kind = textures[int(rng.integers(len(textures)))]
    c1 = _vivid(rng)
    # the second colour is a shade of the first: patterns vary the fill without drawing strong
    # edges across the silhouette, which is what tells the classes apart
    c2 = c1 * rng.uniform(0.45, 0.75)
    if kind == "solid":
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32), kind
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    if kind == "stripes":
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, max(6.0, min(h, w) / 3))
        m = ((xs * math.cos(a) + ys * math.sin(a)) / period) % 1.0 < 0.5
    elif kind == "checker":
        q = rng.uniform(3, max(4.0, min(h, w) / 3))
        m = ((np.floor(xs / q) + np.floor(ys / q)) % 2) == 0
    elif kind == "gradient":
        a = rng.uniform(0, 2 * math.pi)
        t = xs * math.cos(a) + ys * math.sin(a)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        return (c1 + t[..., None] * (c2 - c1)).astype(np.float32), kind
    else:  # noise
        noise = rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(10, 25)
        return (c1 + noise).astype(np.float32), kind
    return np.where(m[..., None], c1, c2).astype(np.float32), kind


# ------------------------------------------------------------------------------- images


def render_image(
    rng: np.random.Generator, cfg: SynthConfig = SynthConfig()
) -> tuple[np.ndarray, list[SynthObject]]:
    """One synthetic image: uint8 [H, W, 3] RGB and its objects (boxes of visible pixels)."""
    H = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    W = int(rng.integers(cfg.min_size, cfg.max_size + 1))
    canvas = Image.fromarray(_background(rng, H, W))
    _clutter(rng, canvas)
    img = np.array(canvas)
    label = np.zeros((H, W), dtype=np.uint8)

    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    lo, hi = math.log(cfg.min_object), math.log(cfg.max_object)
    specs = []
    for _ in range(n):
        name = cfg.classes[int(rng.integers(len(cfg.classes)))]
        s = math.exp(rng.uniform(lo, hi))
        max_aspect = cfg.rigid_max_aspect if name in RIGID_CLASSES else cfg.max_aspect
        r = math.exp(rng.uniform(-math.log(max_aspect), math.log(max_aspect)))
        bw, bh = s * math.sqrt(r), s / math.sqrt(r)
        f = min(1.0, 0.95 * W / bw, 0.95 * H / bh)
        specs.append((bw * f * bh * f, name, bw * f, bh * f))
    specs.sort(key=lambda t: -t[0])  # largest first: small objects occlude large ones

    full_area: list[int] = []  # pixels of each placed shape (inside or outside the image)
    visible: list[int] = []  # of which visible now
    placed: list[tuple[str, tuple[int, int, int, int], str]] = []
    for _, name, bw, bh in specs:
        for _shrink in range(3):
            w, h = max(4, int(round(bw))), max(4, int(round(bh)))
            mask = _shape_mask(name, w, h, rng)
            area = int(mask.sum())
            truncate = rng.random() < cfg.truncate_prob
            pos = _place(
                rng, label, mask, area, W, H, w, h, truncate, visible, full_area, cfg.min_visible
            )
            if pos is not None:
                break
            bw, bh = bw * 0.7, bh * 0.7
        else:
            continue
        x0, y0, lost = pos
        k = len(placed) + 1
        for j, nlost in enumerate(lost):
            visible[j] -= int(nlost)
        tex, tex_name = _texture(rng, h, w, cfg.textures)
        # the part of the shape's box inside the image
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
        m = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        t = tex[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        img[iy0:iy1, ix0:ix1][m] = np.clip(t[m], 0, 255).astype(np.uint8)
        label[iy0:iy1, ix0:ix1][m] = k
        full_area.append(area)
        visible.append(int(m.sum()))
        placed.append((name, (x0, y0, x0 + w, y0 + h), tex_name))

    objects = []
    for k, (name, (x0, y0, x1, y1), tex_name) in enumerate(placed, start=1):
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        sub = label[iy0:iy1, ix0:ix1] == k
        rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
        if rows.size == 0:  # cannot happen (min_visible > 0), kept for safety
            continue
        box = (
            ix0 + int(cols[0]),
            iy0 + int(rows[0]),
            ix0 + int(cols[-1]) + 1,
            iy0 + int(rows[-1]) + 1,
        )
        vis = visible[k - 1] / max(full_area[k - 1], 1)
        bw, bh = box[2] - box[0], box[3] - box[1]
        difficult = (
            vis < cfg.difficult_visible
            or math.sqrt(bw * bh) < cfg.difficult_size
            or min(bw, bh) < 10
        )
        objects.append(
            SynthObject(name, box, bool(difficult), float(vis), tex_name, (x0, y0, x1, y1))
        )
    return img, objects


def _place(rng, label, mask, area, W, H, w, h, truncate, visible, full_area, min_visible, tries=12):
    """Find (x0, y0, pixels lost per placed object) for a shape, or None."""
    for _ in range(tries):
        if truncate:
            x0 = int(rng.integers(-int(0.3 * w), max(W - int(0.7 * w), -int(0.3 * w)) + 1))
            y0 = int(rng.integers(-int(0.3 * h), max(H - int(0.7 * h), -int(0.3 * h)) + 1))
        else:
            x0 = int(rng.integers(0, max(W - w, 0) + 1))
            y0 = int(rng.integers(0, max(H - h, 0) + 1))
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        m = mask[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
        inside = int(m.sum())
        if inside < min_visible * area or inside == 0:
            continue
        lost = np.bincount(label[iy0:iy1, ix0:ix1][m], minlength=len(visible) + 1)[
            1 : len(visible) + 1
        ]
        ok = all(visible[j] - lost[j] >= min_visible * full_area[j] for j in range(len(visible)))
        if ok:
            return x0, y0, lost
    return None


# ------------------------------------------------------------------------------ writing


def _xml(image_file: str, w: int, h: int, objects: list[SynthObject]) -> str:
    parts = [
        "<annotation>",
        "\t<folder>JPEGImages</folder>",
        f"\t<filename>{escape(image_file)}</filename>",
        "\t<source><database>fasterrcnn synthetic shapes</database></source>",
        f"\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        "\t<segmented>0</segmented>",
    ]
    for o in objects:
        x1, y1, x2, y2 = o.box
        truncated = int(
            o.full_box[0] < 0 or o.full_box[1] < 0 or o.full_box[2] > w or o.full_box[3] > h
        )
        parts += [
            "\t<object>",
            f"\t\t<name>{escape(o.name)}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{truncated}</truncated>",
            f"\t\t<difficult>{int(o.difficult)}</difficult>",
            # VOC coordinates: 1-based inclusive pixel indices
            f"\t\t<bndbox><xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>\n")
    return "\n".join(parts)


def _encode(img: np.ndarray, cfg: SynthConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.image_format == "png":
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(img).save(buf, format="JPEG", quality=cfg.jpeg_quality)
    return buf.getvalue()


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image `index` of `split`: images are independent of each other."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, _SPLIT_CODE[split], index])
    )


def _make_one(job: tuple[SynthConfig, str, int, str]) -> tuple[str, list[tuple[str, bool, tuple]]]:
    cfg, split, index, out = job
    image_id = f"{split}_{index:06d}"
    rng = image_rng(cfg.seed, split, index)
    img, objects = render_image(rng, cfg)
    fname = f"{image_id}.{cfg.image_format}"
    with open(os.path.join(out, "JPEGImages", fname), "wb") as f:
        f.write(_encode(img, cfg))
    h, w = img.shape[:2]
    with open(
        os.path.join(out, "Annotations", f"{image_id}.xml"), "w", encoding="utf-8", newline="\n"
    ) as f:
        f.write(_xml(fname, w, h, objects))
    return image_id, [(o.name, o.difficult, o.box) for o in objects]


def generate(
    out: str | os.PathLike,
    cfg: SynthConfig | None = None,
    *,
    workers: int = 1,
    progress: bool = True,
    **overrides,
) -> dict:
    """Write the synthetic data set to `out` in VOC layout; returns a summary dict.

    `overrides` replace fields of `cfg` (e.g. `generate(out, num_train=50, seed=1)`).
    Files: JPEGImages/<split>_NNNNNN.jpg, Annotations/<split>_NNNNNN.xml,
    ImageSets/Main/train.txt and test.txt, and synth.json (the options used)."""
    cfg = replace(cfg or SynthConfig(), **overrides) if overrides or cfg is None else cfg
    cfg = replace(cfg, classes=tuple(cfg.classes), textures=tuple(cfg.textures)).validate()
    out = os.fspath(out)
    for d in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    jobs = [(cfg, "train", i, out) for i in range(cfg.num_train)]
    jobs += [(cfg, "test", i, out) for i in range(cfg.num_test)]

    t0 = time.perf_counter()
    results: list = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth", unit="img", leave=True)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context().Pool(workers) as pool:
            for r in pool.imap(_make_one, jobs, chunksize=8):
                results.append(r)
                if bar is not None:
                    bar.update(1)
    else:
        for job in jobs:
            results.append(_make_one(job))
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0

    splits: dict[str, list[str]] = {"train": [], "test": []}
    per_class: Counter = Counter()
    difficult = 0
    for (image_id, objs), (_, split, _, _) in zip(results, jobs, strict=True):
        splits[split].append(image_id)
        for name, dif, _box in objs:
            per_class[name] += 1
            difficult += int(dif)
    for split, ids in splits.items():
        with open(
            os.path.join(out, "ImageSets", "Main", f"{split}.txt"),
            "w",
            encoding="utf-8",
            newline="\n",
        ) as f:
            f.write("".join(i + "\n" for i in ids))
    meta = {"generator": "fasterrcnn.data.synth", "format_version": FORMAT_VERSION, **asdict(cfg)}
    meta["classes"] = list(cfg.classes)
    with open(os.path.join(out, "synth.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    return {
        "out": out,
        "train": len(splits["train"]),
        "test": len(splits["test"]),
        "objects": int(sum(per_class.values())),
        "difficult": difficult,
        "per_class": {c: per_class[c] for c in cfg.classes},
        "seconds": elapsed,
        "images_per_second": len(jobs) / elapsed if elapsed > 0 else float("inf"),
    }


SYNTH_OUTPUTS = ("JPEGImages", "Annotations", "ImageSets/Main/train.txt", "ImageSets/Main/test.txt", "synth.json")


def claim_synth_outputs(out: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Refuse to write the data set into a folder that holds one's files already (a user's
    own VOC set included), unless `overwrite`: files of the same names are then replaced."""
    from fasterrcnn.outputs import claim_outputs

    claim_outputs(out, SYNTH_OUTPUTS, overwrite=overwrite, what="data set files",
                  hint="choose an empty folder for --out, or pass --overwrite to write over them")


def config_from_dir(path: str | os.PathLike) -> SynthConfig | None:
    """The options a synthetic data set in `path` was generated with (None if not one)."""
    p = os.path.join(path, "synth.json")
    if not os.path.isfile(p):
        return None
    with open(p, encoding="utf-8") as f:
        meta = json.load(f)
    fields = {k: v for k, v in meta.items() if k in SynthConfig.__dataclass_fields__}
    fields["classes"] = tuple(fields.get("classes", SYNTH_CLASSES))
    fields["textures"] = tuple(fields.get("textures", TEXTURES))
    return SynthConfig(**fields)


def default_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    return SYNTH_CLASSES if classes is None else tuple(classes)
