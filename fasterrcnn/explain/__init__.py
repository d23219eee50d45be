"""`fasterrcnn explain`: the method, shown with the real model and data.

Each picture is one module with a docstring citing the part of the paper it shows and a
`make(ctx, out) -> Result` that writes its PNG files (matplotlib, Agg) and returns the numbers
it drew. `_model` is the only module that touches the detector's internals; `page` builds the
self-contained `index.html` with the interactive anchor explorer.

    from fasterrcnn.explain import Context, run
    ctx = Context(image, image_note="my.jpg", gt_boxes=boxes, checkpoint="model_final.pt")
    results = run("all", ctx, Path("runs/explain"))   # {name: Result(outputs, data)}

`PICTURES` is the registry: name -> (module, files, title, blurb, needs a model).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PAGE", "PICTURES", "Context", "Picture", "check", "planned_files", "run", "run_iter"]


@dataclass(frozen=True)
class Picture:
    module: str
    files: tuple[str, ...]
    title: str
    blurb: str  # one sentence for the page, from the paper
    needs_model: bool = True


PICTURES: dict[str, Picture] = {
    "anchors": Picture("anchors", ("anchors.png",), "Anchors (Sec. 3.1.1)",
                       "At each sliding-window position the RPN predicts k proposals relative to k anchors of 3 scales "
                       "and 3 aspect ratios; the same anchors at every position make the method translation invariant."),
    "labels": Picture("labels", ("labels.png",), "RPN training labels (Sec. 3.1.2)",
                      "Positive: IoU > 0.7 with a ground-truth box, or a box's highest-IoU anchor; negative: IoU < 0.3 "
                      "with every box; the rest and the cross-boundary anchors are ignored; 256 sampled per image."),
    "rpn": Picture("rpn", ("rpn_objectness.png", "rpn_proposals.png"), "The Region Proposal Network (Sec. 3.1, 3.3)",
                   "A 3x3 window on the shared feature map scores k anchors per position; the proposal layer keeps the "
                   "top 6,000, runs NMS at IoU 0.7 and passes 300 proposals to the detector."),
    "roi-pool": Picture("roi_pool", ("roi_pool.png",), "RoI pooling and RoIAlign (Sec. 3.2)",
                        "Each proposal is projected onto the feature map, divided into a fixed grid of sub-windows and "
                        "max-pooled into a fixed-size feature for the fully connected layers."),
    "losses": Picture("losses", ("losses.png",), "Smooth L1 (Eq. 1)",
                      "The box regression uses the robust smooth L1 loss: quadratic for small errors, linear for large "
                      "ones, so that outliers cannot make the gradients explode.", needs_model=False),
    "architecture": Picture("architecture", ("architecture.png",), "The assembled detector (Fig. 2)",
                            "One backbone shared by the RPN and Fast R-CNN; the RPN's output layer has (4 + 2) x 9 "
                            "weights per channel: 2.8 x 10^4 for VGG-16 against MultiBox's 6.1 x 10^6."),
    "timing": Picture("timing", ("timing.png",), "Where the time goes (Table 5)",
                      "Selective Search takes seconds per image on a CPU; the RPN's proposals cost about 10 ms on the "
                      "paper's GPU because they reuse the detector's convolutional features.", needs_model=False),
    "multiscale": Picture("multiscale", ("multiscale.png",), "Image pyramid vs pyramid of anchors (Sec. 3.1.1)",
                          "Instead of computing features on an image pyramid, one scale with anchors of several sizes "
                          "covers the object sizes at the cost of a single pass."),
}
PAGE = "index.html"
NAMES: tuple[str, ...] = (*PICTURES, "all")


def planned_files(what: str) -> list[str]:
    """The files `run(what, ...)` writes (relative to the output folder)."""
    names = list(PICTURES) if what == "all" else [what]
    files = [f for n in names for f in PICTURES[n].files]
    return files + [PAGE] if what == "all" else files


def check(what: str, ctx: Any) -> None:
    """Raise the ConfigError that `what` (one picture) would raise for this input, before
    anything is written (a picture module's optional `check(ctx)`)."""
    from fasterrcnn.errors import ConfigError

    if what not in NAMES:
        raise ConfigError(f"unknown picture {what!r}; choose one of {', '.join(NAMES)}")
    if what != "all":
        f = getattr(importlib.import_module(f"fasterrcnn.explain.{PICTURES[what].module}"), "check", None)
        if f is not None:
            f(ctx)


def run_iter(what: str, ctx: Any, out: Path) -> Iterator[tuple[str, Any]]:
    """Draw `what` (a picture name or "all") into `out`, yielding (name, Result) as each
    picture is done; with "all", a picture that cannot be drawn for this input (the labels
    without ground truth) yields (name, the ConfigError) and the page is written last
    (name "page")."""
    from fasterrcnn.errors import ConfigError

    if what not in NAMES:
        raise ConfigError(f"unknown picture {what!r}; choose one of {', '.join(NAMES)}")
    results: dict[str, Any] = {}
    for name in PICTURES if what == "all" else [what]:
        module = importlib.import_module(f"fasterrcnn.explain.{PICTURES[name].module}")
        try:
            results[name] = module.make(ctx, out)
        except ConfigError as exc:
            if what != "all":
                raise
            results[name] = exc
        yield name, results[name]
    if what == "all":
        from fasterrcnn.explain import page

        yield "page", page.make(ctx, out, results)


def run(what: str, ctx: Any, out: Path) -> dict[str, Any]:
    """As `run_iter`, all at once: {name: Result (or ConfigError)}."""
    return dict(run_iter(what, ctx, out))


def __getattr__(name: str) -> Any:
    if name == "Context":  # imported lazily: the registry itself needs no torch
        from fasterrcnn.explain._common import Context

        return Context
    raise AttributeError(f"module 'fasterrcnn.explain' has no attribute {name!r}")
