"""Data layer: VOC/COCO readers and their validation, transforms, loader, the raccoon set."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasterrcnn.data import (
    VOC_CLASSES,
    COCODataset,
    DataReport,
    DetectionDataset,
    VOCDataset,
    build_dataset,
    build_loader,
    build_transforms,
    collate,
    read_image,
)
from fasterrcnn.data.transforms import (
    Compose,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    hflip,
    to_rgb,
)
from fasterrcnn.errors import ConfigError, DataError
from fasterrcnn.modeling.transform import resized_size

# ../shared/datasets/raccoon relative to the checkout (absent in users' clones: tests skip)
RACCOON = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon"


# --------------------------------------------------------------------------- fixtures


def _image(path: Path, w: int, h: int, colour=(40, 90, 160), mode="RGB") -> Path:
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[...] = colour
    arr[: h // 2, : w // 2] = (250, 20, 20)  # a red top-left quadrant, to check orientation
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return path


def _obj(name, xmin, ymin, xmax, ymax, difficult=0) -> str:
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
        f"</bndbox></object>"
    )


def _xml(filename: str, w: int, h: int, objects: list[str]) -> str:
    return (
        f"<annotation><filename>{filename}</filename>"
        f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        + "".join(objects)
        + "</annotation>"
    )


def make_voc(root: Path, items: dict[str, tuple], split="train", ext="jpg") -> Path:
    """items: id -> (w, h, [objects xml], annotated size or None)."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for image_id, (w, h, objs, *size) in items.items():
        aw, ah = size[0] if size and size[0] else (w, h)
        _image(root / "JPEGImages" / f"{image_id}.{ext}", w, h)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            _xml(f"{image_id}.{ext}", aw, ah, objs)
        )
    (root / "ImageSets/Main" / f"{split}.txt").write_text("".join(i + "\n" for i in items))
    return root


@pytest.fixture
def voc(tmp_path) -> Path:
    return make_voc(
        tmp_path / "voc",
        {
            "a": (64, 48, [_obj("dog", 11, 6, 40, 30), _obj("cat", 1, 1, 64, 48, difficult=1)]),
            "b": (50, 60, [_obj("cat", 5, 5, 20, 25)]),
        },
    )


def make_coco(root: Path, data: dict | None = None, sizes=None) -> tuple[Path, Path]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    sizes = sizes or {1: (64, 48), 5: (40, 30)}
    for iid, (w, h) in sizes.items():
        _image(root / "images" / f"im{iid}.png", w, h)
    if data is None:
        data = {
            "images": [
                {"id": 1, "file_name": "im1.png", "width": 64, "height": 48},
                {"id": 5, "file_name": "im5.png", "width": 40, "height": 30},
            ],
            "categories": [{"id": 7, "name": "zebra"}, {"id": 3, "name": "apple"}],
            "annotations": [
                {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
                {"id": 12, "image_id": 5, "category_id": 3, "bbox": [1.5, 2, 10, 20]},
            ],
        }
    jpath = root / "instances_train.json"
    jpath.write_text(json.dumps(data) if isinstance(data, dict) else data)
    return root / "images", jpath


# ------------------------------------------------------------------------------- VOC


def test_voc_reads_boxes_labels_difficult(voc):
    ds = VOCDataset(voc, "train")
    assert isinstance(ds, DetectionDataset) and len(ds) == 2
    assert ds.classes == ["cat", "dog"]  # sorted names found in the split
    ann = ds.annotation(0)
    # VOC 1-based inclusive -> continuous: x1 = xmin - 1, x2 = xmax
    assert ann["boxes"].tolist() == [[10, 5, 40, 30], [0, 0, 64, 48]]
    assert ann["boxes"].dtype == torch.float32
    assert ann["labels"].tolist() == [2, 1] and ann["labels"].dtype == torch.int64
    assert ann["difficult"].tolist() == [False, True] and ann["difficult"].dtype == torch.bool
    assert ann["orig_size"] == (48, 64) and ann["image_id"] == 0
    assert ann["file"].endswith("a.jpg")
    image, target = ds[1]  # no transforms: the original image, as a float tensor
    assert image.shape == (3, 60, 50) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.equal(target["boxes"], ds.annotation(1)["boxes"])
    assert ds.report.clean and ds.report.num_objects == 3 and ds.report.num_difficult == 1
    assert ds.image_names == ["a", "b"] and ds.image_sizes == [(48, 64), (60, 50)]
    st = ds.stats()
    assert st["per_class"]["cat"] == {"objects": 2, "difficult": 1, "images": 2}


def test_voc_given_classes_and_unknown_names(voc, caplog):
    with caplog.at_level(logging.WARNING, logger="fasterrcnn.data"):
        ds = VOCDataset(voc, "train", classes=["dog", "horse"])
    assert ds.classes == ["dog", "horse"]
    assert ds.annotation(0)["labels"].tolist() == [1]
    assert ds.report["unknown_class"] == 2  # both cats
    assert ds.report.files("unknown_class") == [
        str(voc / "Annotations/a.xml"),
        str(voc / "Annotations/b.xml"),
    ]
    assert "a.xml" in caplog.text and "cat" in caplog.text
    assert ds.report["images_without_objects"] == 1
    assert "2 objects of unknown classes skipped" in ds.report.summary()
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane"
    with pytest.raises(ConfigError, match="duplicates"):
        VOCDataset(voc, "train", classes=["dog", "dog"])


def test_voc_missing_image_named_at_construction(voc):
    os.remove(voc / "JPEGImages/b.jpg")
    with pytest.raises(DataError, match=r"b\.jpg"):
        VOCDataset(voc, "train")


def test_voc_malformed_xml(voc):
    (voc / "Annotations/b.xml").write_text("<annotation><object><name>cat</name>")
    with pytest.raises(DataError, match=r"b\.xml: malformed XML"):
        VOCDataset(voc, "train")


@pytest.mark.parametrize(
    "obj, field",
    [
        ("<object><difficult>0</difficult><bndbox><xmin>1</xmin></bndbox></object>", "<name>"),
        ("<object><name>cat</name></object>", "<bndbox>"),
        (
            "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>",
            "<ymax>",
        ),
        (_obj("cat", "one", 1, 5, 5), "<xmin>"),
        (_obj("cat", 1, 1, "nan", 5), "<xmax>"),
    ],
)
def test_voc_missing_or_bad_fields(voc, obj, field):
    (voc / "Annotations/b.xml").write_text(_xml("b.jpg", 50, 60, [obj]))
    with pytest.raises(DataError, match=rf"b\.xml: .*{field}"):
        VOCDataset(voc, "train")


def test_voc_split_lists_id_without_annotation(voc):
    (voc / "ImageSets/Main/train.txt").write_text("a\nb\nghost\n")
    with pytest.raises(DataError, match=r"train\.txt.*ghost\.xml"):
        VOCDataset(voc, "train")
    with pytest.raises(DataError, match=r"val\.txt: split file not found; available splits: train"):
        VOCDataset(voc, "val")


def test_voc_corrupt_and_truncated_images(voc):
    data = (voc / "JPEGImages/b.jpg").read_bytes()
    (voc / "JPEGImages/b.jpg").write_bytes(data[: len(data) // 2])  # truncated: header intact
    ds = VOCDataset(voc, "train")
    ds[0]
    with pytest.raises(DataError, match=r"b\.jpg: corrupt or truncated"):
        ds[1]
    (voc / "JPEGImages/b.jpg").write_bytes(b"this is not an image at all")
    with pytest.raises(DataError, match=r"b\.jpg: not a readable image"):
        VOCDataset(voc, "train")


def test_voc_boxes_clipped_degenerate_skipped_size_mismatch(tmp_path, caplog):
    root = make_voc(
        tmp_path / "v",
        {
            "c": (
                40,
                30,
                [
                    _obj("cat", -4, 3, 50, 20),  # outside left and right: clipped to (0, 2, 40, 20)
                    _obj("cat", 10, 10, 9, 20),  # xmax < xmin - 1: negative width, skipped
                    _obj("cat", 45, 5, 60, 20),  # wholly outside the image: skipped
                    _obj("dog", 5, 5, 5, 5),  # one pixel: kept (1x1 in continuous coordinates)
                ],
                (80, 60),  # <size> disagrees with the 40x30 file
            )
        },
    )
    with caplog.at_level(logging.WARNING, logger="fasterrcnn.data"):
        ds = VOCDataset(root, "train")
    ann = ds.annotation(0)
    assert ann["boxes"].tolist() == [[0, 2, 40, 20], [4, 4, 5, 5]]
    assert ann["orig_size"] == (30, 40)
    r = ds.report
    assert r["boxes_clipped"] == 1 and r["boxes_degenerate"] == 2 and r["size_mismatch"] == 1
    assert "c.xml" in caplog.text and "clipped" in caplog.text
    assert not r.clean
    s = r.summary()
    assert "1 boxes clipped" in s and "2 boxes of zero or negative area skipped" in s
    assert "c.xml" in s


def test_voc_images_without_objects_and_skip_empty(tmp_path):
    root = make_voc(
        tmp_path / "v",
        {
            "x": (30, 30, []),
            "y": (30, 30, [_obj("cat", 2, 2, 10, 10, difficult=1)]),
            "z": (30, 30, [_obj("cat", 2, 2, 10, 10)]),
        },
    )
    ds = VOCDataset(root, "train")
    assert len(ds) == 3 and ds.report["images_without_objects"] == 1
    image, target = ds[0]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    train = build_dataset(root, "train", train=True, min_size=32, max_size=64)
    assert len(train) == 1 and train.report["images_skipped"] == 2
    assert train.files[0].endswith("z.jpg")


def test_voc_image_found_by_id_when_filename_differs(tmp_path):
    root = make_voc(tmp_path / "v", {"p": (20, 20, [_obj("cat", 1, 1, 5, 5)])}, ext="png")
    (root / "Annotations/p.xml").write_text(
        _xml("elsewhere/IMG_1.JPG", 20, 20, [_obj("cat", 1, 1, 5, 5)])
    )
    ds = VOCDataset(root, "train")
    assert ds.files[0].endswith("p.png")


# ------------------------------------------------------------------------------ COCO


def test_coco_reads_and_maps_categories(tmp_path):
    image_dir, jpath = make_coco(tmp_path)
    ds = COCODataset(image_dir, jpath)
    assert ds.classes == ["apple", "zebra"] and ds.category_ids == [3, 7]
    a0, a1 = ds.annotation(0), ds.annotation(1)
    assert a0["image_id"] == 1 and a1["image_id"] == 5
    assert a0["boxes"].tolist() == [[10, 5, 30, 15]] and a0["labels"].tolist() == [2]
    assert a1["boxes"].tolist() == [[1.5, 2, 11.5, 22]] and a1["labels"].tolist() == [1]
    assert ds.category_ids[a0["labels"][0] - 1] == 7
    assert ds.report["crowd_excluded"] == 1
    assert a0["difficult"].tolist() == [False]
    image, target = ds[1]
    assert image.shape == (3, 30, 40)
    sub = COCODataset(image_dir, jpath, classes=["zebra"])
    assert sub.category_ids == [7] and sub.report["unknown_class"] == 1
    with pytest.raises(DataError, match=r"instances_train\.json.*'giraffe'"):
        COCODataset(image_dir, jpath, classes=["giraffe"])


def test_coco_malformed_json_and_missing_fields(tmp_path):
    image_dir, jpath = make_coco(tmp_path, data='{"images": [}')
    with pytest.raises(DataError, match=r"instances_train\.json: malformed JSON"):
        COCODataset(image_dir, jpath)
    base = {
        "images": [{"id": 1, "file_name": "im1.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}],
    }
    for broken, field in [
        ({k: v for k, v in base.items() if k != "annotations"}, "'annotations'"),
        ({**base, "annotations": [{"id": 3, "image_id": 1, "category_id": 1}]}, "'bbox'"),
        ({**base, "images": [{"id": 1, "width": 3}]}, "'file_name'"),
        (
            {
                **base,
                "annotations": [{"id": 3, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]}],
            },
            "image id 9",
        ),
        (
            {
                **base,
                "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1]}],
            },
            "bbox",
        ),
    ]:
        image_dir, jpath = make_coco(tmp_path, data=broken)
        with pytest.raises(DataError, match=rf"instances_train\.json: .*{field}"):
            COCODataset(image_dir, jpath)


def test_coco_missing_image_size_mismatch_and_degenerate(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "im1.png", "width": 100, "height": 48},  # file is 64x48
            {"id": 5, "file_name": "im5.png", "width": 40, "height": 30},
        ],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 0, 30, 10]},  # clipped
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [3, 3, 0, 10]},  # zero width
        ],
    }
    image_dir, jpath = make_coco(tmp_path, data=data)
    ds = COCODataset(image_dir, jpath)
    assert ds.report["size_mismatch"] == 1 and ds.report["boxes_clipped"] == 1
    assert ds.report["boxes_degenerate"] == 1
    assert ds.annotation(0)["boxes"].tolist() == [[50, 0, 64, 10]]
    assert ds.annotation(0)["orig_size"] == (48, 64)
    os.remove(image_dir / "im5.png")
    with pytest.raises(DataError, match=r"im5\.png"):
        COCODataset(image_dir, jpath)


# -------------------------------------------------------------------------- factory


def test_build_dataset_detects_layouts(voc, tmp_path):
    ds = build_dataset(voc, "train", train=False, min_size=32, max_size=64)
    assert isinstance(ds, VOCDataset)
    image, target = ds[0]  # 64x48 -> short side 32 (the paper's rule via resized_size)
    assert image.shape[1:] == resized_size(48, 64, 32, 64) == (32, 43)
    # a VOCdevkit-like parent with one VOC* directory
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    os.rename(voc, devkit / "VOC2007")
    assert isinstance(build_dataset(devkit, "train", train=False), VOCDataset)
    # COCO: a JSON file, or a directory with annotations/instances_<split>.json and <split>/
    image_dir, jpath = make_coco(tmp_path / "c")
    assert isinstance(build_dataset(jpath, "train", train=False), COCODataset)
    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    os.rename(image_dir, coco / "train")
    os.rename(jpath, coco / "annotations/instances_train.json")
    ds = build_dataset(coco, "train", train=False, format="coco")
    assert isinstance(ds, COCODataset) and len(ds) == 2
    with pytest.raises(DataError, match="layout not recognised"):
        build_dataset(tmp_path / "devkit/VOC2007/JPEGImages", "train", train=False)
    with pytest.raises(DataError, match="not found"):
        build_dataset(tmp_path / "nowhere", "train", train=False)
    with pytest.raises(ConfigError):
        build_dataset(coco, "train", train=False, format="kitti")  # not a registered format


# ------------------------------------------------------------------------ transforms


def test_resize_follows_the_paper_rule_and_scales_boxes_per_axis():
    image = torch.rand(3, 200, 300)
    target = {"boxes": torch.tensor([[30.0, 20.0, 150.0, 100.0]])}
    out, t = Resize(600, 1000)(image, target)
    assert out.shape[1:] == (600, 900)
    assert torch.allclose(t["boxes"], torch.tensor([[90.0, 60.0, 450.0, 300.0]]))
    # long side capped at max_size; per-axis factors follow the rounded size
    pil = Image.new("RGB", (1000, 301))
    out, t = Resize(600, 1000)(pil, target)
    nh, nw = resized_size(301, 1000, 600, 1000)
    assert (out.height, out.width) == (nh, nw) == (301, 1000)
    pil = Image.new("RGB", (333, 100))
    out, t = Resize(50, 1000)(pil, target)
    nh, nw = resized_size(100, 333, 50, 1000)
    assert (out.height, out.width) == (nh, nw)
    sx, sy = nw / 333, nh / 100
    assert torch.allclose(t["boxes"], torch.tensor([[30 * sx, 20 * sy, 150 * sx, 100 * sy]]))


def test_flip_maps_boxes_and_twice_is_identity():
    img = torch.rand(3, 10, 20)
    target = {"boxes": torch.tensor([[2.0, 1.0, 5.0, 4.0]]), "labels": torch.tensor([1])}
    f1, t1 = hflip(img, target)
    assert t1["boxes"].tolist() == [[15.0, 1.0, 18.0, 4.0]]
    # the pixels inside the box moved with it
    assert torch.equal(f1[:, 1:4, 15:18], img[:, 1:4, 2:5].flip(-1))
    f2, t2 = hflip(f1, t1)
    assert torch.equal(f2, img) and torch.equal(t2["boxes"], target["boxes"])
    assert torch.equal(target["boxes"], torch.tensor([[2.0, 1.0, 5.0, 4.0]]))  # not mutated
    pil = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    fp, tp = hflip(pil, target)
    assert np.array_equal(np.asarray(fp), np.asarray(pil)[:, ::-1])
    rng = np.random.default_rng(0)
    assert RandomHorizontalFlip(1.0)(img, target, rng)[1]["boxes"].tolist() == t1["boxes"].tolist()
    assert RandomHorizontalFlip(0.0)(img, target, rng)[1]["boxes"] is target["boxes"]


def test_colour_modes_become_rgb(tmp_path):
    w, h = 12, 8
    cases = {
        "gray.png": Image.new("L", (w, h), 100),
        "bw.png": Image.new("1", (w, h), 1),
        "pal.png": Image.new("RGB", (w, h), (10, 200, 30)).convert(
            "P", palette=Image.Palette.ADAPTIVE
        ),
        "rgba.png": Image.new("RGBA", (w, h), (255, 0, 0, 0)),  # fully transparent red
        "cmyk.jpg": Image.new("CMYK", (w, h), (0, 255, 255, 0)),
        "gray16.png": Image.fromarray(np.full((h, w), 65535, dtype=np.uint16)),
    }
    expected = {
        "gray.png": (100, 100, 100),
        "bw.png": (255, 255, 255),
        "pal.png": (10, 200, 30),
        "rgba.png": (255, 255, 255),  # transparent over white
        "cmyk.jpg": (255, 0, 0),
        "gray16.png": (255, 255, 255),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.mode == "RGB" and out.size == (w, h), name
        got = np.asarray(out)[h // 2, w // 2]
        assert np.abs(got.astype(int) - expected[name]).max() <= 3, (name, got)
    la = Image.new("LA", (w, h), (50, 255))
    assert np.asarray(to_rgb(la))[0, 0].tolist() == [50, 50, 50]
    assert ToTensor()(Image.new("L", (w, h)), {})[0].shape == (3, h, w)


def test_exif_rotated_image_upright_with_boxes(tmp_path):
    root = tmp_path / "v"
    make_voc(root, {"r": (20, 40, [_obj("cat", 1, 1, 10, 20)])})
    # Stored 40 wide x 20 tall, red in the left 10 columns; EXIF orientation 6 = rotate 90
    # degrees clockwise for display, so the upright image is 20 wide x 40 tall, red on top.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :10] = (255, 0, 0)
    stored[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "JPEGImages/r.jpg", exif=exif.tobytes(), quality=95)
    ds = VOCDataset(root, "train")
    assert ds.annotation(0)["orig_size"] == (40, 20) and ds.report.clean
    assert ds.report["images_exif_rotated"] == 1
    image, target = ds[0]
    assert image.shape == (3, 40, 20)
    assert image[0, 2:8, :].mean() > 0.9 and image[2, 2:8, :].mean() < 0.1  # red on top
    assert image[2, 15:, :].mean() > 0.9  # blue below
    assert target["boxes"].tolist() == [[0, 0, 10, 20]]
    # the same through the standard pipeline: resized and flipped with the boxes
    ds2 = build_dataset(root, "train", train=True, min_size=80, max_size=1000, flip_prob=1.0)
    image2, target2 = ds2[0]
    assert image2.shape == (3, 160, 80)
    assert target2["boxes"].tolist() == [[40, 0, 80, 80]]


# --------------------------------------------------------- epochs, loader, collate


def _flipped(ds: DetectionDataset, epoch: int) -> list[bool]:
    ds.set_epoch(epoch)
    out = []
    for i in range(len(ds)):
        box = ds[i][1]["boxes"][0, 0].item()
        out.append(box != ds.annotation(i)["boxes"][0, 0].item())
    return out


@pytest.fixture
def voc12(tmp_path) -> Path:
    items = {f"i{k:02d}": (24, 16, [_obj("cat", 2, 3, 9, 12)]) for k in range(12)}
    return make_voc(tmp_path / "v12", items)


def test_set_epoch_makes_flips_reproducible(voc12):
    def build(seed):
        return build_dataset(voc12, "train", train=True, min_size=16, max_size=100, seed=seed)

    a, b = build(0), build(0)
    e0, e1 = _flipped(a, 0), _flipped(a, 1)
    assert e0 == _flipped(b, 0) and e1 == _flipped(b, 1)
    assert e0 == _flipped(a, 0)  # back to epoch 0: the same flips (resumable)
    assert e0 != e1 and 0 < sum(e0) < len(e0)
    assert _flipped(build(1), 0) != e0
    # an (epoch, index) pair, as the loader's sampler passes it, overrides set_epoch
    a.set_epoch(5)
    assert torch.equal(a[(1, 3)][1]["boxes"], (a.set_epoch(1), a[3])[1][1]["boxes"])


def test_loader_collate_and_reproducible_shuffle(voc12):
    ds = build_dataset(voc12, "train", train=True, min_size=16, max_size=100, seed=3)

    def epoch_batches(epoch, workers=0):
        loader = build_loader(
            ds, batch_size=5, shuffle=True, seed=7, epoch=epoch, num_workers=workers
        )
        return [(imgs, tgts) for imgs, tgts in loader]

    b0 = epoch_batches(0)
    assert [len(i) for i, _ in b0] == [5, 5, 2]
    images, targets = b0[0]
    assert isinstance(images, list) and isinstance(targets, list)
    assert all(isinstance(t, dict) and t["boxes"].shape == (1, 4) for t in targets)
    order0 = [t["image_id"] for _, ts in b0 for t in ts]
    assert sorted(order0) == list(range(12)) and order0 != list(range(12))
    assert order0 == [t["image_id"] for _, ts in epoch_batches(0) for t in ts]
    assert order0 != [t["image_id"] for _, ts in epoch_batches(1) for t in ts]
    # two worker processes give the same batches as the main process
    w2 = epoch_batches(0, workers=2)
    for (i0, t0), (i2, t2) in zip(b0, w2, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(i0, i2, strict=True))
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(t0, t2, strict=True))
    # set_epoch on the loader selects the order and the flips of that epoch
    loader = build_loader(ds, batch_size=12, shuffle=True, seed=7, epoch=0)
    loader.set_epoch(1)
    ((imgs1, tgts1),) = list(loader)
    ref_tgts = [t for _, ts in epoch_batches(1) for t in ts]
    assert [t["image_id"] for t in tgts1] == [t["image_id"] for t in ref_tgts]
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(tgts1, ref_tgts, strict=True))
    seq = build_loader(ds, batch_size=4, shuffle=False, seed=0, epoch=0)
    assert [t["image_id"] for _, ts in seq for t in ts] == list(range(12))
    imgs, tgts = collate([(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 2), {"a": 2})])
    assert [i.shape for i in imgs] == [(3, 4, 5), (3, 6, 2)] and tgts == [{"a": 1}, {"a": 2}]


def test_aspect_grouped_batches(tmp_path):
    """Grouped batches are all-landscape or all-portrait, cover every image once per epoch (the
    incomplete batch of each orientation at the end), follow the epoch's shuffled order, and are
    the same with worker processes and after set_epoch."""
    items = {f"l{k:02d}": (24, 16, [_obj("cat", 2, 3, 9, 12)]) for k in range(7)}
    items.update({f"p{k:02d}": (16, 24, [_obj("cat", 2, 3, 9, 12)]) for k in range(5)})
    ds = build_dataset(make_voc(tmp_path / "mixed", items), "train", train=True, min_size=16, max_size=100, seed=3)
    landscape = [w >= h for h, w in ds.image_sizes]
    assert sum(landscape) == 7

    def batches(epoch, workers=0, **kw):
        loader = build_loader(ds, batch_size=3, shuffle=True, seed=7, epoch=epoch, num_workers=workers,
                              group_aspect=True, **kw)
        out = [[t["image_id"] for t in tgts] for _, tgts in loader]
        assert len(out) == len(loader)
        return out

    b0 = batches(0)
    assert sorted(len(b) for b in b0) == [1, 2, 3, 3, 3] and len(b0) == 5  # 7 = 3+3+1, 5 = 3+2
    assert sorted(i for b in b0 for i in b) == list(range(12))
    assert all(len({landscape[i] for i in b}) == 1 for b in b0)
    # full batches come in the epoch's order: each is the next 3 of its orientation
    order = build_loader(ds, batch_size=12, shuffle=True, seed=7, epoch=0).sampler.order()
    for flag in (True, False):
        mine = [i for i in order if landscape[i] == flag]
        assert [i for b in b0 if landscape[b[0]] == flag for i in b] == mine
    assert b0 == batches(0) == batches(0, workers=2)
    assert b0 != batches(1)
    loader = build_loader(ds, batch_size=3, shuffle=True, seed=7, epoch=0, group_aspect=True)
    loader.set_epoch(1)
    assert loader.epoch == 1 and [[t["image_id"] for t in ts] for _, ts in loader] == batches(1)
    assert sorted(len(b) for b in batches(0, drop_last=True)) == [3, 3, 3]
    # images of one batch share their orientation, so padding stays small
    for imgs, _ in build_loader(ds, batch_size=3, shuffle=True, seed=7, epoch=0, group_aspect=True):
        assert len({(i.shape[1] >= i.shape[2]) for i in imgs}) == 1


def test_compose_and_report_api():
    c = build_transforms(train=True, min_size=10, max_size=20, flip_prob=0.5)
    assert isinstance(c, Compose) and "RandomHorizontalFlip" in repr(c)
    assert "RandomHorizontalFlip" not in repr(build_transforms(train=False))
    r = DataReport(name="x")
    r.add("boxes_clipped", "f.xml", "msg")
    assert r["boxes_clipped"] == 1 and r.to_dict()["messages"][0]["file"] == "f.xml"
    assert "f.xml" in r.summary()


# ------------------------------------------------------------------ the raccoon set


@pytest.mark.skipif(not RACCOON.is_dir(), reason="shared raccoon data set not present")
def test_raccoon_reads_clean_and_grayscale_is_rgb():
    train = build_dataset(RACCOON, "train", train=True, min_size=200, max_size=400, seed=0)
    test = build_dataset(RACCOON, "test", train=False, classes=train.classes)
    assert train.classes == ["raccoon"] and len(train) == 160 and len(test) == 40
    assert train.report.clean and test.report.clean  # nothing fixed or skipped
    gray = train.report.files("images_converted")
    assert len(gray) == 3
    index = train.files.index(gray[0])
    image, target = train[index]
    assert image.shape[0] == 3 and min(image.shape[1:]) == 200
    assert torch.allclose(image[0], image[1]) and torch.allclose(image[1], image[2])
    h0, w0 = target["orig_size"]
    assert (image.shape[1], image.shape[2]) == resized_size(h0, w0, 200, 400)
