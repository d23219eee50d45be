"""The synthetic shapes data set and the `fasterrcnn data` subcommands."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fasterrcnn.cli import main
from fasterrcnn.data import SYNTH_CLASSES, VOCDataset, build_dataset, build_loader
from fasterrcnn.data.synth import SynthConfig, generate, image_rng, render_image
from fasterrcnn.errors import ConfigError


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def synth50(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth50")
    generate(out, num_train=50, num_test=4, seed=0, progress=False)
    return out


def test_same_seed_identical_bytes_different_seed_differs(tmp_path, synth50):
    a = _files(synth50)
    generate(tmp_path / "b", num_train=6, num_test=4, seed=0, progress=False)
    b = _files(tmp_path / "b")
    assert len(b) == 6 + 4 + 6 + 4 + 2 + 1  # images, annotations, 2 split files, synth.json
    # the first images do not depend on how many were generated; test images not on --train
    for name, data in b.items():
        if name.startswith(("JPEGImages", "Annotations")):
            assert a[name] == data, name
    generate(tmp_path / "c", num_train=6, num_test=4, seed=0, progress=False, workers=2)
    assert _files(tmp_path / "c") == b  # worker processes: byte-identical
    generate(tmp_path / "d", num_train=6, num_test=4, seed=1, progress=False)
    d = _files(tmp_path / "d")
    assert all(d[n] != b[n] for n in b if n.startswith("JPEGImages"))


def test_statistics_cover_scales_ratios_and_counts(synth50):
    ds = VOCDataset(synth50, "train")
    assert len(ds) == 50 and ds.classes == sorted(SYNTH_CLASSES)
    assert ds.report.clean  # boxes inside the images, sizes agree, no unknown classes
    st = ds.stats()
    assert sum(1 for c in st["per_class"].values() if c["objects"] > 0) >= 5
    per_image, sizes, ratios, difficult = [], [], [], 0
    for i in range(len(ds)):
        ann = ds.annotation(i)
        b = ann["boxes"]
        h0, w0 = ann["orig_size"]
        assert 400 <= h0 <= 560 and 400 <= w0 <= 560
        per_image.append(len(b))
        w, h = (b[:, 2] - b[:, 0]), (b[:, 3] - b[:, 1])
        sizes += torch.sqrt(w * h).tolist()
        ratios += (w / h).tolist()
        difficult += int(ann["difficult"].sum())
    assert 1 <= min(per_image) <= 2 and 7 <= max(per_image) <= 8
    assert min(sizes) <= 25 and max(sizes) >= 300
    assert min(ratios) <= 0.4 and max(ratios) >= 2.5
    n = sum(per_image)
    assert 0 < difficult < 0.25 * n
    # sizes spread over the whole log range, not bunched at one end
    logs = np.log(sizes)
    assert np.percentile(logs, 25) < math.log(60) and np.percentile(logs, 75) > math.log(120)


def test_render_boxes_are_visible_extents():
    cfg = SynthConfig()
    for i in range(5):
        img, objects = render_image(image_rng(3, "train", i), cfg)
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and img.shape[2] == 3
        for o in objects:
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert o.visible >= cfg.min_visible - 1e-9
            fx1, fy1, fx2, fy2 = o.full_box  # the visible box lies inside the shape's box
            assert fx1 <= x1 and fy1 <= y1 and x2 <= fx2 and y2 <= fy2


def test_classes_subset_and_validation(tmp_path):
    r = generate(tmp_path / "s", num_train=4, num_test=0, classes=("star", "ring"), progress=False)
    assert set(k for k, v in r["per_class"].items() if v) <= {"star", "ring"}
    ds = VOCDataset(tmp_path / "s", "train")
    assert set(ds.classes) <= {"star", "ring"}
    with pytest.raises(ConfigError, match="unknown shape"):
        generate(tmp_path / "x", classes=("blob",), progress=False)
    with pytest.raises(ConfigError):
        SynthConfig(min_size=300, max_size=200).validate()


def test_synth_flows_through_the_training_pipeline(synth50):
    train = build_dataset(synth50, "train", train=True, min_size=224, max_size=400, seed=0)
    test = build_dataset(synth50, "test", train=False, classes=train.classes, min_size=224)
    assert len(test) == 4 and test.classes == train.classes
    loader = build_loader(train, batch_size=4, shuffle=True, seed=0, epoch=0, num_workers=0)
    images, targets = next(iter(loader))
    for im, t in zip(images, targets, strict=True):
        assert im.shape[0] == 3 and min(im.shape[1:]) == 224
        assert t["labels"].min() >= 1 and t["labels"].max() <= len(train.classes)
        assert (t["boxes"][:, 2:] <= torch.tensor([im.shape[2], im.shape[1]])).all()


# ------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("argv", [["data"], ["data", "synth"], ["data", "check"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: fasterrcnn data" in out
    if argv[-1] == "synth":
        assert "--out" in out and "--seed" in out and "--train" in out
    if argv[-1] == "check":
        assert "--split" in out and "--format" in out


def test_cli_synth_then_check(tmp_path, capsys):
    out = tmp_path / "tiny"
    rc = main(["data", "synth", "--out", str(out), "--train", "3", "--test", "2", "--seed", "5",
               "--quiet", "--min-size", "200", "--max-size", "240"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert str(out) in text and "3 train + 2 test" in text
    assert len(list((out / "JPEGImages").glob("*.jpg"))) == 5
    assert (out / "ImageSets/Main/train.txt").read_text().split() == [
        "train_000000", "train_000001", "train_000002"
    ]  # fmt: skip
    rc = main(["data", "check", str(out), "--split", "test"])
    text = capsys.readouterr().out
    assert rc == 0 and "VOCDataset" in text and "2 images" in text and "all 2 images decode" in text
    data = (out / "JPEGImages/test_000001.jpg").read_bytes()
    (out / "JPEGImages/test_000001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    rc = main(["data", "check", str(out), "--split", "test"])
    captured = capsys.readouterr()
    assert rc == 1 and "test_000001.jpg" in captured.out
    rc = main(["data", "check", str(tmp_path / "missing")])
    assert rc == 2 and "missing: data set path not found" in capsys.readouterr().err
    rc = main(["data", "synth", "--out", str(tmp_path / "bad"), "--classes", "blob"])
    assert rc == 2 and "unknown shape" in capsys.readouterr().err


def test_rigid_shapes_keep_their_proportions_others_span_1_3_to_3_1():
    from fasterrcnn.data.synth import RIGID_CLASSES

    cfg = SynthConfig()
    aspects: dict[bool, list[float]] = {True: [], False: []}
    for i in range(60):
        _, objects = render_image(image_rng(7, "train", i), cfg)
        for o in objects:
            x0, y0, x1, y1 = o.full_box  # the whole shape's box, before occlusion and truncation
            aspects[o.name in RIGID_CLASSES].append((x1 - x0) / (y1 - y0))
    rigid, other = np.array(aspects[True]), np.array(aspects[False])
    # rounding to whole pixels moves tiny boxes' aspect a little beyond 1.3
    assert len(rigid) > 20 and rigid.max() <= 1.3 * 1.15 and rigid.min() >= 1 / (1.3 * 1.15)
    assert other.max() > 2.5 and other.min() < 1 / 2.5  # the 1:3..3:1 boxes are there


def test_textures_option(tmp_path):
    cfg = SynthConfig(textures=("solid",))
    _, objects = render_image(image_rng(0, "train", 3), cfg)
    assert objects and {o.texture for o in objects} == {"solid"}
    with pytest.raises(ConfigError, match="textures must be a non-empty subset"):
        SynthConfig(textures=("plaid",)).validate()
