"""ONNX export of the whole detector and an onnxruntime runner with the model's calling convention.

`export_onnx(model, "model.onnx")` traces `DeployableFasterRCNN` (one image Tensor[3, H, W] float
in [0, 1] -> boxes Tensor[D, 4] in its pixels, labels Tensor[D] int64, scores Tensor[D]) with
the image's height and width dynamic; the data-dependent steps become ONNX's own operators
(`fasterrcnn.export.ops`), so any onnxruntime (or OpenVINO, TensorRT) runs the file as it is.
BatchNorm is folded into the convolutions first. The file's metadata holds the class names and
the test-time scale, which `OnnxDetector` reads back.

PyTorch's tracing exporter is used (`dynamo=False`): the detector's outputs have sizes that
depend on the data (NMS), which the tracer writes as ONNX's dynamic operators directly.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fasterrcnn._optional import require
from fasterrcnn.export.graph import DeployableFasterRCNN
from fasterrcnn.export.ops import MIN_OPSET, OPSET
from fasterrcnn.modeling.faster_rcnn import FasterRCNN
from fasterrcnn.modeling.transform import check_images

__all__ = ["InputScale", "OnnxDetector", "export_onnx"]

INPUTS = ["image"]
OUTPUTS = ["boxes", "labels", "scores"]
METADATA_KEY = "fasterrcnn"


def _metadata(model: FasterRCNN, deployable: DeployableFasterRCNN) -> dict[str, Any]:
    cfg = model.config
    return {
        "format": 1,
        "precision": "fp32",
        "class_names": list(model.class_names or [str(i) for i in range(1, model.num_classes + 1)]),
        "num_classes": model.num_classes,
        "preset": getattr(cfg, "preset", None) if cfg is not None else None,
        "backbone": cfg.backbone if cfg is not None else None,
        "min_size": deployable.min_size,
        "max_size": deployable.max_size,
        "input": "image: float32 [3, H, W], RGB in [0, 1]",
        "outputs": "boxes: float32 [D, 4] x1 y1 x2 y2 in the input's pixels; labels: int64 [D] in 1..K; scores: float32 [D]",
    }


def export_onnx(
    model: FasterRCNN,
    path: str | os.PathLike,
    *,
    opset: int = OPSET,
    min_size: int | None = None,
    max_size: int | None = None,
    example_size: tuple[int, int] | None = None,
) -> Path:
    """Write `model` (a trained `FasterRCNN`, left unchanged) as one ONNX graph to `path`
    (atomically); `min_size`/`max_size` set the test-time scale (default: the model's);
    `example_size` is the (H, W) of the traced example image (any size works afterwards)."""
    onnx = require("onnx", "export to ONNX")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (RoiAlign's coordinate modes), got {opset}")
    model = copy.deepcopy(model).cpu().float().prepare_for_inference()
    deployable = DeployableFasterRCNN(model, min_size, max_size)
    h, w = example_size or (deployable.min_size, (deployable.min_size * 4) // 3)
    example = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the sizes are all tensors here
        torch.onnx.export(
            deployable, (example,), str(tmp), dynamo=False, opset_version=opset,
            input_names=INPUTS, output_names=OUTPUTS,
            dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                          "labels": {0: "detections"}, "scores": {0: "detections"}},
        )
    proto = onnx.load(str(tmp))
    _inline_shared_initializers(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(_metadata(model, deployable))
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def _inline_shared_initializers(proto: Any) -> None:
    """Give every layer its own constant again. The exporter stores equal initializers once
    (e.g. the zero biases of freshly initialised convs) and feeds the others through `Identity`
    nodes, which stop onnxruntime from fusing a quantised conv (DequantizeLinear -> Conv ->
    QuantizeLinear into QLinearConv): such an Identity becomes a copy of its initializer."""
    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    shared = [n for n in graph.node if n.op_type == "Identity" and n.input[0] in inits]
    for node in shared:
        copy_ = type(inits[node.input[0]])()
        copy_.CopyFrom(inits[node.input[0]])
        copy_.name = node.output[0]
        graph.initializer.append(copy_)
        graph.node.remove(node)


@dataclass(frozen=True)
class InputScale:
    """The test-time scale an exported detector resizes to (the data pipeline resizes to it too)."""

    min_size: int
    max_size: int


class OnnxDetector:
    """An exported detector run by onnxruntime, called like a `FasterRCNN` in eval mode:
    `detector(images)` -> [{"boxes", "labels", "scores"}] per image (float Tensor[3, H, W] in
    [0, 1]); `class_names`, `num_classes` from the file's metadata. `threads` sets
    onnxruntime's intra-op threads (default: its own choice)."""

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        ort = require("onnxruntime", "run ONNX models")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
        names = [i.name for i in self.session.get_inputs()]
        if names != INPUTS or [o.name for o in self.session.get_outputs()] != OUTPUTS:
            raise ValueError(f"{path}: not a detector exported by `fasterrcnn export` "
                             f"(inputs {names}, outputs {[o.name for o in self.session.get_outputs()]})")
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: dict[str, Any] = json.loads(raw) if raw else {}
        self.path = path
        self.num_classes = int(self.metadata.get("num_classes", 0))
        self.class_names: list[str] | None = self.metadata.get("class_names")
        if not self.metadata:
            raise ValueError(f"{path}: no fasterrcnn metadata (export it with `fasterrcnn export`)")
        self.transform = InputScale(int(self.metadata["min_size"]), int(self.metadata["max_size"]))
        self.training = False

    def eval(self) -> OnnxDetector:
        return self

    def prepare_for_inference(self, channels_last: bool = False, autocast_dtype: torch.dtype | None = None
                              ) -> OnnxDetector:
        """The file runs as exported: the PyTorch speed options do not apply and are refused."""
        from fasterrcnn.errors import ConfigError

        if channels_last or autocast_dtype not in (None, torch.float32):
            raise ConfigError("--channels-last and --precision bf16/fp16 are PyTorch options; an ONNX model runs "
                              "in the precision it was exported in (export with --int8 for int8)")
        return self

    def __call__(self, images: Sequence[Tensor] | Tensor, *, return_proposals: bool = False,
                 num_proposals: int | None = None) -> list[dict[str, Tensor]]:
        if return_proposals or num_proposals is not None:
            raise ValueError("an exported detector returns detections only, not its RPN proposals")
        results = []
        for img in check_images(images):
            boxes, labels, scores = self.session.run(None, {"image": img.detach().cpu().float().contiguous().numpy()})
            results.append({"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels),
                            "scores": torch.from_numpy(scores)})
        return results

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, classes={self.num_classes})"
