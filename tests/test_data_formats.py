"""The registry of data-set formats, and the YOLO txt and LabelMe readers: layouts, splits,
auto-detection beside VOC and COCO, every class of bad input, `data check` and `train`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fasterrcnn.cli import build_parser, main
from fasterrcnn.data import (
    DetectionDataset,
    ImageRecord,
    available_splits,
    build_dataset,
    detect_format,
    formats,
    has_split,
    is_single_file,
)
from fasterrcnn.data.labelme import LabelMeDataset
from fasterrcnn.data.yolo import YOLODataset, label_path, read_label_file
from fasterrcnn.errors import ConfigError, DataError

# --------------------------------------------------------------------------- fixtures


def image(path: Path, w: int = 64, h: int = 48) -> Path:
    """A real tiny RGB image (a red top-left quadrant on blue)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[...] = (40, 90, 160)
    arr[: h // 2, : w // 2] = (250, 20, 20)
    Image.fromarray(arr).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_yolo(root: Path, splits: dict, names=("cat", "dog"), layout: str = "images/{split}",
              yaml: str | None = "auto") -> Path:
    """splits: {split or None: {image name: label text or None (no label file)}}; images 64x48.
    layout: "images/{split}" (Ultralytics), "{split}/images" (Roboflow), or flat (split None).
    yaml: "auto" writes data.yaml with names and the splits, None writes classes.txt instead."""
    entries = {}
    for split, items in splits.items():
        folder = root / "images" if split is None else root / layout.format(split=split)
        entries[split] = os.path.relpath(folder, root)
        for name, label in items.items():
            img = image(folder / f"{name}.jpg")
            if label is not None:
                write(Path(label_path(str(img))), label)
    if yaml == "auto":
        lines = ["names:"] + [f"  - {n}" for n in names] + [f"{k}: {v}" for k, v in entries.items() if k]
        write(root / "data.yaml", "\n".join(lines) + "\n")
    elif yaml is None:
        if names is not None:
            write(root / "classes.txt", "\n".join(names) + "\n")
    else:
        write(root / "data.yaml", yaml)
    return root


def shape(label: str, points, shape_type: str | None = "rectangle") -> dict:
    out = {"label": label, "points": [list(p) for p in points], "group_id": None, "flags": {}}
    if shape_type is not None:
        out["shape_type"] = shape_type
    return out


def labelme_doc(image_path: str, shapes: list, w: int = 64, h: int = 48, **extra) -> dict:
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": h, "imageWidth": w, **extra}


def make_labelme(folder: Path, docs: dict[str, dict], images: bool = True) -> Path:
    """docs: {json stem: LabelMe document}; the images named by imagePath are written (64x48)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, doc in docs.items():
        (folder / f"{stem}.json").write_text(json.dumps(doc), encoding="utf-8")
        if images and isinstance(doc.get("imagePath"), str):
            image(folder / doc["imagePath"].replace("\\", "/"), doc.get("imageWidth", 64), doc.get("imageHeight", 48))
    return folder


def make_voc(root: Path) -> Path:
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    image(root / "JPEGImages" / "a.jpg")
    write(root / "Annotations" / "a.xml", "<annotation><filename>a.jpg</filename><object><name>cat</name>"
          "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
    write(root / "ImageSets/Main/train.txt", "a\n")
    return root


def make_coco(root: Path, name: str = "annotations/instances_train.json") -> Path:
    image(root / "images" / "a.jpg")
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10]}],
           "categories": [{"id": 1, "name": "cat"}]}
    write(root / name, json.dumps(doc))
    return root


@pytest.fixture
def yolo(tmp_path) -> Path:
    """data.yaml (names cat, dog; train/val) + images/{train,val} + labels/{train,val}."""
    return make_yolo(tmp_path / "yolo", {
        "train": {"a": "0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.125 0.25\n", "b": None, "c": ""},
        "val": {"d": "1 0.5 0.5 0.5 0.5\n"},
    })


@pytest.fixture
def labelme(tmp_path) -> Path:
    """A flat LabelMe folder: a rectangle (corners reversed), a polygon, a point and a circle."""
    return make_labelme(tmp_path / "labelme", {
        "a": labelme_doc("a.jpg", [
            shape("cat", [(30, 40), (10, 4)]),
            shape("dog", [(5, 5), (25, 8), (15, 30)], "polygon"),
            shape("cat", [(3, 3)], "point"),
            shape("dog", [(20, 20), (25, 20)], "circle"),
        ]),
        "b": labelme_doc("b.png", []),
    })


@pytest.fixture
def toy_format():
    """A format registered by a test: a folder with toy.txt of "x1 y1 x2 y2" lines, beside a.png."""

    def detect(path, split):
        return {"root": path} if os.path.isfile(os.path.join(path, "toy.txt")) else None

    def build(where, split, *, classes=None, transforms=None, seed=0, skip_empty=False, image_dir=None):
        boxes = np.loadtxt(os.path.join(where["root"], "toy.txt"), ndmin=2)
        rec = ImageRecord(os.path.join(where["root"], "a.png"), 0, "a", 48, 64, boxes.astype(np.float32),
                          np.ones(len(boxes), np.int64), np.zeros(len(boxes), bool))
        return DetectionDataset([rec], classes or ["thing"], transforms=transforms, seed=seed)

    reader = formats.Reader(detect=detect, build=build, splits=lambda p: ["only"] if detect(p, None) else None,
                            has_split=lambda p, s: s == "only" if detect(p, None) else None,
                            single_split=lambda p: detect(p, None) is not None)
    fmt = formats.register("toy", "toy (toy.txt beside a.png)", reader)
    yield fmt
    formats.unregister("toy")


# --------------------------------------------------------------------------- registry


def _format_actions(parser) -> dict[str, object]:
    """The data set --format action of every (sub)command."""
    found = {}
    for sub_action in parser._subparsers._group_actions:
        for name, sub in sub_action.choices.items():
            parsers = {name: sub}
            if name == "data":
                parsers = {"data check": sub._subparsers._group_actions[0].choices["check"]}
            for label, p in parsers.items():
                for action in p._actions:
                    if "--format" in action.option_strings and action.dest == "format":  # not detect's image format
                        found[label] = action
    return found


def test_every_format_choice_comes_from_the_registry(toy_format):
    actions = _format_actions(build_parser())
    assert set(actions) >= {"train", "eval", "data check"}  # (and any later command with a data --format)
    for action in actions.values():
        assert tuple(action.choices) == formats.choices() == ("auto", "voc", "coco", "yolo", "labelme", "toy")
        assert "toy: toy (toy.txt beside a.png)" in action.help
    from fasterrcnn.engine.config import TrainConfig

    TrainConfig(data="x", format="toy").validate()
    with pytest.raises(ConfigError, match="format: one of auto, voc, coco, yolo, labelme, toy"):
        TrainConfig(data="x", format="kitti").validate()
    with pytest.raises(ConfigError, match="format must be one of auto, voc, coco, yolo, labelme, toy, got 'kitti'"):
        build_dataset("x", "train", train=False, format="kitti")


def test_a_registered_format_is_detected_built_and_split(tmp_path, toy_format):
    root = tmp_path / "toy"
    image(root / "a.png")
    write(root / "toy.txt", "1 2 30 40\n5 5 9 9\n")
    assert detect_format(root) == ("toy", {"root": str(root)})
    for fmt in ("auto", "toy"):
        ds = build_dataset(root, "train", train=False, format=fmt)
        assert ds.annotation(0)["boxes"].tolist() == [[1, 2, 30, 40], [5, 5, 9, 9]]
    assert available_splits(root) == ["only"] and has_split(root, "only") and has_split(root, "x") is False
    assert is_single_file(root)
    # formats registered before it keep their place: a VOC folder is still VOC
    assert detect_format(make_voc(tmp_path / "voc"))[0] == "voc"
    with pytest.raises(DataError, match="layout not recognised: .*LabelMe .* or toy"):
        detect_format(tmp_path / "voc" / "JPEGImages")


def test_register_checks_names_and_replaces_on_request(toy_format):
    with pytest.raises(ValueError, match="already registered"):
        formats.register("toy", "again", toy_format.reader)
    for bad in ("auto", "Toy", "", "a b"):
        with pytest.raises(ValueError):
            formats.register(bad, "x", toy_format.reader)
    with pytest.raises(ValueError, match="one non-empty line"):
        formats.register("toy2", "two\nlines", toy_format.reader)
    formats.register("toy", "toy, replaced", toy_format.reader, replace=True)
    assert formats.get("toy").description == "toy, replaced" and formats.names()[-1] == "toy"
    with pytest.raises(ConfigError, match="got 'nope'"):
        formats.get("nope")


def test_the_registry_needs_no_torch():
    code = ("import sys; from fasterrcnn.data import formats; print(formats.choices(), formats.help_text()[:4], "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "('auto', 'voc', 'coco', 'yolo', 'labelme') data False"


def test_auto_detection_tells_the_four_formats_apart(tmp_path, yolo, labelme):
    assert detect_format(make_voc(tmp_path / "voc"))[0] == "voc"
    assert detect_format(make_coco(tmp_path / "coco"), "train")[0] == "coco"
    assert detect_format(yolo) == ("yolo", {"root": str(yolo), "yaml": str(yolo / "data.yaml")})
    assert detect_format(yolo / "data.yaml")[0] == "yolo"
    assert detect_format(labelme) == ("labelme", {"root": str(labelme)})
    # a COCO folder without the split's file keeps its message (its JSON is not a LabelMe file)
    coco_val = make_coco(tmp_path / "coco_val", "instances_val.json")
    with pytest.raises(DataError, match=r"no COCO annotation file for split 'train' \(found instances_val\.json\)"):
        detect_format(coco_val, "train")
    assert available_splits(coco_val) == ["val"] and has_split(coco_val, "train") is False
    with pytest.raises(DataError, match="layout not recognised: expected PASCAL VOC .*, COCO .*, YOLO txt .* or "
                                        "LabelMe"):
        detect_format(tmp_path / "voc" / "JPEGImages")
    with pytest.raises(DataError, match=r"not a data set \(expected a directory, a COCO \.json file or a YOLO "
                                        r"data\.yaml\)"):
        detect_format(tmp_path / "voc" / "ImageSets/Main/train.txt")
    with pytest.raises(DataError, match="not a yolo data set: expected YOLO txt"):
        build_dataset(labelme, "train", train=False, format="yolo")
    with pytest.raises(DataError, match="not a labelme data set: expected LabelMe"):
        build_dataset(yolo, "train", train=False, format="labelme")


# ------------------------------------------------------------------------------- YOLO


def test_yolo_yaml_with_split_folders(yolo):
    ds = build_dataset(yolo, "train", train=False, min_size=48, max_size=64)
    assert isinstance(ds, YOLODataset) and ds.classes == ["cat", "dog"] and ds.class_ids == [0, 1]
    assert ds.image_names == ["images/train/a.jpg", "images/train/b.jpg", "images/train/c.jpg"]
    a = ds.annotation(0)
    assert a["boxes"].tolist() == [[24, 12, 40, 36], [12, 6, 20, 18]] and a["labels"].tolist() == [1, 2]
    assert ds.report["images_without_label_file"] == 1 and ds.report["images_without_objects"] == 2
    assert ds.report.files("images_without_label_file") == [str(yolo / "images/train/b.jpg")]
    image_, target = ds[0]
    assert image_.shape == (3, 48, 64) and target["boxes"].shape == (2, 4)
    assert available_splits(yolo) == ["train", "val"] and has_split(yolo, "val") and has_split(yolo, "test") is False
    assert not is_single_file(yolo) and not is_single_file(yolo / "data.yaml")
    assert available_splits(yolo / "data.yaml") == ["train", "val"]
    val = build_dataset(yolo / "data.yaml", "val", train=False, classes=ds.classes)
    assert val.annotation(0)["labels"].tolist() == [2]
    assert len(build_dataset(yolo, None, train=False)) == 4  # every split
    train = build_dataset(yolo, "train", train=True, min_size=32, max_size=64)
    assert len(train) == 1 and train.report["images_skipped"] == 2  # without objects: left out of training
    with pytest.raises(DataError, match=r"data\.yaml: no split 'test'; available splits: train, val"):
        build_dataset(yolo, "test", train=False)


def test_yolo_names_mapping_classes_txt_and_user_classes(tmp_path):
    root = make_yolo(tmp_path / "map", {"train": {"a": "3 0.5 0.5 0.5 0.5\n0 0.5 0.5 0.2 0.2\n"}},
                     yaml="names:\n  0: person\n  3: car\nnc: 2\ntrain: images/train\n")
    ds = build_dataset(root, "train", train=False)
    assert ds.classes == ["person", "car"] and ds.annotation(0)["labels"].tolist() == [2, 1]
    only_car = build_dataset(root, "train", train=False, classes=["car"])
    assert only_car.annotation(0)["labels"].tolist() == [1] and only_car.class_ids == [3]
    assert only_car.report["unknown_class"] == 1
    with pytest.raises(DataError, match=r"data\.yaml: class\(es\) \['zebra'\] are not among its names"):
        build_dataset(root, "train", train=False, classes=["zebra"])
    # flat, classes.txt: one split, read whatever split is asked
    flat = make_yolo(tmp_path / "flat", {None: {"a": "1 0.5 0.5 0.5 0.5\n"}}, names=("cat", "dog"), yaml=None)
    assert detect_format(flat)[0] == "yolo" and is_single_file(flat) and available_splits(flat) is None
    assert has_split(flat, "train") is None
    for split in ("train", "test", None):
        ds = build_dataset(flat, split, train=False)
        assert ds.classes == ["cat", "dog"] and ds.annotation(0)["labels"].tolist() == [2]
    # no names at all: --classes names the ids
    bare = make_yolo(tmp_path / "bare", {None: {"a": "1 0.5 0.5 0.5 0.5\n"}}, names=None, yaml=None)
    with pytest.raises(DataError, match="no class names: expected 'names' in data.yaml or a classes.txt"):
        build_dataset(bare, "train", train=False)
    assert build_dataset(bare, "train", train=False, classes=["x", "y"]).annotation(0)["labels"].tolist() == [2]


def test_yolo_roboflow_layout_and_image_lists(tmp_path):
    # Roboflow: train/images, valid/images, and data.yaml entries written as "../train/images"
    root = make_yolo(tmp_path / "rf", {"train": {"a": "0 0.5 0.5 0.5 0.5\n"}, "valid": {"b": "0 0.5 0.5 0.5 0.5\n"}},
                     layout="{split}/images",
                     yaml="names: [cat]\nnc: 1\ntrain: ../train/images\nval: ../valid/images\n")
    assert available_splits(root) == ["train", "val"]
    assert build_dataset(root, "val", train=False).image_names == ["valid/images/b.jpg"]
    (root / "data.yaml").unlink()
    write(root / "classes.txt", "cat\n")
    assert detect_format(root)[0] == "yolo" and available_splits(root) == ["train", "valid"]
    # CVAT: data.yaml with path: . and train: train.txt listing the images
    cvat = make_yolo(tmp_path / "cvat", {"train": {"a": "0 0.5 0.5 0.5 0.5\n", "b": "0 0.1 0.1 0.1 0.1\n"}},
                     yaml="path: .\nnames: {0: cat}\ntrain: train.txt\n")
    write(cvat / "train.txt", "./images/train/b.jpg\nimages/train/a.jpg\n")
    assert build_dataset(cvat, "train", train=False).image_names == ["images/train/b.jpg", "images/train/a.jpg"]
    write(cvat / "train.txt", "images/train/a.jpg\nimages/train/ghost.jpg\n")
    with pytest.raises(DataError, match=r"train\.txt lists 1 image file\(s\) that do not exist: images/train/ghost"):
        build_dataset(cvat, "train", train=False)


def test_yolo_clipping_degenerate_and_polygons_are_counted(tmp_path):
    root = make_yolo(tmp_path / "y", {"train": {"a": (
        "0 0.995 0.5 0.02 0.5\n"  # sticks out on the right: clipped
        "0 1.005 0.5 0.02 0.5\n"  # x_center just beyond 1 (within the tolerance): clipped
        "0 0.5 0.5 0 0.5\n"  # no width: skipped
        "1 0.25 0.25 0.75 0.25 0.5 0.75\n"  # a triangle: its bounding box
        "\n"
    )}})
    ds = build_dataset(root, "train", train=False)
    boxes = ds.annotation(0)["boxes"]
    assert boxes.shape == (3, 4) and ds.annotation(0)["labels"].tolist() == [1, 1, 2]
    assert boxes[0].tolist() == pytest.approx([63.04, 12, 64, 36], abs=1e-4)
    assert boxes[2].tolist() == [16, 12, 48, 36]
    assert ds.report["boxes_clipped"] == 2 and ds.report["boxes_degenerate"] == 1
    assert ds.report["polygons_to_boxes"] == 1
    assert "line 3 (cat)" in " ".join(m.message for m in ds.report.messages)


@pytest.mark.parametrize("text, match", [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 x 0.2 0.2\n", r"a\.txt: line 2: 'x' is not a number"),
    ("0 0.5 0.5 0.2\n", r"a\.txt: line 1: 4 fields; expected 5"),
    ("0 0.5 0.5 0.2 0.2 0.3\n", r"a\.txt: line 1: 6 fields"),
    ("0 0.1 0.1 0.5 0.1 0.3 0.6 0.2\n", r"a\.txt: line 1: 8 fields"),  # not x y pairs
    ("7 0.5 0.5 0.2 0.2\n", r"a\.txt: line 1: class id 7 is not one of the 2 classes of .*data\.yaml \(ids 0-1\)"),
    ("1.5 0.5 0.5 0.2 0.2\n", r"a\.txt: line 1: class id '1\.5' is not a non-negative integer"),
    ("-1 0.5 0.5 0.2 0.2\n", r"a\.txt: line 1: class id '-1' is not a non-negative integer"),
    ("0 1.5 0.5 0.2 0.2\n", r"a\.txt: line 1: x_center 1\.5 is outside \[0, 1\]"),
    ("0 0.5 0.5 0.2 -0.2\n", r"a\.txt: line 1: height -0\.2 is outside \[0, 1\]"),
    ("0 0.5 0.5 0.2 1e400\n", r"a\.txt: line 1: height is inf, not a finite number"),
    ("0 0.5 0.5 2 0.2 0.3 0.2\n", r"a\.txt: line 1: x2 2 is outside \[0, 1\]"),
    ("0 0.5 0.5 nan 0.2\n", r"a\.txt: line 1: 'nan' is not a number"),
    (b"\xff\xfe0 0.5", r"a\.txt: cannot read the label file"),
])
def test_yolo_bad_label_lines_name_the_file_and_line(tmp_path, text, match):
    root = make_yolo(tmp_path / "y", {"train": {"a": ""}})
    label = root / "labels/train/a.txt"
    label.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=match):
        build_dataset(root, "train", train=False)


@pytest.mark.parametrize("yaml, match", [
    ("names: [cat, no]\ntrain: images/train\n", r"data\.yaml: names\[1\] is False .*quote the name"),
    ("names: [cat, cat]\ntrain: images/train\n", r"data\.yaml: class names appear twice: \['cat'\]"),
    ("names: [cat]\nnc: 2\ntrain: images/train\n", r"data\.yaml: nc is 2 but 'names' holds 1 classes"),
    ("names: cat\ntrain: images/train\n", r"data\.yaml: 'names' must be a list of class names or a mapping"),
    ("names: {x: cat}\ntrain: images/train\n", r"data\.yaml: 'names' key 'x' is not a class id"),
    ("names: {0: cat, '0': dog}\ntrain: images/train\n", r"data\.yaml: 'names' gives a class id twice"),
    ("names: [cat]\ntrain: images/train\nval: images/val\n", r"data\.yaml: 'val': images/val not found"),
    ("names: [cat]\ntrain: 3\n", r"data\.yaml: 'train' must be a path or a list of paths"),
    ("names: [cat\ntrain: images/train\n", r"data\.yaml: malformed YAML"),
    ("- names\n", r"data\.yaml: expected a mapping"),
])
def test_yolo_bad_data_yaml_names_the_file_and_field(tmp_path, yaml, match):
    root = make_yolo(tmp_path / "y", {"train": {"a": "0 0.5 0.5 0.2 0.2\n"}}, yaml=yaml)
    with pytest.raises(DataError, match=match):
        build_dataset(root, "train", train=False)


def test_yolo_label_file_without_image_and_bad_images(tmp_path):
    root = make_yolo(tmp_path / "y", {"train": {"a": "0 0.5 0.5 0.2 0.2\n"}})
    write(root / "labels/train/ghost.txt", "0 0.5 0.5 0.2 0.2\n")
    write(root / "labels/train/classes.txt", "cat\ndog\n")  # labelImg's: not an orphan
    with pytest.raises(DataError, match=r"1 label file\(s\) in .*labels/train have no image in .*images/train: "
                                        r"ghost\.txt"):
        build_dataset(root, "train", train=False)
    (root / "labels/train/ghost.txt").unlink()
    (root / "images/train/a.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"a\.jpg: not a readable image"):
        build_dataset(root, "train", train=False)
    write(root / "classes.txt", "cat\n\ndog\n")
    (root / "data.yaml").unlink()
    with pytest.raises(DataError, match=r"classes\.txt: line 2 must be a non-empty class name"):
        build_dataset(root, "train", train=False)


def test_yolo_label_parser_alone(tmp_path):
    f = write(tmp_path / "a.txt", "\ufeff1 0.5 0.5 0.2 0.4\r\n\r\n0 0.1 0.2 0.3 0.2 0.2 0.4\r\n")
    lines = read_label_file(str(f))
    assert lines.class_ids.tolist() == [1, 0] and lines.lines.tolist() == [1, 3]
    assert lines.polygon.tolist() == [False, True]
    np.testing.assert_allclose(lines.boxes, [[0.4, 0.3, 0.6, 0.7], [0.1, 0.2, 0.3, 0.4]])
    assert label_path(os.path.join("d", "images", "s", "images", "x.y.jpg")) == os.path.join(
        "d", "images", "s", "labels", "x.y.txt")
    assert label_path(os.path.join("d", "x.png")) == os.path.join("d", "x.txt")


# ---------------------------------------------------------------------------- LabelMe


def test_labelme_flat_folder(labelme):
    ds = build_dataset(labelme, "train", train=False)
    assert isinstance(ds, LabelMeDataset) and ds.classes == ["cat", "dog"] and ds.image_names == ["a", "b"]
    a = ds.annotation(0)
    assert a["boxes"].tolist() == [[10, 4, 30, 40], [5, 5, 25, 30]] and a["labels"].tolist() == [1, 2]
    assert ds.report["polygons_to_boxes"] == 1 and ds.report["shapes_skipped"] == 2
    assert ds.report["images_without_objects"] == 1
    assert any("shapes[3] (dog) is a 'circle' shape" in m.message for m in ds.report.messages)
    assert is_single_file(labelme) and available_splits(labelme) is None and has_split(labelme, "test") is None
    assert len(build_dataset(labelme, "test", train=False)) == 2  # one split, whatever is asked
    only_dog = build_dataset(labelme, None, train=False, classes=["dog"])
    assert only_dog.annotation(0)["labels"].tolist() == [1] and only_dog.report["unknown_class"] == 1


def test_labelme_split_folders_sizes_and_clipping(tmp_path):
    root = tmp_path / "lm"
    make_labelme(root / "train", {"a": labelme_doc("../images/a.jpg", [
        shape("cat", [(50, 10), (70, 30)]),  # partly outside the 64 px wide image: clipped
        shape("cat", [(80, 10), (90, 30)]),  # wholly outside: skipped
        shape("bird", [(1, 1), (9, 9), (1, 9)], None),  # no shape_type: a polygon
    ], h=40)})
    image(root / "images" / "a.jpg")  # 64x48, the JSON says 64x40
    make_labelme(root / "val", {"b": labelme_doc("b.jpg", [shape("cat", [(1, 1), (9, 9)])])})
    assert detect_format(root)[0] == "labelme" and available_splits(root) == ["train", "val"]
    assert has_split(root, "val") and has_split(root, "test") is False and not is_single_file(root)
    ds = build_dataset(root, "train", train=False)
    assert ds.classes == ["bird", "cat"] and ds.annotation(0)["boxes"].tolist() == [[50, 10, 64, 30], [1, 1, 9, 9]]
    assert ds.report["boxes_clipped"] == 1 and ds.report["boxes_degenerate"] == 1
    assert ds.report["size_mismatch"] == 1 and ds.report["polygons_to_boxes"] == 1
    assert ds.image_names == ["train/a"]
    with pytest.raises(DataError, match="no split 'test'; available splits: train, val"):
        build_dataset(root, "test", train=False)
    assert len(build_dataset(root, None, train=False)) == 2
    # --image-dir: the images looked up by file name
    other = tmp_path / "pictures"
    image(other / "b.jpg")
    (root / "val" / "b.jpg").unlink()
    ds = build_dataset(root, "val", train=False, image_dir=other)
    assert ds.files == [str(other / "b.jpg")]


@pytest.mark.parametrize("doc, match", [
    ("{not json", r"a\.json: malformed JSON"),
    ([1, 2], r"a\.json: expected a LabelMe JSON object"),
    ({"imagePath": "a.jpg"}, r"a\.json: missing required field 'shapes'"),
    (labelme_doc("a.jpg", {"a": 1}), r"a\.json: field 'shapes' must be a list"),
    (labelme_doc("a.jpg", [3]), r"a\.json: shapes\[0\] is not an object"),
    (labelme_doc("a.jpg", [shape("", [(1, 1), (5, 5)])]), r"a\.json: shapes\[0\]\.label must be a non-empty string"),
    (labelme_doc("a.jpg", [shape("cat", [(1, 1), (5, 5), (3, 3)])]), r"a\.json: shapes\[0\] is a rectangle of 3 points"),
    (labelme_doc("a.jpg", [shape("cat", [("1", 1), (5, 5)])]), r"a\.json: shapes\[0\]\.points must be a list of \[x, y\]"),
    (labelme_doc("a.jpg", [shape("cat", [(True, 1), (5, 5)])]), r"a\.json: shapes\[0\]\.points"),
    (labelme_doc("a.jpg", [shape("cat", [], "polygon")]), r"a\.json: shapes\[0\]\.points"),
    (labelme_doc("a.jpg", [{"label": "cat", "shape_type": "rectangle"}]), r"shapes\[0\] is missing required field 'points'"),
    (labelme_doc("a.jpg", [shape("cat", [(1, 1), (5, 5)], 3)]), r"a\.json: shapes\[0\]\.shape_type must be a string"),
    (labelme_doc("a.jpg", [], h="40"), r"a\.json: imageHeight must be an integer"),
    (labelme_doc(None, [], imageData="aGVsbG8="), r"a\.json: no imagePath: the image is only embedded as imageData"),
    (labelme_doc(None, []), r"a\.json: missing required field 'imagePath'"),
    (labelme_doc(7, []), r"a\.json: imagePath must be a string"),
])
def test_labelme_bad_json_names_the_file_and_field(tmp_path, doc, match):
    folder = tmp_path / "lm"
    folder.mkdir()
    image(folder / "a.jpg")
    (folder / "a.json").write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataError, match=match):
        LabelMeDataset(folder)


def test_labelme_missing_images_are_listed(tmp_path):
    folder = make_labelme(tmp_path / "lm", {
        "a": labelme_doc("a.jpg", []),
        "b": labelme_doc("..\\elsewhere\\b.jpg", [], imageData="aGVsbG8="),  # Windows separators
    }, images=False)
    image(folder / "a.jpg")
    with pytest.raises(DataError, match=r"1 image file\(s\) named by the LabelMe files in .*lm not found: "
                                        r"b\.json -> .*elsewhere/b\.jpg; 1 of them embed the image as imageData"):
        build_dataset(folder, "train", train=False)
    image(tmp_path / "elsewhere" / "b.jpg")
    assert len(build_dataset(folder, "train", train=False)) == 2
    # an absolute path of another machine: the image of that name beside the JSON
    (folder / "b.json").write_text(json.dumps(labelme_doc("C:\\Users\\me\\photos\\c.jpg", [])))
    image(folder / "c.jpg")
    assert build_dataset(folder, "train", train=False).files[1] == str(folder / "c.jpg")


# -------------------------------------------------------------------------------- CLI


def test_cli_data_check_yolo_and_labelme(yolo, labelme, capsys):
    assert main(["data", "check", str(yolo), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "YOLODataset" in out and "3 images, 2 objects" in out and "1 images without a label file" in out
    assert "all 3 images decode" in out
    assert main(["data", "check", str(labelme), "--format", "labelme", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "LabelMeDataset" and report["classes"] == ["cat", "dog"]
    assert report["report"]["counts"]["shapes_skipped"] == 2
    write(yolo / "labels/val/d.txt", "5 0.5 0.5 0.5 0.5\n")
    assert main(["data", "check", str(yolo), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fasterrcnn: error: ") and "d.txt: line 1: class id 5" in err and "\n" not in err


def test_cli_eval_split_on_a_flat_folder_is_refused(labelme, capsys):
    rc = main(["eval", "--detections", str(labelme / "a.json"), "--data", str(labelme), "--split", "test",
               "--out", str(labelme.parent / "ev")])
    assert rc == 2 and "has no splits" in capsys.readouterr().err


TRAIN = ["--preset", "small", "--min-size", "64", "--max-size", "96", "--max-iters", "2", "--workers", "0",
         "--no-progress", "--no-eval", "--epochs", "1"]


def _train(data: Path, out: Path, capsys) -> dict:
    rc = main(["train", "--data", str(data), "--out", str(out), *TRAIN])
    assert rc == 0, capsys.readouterr().err
    assert (out / "model_final.pt").is_file()
    return json.loads((out / "summary.json").read_text())


def test_train_on_a_yolo_folder(yolo, capsys):
    summary = _train(yolo, yolo.parent / "run", capsys)
    assert summary["classes"] == ["cat", "dog"]


def test_train_on_a_labelme_folder(labelme, capsys):
    summary = _train(labelme, labelme.parent / "run", capsys)
    assert summary["classes"] == ["cat", "dog"]
