"""Detection on image files: batch inference over folders, annotated copies, a COCO results JSON.

DataLoader workers decode (EXIF orientation, any colour mode -> RGB) and resize each image
with the paper's rule while the main process runs the network, so decoding overlaps
inference. An unreadable file is reported (named) and skipped; the others are processed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fasterrcnn.engine.inference import to_original
from fasterrcnn.engine.precision import autocast
from fasterrcnn.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "DetectResult", "ImageFiles", "detect_files", "find_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Files given directly, plus the image files (by extension) of each folder, sorted.
    A path that does not exist, or a folder without images, is an error naming it."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not paths:
        raise DataError("no input images given")
    return paths


class ImageFiles(Dataset):
    """Image files -> (Tensor[3, h, w] resized by the paper's rule, info) in workers.
    A file that cannot be decoded yields (None, info with "error")."""

    def __init__(self, paths: list[Path], min_size: int, max_size: int) -> None:
        self.paths = paths
        self.min_size = min_size
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor | None, dict[str, Any]]:
        from fasterrcnn.data.transforms import Resize, ToTensor, read_image

        info: dict[str, Any] = {"index": i, "file": str(self.paths[i])}
        try:
            image = read_image(self.paths[i])
        except DataError as exc:
            info["error"] = str(exc)
            return None, info
        info["orig_size"] = (image.height, image.width)
        image, _ = Resize(self.min_size, self.max_size)(image, None)
        tensor, _ = ToTensor()(image, None)
        return tensor, info


def _collate(batch: list[tuple[Tensor | None, dict[str, Any]]]) -> list[tuple[Tensor | None, dict[str, Any]]]:
    return batch


@dataclass
class DetectResult:
    images: int = 0
    detections: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    results_json: str = ""
    images_json: str = ""
    annotated: list[str] = field(default_factory=list)


def _save_image(image: Any, path: Path) -> None:
    """Write an annotated copy atomically (a crash never leaves half an image)."""
    from fasterrcnn.fileio import atomic_write

    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    atomic_write(path, lambda f: image.save(f, format=fmt, **({"quality": 92} if fmt == "JPEG" else {})))


def _output_names(paths: list[Path], suffix: str | None) -> list[str]:
    """Unique output file names: the input's name, with a counter where two inputs share one."""
    names, seen = [], {}
    for p in paths:
        ext = suffix or (p.suffix.lower() if p.suffix.lower() in (".jpg", ".jpeg", ".png") else ".png")
        stem = p.stem
        n = seen.get(stem + ext, 0)
        seen[stem + ext] = n + 1
        names.append(f"{stem}{'_' + str(n) if n else ''}{ext}")
    return names


@torch.no_grad()
def detect_files(
    model: nn.Module,
    paths: list[Path],
    out_dir: str | Path,
    *,
    device: torch.device,
    precision: str = "fp32",
    score_thresh: float = 0.5,
    batch_size: int = 1,
    num_workers: int = 2,
    draw: bool = True,
    image_format: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    inputs: list[str | Path] = (),
) -> DetectResult:
    """Detect objects in `paths`; write annotated copies (detections with score >=
    `score_thresh`) and `detections.json` (COCO results, image_id = position in `images.json`).

    Nothing is written over an input (an annotated copy never replaces its photo; `inputs`
    names other input files, e.g. the checkpoint), nor, unless `overwrite`, over an existing
    file: both are checked before the first image is read (fasterrcnn.outputs)."""
    from fasterrcnn.data.transforms import read_image
    from fasterrcnn.fileio import atomic_write_text
    from fasterrcnn.outputs import claim_outputs
    from fasterrcnn.visualize import draw_detections

    out = Path(out_dir)
    names = _output_names(paths, image_format)
    planned = [*(names if draw else []), "detections.json", "images.json"]
    claim_outputs(out, planned, inputs=[*paths, *inputs], overwrite=overwrite, what="detection outputs")
    out.mkdir(parents=True, exist_ok=True)
    scale = model.transform  # the test scale: the model's DetectionTransform (or an ONNX file's InputScale)
    dataset = ImageFiles(paths, scale.min_size, scale.max_size)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    model.eval()
    res = DetectResult()
    results: list[dict[str, Any]] = []
    images_meta: list[dict[str, Any]] = []
    start = time.perf_counter()
    for batch in tqdm(loader, desc="detect", unit="batch", disable=not progress):
        good = [(t, info) for t, info in batch if t is not None]
        for t, info in batch:
            if t is None:
                res.failed.append(info["error"])
                tqdm.write(f"skipped: {info['error']}")
        if not good:
            continue
        with autocast(device, precision):
            outputs = model([t.to(device) for t, _ in good])
        for (t, info), det in zip(good, outputs):
            boxes = to_original(det["boxes"].float().cpu(), t, info["orig_size"])
            scores, labels = det["scores"].float().cpu(), det["labels"].cpu()
            image_id = info["index"]
            h0, w0 = info["orig_size"]
            images_meta.append({"id": image_id, "file_name": info["file"], "height": h0, "width": w0})
            for b, s, lab in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append({"image_id": image_id, "category_id": int(lab), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
            res.images += 1
            keep = scores >= score_thresh
            res.detections += int(keep.sum())
            if draw:
                image = read_image(info["file"])
                names_ = model.class_names
                drawn = draw_detections(image, boxes[keep].tolist(), labels[keep].tolist(), scores[keep].tolist(), names_)
                path = out / names[image_id]
                _save_image(drawn, path)
                res.annotated.append(str(path))
    res.seconds = time.perf_counter() - start
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(model.class_names or [])]
    res.results_json = str(out / "detections.json")
    res.images_json = str(out / "images.json")
    atomic_write_text(out / "detections.json", json.dumps(results))
    atomic_write_text(out / "images.json", json.dumps({"images": images_meta, "categories": categories}, indent=1))
    return res
