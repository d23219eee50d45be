"""Deterministic synthetic weights and images for the torchvision oracle fixtures.

Imports only torch, hashlib and math (no torchvision, no fasterrcnn), so that the same
weights can be built by ``scripts/torchvision_fixtures.py`` (torchvision side, run in a
separate venv) and by the tests of ``fasterrcnn.load_torchvision`` (project side).

Weights: ``make_state_dict(spec)``
----------------------------------
``spec`` maps each state-dict key to ``(shape, dtype)``; dtype is a string such as
``"float32"``, ``"torch.float32"`` or ``"int64"``. Every tensor is drawn from its own
``torch.Generator`` (CPU), seeded with the first 8 bytes (little endian, top bit cleared) of
``sha256(key)``, so a value depends only on its key name and shape, never on the order of
the keys or on the other keys present.

Only ``torch.rand`` (float32, CPU) is drawn, and it is turned into a bell-shaped variable
with plain element-wise float32 ops: ``z = ((u0 + u1) + u2 - 1.5) * 2`` with u0, u1, u2 the
three slices of one ``torch.rand((3, *shape))`` draw (Irwin-Hall of 3 uniforms: mean 0,
std 1, bounded by +-3). No ``randn``, no reduction, no transcendental function, so the
result is bit-identical across torch versions (2.13, 2.14) and CPU instruction sets.

The rules, in the order they are tried (the first that matches wins; the constants are the
module-level names below):

* integer dtypes (``num_batches_tracked``): zeros.
* ``roi_heads.box_predictor.cls_score.weight``: ``z * CLS_GAIN / sqrt(fan_in)`` (3.0).
* ``roi_heads.box_predictor.cls_score.bias``: ``z * 0.1 + OFF_BIAS`` (-40: those classes never
  score), then class 0 (background) = ``BG_BIAS`` (10), and each class of ``ACTIVE_CLASSES``
  (1, 7, 13, ..., 85) = ``ACTIVE_BIAS[spec_kind(spec)][c]`` (``DEFAULT_ACTIVE_BIAS`` for an
  unknown kind). The table is calibrated (``scripts/torchvision_fixtures.py --calibrate``) so
  that, at torchvision's default ``box_score_thresh`` 0.05, the fixture images keep a few to a
  few dozen detections: the box head's synthetic outputs have large per-class offsets that
  differ between architectures, so one bias for all of them cannot do it. Only the numbers are
  data-derived; the weights depend on nothing but the spec.
* ``roi_heads.box_predictor.bbox_pred.weight``: ``z * BBOX_GAIN / sqrt(fan_in)`` (1.0).
* ``rpn.head.cls_logits.bias``: ``RPN_BIAS + z * 0.1`` (-1.5, so that some anchors fall below
  the MobileNet models' ``rpn_score_thresh`` 0.05).
* ``rpn.head.cls_logits.weight``: ``z * RPN_CLS_GAIN / sqrt(fan_in)`` (0.3: keeps the logits
  away from sigmoid saturation, where float32 scores of different anchors would tie).
* ``rpn.head.bbox_pred.weight``: ``z * RPN_DELTA_GAIN / sqrt(fan_in)`` (0.1: deltas ~0.3).
* normalisation layers (BatchNorm2d / FrozenBatchNorm2d; recognised because the key's module
  also has a ``running_var`` entry in ``spec``):
  ``weight = 0.5 + U(0, 1)`` (i.e. U(0.5, 1.5)), ``bias = z * 0.1``,
  ``running_mean = z * 0.1``, ``running_var = 0.5 + U(0, 1)`` (U drawn with one torch.rand).
* MobileNet body weights (``backbone.body.<digit>...`` with 2+ dims, depthwise included):
  ``z * MB_GAIN / sqrt(fan_in)`` (1.2: with 1.0 the activations fade through the Hardswish /
  squeeze-excitation blocks, with 1.3 they blow up; 1.2 keeps the FPN outputs at |x| ~ 4,
  like the ResNet ones).
* any other ``*.weight`` with 2 or more dims (conv / linear): ``z * GAIN / sqrt(fan_in)`` (1.0),
  ``fan_in = shape[1] * prod(shape[2:])`` (a depthwise conv's fan_in is its kernel area).
* any other float tensor (conv / linear biases, ...): ``z * BIAS_SCALE`` (0.05).

With these, the ResNet bodies' stage outputs have |x| ~ 0.5-2.5, all FPN outputs |x| ~ 3-5,
RPN logits std ~0.5-1.4, box head outputs |x| ~ 0.7-1.9: no level vanishes or explodes.

The backbone rules (everything but the ``rpn.*`` and ``roi_heads.box_predictor.*`` ones) are
also behind ``tests/fixtures/torchvision/modules.pt``: changing them means rerunning both
fixture scripts (the fixtures' digests catch it).

Images: ``make_image(spec)``
----------------------------
``spec = {"height": H, "width": W, "seed": s}``: an 8-bit picture built with integer ops
only (a colour gradient, ``NUM_RECTS`` filled rectangles of random colours, +-8 noise), from
``torch.randint`` on a Generator seeded with ``s``, returned as float32 ``[3, H, W]`` in [0, 1]
(``uint8 / 255``). ``image_checksum`` gives the integer sum of the 8-bit values, to check a
regenerated image against the one recorded in a fixture.
"""

from __future__ import annotations

import hashlib
import math

import torch

GAIN = 1.0
MB_GAIN = 1.2
BIAS_SCALE = 0.05
CLS_GAIN = 3.0
BG_BIAS = 10.0
OFF_BIAS = -40.0
ACTIVE_CLASSES = tuple(range(1, 91, 6))
DEFAULT_ACTIVE_BIAS = 0.0
BBOX_GAIN = 1.0
RPN_BIAS = -1.5
RPN_CLS_GAIN = 0.3
RPN_DELTA_GAIN = 0.1
NUM_RECTS = 6

# The cls_score bias of each active class, per weight kind (see spec_kind): calibrated with
# `scripts/torchvision_fixtures.py --calibrate` on the fixture images so that, at score 0.05,
# each image keeps a few to a few dozen detections. Literal numbers: the weights never depend
# on anything but the spec.
ACTIVE_BIAS: dict[str, dict[int, float]] = {
    "resnet50_fpn": {1: -13.64, 7: -18.59, 13: -11.85, 19: -6.35, 25: 5.14, 31: -8.94, 37: 11.57, 43: -7.47,
                     49: -19.25, 55: -15.9, 61: -8.08, 67: 2.48, 73: -7.6, 79: -2.21, 85: -23.43},
    "resnet50_fpn_v2": {1: 6.66, 7: -4.0, 13: 7.14, 19: 7.02, 25: 6.23, 31: -3.1, 37: 11.51, 43: 5.46,
                        49: 6.52, 55: 5.57, 61: 3.01, 67: 6.32, 73: 7.14, 79: 8.71, 85: 3.45},
    "mobilenet_v3_large_fpn": {1: -14.09, 7: -19.13, 13: -1.25, 19: -20.4, 25: -4.27, 31: -16.8, 37: -2.77,
                               43: -1.11, 49: -27.57, 55: -10.07, 61: -12.91, 67: -3.82, 73: -12.7, 79: 5.13,
                               85: -6.7},
}

_INT_DTYPES = {"int64", "int32", "int16", "int8", "uint8", "bool"}


def _dtype_name(dtype: object) -> str:
    name = str(dtype)
    return name[len("torch."):] if name.startswith("torch.") else name


def key_seed(key: str) -> int:
    """The Generator seed of a key: the first 8 bytes of sha256(key), little endian, top bit cleared."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _generator(key: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(key_seed(key))
    return g


def _bell(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Mean 0, std 1, in [-3, 3]: the centred sum of 3 uniforms, element-wise float32 ops only."""
    u = torch.rand((3, *shape), generator=_generator(key), dtype=torch.float32)
    return ((u[0] + u[1]) + u[2] - 1.5) * 2.0


def _uniform(key: str, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
    u = torch.rand(tuple(shape), generator=_generator(key), dtype=torch.float32)
    return u * (high - low) + low


def _fan_in(shape: tuple[int, ...]) -> int:
    fan = shape[1]
    for s in shape[2:]:
        fan *= s
    return max(fan, 1)


def spec_kind(spec) -> str | None:
    """The weight kind of a state-dict spec (its keys): "resnet50_fpn" (TwoMLPHead on a ResNet body),
    "resnet50_fpn_v2" (FastRCNNConvFCHead), "mobilenet_v3_large_fpn" (both MobileNet models), or None."""
    if "backbone.body.layer1.0.conv1.weight" in spec:
        if "roi_heads.box_head.fc6.weight" in spec:
            return "resnet50_fpn"
        if "roi_heads.box_head.0.0.weight" in spec:
            return "resnet50_fpn_v2"
    if "backbone.body.0.0.weight" in spec and "roi_heads.box_head.fc6.weight" in spec:
        return "mobilenet_v3_large_fpn"
    return None


def make_tensor(key: str, shape: tuple[int, ...], dtype: object, norm_prefixes: frozenset[str] = frozenset(),
                kind: str | None = None) -> torch.Tensor:
    """One tensor of make_state_dict (``norm_prefixes``: module prefixes that have a running_var;
    ``kind``: spec_kind of the whole spec)."""
    shape = tuple(int(s) for s in shape)
    name = _dtype_name(dtype)
    if name in _INT_DTYPES:
        return torch.zeros(shape, dtype=getattr(torch, name))
    if name != "float32":
        raise ValueError(f"{key}: unsupported dtype {name} (only float32 and integer tensors)")
    prefix, _, leaf = key.rpartition(".")
    if key == "roi_heads.box_predictor.cls_score.weight":
        return _bell(key, shape) * (CLS_GAIN / math.sqrt(_fan_in(shape)))
    if key == "roi_heads.box_predictor.cls_score.bias":
        b = _bell(key, shape) * 0.1 + OFF_BIAS
        b[0] = BG_BIAS
        table = ACTIVE_BIAS.get(kind or "", {})
        for c in ACTIVE_CLASSES:
            if c < shape[0]:
                b[c] = table.get(c, DEFAULT_ACTIVE_BIAS)
        return b
    if key == "roi_heads.box_predictor.bbox_pred.weight":
        return _bell(key, shape) * (BBOX_GAIN / math.sqrt(_fan_in(shape)))
    if key == "rpn.head.cls_logits.bias":
        return _bell(key, shape) * 0.1 + RPN_BIAS
    if key == "rpn.head.cls_logits.weight":
        return _bell(key, shape) * (RPN_CLS_GAIN / math.sqrt(_fan_in(shape)))
    if key == "rpn.head.bbox_pred.weight":
        return _bell(key, shape) * (RPN_DELTA_GAIN / math.sqrt(_fan_in(shape)))
    if prefix in norm_prefixes:
        if leaf in ("weight", "running_var"):
            return _uniform(key, shape, 0.5, 1.5)
        return _bell(key, shape) * 0.1  # bias, running_mean
    if leaf == "weight" and len(shape) >= 2 and key.startswith("backbone.body.") and key.split(".")[2].isdigit():
        return _bell(key, shape) * (MB_GAIN / math.sqrt(_fan_in(shape)))
    if leaf == "weight" and len(shape) >= 2:
        return _bell(key, shape) * (GAIN / math.sqrt(_fan_in(shape)))
    return _bell(key, shape) * BIAS_SCALE


def make_state_dict(spec: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, torch.Tensor]:
    """Deterministic weights for every key of ``spec`` (key -> (shape, dtype)); see the module docstring."""
    norm_prefixes = frozenset(k.rpartition(".")[0] for k in spec if k.endswith(".running_var"))
    kind = spec_kind(spec)
    return {key: make_tensor(key, shape, dtype, norm_prefixes, kind) for key, (shape, dtype) in spec.items()}


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the keys (sorted), shapes, dtypes and raw bytes: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().contiguous().cpu()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _image_u8(spec: dict) -> torch.Tensor:
    h, w, seed = int(spec["height"]), int(spec["width"]), int(spec["seed"])
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    ys = torch.arange(h, dtype=torch.int64).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.int64).view(1, w).expand(h, w)
    img = torch.stack([
        20 + xs * 200 // w,
        20 + ys * 200 // h,
        60 + (xs + ys) * 100 // (w + h),
    ]).clone()
    for _ in range(NUM_RECTS):
        r = torch.randint(0, 1 << 30, (7,), generator=g).tolist()
        bw = 8 + r[0] % max(w // 2, 1)
        bh = 8 + r[1] % max(h // 2, 1)
        x0 = r[2] % max(w - bw, 1)
        y0 = r[3] % max(h - bh, 1)
        color = torch.tensor([r[4] % 256, r[5] % 256, r[6] % 256], dtype=torch.int64).view(3, 1, 1)
        img[:, y0:y0 + bh, x0:x0 + bw] = color
    noise = torch.randint(-8, 9, (3, h, w), generator=g, dtype=torch.int64)
    return (img + noise).clamp(0, 255).to(torch.uint8)


def make_image(spec: dict) -> torch.Tensor:
    """A float32 [3, H, W] image in [0, 1] from ``{"height", "width", "seed"}`` (see the module docstring)."""
    return _image_u8(spec).to(torch.float32) / 255.0


def image_checksum(spec: dict) -> int:
    """The integer sum of the image's 8-bit values."""
    return int(_image_u8(spec).to(torch.int64).sum())
