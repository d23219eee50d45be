"""torchvision's Faster R-CNN builders and the presets of the same architecture (no torch
import: the command line lists them in --help)."""

TORCHVISION_ARCHS: dict[str, str] = {
    "fasterrcnn_resnet50_fpn": "resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2": "resnet50_fpn_v2",
    "fasterrcnn_mobilenet_v3_large_fpn": "mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "mobilenet_v3_large_320_fpn",
}
