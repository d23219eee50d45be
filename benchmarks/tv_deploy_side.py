"""torchvision's side of benchmarks/deploy_compare.py (run by an interpreter with torchvision 0.29).

    /work/tv/bin/python benchmarks/tv_deploy_side.py IMAGE.npy REPEAT WARMUP OUT_DIR

Builds three models with torchvision's classes, random weights (seed 0), at a 600 px shorter
side (longer <= 1000): the paper's VGG-16 configuration (conv5_3 trunk, 9 anchors of 128-512 px,
6000/300 proposals, RoI max pooling 7x7 through `torchvision.ops.RoIPool`, fc6/fc7 of 4096),
`fasterrcnn_mobilenet_v3_large_fpn` and `fasterrcnn_resnet50_fpn` (91 classes). Times each the
ways its users deploy it: eager fp32, eager bf16 autocast + channels_last, and exported to
ONNX (`torch.onnx.export`, the tracing exporter of torchvision's own ONNX tests, opset 17) run
by onnxruntime; 2 threads everywhere. Prints one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_fpn, fasterrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, RoIPool


class SingleMapRoIPool(MultiScaleRoIAlign):
    """torchvision's RoIPool (max pooling, the paper's) behind the box_roi_pool interface, which
    FasterRCNN requires to be a MultiScaleRoIAlign."""

    def __init__(self) -> None:
        super().__init__(["0"], 7, 2)
        self.pool = RoIPool(7, 1 / 16)

    def forward(self, features, proposals, image_shapes):
        # torchvision's roi_pool has no bfloat16 kernel: under bf16 autocast it pools in float32
        return self.pool(features["0"].float(), [p.float() for p in proposals])


def vgg16_paper() -> nn.Module:
    trunk = torchvision.models.vgg16(weights=None).features[:-1]  # conv5_3 + ReLU, stride 16
    trunk.out_channels = 512
    anchors = AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(trunk, rpn_anchor_generator=anchors, box_roi_pool=SingleMapRoIPool(),
                      box_head=TwoMLPHead(512 * 7 * 7, 4096), box_predictor=FastRCNNPredictor(4096, 21),
                      min_size=600, max_size=1000, rpn_pre_nms_top_n_test=6000, rpn_post_nms_top_n_test=300,
                      box_nms_thresh=0.3)


MODELS = {
    "vgg16_paper": vgg16_paper,
    "fasterrcnn_mobilenet_v3_large_fpn": lambda: fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, min_size=600, max_size=1000),
    "fasterrcnn_resnet50_fpn": lambda: fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=600, max_size=1000),
}


def timed(fn, repeat: int, warmup: int) -> float:
    times = []
    for _ in range(warmup + repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times[warmup:])


def main() -> None:
    image_path, repeat, warmup, out_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    import onnxruntime as ort

    torch.set_num_threads(2)
    image = torch.from_numpy(np.load(image_path))
    result: dict = {"torchvision": torchvision.__version__, "torch": torch.__version__, "onnxruntime": ort.__version__}
    for name, make in MODELS.items():
        torch.manual_seed(0)
        model = make().eval()
        row: dict = {}
        with torch.no_grad():
            row["eager_fp32"] = timed(lambda m=model: m([image]), repeat, warmup)
            row["detections"] = len(model([image])[0]["boxes"])
            path = out_dir / f"tv_{name}.onnx"
            try:
                torch.onnx.export(model, ([image],), str(path), dynamo=False, opset_version=17,
                                  input_names=["images"], output_names=["boxes", "labels", "scores"],
                                  dynamic_axes={"images": [1, 2], "boxes": [0], "labels": [0], "scores": [0]})
                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                feed = {"images": image.numpy()}
                row["onnxruntime_fp32"] = timed(lambda s=session, f=feed: s.run(None, f), repeat, warmup)
            except Exception as exc:  # report the exporter's failure instead of a figure
                row["onnx_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            cl = model.to(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                row["eager_bf16_cl"] = timed(lambda m=cl: m([image]), repeat, warmup)
        result[name] = row
        print(f"# {name}: {row}", file=sys.stderr, flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
