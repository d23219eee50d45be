"""Write tests/fixtures/torchvision/modules.pt: torchvision's detection backbones (body + FPN),
as `fasterrcnn_resnet50_fpn`, `fasterrcnn_resnet50_fpn_v2` and
`fasterrcnn_mobilenet_v3_large(_320)_fpn` build them, run on two deterministic images.

Run from the repository root with an interpreter that has torchvision (never a dependency of
the repository; nothing here is imported by the tests):

    /work/tv/bin/python scripts/torchvision_module_fixtures.py

Weights: `tests/torchvision_weights.py:make_state_dict` over the state-dict spec, with the
detection models' key names (`backbone.body.*`, `backbone.fpn.*`), so the tests can rebuild
them bit for bit. Saved per model: the spec {key: (shape, dtype)}, the weights' digest, for
every `trainable_layers` value the parameter names torchvision freezes, and per input image
(spec, checksum) and per output level (body and FPN): shape, sum, max |x|, and ~1000 sampled
values at recorded flat indices.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import mobilenet_v3_large, resnet50
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.backbone_utils import (
    _mobilenet_extractor,
    _resnet_fpn_extractor,
    resnet_fpn_backbone,
)
from torchvision.ops.misc import FrozenBatchNorm2d

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from torchvision_weights import image_checksum, make_image, make_state_dict, state_dict_digest  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "torchvision" / "modules.pt"
PREFIX = "backbone."  # the detection models' name of the BackboneWithFPN
SAMPLES = 1000
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
IMAGES = {"main": {"height": 96, "width": 128, "seed": 11}, "odd": {"height": 67, "width": 93, "seed": 12}}


def resnet50_fpn(trainable_layers: int) -> nn.Module:
    """fasterrcnn_resnet50_fpn with COCO weights: frozen BN (eps 0 for COCO_V1), plain FPN."""
    m = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=trainable_layers)
    overwrite_eps(m, 0.0)
    return m


def resnet50_fpn_v2(trainable_layers: int) -> nn.Module:
    """fasterrcnn_resnet50_fpn_v2: nn.BatchNorm2d in the body and in the FPN convs."""
    return _resnet_fpn_extractor(resnet50(weights=None), trainable_layers, norm_layer=nn.BatchNorm2d)


def mobilenet_v3_large_fpn(trainable_layers: int) -> nn.Module:
    """fasterrcnn_mobilenet_v3_large(_320)_fpn with COCO weights: frozen BN (eps 1e-5)."""
    backbone = mobilenet_v3_large(weights=None, norm_layer=FrozenBatchNorm2d)
    return _mobilenet_extractor(backbone, True, trainable_layers)


MODELS: dict[str, tuple[Callable[[int], nn.Module], int]] = {
    "resnet50_fpn": (resnet50_fpn, 5),
    "resnet50_fpn_v2": (resnet50_fpn_v2, 5),
    "mobilenet_v3_large_fpn": (mobilenet_v3_large_fpn, 6),
}


def _spec(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {PREFIX + k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}


def _frozen(build: Callable[[int], nn.Module], max_trainable: int) -> dict[int, list[str]]:
    out = {}
    for t in range(max_trainable + 1):
        m = build(t)
        out[t] = sorted(PREFIX + n for n, p in m.named_parameters() if not p.requires_grad)
    return out


def _summary(x: torch.Tensor, seed: int) -> dict:
    flat = x.detach().reshape(-1)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(flat.numel(), generator=g)[:SAMPLES].sort().values
    return {"shape": tuple(x.shape), "sum": float(flat.double().sum()), "abs_max": float(flat.abs().max()),
            "index": idx.to(torch.int32), "values": flat[idx].clone()}


def _run(model: nn.Module, images: dict) -> dict:
    out = {}
    for name, spec in images.items():
        x = (make_image(spec).unsqueeze(0) - MEAN) / STD
        with torch.no_grad():
            body = model.body(x)
            fpn = model.fpn(body)
        out[name] = {
            "image": dict(spec), "checksum": image_checksum(spec), "shape": tuple(x.shape),
            "body": {k: _summary(v, 1000 + i) for i, (k, v) in enumerate(body.items())},
            "fpn": {k: _summary(v, 2000 + i) for i, (k, v) in enumerate(fpn.items())},
        }
    return out


def _model_fixture(build: Callable[[int], nn.Module], max_trainable: int) -> dict:
    model = build(3).eval()
    spec = _spec(model)
    weights = make_state_dict(spec)
    model.load_state_dict({k[len(PREFIX):]: v for k, v in weights.items()}, strict=True)
    return {"spec": spec, "digest": state_dict_digest(weights), "frozen": _frozen(build, max_trainable),
            "outputs": _run(model, IMAGES)}


def main() -> None:
    torch.set_num_threads(1)
    fixture = {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
               "prefix": PREFIX, "mean": MEAN.flatten().tolist(), "std": STD.flatten().tolist(),
               "models": {name: _model_fixture(build, t) for name, (build, t) in MODELS.items()}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KiB)")
    for name, m in fixture["models"].items():
        for img, o in m["outputs"].items():
            levels = ", ".join(f"{k} {tuple(v['shape'][1:])} max {v['abs_max']:.3g}" for k, v in o["fpn"].items())
            print(f"{name} [{img}]: {levels}")


if __name__ == "__main__":
    main()
