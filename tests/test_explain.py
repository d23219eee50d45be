"""`fasterrcnn explain`: every picture on a tiny `small` model and a 160x128 image writes
non-empty PNGs whose numbers are checked against the library (the labelling against the RPN
target function, the anchors against generate_base_anchors, the shapes against a real
forward pass, the pooled grid against its drawn bins), and the HTML page's explorer is driven
in headless Chromium."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

SCALES = (2.0, 4.0, 8.0)  # anchors of 32, 64, 128 px for a 160x128 image
BOXES = [[20.0, 24.0, 70.0, 90.0], [96.0, 40.0, 150.0, 72.0]]
VOC_XML = """<annotation><filename>img.jpg</filename><size><width>160</width><height>128</height><depth>3</depth></size>
{}</annotation>"""
OBJ = "<object><name>{}</name><difficult>0</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


def _png_ok(path: Path) -> None:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        arr = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))
    assert min(arr.shape) >= 200 and float(arr.std()) > 5, f"{path} looks blank"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 160x128 image in VOC layout (JPEGImages/img.jpg + Annotations/img.xml) and a
    checkpoint of a random `small` model sized for it (shorter side 128, anchors 32-128 px)."""
    from PIL import Image, ImageDraw

    import fasterrcnn

    root = tmp_path_factory.mktemp("explain")
    (root / "JPEGImages").mkdir()
    (root / "Annotations").mkdir()
    g = torch.Generator().manual_seed(0)
    arr = (torch.rand(128, 160, 3, generator=g) * 80 + 60).to(torch.uint8).numpy()
    im = Image.fromarray(arr)
    draw = ImageDraw.Draw(im)
    draw.ellipse(BOXES[0], fill=(220, 40, 40))
    draw.rectangle(BOXES[1], fill=(30, 200, 60))
    im.save(root / "JPEGImages" / "img.jpg", quality=95)
    objs = "".join(OBJ.format(n, b[0] + 1, b[1] + 1, b[2], b[3]) for n, b in zip(("circle", "square"), BOXES))
    (root / "Annotations" / "img.xml").write_text(VOC_XML.format(objs))
    torch.manual_seed(0)
    model = fasterrcnn.build_model("small", 2, min_size=128, max_size=160, anchors={"scales": list(SCALES)},
                                   class_names=["circle", "square"])
    ckpt = fasterrcnn.save_checkpoint(root / "model.pt", model)
    return {"image": root / "JPEGImages" / "img.jpg", "checkpoint": Path(ckpt), "root": root}


@pytest.fixture(scope="module")
def drawn(tiny):
    """`explain all` through the Python API (the CLI's path): {name: Result}, the context, the folder."""
    from fasterrcnn.explain import run
    from fasterrcnn.explain._common import Context, read_rgb, read_voc_boxes, voc_xml_for

    image = read_rgb(tiny["image"])
    gt, names = read_voc_boxes(voc_xml_for(tiny["image"]))
    ctx = Context(image, image_note="test image", gt_boxes=gt, gt_names=names, gt_note="VOC XML",
                  checkpoint=tiny["checkpoint"], presets=["small"], scales=[96, 128, 160], seed=3)
    out = tiny["root"] / "out"
    out.mkdir()
    return {"results": run("all", ctx, out), "ctx": ctx, "out": out}


def test_every_picture_writes_its_files(drawn):
    from fasterrcnn.explain import PAGE, planned_files

    results, out = drawn["results"], drawn["out"]
    assert not [n for n, r in results.items() if isinstance(r, Exception)]
    files = planned_files("all")
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    for f in files:
        if f != PAGE:
            _png_ok(out / f)
    written = [o.file for r in results.values() for o in r.outputs]
    assert sorted(written) == sorted(files) and all(o.caption for r in results.values() for o in r.outputs)


def test_anchor_boxes_are_generate_base_anchors(drawn, tiny):
    from fasterrcnn.anchors import generate_base_anchors
    from fasterrcnn.ops import box_iou

    d = drawn["results"]["anchors"].data
    assert torch.equal(torch.tensor(d["base_anchors"]), generate_base_anchors(16, (0.5, 1.0, 2.0), SCALES))
    # best-anchor IoU per object, against a brute-force tiling of the same anchors (image at scale 1)
    from fasterrcnn.anchors import grid_anchors

    anchors = grid_anchors(generate_base_anchors(16, (0.5, 1.0, 2.0), SCALES), (8, 10), 16)
    best = box_iou(torch.tensor(BOXES), anchors).max(dim=1).values
    assert d["best_iou"]["stride16"] == pytest.approx(best.tolist(), abs=1e-4)
    assert d["num_anchors"] == {"stride16": 8 * 10 * 9, "stride8": 16 * 20 * 9}


def _network_inputs(model, image):
    batch = model.transform([image])
    feats = model.backbone(batch.tensor)
    feats = next(iter(feats.values())) if isinstance(feats, dict) else feats
    return batch, feats


def test_label_counts_equal_the_rpn_target_function(drawn):
    """The counts drawn are the library's: the same sample as rpn_anchor_targets under the same
    seed, and the labelling equals the paper's rule computed by brute force."""
    from fasterrcnn.anchors import anchors_inside, generate_base_anchors, grid_anchors
    from fasterrcnn.modeling.config import RPNConfig
    from fasterrcnn.modeling.rpn import rpn_anchor_targets
    from fasterrcnn.ops import BoxCoder, box_iou

    ctx, d = drawn["ctx"], drawn["results"]["labels"].data
    batch, feats = _network_inputs(ctx.model, ctx.image)
    fh, fw = feats.shape[-2:]
    anchors = grid_anchors(generate_base_anchors(16, (0.5, 1.0, 2.0), SCALES), (fh, fw), 16)
    sy, sx = batch.scales[0]
    gt = ctx.gt_boxes * torch.tensor([sx, sy, sx, sy])
    size = batch.image_sizes[0]
    torch.manual_seed(ctx.seed)
    t = rpn_anchor_targets(anchors, gt, size, RPNConfig(), BoxCoder((1.0, 1.0, 1.0, 1.0)))
    c = d["counts"]
    assert d["sampled"] == t.sampled.tolist()
    assert (c["sampled"], c["sampled_positive"], c["sampled_negative"]) == (
        t.sampled.numel(), int((t.labels == 1).sum()), int((t.labels == 0).sum()))
    inside = anchors_inside(anchors, size, 0.0)
    iou = box_iou(gt, anchors)
    best = iou.max(dim=0).values
    gt_best = iou.masked_fill(~inside, -1).max(dim=1, keepdim=True).values
    pos = ((best > 0.7) | ((iou == gt_best) & (gt_best > 0)).any(0)) & inside
    neg = (best < 0.3) & inside & ~pos
    assert c["positive"] == int(pos.sum()) > 0 and c["negative"] == int(neg.sum()) > 0
    assert c["cross_boundary"] == int((~inside).sum()) and c["anchors"] == anchors.shape[0]
    assert c["ignored"] == int(inside.sum() - pos.sum() - neg.sum())


def test_architecture_shapes_equal_a_forward_pass(drawn):
    ctx, d = drawn["ctx"], drawn["results"]["architecture"].data
    model, s = ctx.model, drawn["results"]["architecture"].data["shapes"]
    batch, feats = _network_inputs(model, ctx.image)
    num_props = len(model.propose([ctx.image])[0]["boxes"])
    dets = model([ctx.image])[0]
    k, K = 9, model.num_classes
    assert s["network_input"] == list(batch.tensor.shape) and s["feature_map"] == list(feats.shape)
    h, w = feats.shape[-2:]
    assert s["rpn_cls"] == [1, 2 * k, h, w] and s["rpn_reg"] == [1, 4 * k, h, w]
    assert s["anchors"] == [h * w * k, 4] and s["proposals"] == [num_props, 4]
    assert s["pooled"] == [num_props, feats.shape[1], 7, 7]
    assert s["cls_score"] == [num_props, K + 1] and s["bbox_pred"] == [num_props, 4 * (K + 1)]
    assert s["detections"] == list(dets["boxes"].shape)
    head = d["rpn_output_layer"]
    assert head["weights"] == 128 * (4 + 2) * 9 and sum(d["parameters"].values()) == sum(p.numel() for p in model.parameters())


def test_roi_pool_grid_and_outputs(drawn):
    d = drawn["results"]["roi-pool"].data
    n = d["output_size"]
    assert n == 7 and len(d["bins"]["rows"]) == n and len(d["bins"]["cols"]) == n
    # the maximum over each drawn sub-window is the op's pooled value
    assert torch.allclose(torch.tensor(d["pooled"]), torch.tensor(d["bin_max"]))
    assert torch.tensor(d["roi_align"]).shape == (n, n)


def test_rpn_losses_timing_multiscale_numbers(drawn):
    r = drawn["results"]
    rpn = r["rpn"].data
    assert 0 < rpn["num_kept"] <= 300 and rpn["num_kept"] <= rpn["num_before_nms"] <= 6000
    rf = rpn["receptive_field"]
    assert rf["window"] == rf["trunk"] + 32
    at = r["losses"].data["at_x_max"]
    assert at["smooth L1, beta = 1"] == [2.5, 1.0] and at["L2 (0.5 x^2)"] == [4.5, 3.0] and at["L1 (|x|)"] == [3.0, 1.0]
    t = r["timing"].data
    try:
        import cv2  # noqa: F401

        has_ss = hasattr(cv2, "ximgproc")
    except ImportError:
        has_ss = False
    names = list(t["systems"])
    assert any(n.startswith("RPN + Fast R-CNN (small") for n in names)
    assert any(n.startswith("SS + Fast R-CNN (small") for n in names) == has_ss
    assert all(v["total"] > 0 for v in t["systems"].values())
    m = r["multiscale"].data
    assert m["pyramid"]["sizes"] == [96, 128, 160] and m["single"]["size"] == 128
    assert m["single"]["ms"] > 0 and len(m["pyramid"]["ms"]) == 3


def test_receptive_fields_are_the_papers():
    """VGG-16 228 px and ZF 171 px for the 3x3 window (Sec. 3.1), from the trunks' layers."""
    import fasterrcnn
    from fasterrcnn.explain import _model

    for preset, window in (("vgg16", 228), ("zf", 171)):
        rf = _model.receptive_field(fasterrcnn.build_model(preset, 20))
        assert rf["window"] == window and rf["how"] == "computed from the trunk's layers"


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _browse(url: str, *extra: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _drawn_anchors(dom: str) -> tuple[list[dict], str]:
    svg = re.search(r'<svg id="explorer"[^>]*>', dom).group(0)
    anchors = json.loads(html.unescape(re.search(r'data-anchors="([^"]*)"', svg).group(1)))
    return anchors, re.search(r'data-position="([^"]*)"', svg).group(1)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium); CI installs it")
def test_page_explorer_in_headless_chromium(drawn, tmp_path):
    from PIL import Image

    from fasterrcnn.anchors import generate_base_anchors

    page = (drawn["out"] / "index.html").resolve()
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 9 and "http://" not in text.replace("http://www.w3.org", "")
    base = generate_base_anchors(16, (0.5, 1.0, 2.0), SCALES)
    t = (0.25, -0.1, 0.2, -0.3)
    for (x, y), sizes in (((20, 20), None), ((140, 110), "32")):
        dom = _browse(page.as_uri() + f"#click={x},{y}" + (f"&sizes={sizes}" if sizes else "") + "&t=" + ",".join(map(str, t)),
                      "--dump-dom")
        anchors, position = _drawn_anchors(dom)
        # the slider box is Eq. 2 applied to the selected anchor (the most confident one drawn)
        svg = re.search(r'<svg id="explorer"[^>]*>', dom).group(0)
        sel = max(anchors, key=lambda a: a["score"])
        assert int(re.search(r'data-selected="(\d+)"', svg).group(1)) == sel["a"]
        x1, y1, x2, y2 = sel["anchor"]
        wa, ha = x2 - x1, y2 - y1
        cx, cy, w, h = x1 + wa / 2 + t[0] * wa, y1 + ha / 2 + t[1] * ha, wa * math.exp(t[2]), ha * math.exp(t[3])
        param = json.loads(html.unescape(re.search(r'data-param="([^"]*)"', svg).group(1)))
        assert param == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], abs=0.06)
        j, i = (min(max(round((v - 8.5) / 16), 0), n - 1) for v, n in ((x, 10), (y, 8)))  # scale 1, map 8x10
        assert position == f"{j},{i}"
        # generate_base_anchors enumerates the ratios first, then the scales: a % 3 == 0 are the 32 px ones
        want = [a for a in range(9) if sizes is None or a % 3 == 0]
        assert [a["a"] for a in anchors] == want
        for a in anchors:
            expected = (base[a["a"]] + torch.tensor([j * 16.0, i * 16.0] * 2)).tolist()
            assert a["anchor"] == pytest.approx(expected, abs=0.06) and 0 <= a["score"] <= 1 and len(a["regressed"]) == 4
        if sizes is None:
            first = anchors
    assert [a["anchor"] for a in first] != [a["anchor"] for a in anchors]
    shot = tmp_path / "shot.png"
    _browse(page.as_uri() + "#click=80,64", "--hide-scrollbars", "--window-size=1000,800", f"--screenshot={shot}")
    with Image.open(shot) as im:
        assert im.size == (1000, 800)
        grey = torch.from_numpy(np.asarray(im.convert("L"), dtype=np.float32))
    assert float(grey.std()) > 20, "the screenshot is blank"


def test_cli_writes_prints_and_refuses_to_overwrite(tiny, tmp_path, capsys):
    from fasterrcnn.cli import main

    out = tmp_path / "cli"
    assert main(["explain", "anchors", str(tiny["image"]), "--boxes", "20,24,70,90", "--min-size", "128",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "freshly built `small` model with random weights" in printed
    assert f"{out / 'anchors.png'}  the 9 base anchors" in printed and "--boxes (1 box)" in printed
    _png_ok(out / "anchors.png")
    assert main(["explain", "anchors", str(tiny["image"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fasterrcnn: error: --out") and "--overwrite" in err and "\n" not in err
    assert main(["explain", "losses", "--out", str(out), "--overwrite"]) == 0
    assert "losses.png" in capsys.readouterr().out and (out / "losses.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["labels", "{image_plain}"], "needs ground-truth boxes"),
    (["anchors", "{image}", "--boxes", "10,10,5,40"], "no positive width and height"),
    (["rpn", "{image}", "--checkpoint", "{missing}"], "does not exist"),
    (["timing", "--presets", "small,nope"], "unknown preset"),
    (["roi-pool", "{image}", "--preset", "mobilenet_v3_large_fpn"], "pyramid levels"),
])
def test_cli_errors_are_one_line(tiny, tmp_path, capsys, args, message):
    from fasterrcnn.cli import main

    plain = tmp_path / "plain.jpg"
    shutil.copy(tiny["image"], plain)
    filled = [a.format(image=tiny["image"], image_plain=plain, missing=tmp_path / "none.pt") for a in args]
    assert main(["explain", *filled, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fasterrcnn: error:") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()
