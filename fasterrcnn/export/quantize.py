"""Post-training static int8 quantisation of an exported detector (onnxruntime's QDQ format).

The convolutions and fully connected layers of the backbone, neck, RPN head and box head get
int8 weights (per output channel, symmetric) and uint8 activations (per tensor, asymmetric),
with the activation ranges measured on calibration images run through the float graph
(min/max); onnxruntime then runs those layers with integer kernels (VNNI on x86). Everything
that decides boxes stays in float32: the RPN's objectness and box-delta convolutions, the
classifier and box regressor, box decoding, NMS, RoI pooling and the softmax; only the layers
named in `QUANTISED_OPS` are quantised, and the sensitive ones among them are excluded by
name (`FLOAT_LAYERS`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fasterrcnn._optional import require
from fasterrcnn.errors import DataError
from fasterrcnn.export.onnx import METADATA_KEY

__all__ = ["calibration_images", "quantize_int8"]

QUANTISED_OPS = ("Conv", "Gemm", "MatMul")
# The output layers whose values are compared or decoded into boxes, kept in float: the RPN head's
# objectness and delta convs (one node per pyramid level: cls_logits, cls_logits_1, ...) and the
# detector's classifier and box regressor.
FLOAT_LAYERS = re.compile(r"/head/(cls_logits|bbox_pred)(_\d+)?/|/predictor/(cls_score|bbox_pred)/")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def calibration_images(source: str | os.PathLike, count: int) -> list[Path]:
    """`count` image files of `source`, evenly spaced in sorted order (a deterministic choice):
    a VOC data set's training images (those listed in ImageSets/Main/train.txt), or else every
    image in the folder and below it."""
    root = Path(source)
    if not root.is_dir():
        raise DataError(f"--calibration {root}: no such folder")
    split = root / "ImageSets" / "Main" / "train.txt"
    if split.is_file() and (root / "JPEGImages").is_dir():
        stems = {line.split()[0] for line in split.read_text().splitlines() if line.strip()}
        found = sorted(p for p in (root / "JPEGImages").iterdir() if p.stem in stems)
    else:
        found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"--calibration {root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or below it")
    if count >= len(found):
        return found
    step = len(found) / count
    return [found[int(i * step)] for i in range(count)]


def _image_array(path: Path) -> np.ndarray:
    from fasterrcnn.data.transforms import read_image

    rgb = np.asarray(read_image(path), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _reader(paths: Sequence[Path], progress: bool) -> Any:
    ort_quant = require("onnxruntime.quantization", "quantise to int8")
    from tqdm import tqdm

    class Images(ort_quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._iter: Iterator[Path] = iter(tqdm(paths, desc="calibrate", unit="image", disable=not progress))

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self._iter, None)
            return None if path is None else {"image": _image_array(path)}

    return Images()


def _layers_to_quantise(graph: Any, keep_float: tuple[str, ...]) -> tuple[list[str], list[str]]:
    quantised, kept = [], []
    for node in graph.node:
        if node.op_type in QUANTISED_OPS:
            float_ = bool(FLOAT_LAYERS.search(node.name)) or any(tag in node.name for tag in keep_float)
            (kept if float_ else quantised).append(node.name)
    return quantised, kept


@contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's quantiser logs a suggestion to pre-process (shape inference, which the dynamic
    detector graph does not need) and warns while computing ranges for tensors that are not
    quantised (the -inf of masked logits); neither concerns the layers quantised here."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        logger.setLevel(level)


def quantize_int8(float_model: str | os.PathLike, out: str | os.PathLike, images: Sequence[Path], *,
                  progress: bool = True, keep_float: Sequence[str] = ()) -> Path:
    """Write the int8 (QDQ) version of the exported `float_model` to `out`, calibrated on
    `images` (files); the metadata (class names, scale) is carried over. `keep_float`: more
    layers to leave in float, by a part of their node name (e.g. "/backbone/neck/")."""
    ort_quant = require("onnxruntime.quantization", "quantise to int8")
    onnx = require("onnx", "quantise to int8")
    src, out = Path(float_model), Path(out)
    source = onnx.load(str(src), load_external_data=False)
    quantised, kept = _layers_to_quantise(source.graph, tuple(keep_float))
    if not quantised:
        raise ValueError(f"{src}: no Conv/Gemm/MatMul layer to quantise")
    tmp = out.with_name(f".{out.name}.tmp")
    with tempfile.TemporaryDirectory(prefix="fasterrcnn-int8-") as work, _quiet():
        ort_quant.quantize_static(
            str(src), str(tmp), _reader(list(images), progress),
            quant_format=ort_quant.QuantFormat.QDQ,
            activation_type=ort_quant.QuantType.QUInt8, weight_type=ort_quant.QuantType.QInt8,
            per_channel=True, calibrate_method=ort_quant.CalibrationMethod.MinMax,
            nodes_to_quantize=quantised, nodes_to_exclude=kept,
            calibration_providers=["CPUExecutionProvider"],
            extra_options={"CalibTensorRangeSymmetric": False, "WeightSymmetric": True,
                           "CalibIntermediateOutputPath": os.path.join(work, "augmented.onnx")},
        )
    proto = onnx.load(str(tmp))
    source_meta = {p.key: p.value for p in source.metadata_props}
    if METADATA_KEY in source_meta:
        info = json.loads(source_meta[METADATA_KEY])
        info.update(precision="int8", calibration_images=len(images), float_layers=kept)
        source_meta[METADATA_KEY] = json.dumps(info)
    del proto.metadata_props[:]
    for key, value in source_meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    os.replace(tmp, out)
    return out
