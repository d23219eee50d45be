"""`architecture`: the assembled detector with the real tensor shapes of one forward pass and
the parameters of each part (paper, Fig. 2 and Sec. 3; the RPN's output layer, Sec. 3.1.1).

"Faster R-CNN is composed of two modules. The first module is a deep fully convolutional
network that proposes regions, and the second module is the Fast R-CNN detector that uses the
proposed regions." The shapes are recorded by hooks on the model's parts during one call of
`model([image])`. On the RPN's output layer: "our output layer has 2.8 x 10^4 parameters
(512 x (4 + 2) x 9 for VGG-16), two orders of magnitude fewer than MultiBox's output layer
that has 6.1 x 10^6 parameters (1536 x (4 + 1) x 800 for GoogleNet in MultiBox)."
"""

from __future__ import annotations

from pathlib import Path

from fasterrcnn.explain import _model
from fasterrcnn.explain._common import Context, Output, Result, footnote, pyplot, save

FILES = ("architecture.png",)
PAPER_RPN_OUTPUT = 512 * (4 + 2) * 9  # 27,648: "2.8 x 10^4"
MULTIBOX_OUTPUT = 1536 * (4 + 1) * 800  # 6,144,000: "6.1 x 10^6"


def _fmt(shape) -> str:
    if isinstance(shape, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in shape.items())
    if isinstance(shape, list) and shape and isinstance(shape[0], list):
        return ", ".join(_fmt(s) for s in shape)
    return "[" + ", ".join(str(v) for v in shape) + "]" if isinstance(shape, list) else str(shape)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    model = ctx.model
    t = _model.trace(model, ctx.image)
    counts = {name: _params(m) for name, m in _model.parts(model).items()}
    head = _model.rpn_output_layer(model)
    pl = _model.pooler(model)
    k = head["k"]
    per_anchor = f"{head['reg_outputs'] // k} + {head['cls_outputs'] // k}"
    levels = list(t["backbone"]["out"].values()) if isinstance(t["backbone"]["out"], dict) else [t["backbone"]["out"]]
    feat = levels[0]  # the paper's single stride-16 map (a pyramid's first level)
    rpn_cls, rpn_reg = t["rpn_head"]["out"]
    pooled, box_feat = t["box_head"]["in"], t["box_head"]["out"]
    cls_out, reg_out = t["predictor"]["out"]
    shapes = {"image": list(ctx.image.shape), "network_input": t["transform"]["out"], "feature_map": feat,
              "feature_levels": levels,
              "rpn_hidden": t["rpn_conv"]["out"], "rpn_cls": rpn_cls, "rpn_reg": rpn_reg,
              "anchors": [sum(f[-2] * f[-1] for f in levels[:_model.feature_levels(model)]) * k, 4], "proposals": [pooled[0], 4], "pooled": pooled,
              "box_features": box_feat, "cls_score": cls_out, "bbox_pred": reg_out, "detections": t["detections"]["boxes"]}

    fig = plt.figure(figsize=(15, 9), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(1.5, 1), width_ratios=(1.4, 1))
    ax = fig.add_subplot(grid[0, :])
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 50)
    ax.axis("off")
    boxes = {
        "image": (5, 38, f"input image\n{_fmt(shapes['image'])}"),
        "transform": (18, 38, f"transform (resize,\nnormalise, pad)\n{_fmt(shapes['network_input'])}"),
        "backbone": (35, 38, f"backbone ({_model.preset_name(model)})\nfeature map {_fmt(feat)}"
                             + (f"\n(+ {len(levels) - 1} more pyramid levels)" if len(levels) > 1 else "")
                             + f"\n{counts['backbone']:,} params"),
        "rpn": (35, 12, f"RPN: 3x3 conv {_fmt(shapes['rpn_hidden'])}\ncls {_fmt(rpn_cls)}\nreg {_fmt(rpn_reg)}\n"
                        f"{counts['RPN 3x3 conv'] + counts['RPN cls + reg (output layer)']:,} params"),
        "proposal": (58, 12, f"proposal layer\n{shapes['anchors'][0]:,} anchors -> top-N,\nNMS -> proposals {_fmt(shapes['proposals'])}"),
        "pool": (54, 38, f"{pl.kind} {pl.output_size}x{pl.output_size}\npooled {_fmt(pooled)}"),
        "head": (70, 38, f"box head\n{_fmt(box_feat)}\n{counts['box head (fc6, fc7)']:,} params"),
        "pred": (87, 38, f"cls_score {_fmt(cls_out)}\nbbox_pred {_fmt(reg_out)}\n{counts['predictor (cls_score, bbox_pred)']:,} params"),
        "det": (87, 12, f"post-processing:\nsoftmax, decode, NMS\ndetections {_fmt(shapes['detections'])}"),
    }
    colours = {"rpn": "#fde0ef", "proposal": "#fde0ef", "backbone": "#e0ecf4"}
    texts = {name: ax.text(x, y, text, ha="center", va="center", fontsize=8.5,
                           bbox={"boxstyle": "round,pad=0.6", "fc": colours.get(name, "#f0f0f0"), "ec": "#555555"})
             for name, (x, y, text) in boxes.items()}
    arrows = [("image", "transform"), ("transform", "backbone"), ("backbone", "pool"), ("pool", "head"), ("head", "pred"),
              ("backbone", "rpn"), ("rpn", "proposal"), ("proposal", "pool"), ("pred", "det")]
    for a, b in arrows:
        ax.annotate("", xy=boxes[b][:2], xytext=boxes[a][:2],
                    arrowprops={"arrowstyle": "-|>", "lw": 1.5, "color": "#333333", "shrinkA": 2, "shrinkB": 2,
                                "patchA": texts[a].get_bbox_patch(), "patchB": texts[b].get_bbox_patch()})
    ax.set_title("one forward pass, shapes recorded by hooks on the model's parts (Fig. 2: RPN and Fast R-CNN share the backbone)")

    ax = fig.add_subplot(grid[1, 0])
    names = list(counts)
    ax.barh(range(len(names))[::-1], [counts[n] for n in names], color="#4c72b0")
    for y, n in zip(range(len(names))[::-1], names):
        ax.text(counts[n], y, f" {counts[n]:,}", va="center", fontsize=8)
    ax.set_yticks(range(len(names))[::-1], names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1, max(counts.values()) * 20)
    ax.set_xlabel("parameters (log scale)")
    ax.set_title(f"parameters per part: {sum(counts.values()):,} in all")
    ax = fig.add_subplot(grid[1, 1])
    ours = head["weights"]
    bars = [("this model's RPN output layer\n"
             f"{head['channels']} x ({per_anchor}) x {k}", ours, "#4c72b0"),
            ("the paper's VGG-16 RPN\n512 x (4 + 2) x 9 = 2.8 x 10^4", PAPER_RPN_OUTPUT, "#dd8452"),
            ("MultiBox (GoogleNet)\n1536 x (4 + 1) x 800 = 6.1 x 10^6", MULTIBOX_OUTPUT, "#c44e52")]
    ax.barh(range(3)[::-1], [b[1] for b in bars], color=[b[2] for b in bars])
    for y, (_, v, _) in zip(range(3)[::-1], bars):
        ax.text(v, y, f" {v:,}", va="center", fontsize=8)
    ax.set_yticks(range(3)[::-1], [b[0] for b in bars], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1e3, MULTIBOX_OUTPUT * 30)
    ax.set_xlabel("output-layer weights (log scale)")
    ax.set_title("translation-invariant anchors keep the output layer small\n(Sec. 3.1.1)")
    fig.suptitle(f"Faster R-CNN ({_model.preset_name(model)}): the real shapes and parameter counts")
    footnote(fig, f"{ctx.model_note}; {ctx.image_note}; output-layer counts are weights (biases: {head['biases']} more)")
    save(fig, out / FILES[0])
    caption = (f"the pipeline with the shapes of one forward pass (feature map {_fmt(feat)}, {shapes['proposals'][0]} "
               f"proposals, pooled {_fmt(pooled)}) and parameters per part; RPN output layer {ours:,} weights "
               f"(paper: 2.8 x 10^4 for VGG-16, MultiBox 6.1 x 10^6)")
    return Result([Output(FILES[0], caption)], {"shapes": shapes, "parameters": counts, "rpn_output_layer": head})
