"""Property-based fuzzing (hypothesis) of the library's input readers and the model's input checks.

Each reader either returns valid data or raises a `FasterRCNNError` whose message names the
file at fault; any other exception (KeyError, OverflowError, LookupError, ...) or an invalid
value that is silently accepted is a bug. The runs are deterministic (`derandomize=True`, no
example database) and bounded (a few dozen examples each), so the file runs in about a minute.
The plain tests after each fuzzer are the exact inputs fuzzing found, fixed in the library.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import os
import re
import struct
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zlib
from xml.sax.saxutils import escape

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from fasterrcnn.data import build_dataset
from fasterrcnn.data.base import probe_image
from fasterrcnn.data.coco import COCODataset
from fasterrcnn.data.report import DataReport
from fasterrcnn.data.transforms import build_transforms, image_header, read_image
from fasterrcnn.data.voc import VOCDataset, _parse_voc_xml
from fasterrcnn.errors import DataError, FasterRCNNError
from fasterrcnn.evaluation.detections import load_detections_file

# FASTERRCNN_FUZZ_SCALE=20 runs 20 times the examples (a longer hunt; CI keeps the default, 1).
FUZZ_SCALE = float(os.environ.get("FASTERRCNN_FUZZ_SCALE", "1"))


def fuzz_settings(n: int):
    return settings(
        max_examples=max(1, round(n * FUZZ_SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_names_file(exc: BaseException, paths) -> None:
    """`exc` is one of the library's errors and its message names one of `paths`."""
    assert isinstance(exc, FasterRCNNError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert any(os.fspath(p) in msg for p in paths), f"message names none of {paths}: {msg}"


def reason(exc: BaseException) -> str:
    """The start of an error message without its file name (to label examples, `event`)."""
    return str(exc).split(": ", 1)[-1][:30]


@contextlib.contextmanager
def small_bomb_limit(pixels: int = 1 << 20):
    """PIL's decompression-bomb limit lowered, so that headers declaring huge sizes stay cheap
    to fuzz (the same code paths as the default limit, without gigabytes of buffers)."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def make_image(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    w, h = size
    im = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return im if mode == "RGB" else im.convert(mode)


def image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB", seed: int = 0, **save) -> bytes:
    buf = io.BytesIO()
    make_image(size, mode, seed).save(buf, fmt, **save)
    return buf.getvalue()


# EXIF orientation o -> the upright image, from the stored pixels [H, W, C] (the EXIF spec)
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


# Real image files of the fuzzed data sets: (name, width, height, bytes).
JPG = ("img0.jpg", 40, 30, image_bytes("JPEG", (40, 30)))
PNG = ("img1.png", 24, 36, image_bytes("PNG", (24, 36), "LA"))


def check_target(image, target, num_classes: int) -> None:
    """A data set item is valid: boxes finite, inside the image, positive sizes, labels 1..K."""
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    assert image.dim() == 3 and image.shape[0] == 3
    assert bool(torch.isfinite(image).all()) and 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    h, w = image.shape[-2:]
    check_boxes_labels(target, h, w, num_classes)


def check_boxes_labels(target, h: int, w: int, num_classes: int) -> None:
    boxes, labels, difficult = target["boxes"], target["labels"], target["difficult"]
    assert boxes.dtype == torch.float32 and boxes.dim() == 2 and boxes.shape[1] == 4
    n = boxes.shape[0]
    assert labels.dtype == torch.int64 and labels.shape == (n,)
    assert difficult.dtype == torch.bool and difficult.shape == (n,)
    assert bool(torch.isfinite(boxes).all()), boxes
    assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()), boxes
    assert bool((boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()), (boxes, w, h)
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()), boxes
    assert bool(((labels >= 1) & (labels <= num_classes)).all()), (labels, num_classes)
    assert isinstance(target["image_id"], int)


def check_dataset(ds) -> None:
    assert all(isinstance(c, str) and c.strip() == c and c for c in ds.classes), ds.classes
    assert len(set(ds.classes)) == len(ds.classes)
    for i in range(len(ds)):
        h0, w0 = ds.image_sizes[i]
        assert isinstance(h0, int) and isinstance(w0, int) and h0 >= 1 and w0 >= 1
        check_boxes_labels(ds.annotation(i), h0, w0, ds.num_classes)
        image, target = ds[i]
        check_target(image, target, ds.num_classes)


def is_int64(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63


def as_finite(v) -> float | None:
    """A JSON number (not a bool) as a finite float, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        v = float(v)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


# Values of the wrong type, for any field.
HUGE = "__HUGE_INT__"  # replaced by an integer literal of 5000 digits in the JSON text

junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=4), st.lists(st.integers(-3, 3), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70), st.just(10**400), st.just(HUGE), st.just(-0.0), st.just(1.5),
)


def rare(one_in: int):
    """True one time in `one_in` (sampled_from is uniform, unlike small integer ranges); never
    for `one_in` >= 1000 (the clean documents)."""
    if one_in >= 1000:
        return st.just(False)
    return st.sampled_from([False] * (one_in - 1) + [True])


def mostly(good, bad=junk, one_in: int = 8):
    """`good`, or (one time in `one_in`) `bad`: a value of a wrong type by default."""
    return rare(one_in).flatmap(lambda b: bad if b else good)


def json_paths(obj, prefix=()):
    """The paths (tuples of keys / indices) of every node under the root of a JSON value."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from json_paths(value, prefix + (key,))


# values that a lenient reader takes for numbers (numpy reads "1" and true as 1.0), and others
sneaky = st.sampled_from(["1", "0.5", True, False, None, "", [], {}, 0, -1, 2.0, 1.5, 2**63, 1e308, -1e308, 10**400])
odd_leaf = st.one_of(sneaky, sneaky, junk)


@st.composite
def mutate_json(draw, doc):
    """`doc` with one node replaced by an odd value, deleted, or duplicated (a list item)."""
    paths = list(json_paths(doc))
    if not paths:
        return doc
    leaves = [p for p in paths if not isinstance(functools.reduce(lambda node, key: node[key], p, doc), (dict, list))]
    path = draw(st.sampled_from(leaves if leaves and not draw(rare(4)) else paths))  # mostly a value
    doc = copy.deepcopy(doc)
    parent = functools.reduce(lambda node, key: node[key], path[:-1], doc)
    op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "duplicate"]))
    if op == "replace":
        old = parent[path[-1]]
        if isinstance(old, (int, float)) and not isinstance(old, bool) and draw(st.booleans()):
            # the same value with the wrong type: "2.5", true, [2.5], null
            parent[path[-1]] = draw(st.sampled_from([json.dumps(old), str(old), bool(old), not old, [old], None]))
        else:
            parent[path[-1]] = draw(odd_leaf)
    elif op == "delete":
        del parent[path[-1]]
    elif isinstance(parent, list):
        parent.insert(path[-1], copy.deepcopy(parent[path[-1]]))
    return doc


def with_keys(draw, obj: dict, one_in: int = 12) -> dict:
    """Drop a key or add an unexpected one, now and then."""
    if obj and draw(rare(one_in)):
        obj.pop(draw(st.sampled_from(sorted(obj))))
    if draw(rare(one_in)):
        obj[draw(st.sampled_from(["extra", "id", "bbox", "name"]))] = draw(junk)
    return obj



# ============================================================================= 1. PASCAL VOC

CLASS_NAMES = ["cat", "dog", "bird"]
WEIRD_NUMBERS = [
    "", " ", "abc", "1e400", "-1e400", "nan", "NaN", "-nan", "inf", "-Infinity", "1,5", "0x10",
    "12px", "+3", " 7 ", "1e308", "-1e308", "1e-320", "\u0661\u0662", "3.", ".5", "--1", "1_0", "\uff17",
]
# Coordinates that fit the 40x30 / 24x36 images (or stick out a little), and odd ones.
number_text = st.one_of(
    st.integers(-5, 45).map(str),
    st.integers(-5, 45).map(str),
    st.floats(-5, 45, allow_nan=False).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(WEIRD_NUMBERS),
)
xml_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


def el(tag, text=None, children=()):
    return (tag, text, list(children))


def serialize(node) -> str:
    tag, text, children = node
    inner = escape(text) if text is not None else ""
    inner += "".join(serialize(c) for c in children)
    return f"<{tag}>{inner}</{tag}>"


@st.composite
def voc_object(draw):
    kids = []
    name = draw(mostly(st.sampled_from(CLASS_NAMES + [" cat ", "名前 ŝ"]),
                       st.one_of(st.none(), st.sampled_from(["", "  ", "cat\ndog", "background"]), xml_text)))
    if name is not None:
        kids.append(el("name", name))
    if draw(st.booleans()):
        kids.append(el("difficult", draw(mostly(st.sampled_from(["0", "1", "true", "False", " 1 ", "1.0"]),
                                                st.sampled_from(["2", "", "yes", "-1"])))))
    if not draw(rare(15)):
        shape = draw(st.sampled_from(["box"] * 6 + ["thin", "fields"]))
        if shape == "fields":  # each coordinate on its own: missing, odd text, any order
            coords = [el(t, draw(number_text)) for t in ("xmin", "ymin", "xmax", "ymax") if not draw(rare(15))]
        else:  # a box near the image (x2 > x1 mostly), or one of (nearly) no width or height
            x, y = draw(st.floats(-3, 35)), draw(st.floats(-3, 26))
            if shape == "thin":
                dx = draw(st.sampled_from([1e-7, 1e-6, 1e-5, 0.0, -1e-6]))
                dy = draw(st.sampled_from([1e-6, 2.0]))
            else:
                dx, dy = draw(mostly(st.floats(1, 30), st.floats(-5, 1), 6)), draw(mostly(st.floats(1, 30), st.floats(-5, 1), 6))
            values = [x, y, x + dx, y + dy]
            if draw(st.booleans()):
                values = [round(v) for v in values]
            coords = [el(t, repr(v)) for t, v in zip(("xmin", "ymin", "xmax", "ymax"), values)]
        if draw(rare(5)):  # a duplicated or extra field
            coords.append(el(draw(st.sampled_from(["xmin", "ymax", "zmin", "xmax"])), draw(number_text)))
        kids.append(el("bndbox", None, draw(st.permutations(coords)) if coords else []))
    if draw(rare(6)):
        kids.append(el(draw(st.sampled_from(["pose", "truncated", "part", "bndbox", "name"])), draw(xml_text)))
    return el("object", None, draw(st.permutations(kids)) if kids else [])


@st.composite
def voc_xml(draw) -> bytes:
    kids = [el("folder", "VOC")]
    filename = draw(st.one_of(st.none(), st.sampled_from([JPG[0], PNG[0], "img0", "missing.jpg", "",
                                                          "../JPEGImages/img1.png", "img0.JPG", "名前.jpg"])))
    if filename is not None:
        kids.append(el("filename", filename))
    if not draw(rare(4)):
        real = draw(st.sampled_from([(JPG[1], JPG[2]), (PNG[1], PNG[2])]))
        size = [el(t, draw(mostly(st.just(str(v)), number_text, 3))) for t, v in zip(("width", "height"), real)
                if not draw(rare(6))]
        size.append(el("depth", "3"))
        kids.append(el("size", None, size))
    kids += draw(st.lists(voc_object(), min_size=0 if draw(rare(5)) else 1, max_size=4))
    root_tag = draw(mostly(st.just("annotation"), st.sampled_from(["annotations", "Annotation", "a:annotation"]), 16))
    text = serialize(el(root_tag, None, kids))
    decl = draw(st.sampled_from([None] * 8 + ["utf-8", "UTF-8", "latin-1", "ascii", "utf-16", "no-such-codec"]))
    if decl is not None:
        text = f'<?xml version="1.0" encoding="{decl}"?>' + text
    data = text.encode("utf-8")
    mutation = draw(st.sampled_from([None] * 16 + ["truncate", "insert", "empty", "bom", "garbage", "doctype"]))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"<", b"&", b"\xff", b"\x00", b"]]>", b"</x>", b'"'])) + data[at:]
    elif mutation == "empty":
        data = b""
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    elif mutation == "garbage":
        data = draw(st.binary(max_size=40))
    elif mutation == "doctype":
        data = b'<!DOCTYPE annotation [<!ENTITY e "cat">]>' + data.replace(b">cat<", b">&e;<")
    return data


@st.composite
def voc_case(draw):
    ids = draw(st.sampled_from([["img0"], ["img1"], ["img0", "img1"]]))
    xmls = {i: draw(voc_xml()) for i in ids}
    split = draw(st.sampled_from(["train", "train", None]))
    lines = list(ids)
    if draw(rare(5)):
        lines.append(draw(st.sampled_from(["# a comment", "", "img0 1", "nosuchid", "img1  -1"])))
    classes = draw(st.sampled_from([None, None, ["cat", "dog"], ["cat", "dog", "bird"], ["bird"]]))
    transforms = draw(st.sampled_from([None, "eval", "train"]))
    one_based = draw(st.booleans())
    return ids, xmls, split, lines, classes, transforms, one_based


def write_voc(root: str, ids, xmls, lines) -> None:
    for d in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, d))
    for name, _, _, data in (JPG, PNG):
        with open(os.path.join(root, "JPEGImages", name), "wb") as f:
            f.write(data)
    for i in ids:
        with open(os.path.join(root, "Annotations", i + ".xml"), "wb") as f:
            f.write(xmls[i])
    with open(os.path.join(root, "ImageSets", "Main", "train.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def make_transforms(kind):
    if kind is None:
        return None
    return build_transforms(kind == "train", min_size=24, max_size=48, flip_prob=0.5)


XML_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)


def voc_number_error(path: str) -> str | None:
    """A number of the annotation that is not written as a (finite) XML number, e.g. "1_0" or
    Arabic-Indic digits, which Python's float() reads; such a file must be rejected. (Empty
    numbers in <size> are allowed: unknown.)"""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, LookupError):
        return None  # malformed: the parser rejects it for that
    fields = [(root.find("size"), t, False) for t in ("width", "height")]
    fields += [(o.find("bndbox"), t, True) for o in root.findall("object") for t in ("xmin", "ymin", "xmax", "ymax")]
    for parent, tag, required in fields:
        el = None if parent is None else parent.find(tag)
        text = "" if el is None or el.text is None else el.text.strip()
        if (text or required) and not XML_NUMBER.fullmatch(text):
            return f"<{tag}> {text!r}"
    return None


@fuzz_settings(70)
@given(voc_case())
def test_fuzz_voc(case):
    ids, xmls, split, lines, classes, transforms, one_based = case
    with tempfile.TemporaryDirectory() as root:
        write_voc(root, ids, xmls, lines)
        try:
            ds = VOCDataset(root, split, classes, make_transforms(transforms), one_based=one_based)
            check_dataset(ds)
            event(f"built, {min(sum(len(r.labels) for r in ds.records), 3)} (or more) boxes")
        except FasterRCNNError as exc:
            event("rejected: " + reason(exc))
            assert_names_file(exc, [root])
        for i in ids:  # the parser alone: a dict of valid values, or DataError naming the XML
            path = os.path.join(root, "Annotations", i + ".xml")
            try:
                ann = _parse_voc_xml(path, one_based)
            except FasterRCNNError as exc:
                assert_names_file(exc, [path])
                continue
            problem = voc_number_error(path)
            assert problem is None, f"{path}: {problem} was read as a number"
            assert ann["xml"] == path
            assert ann["size"] is None or (ann["size"][0] >= 1 and ann["size"][1] >= 1)
            for name, box, dif in ann["objects"]:
                assert isinstance(name, str) and name.strip() == name and name
                assert len(box) == 4 and all(math.isfinite(v) for v in box)
                assert isinstance(dif, bool)


VOC_HEAD = "<annotation><filename>img0.jpg</filename><size><width>40</width><height>30</height></size>"


def fresh_dir(tmp_path):
    """A new empty directory under tmp_path (for tests that build several data sets)."""
    return tmp_path / tempfile.mkdtemp(dir=tmp_path)


def build_voc(tmp_path, xml: bytes | str, **kwargs):
    root = fresh_dir(tmp_path)
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    write_voc(str(root), ["img0"], {"img0": data}, ["img0"])
    return VOCDataset(root, "train", **kwargs)


def test_voc_unknown_xml_encoding_is_a_data_error(tmp_path):
    # found by fuzzing: ElementTree raised LookupError ("unknown encoding") for the declaration
    xml = '<?xml version="1.0" encoding="no-such-codec"?>' + VOC_HEAD + "</annotation>"
    with pytest.raises(DataError, match=r"img0\.xml.*encoding"):
        build_voc(tmp_path, xml)


def test_voc_box_thinner_than_float32_is_dropped(tmp_path):
    # found by fuzzing: y1 = 0 < y2 = 1.9e-276 in float64, but y2 = 0 once stored as float32: a
    # zero-height box kept in the targets; the area test is now made on the stored values
    obj = ("<object><name>cat</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>1</xmax>"
           "<ymax>1.865714658965494e-276</ymax></bndbox></object>")
    ds = build_voc(tmp_path, VOC_HEAD + obj + "</annotation>", one_based=False)
    assert ds.annotation(0)["boxes"].shape == (0, 4)
    assert ds.report.count("boxes_degenerate") == 1
    obj = obj.replace("<xmin>0</xmin>", "<xmin>10.0000001</xmin>").replace("<xmax>1</xmax>", "<xmax>10.0000002</xmax>")
    ds = build_voc(tmp_path, VOC_HEAD + obj + "</annotation>", one_based=False)
    assert ds.annotation(0)["boxes"].shape == (0, 4)


@pytest.mark.parametrize("text", ["1_0", "\u0661\u0662", "\uff17", "1e1_0"])
def test_voc_number_must_be_an_xml_number(tmp_path, text):
    # found by fuzzing: float() read "1_0" as 10 and non-ASCII digits ("١٢" as 12)
    obj = f"<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{text}</xmax><ymax>9</ymax></bndbox></object>"
    with pytest.raises(DataError, match=r"img0\.xml: <object> #1 \(cat\) <xmax> is .*, not a number"):
        build_voc(tmp_path, VOC_HEAD + obj + "</annotation>")
    for text in (" 12 ", "+3", "3.", ".5", "1e1", "-0"):  # XML numbers
        obj = f"<object><name>cat</name><bndbox><xmin>{text}</xmin><ymin>0</ymin><xmax>20</xmax><ymax>9</ymax></bndbox></object>"
        build_voc(tmp_path, VOC_HEAD + obj + "</annotation>")


def test_voc_size_rounding_to_zero_is_unknown(tmp_path):
    # found by fuzzing: <height>0.5</height> gave the size (0, 40): an image of no height
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><size><width>40</width><height>0.5</height></size></annotation>")
    assert _parse_voc_xml(str(xml), True)["size"] is None
    xml.write_text("<annotation><size><width>40.4</width><height>1.5</height></size></annotation>")
    assert _parse_voc_xml(str(xml), True)["size"] == (2, 40)


# ============================================================================= 2. COCO JSON

coord = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.just(1e308),
                  st.just(10**400), st.just(HUGE), st.booleans(), st.none(), st.text(max_size=3))


@st.composite
def plausible_xywh(draw):
    x, y = draw(st.one_of(st.integers(-5, 35), st.floats(-5, 35))), draw(st.one_of(st.integers(-5, 25), st.floats(-5, 25)))
    w, h = draw(st.one_of(st.integers(1, 30), st.floats(0, 30))), draw(st.one_of(st.integers(1, 30), st.floats(0, 30)))
    return [x, y, w, h]


@st.composite
def coco_doc(draw):
    # a valid file with one odd value (the best at finding values accepted silently), or
    # files with faults here and there
    one_in = draw(st.sampled_from([1000, 1000, 1000, 40, 8]))

    def field(good, bad=junk):
        return draw(mostly(good, bad, one_in))

    cats = []
    cat_ids = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3, unique=not draw(rare(one_in // 4 + 1))))
    names = draw(st.permutations(CLASS_NAMES))
    for k, cid in enumerate(cat_ids):
        cats.append(with_keys(draw, {"id": field(st.just(cid)), "name": field(st.sampled_from([names[k], " " + names[k]]),
                                                                               st.one_of(junk, st.sampled_from(["", names[0]])))},
                              one_in))
    images = []
    for iid, (name, w, h, _) in enumerate(draw(st.lists(st.sampled_from([JPG, PNG]), min_size=1, max_size=2)), start=1):
        images.append(with_keys(draw, {
            "id": field(st.just(iid), st.one_of(junk, st.sampled_from([1, float(iid)]))),
            "file_name": field(st.sampled_from([name, "./" + name]), st.one_of(junk, st.sampled_from(["missing.jpg", ""]))),
            "width": field(st.just(w), st.one_of(junk, st.sampled_from([w + 1, 0, -w]))),
            "height": field(st.just(h), st.one_of(junk, st.sampled_from([h - 1, 0, -1]))),
        }, one_in))
    anns = []
    for k in range(draw(st.sampled_from(range(5)))):
        anns.append(with_keys(draw, {
            "id": field(st.just(k + 1), st.one_of(junk, st.just(1))),
            "image_id": field(st.integers(1, len(images)), st.one_of(junk, st.just(len(images) + 1))),
            "category_id": field(st.sampled_from(cat_ids), st.one_of(junk, st.just(5))),
            "bbox": field(plausible_xywh(), st.one_of(junk, st.lists(coord, min_size=4, max_size=4), st.lists(coord, max_size=6),
                                                      plausible_xywh().map(lambda b: [b[0], b[1], -b[2] - 1, b[3]]))),
            "iscrowd": field(st.sampled_from([0, 0, 0, 0, 1, False, True]), st.sampled_from(["0", "no", 2, -1, 0.5, None, []])),
            "area": 1.0,
        }, one_in))
    doc = {"images": images, "annotations": anns, "categories": cats}
    for key in ("images", "annotations", "categories"):
        if draw(rare(4 * one_in)):
            doc[key] = draw(junk)
    if draw(rare(4 * one_in)):
        doc.pop(draw(st.sampled_from(sorted(doc))))
    top = draw(mostly(st.just(doc), st.one_of(junk, st.lists(st.just(doc), max_size=1)), 4 * one_in))
    if one_in == 1000 and not draw(rare(8)):
        top = draw(mutate_json(top))
    text = json.dumps(top).replace(json.dumps(HUGE), "1" + "0" * 5000)
    data = text.encode("utf-8")
    mutation = draw(mostly(st.none(), st.sampled_from(["truncate", "latin1", "bom", "nest", "empty", "surrogate"]), one_in))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "latin1":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xe9\xff" + data[at:]
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    elif mutation == "nest":
        data = b"[" * 100_000 + b"]" * 100_000
    elif mutation == "empty":
        data = b""
    elif mutation == "surrogate":
        data = data.replace(b'"img0.jpg"', b'"img\\ud800.jpg"').replace(b'"cat"', b'"\\udfff"')
    return data


def is_json_int(v) -> bool:
    """An integer, or a float of integral value, of at most 64 bits (not a bool)."""
    if isinstance(v, float) and v.is_integer():
        return -(2**63) <= v < 2**63
    return is_int64(v)


def coco_type_error(data: bytes) -> str | None:
    """The first value of the COCO instances file that breaks the format's types (read
    independently of the library), or None. A file with one must be rejected."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "not JSON"
    if not isinstance(doc, dict):
        return "not an object"
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            return f"{key} not a list"
        if not all(isinstance(x, dict) for x in doc[key]):
            return f"{key}: an item is not an object"
    for c in doc["categories"]:
        if not is_json_int(c.get("id")) or not isinstance(c.get("name"), str) or not c["name"].strip():
            return f"category {c}"
    for im in doc["images"]:
        if not is_json_int(im.get("id")) or not isinstance(im.get("file_name"), str) or not im["file_name"]:
            return f"image {im}"
        if any(im.get(k) is not None and not is_json_int(im[k]) for k in ("width", "height")):
            return f"image size {im}"
    for a in doc["annotations"]:
        if not is_json_int(a.get("image_id")) or not is_json_int(a.get("category_id")):
            return f"annotation ids {a}"
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(as_finite(v) is not None for v in bbox)):
            return f"bbox {bbox}"
        if "iscrowd" in a and not (a["iscrowd"] in (0, 1) and type(a["iscrowd"]) in (int, bool)):
            return f"iscrowd {a['iscrowd']!r}"
    return None


@fuzz_settings(90)
@given(coco_doc(), st.sampled_from(["eval", "train", "direct", "unverified"]),
       st.sampled_from([None] * 4 + [["cat"], ["dog", "bird"]]))
def test_fuzz_coco(data, how, classes):
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "images"))
        for name, _, _, image in (JPG, PNG):
            with open(os.path.join(root, "images", name), "wb") as f:
                f.write(image)
        jpath = os.path.join(root, "instances.json")
        with open(jpath, "wb") as f:
            f.write(data)
        try:
            if how in ("eval", "train"):
                ds = build_dataset(jpath, "train", format="coco", train=how == "train", min_size=24,
                                   max_size=48, classes=classes)
            else:
                ds = COCODataset(os.path.join(root, "images"), jpath, classes, verify_images=how == "direct")
            assert len(ds.category_ids) == ds.num_classes
            assert all(isinstance(c, int) for c in ds.category_ids)
            check_dataset(ds)
            event(f"built, {min(sum(len(r.labels) for r in ds.records), 3)} (or more) boxes")
        except FasterRCNNError as exc:
            event("rejected: " + reason(exc))
            assert_names_file(exc, [jpath, os.path.join(root, "images")])
            return
    problem = coco_type_error(data)
    assert problem is None, f"a file with a bad value was accepted ({problem})"


def write_coco(tmp_path, doc) -> tuple[str, str]:
    """(image directory, JSON path) of a new COCO data set holding `doc` (a dict or text)."""
    root = fresh_dir(tmp_path)
    (root / "images").mkdir()
    for name, _, _, image in (JPG, PNG):
        (root / "images" / name).write_bytes(image)
    jpath = root / "instances.json"
    jpath.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return str(root / "images"), str(jpath)


def read_coco(tmp_path, doc, **kwargs) -> COCODataset:
    return COCODataset(*write_coco(tmp_path, doc), **kwargs)


def coco(bbox=(1, 2, 10, 10), **ann):
    return {
        "images": [{"id": 1, "file_name": "img0.jpg", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": list(bbox), "iscrowd": 0, **ann}],
        "categories": [{"id": 1, "name": "cat"}],
    }


def test_coco_int_too_large_for_float_is_a_data_error(tmp_path):
    # found by fuzzing: math.isfinite(10**400) raised OverflowError for an id (category_id);
    # the bbox check had the same call
    with pytest.raises(DataError, match=r"instances\.json.*bbox"):
        read_coco(tmp_path, coco(bbox=(10**400, 0, 5, 5)))
    doc = coco()
    doc["annotations"][0]["category_id"] = 10**400
    with pytest.raises(DataError, match=r"instances\.json.*category_id must be an integer of at most 64 bits"):
        read_coco(tmp_path, doc)
    doc = coco()
    doc["images"][0]["id"] = 2**63
    with pytest.raises(DataError, match=r"instances\.json.*images\[0\]\.id"):
        read_coco(tmp_path, doc)


def test_coco_integer_of_5000_digits_is_a_data_error(tmp_path):
    # found by fuzzing: json raised a plain ValueError (int digits limit), not a JSONDecodeError
    with pytest.raises(DataError, match=r"instances\.json: malformed JSON"):
        read_coco(tmp_path, json.dumps(coco()).replace('"id": 1,', '"id": 1' + "0" * 5000 + ",", 1))


def test_coco_deeply_nested_json_is_a_data_error(tmp_path):
    # found by fuzzing: json raised RecursionError
    with pytest.raises(DataError, match=r"instances\.json: malformed JSON"):
        read_coco(tmp_path, "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("iscrowd", ["0", "no", 2, -1, -0.0, 0.5, None, [1]])
def test_coco_iscrowd_must_be_0_or_1(tmp_path, iscrowd):
    # found by fuzzing: bool(iscrowd) made -1, and the string "0", crowd regions (silently
    # excluded), and None or [] ordinary objects
    with pytest.raises(DataError, match=r"instances\.json: annotation id 1 iscrowd must be 0 or 1"):
        read_coco(tmp_path, coco(iscrowd=iscrowd))


def test_coco_iscrowd_accepts_0_1_and_booleans(tmp_path):
    for value in (0, 1, False, True):
        ds = read_coco(tmp_path, coco(iscrowd=value))
        assert len(ds.annotation(0)["labels"]) == (0 if value else 1)


def test_coco_boolean_bbox_is_a_data_error(tmp_path):
    # found reviewing the bbox check (a bool is an int): [true, false, true, true] was read as
    # the box [1, 0, 1, 1]
    with pytest.raises(DataError, match=r"instances\.json.*bbox"):
        read_coco(tmp_path, coco(bbox=(True, False, True, True)))


@pytest.mark.parametrize("name", ["", "   ", None, 3, ["cat"]])
def test_coco_category_name_must_be_a_non_empty_string(tmp_path, name):
    # found by fuzzing: "" became a class with an empty name (and str() made None a class "None")
    doc = coco()
    doc["categories"][0]["name"] = name
    with pytest.raises(DataError, match=r"instances\.json: categories\[0\]\.name must be a non-empty string"):
        read_coco(tmp_path, doc)


@pytest.mark.parametrize("size", [{"width": "ab", "height": None}, {"width": 40, "height": "30"},
                                  {"width": [40]}, {"height": True}])
def test_coco_image_size_is_checked_without_the_other(tmp_path, size):
    # found by fuzzing: width and height were checked only when both were given, so a width
    # "ab" with a null height passed
    doc = coco()
    doc["images"][0].update(size)
    with pytest.raises(DataError, match=r"instances\.json: images\[0\]\.(width|height) must be an integer"):
        read_coco(tmp_path, doc)


def test_coco_non_positive_size_is_read_from_the_file(tmp_path):
    # found with the case above: with verify_images=False a width or height of 0 or less became
    # the image's size (a 0-pixel image); like a missing size it is now read from the file
    doc = coco()
    doc["images"][0].update(width=0, height=-30)
    ds = read_coco(tmp_path, doc, verify_images=False)
    assert ds.image_sizes == [(30, 40)]
    check_dataset(ds)


# ======================================================================= 3. detections files

IMAGE_IDS = [1, 2, 3]

det_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(1e308), st.just(-1e308), st.just(10**400),
                       st.integers(-(2**70), 2**70), st.sampled_from(["1", "0.5", True, False, None]))
plausible = st.one_of(st.floats(0, 50), st.integers(0, 50))


@st.composite
def coco_result(draw, one_in):
    def field(good, bad=junk):
        return draw(mostly(good, bad, one_in))

    x, y, w, h = (field(plausible, det_number) for _ in range(4))
    return with_keys(draw, {
        "image_id": field(st.sampled_from(IMAGE_IDS), st.one_of(junk, st.just(4))),
        "category_id": field(st.integers(1, 3), st.one_of(junk, st.sampled_from([0, 4, 7, 9]))),
        "bbox": field(st.just([x, y, w, h]), st.one_of(junk, st.lists(plausible, max_size=6),
                                                       plausible.map(lambda v: [1, 2, -v - 1, 3]),
                                                       plausible.map(lambda v: [1, 2, 3, -v - 1]))),
        "score": field(st.floats(0, 1), det_number),
    }, one_in)


@st.composite
def per_image_result(draw, one_in):
    def field(good, bad=junk):
        return draw(mostly(good, bad, one_in))

    n = draw(st.sampled_from(range(4)))
    boxes = []
    for _ in range(n):
        x, y = draw(plausible), draw(plausible)
        box = [x, y, x + draw(st.floats(0, 20)), y + draw(st.floats(0, 20))]
        if draw(rare(one_in)):
            box[draw(st.integers(0, 3))] = draw(det_number)
        boxes.append(field(st.just(box), st.one_of(junk, st.just([box[2], box[1], box[0], box[3]]))))
    labels = [field(st.integers(1, 3), st.one_of(det_number, st.sampled_from([0, -1, 4, 5, 1.5, 2.0]))) for _ in range(n)]
    scores = [field(st.floats(0, 1), det_number) for _ in range(n)]
    return with_keys(draw, {
        "image_id": field(st.sampled_from(IMAGE_IDS), st.one_of(junk, st.just(4))),
        "boxes": field(st.just(boxes), st.one_of(junk, st.just([boxes]), st.just(boxes[:-1]))),
        "labels": field(st.just(labels), st.one_of(junk, st.just(labels + [1]))),
        "scores": field(st.just(scores), st.one_of(junk, st.just(scores[1:]))),
    }, one_in)


@st.composite
def detections_doc(draw):
    # a valid file with one odd value (the best at finding values accepted silently), or
    # files with faults here and there
    one_in = draw(st.sampled_from([1000, 1000, 30, 6]))
    kind = draw(st.sampled_from([coco_result, per_image_result]))
    entries = draw(st.lists(kind(one_in), max_size=4))
    if entries and draw(rare(one_in)):  # the other format, or junk, mixed in
        entries.insert(draw(st.integers(0, len(entries))),
                       draw(st.one_of(junk, coco_result(one_in), per_image_result(one_in))))
    top = draw(mostly(st.just(entries), st.one_of(junk, st.just({"annotations": entries})), 4 * one_in))
    if one_in == 1000 and not draw(rare(6)):
        top = draw(mutate_json(top))
    data = json.dumps(top).replace(json.dumps(HUGE), "-" + "9" * 5000).encode("utf-8")
    mutation = draw(mostly(st.none(), st.sampled_from(["truncate", "latin1", "nest", "empty"]), 2 * one_in))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "latin1":
        data = data[:1] + b"\xff" + data[1:]
    elif mutation == "nest":
        data = b"[" * 50_000 + b"]" * 50_000
    elif mutation == "empty":
        data = b""
    return data


def reference_detections(data: bytes, image_ids, category_ids, num_classes):
    """What the detections file must load as, read from the documented formats independently
    of the library: [(image_id, boxes, labels, scores)], or None for a file to be rejected."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, list):
        return None
    known = None if image_ids is None else set(image_ids)
    out = []
    if doc and isinstance(doc[0], dict) and "boxes" in doc[0] and "bbox" not in doc[0]:  # per image
        k = num_classes if num_classes is not None else (None if category_ids is None else len(category_ids))
        for e in doc:
            if not (isinstance(e, dict) and {"image_id", "boxes", "labels", "scores"} <= e.keys()):
                return None
            iid, boxes, labels, scores = e["image_id"], e["boxes"], e["labels"], e["scores"]
            if not is_int64(iid) or (known is not None and iid not in known):
                return None
            if not (isinstance(boxes, list) and isinstance(labels, list) and isinstance(scores, list)):
                return None
            if not (len(boxes) == len(labels) == len(scores)):
                return None
            if not all(isinstance(b, list) and len(b) == 4 and all(as_finite(v) is not None for v in b) for b in boxes):
                return None
            boxes = [[float(v) for v in b] for b in boxes]
            if any(b[2] < b[0] or b[3] < b[1] for b in boxes):
                return None
            if not all(as_finite(v) is not None and float(v).is_integer() and v >= 1 and (k is None or v <= k) for v in labels):
                return None
            if not all(as_finite(v) is not None for v in scores):
                return None
            out.append((iid, boxes, [int(v) for v in labels], [float(v) for v in scores]))
        return out
    label_of = None if category_ids is None else {c: i for i, c in enumerate(category_ids, start=1)}
    groups: dict = {}
    for e in doc:  # COCO results
        if not (isinstance(e, dict) and {"image_id", "category_id", "bbox", "score"} <= e.keys()):
            return None
        iid, cat, bbox, score = e["image_id"], e["category_id"], e["bbox"], e["score"]
        if not is_int64(iid) or (known is not None and iid not in known) or not is_int64(cat):
            return None
        if label_of is not None and cat not in label_of:
            return None
        if label_of is None and (cat < 1 or (num_classes is not None and cat > num_classes)):
            return None
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(as_finite(v) is not None for v in bbox)):
            return None
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0 or not (math.isfinite(x + w) and math.isfinite(y + h)) or as_finite(score) is None:
            return None
        g = groups.setdefault(iid, ([], [], []))
        g[0].append([x, y, x + w, y + h])
        g[1].append(cat if label_of is None else label_of[cat])
        g[2].append(float(score))
    return [(iid, *g) for iid, g in groups.items()]


@fuzz_settings(300)
@given(detections_doc(), st.sampled_from([None, IMAGE_IDS]), st.sampled_from([None, [7, 3, 9]]),
       st.sampled_from([None, 3]))
def test_fuzz_detections_file(data, image_ids, category_ids, num_classes):
    expected = reference_detections(data, image_ids, category_ids, num_classes)
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "dets.json")
        with open(path, "wb") as f:
            f.write(data)
        try:
            dets = load_detections_file(path, image_ids=image_ids, category_ids=category_ids, num_classes=num_classes)
        except FasterRCNNError as exc:
            event("rejected: " + reason(exc))
            assert_names_file(exc, [path])
            assert expected is None, f"a valid file was rejected: {exc}"
            return
    event(f"loaded {min(len(dets), 2)} (or more) images")
    assert expected is not None, f"an invalid file was accepted: {dets}"
    assert isinstance(dets, list) and len(dets) == len(expected)
    for d, (iid, boxes, labels, scores) in zip(dets, expected):
        assert set(d) == {"image_id", "boxes", "labels", "scores"}
        assert type(d["image_id"]) is int and d["image_id"] == iid
        assert d["boxes"].dtype == torch.float64 and d["boxes"].shape == (len(boxes), 4)
        assert d["labels"].dtype == torch.int64 and d["scores"].dtype == torch.float64
        assert d["boxes"].tolist() == boxes and d["labels"].tolist() == labels and d["scores"].tolist() == scores


def write_dets(tmp_path, entries) -> str:
    path = tmp_path / "dets.json"
    path.write_text(entries if isinstance(entries, str) else json.dumps(entries), encoding="utf-8")
    return str(path)


def test_detections_int_too_large_for_float_is_a_data_error(tmp_path):
    # found by fuzzing: float(10**400) raised OverflowError in the score (and bbox) checks
    for entry in ({"image_id": 1, "category_id": 1, "bbox": [10**400, 0, 1, 1], "score": 0.5},
                  {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": -(10**400)}):
        path = write_dets(tmp_path, [entry])
        with pytest.raises(DataError, match=r"dets\.json: entry 0.*not finite|dets\.json: entry 0.*non-finite"):
            load_detections_file(path)


def test_detections_id_beyond_64_bits_is_a_data_error(tmp_path):
    # found by fuzzing: category_id 10**400 passed the checks, then torch.tensor(labels) raised
    # "Overflow when unpacking long long"
    for key in ("category_id", "image_id"):
        entry = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5, key: 10**400}
        with pytest.raises(DataError, match=rf"dets\.json: entry 0: {key} .* does not fit in 64 bits"):
            load_detections_file(write_dets(tmp_path, [entry]))
    entry = {"image_id": 2**63, "boxes": [], "labels": [], "scores": []}
    with pytest.raises(DataError, match=r"dets\.json: entry 0: image_id .* does not fit in 64 bits"):
        load_detections_file(write_dets(tmp_path, [entry]))


def test_detections_bbox_corner_overflowing_to_inf_is_a_data_error(tmp_path):
    # found reviewing the bbox check: x = w = 1e308 are finite, but the box's x2 = x + w was inf
    path = write_dets(tmp_path, [{"image_id": 1, "category_id": 1, "bbox": [1e308, 0, 1e308, 1], "score": 0.5}])
    with pytest.raises(DataError, match=r"dets\.json: entry 0.*bbox"):
        load_detections_file(path)


def test_detections_deeply_nested_or_huge_int_json_is_a_data_error(tmp_path):
    # found by fuzzing (the COCO reader's twin): RecursionError and a plain ValueError (the int
    # digits limit) from json
    for text in ("[" * 50_000 + "]" * 50_000, "[" + "9" * 5000 + "]"):
        path = write_dets(tmp_path, text)
        with pytest.raises(DataError, match=r"dets\.json"):
            load_detections_file(path)


@pytest.mark.parametrize("field, value", [
    ("boxes", [["1", "2", "3", "4"]]),
    ("boxes", [[True, False, True, True]]),
    ("labels", [True]),
    ("labels", ["1"]),
    ("scores", ["0.5"]),
    ("scores", [False]),
    ("scores", 0.5),
    ("boxes", [[]]),
])
def test_detections_per_image_values_must_be_json_numbers(tmp_path, field, value):
    # found reviewing to_numpy, then by the fuzzer's reference reading: numpy read the strings
    # and booleans of the per-image format as numbers (and a bare number as a list of one)
    entry = {"image_id": 1, "boxes": [[1, 2, 3, 4]], "labels": [1], "scores": [0.5]}
    entry[field] = value
    path = write_dets(tmp_path, [entry])
    with pytest.raises(DataError, match=rf"dets\.json: entry 0.*{field}"):
        load_detections_file(path)


def test_detections_per_image_labels_are_bounded_by_category_ids(tmp_path):
    # found reviewing load_detections_file: with category_ids (3 classes) and no num_classes,
    # the per-image label 5 was accepted (it has no category id)
    path = write_dets(tmp_path, [{"image_id": 1, "boxes": [[1, 2, 3, 4]], "labels": [5], "scores": [0.5]}])
    with pytest.raises(DataError, match=r"dets\.json: entry 0.*label 5"):
        load_detections_file(path, category_ids=[7, 3, 9])


# ============================================================================== 4. image bytes

FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
MODES = ["RGB", "L", "P", "LA", "RGBA", "I;16", "CMYK", "1", "I", "F", "PA"]


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a correct CRC) declares `width` x `height`, and one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@st.composite
def image_file(draw) -> tuple[str, bytes, np.ndarray | None]:
    """(extension, file bytes, the RGB pixels it must decode to, when known)."""
    kind = draw(st.sampled_from(["image"] * 6 + ["random", "empty", "huge_png", "huge_header"]))
    if kind == "random":
        return ".jpg", draw(st.binary(max_size=64)), None
    if kind == "empty":
        return draw(st.sampled_from(list(FORMATS.values()))), b"", None
    if kind == "huge_png":
        w = draw(st.sampled_from([0, 1, 2**16, 2**20, 2**31 - 1]))
        return ".png", png_with_size(w, draw(st.sampled_from([1, 3, 2**15, 2**31 - 1]))), None
    fmt = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    save = {}
    orientation = draw(st.one_of(st.none(), st.integers(0, 9), st.sampled_from([65535, -1, "6", (6, 3)])))
    if orientation is not None and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        exif = Image.Exif()
        exif[0x0112] = orientation
        try:
            save["exif"] = exif.tobytes()
        except Exception:  # a value Exif cannot write: no EXIF then
            orientation = None
    try:
        source = make_image(size, mode, draw(st.integers(0, 3)))
        buf = io.BytesIO()
        source.save(buf, fmt, **save)
        data = buf.getvalue()
    except (OSError, ValueError, KeyError, TypeError, struct.error):  # a mode the format cannot store
        source, mode = make_image(size), "RGB"
        data = image_bytes(fmt, size, "RGB", 0, **save)
    expected = None
    if kind == "image" and fmt in ("PNG", "TIFF", "BMP") and mode in ("RGB", "L"):  # lossless, plain modes
        upright = UPRIGHT[orientation if orientation in UPRIGHT and "exif" in save else 1]
        expected = np.ascontiguousarray(upright(np.asarray(source.convert("RGB"))))
    if kind == "huge_header":
        if fmt == "BMP":  # width, height at offsets 18 and 22
            data = data[:18] + struct.pack("<ii", 2**30, -(2**30)) + data[26:]
        elif fmt == "GIF":  # logical screen and first image descriptor sizes
            data = data[:6] + struct.pack("<HH", 65535, 65535) + data[10:]
    mutation = draw(st.sampled_from([None] * 4 + ["truncate", "flip", "flip", "insert", "exif_garbage"]))
    if mutation == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(buf) - 1))
            buf[pos] ^= draw(st.integers(1, 255))
        data = bytes(buf)
    elif mutation == "insert":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    elif mutation == "exif_garbage" and b"Exif\x00\x00" in data:
        at = data.index(b"Exif\x00\x00") + 6 + draw(st.integers(0, 20))
        junk_bytes = draw(st.binary(min_size=1, max_size=12))
        data = data[:at] + junk_bytes + data[at + len(junk_bytes):]
    return FORMATS[fmt], data, expected if mutation is None else None


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # PIL's notes on the corrupt files
@fuzz_settings(250)
@given(image_file())
def test_fuzz_image_bytes(case):
    ext, data, expected = case
    with tempfile.TemporaryDirectory() as root, small_bomb_limit():
        path = os.path.join(root, "image" + ext)
        with open(path, "wb") as f:
            f.write(data)
        try:
            height, width, mode, orientation = image_header(path)
        except FasterRCNNError as exc:
            event("header rejected: " + reason(exc)[:20])
            assert_names_file(exc, [path])
            header = None
        else:
            header = (height, width)
            assert isinstance(height, int) and isinstance(width, int) and height >= 1 and width >= 1
            assert isinstance(mode, str) and orientation in range(1, 9)
            report = DataReport()
            assert probe_image(path, report) == header
        try:
            image = read_image(path)
        except FasterRCNNError as exc:
            event("decoding rejected: " + reason(exc)[:20])
            assert_names_file(exc, [path])
            return
        event(f"decoded ({ext}, orientation {orientation})")
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        assert header is not None, "read_image decoded a file whose header image_header rejects"
        assert (image.height, image.width) == header
        if expected is not None:  # the right pixels, upright
            assert np.array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
@pytest.mark.parametrize("fmt", ["TIFF", "PNG"])
def test_exif_orientation_is_applied_once(tmp_path, fmt, mode):
    # found by fuzzing: for a TIFF with an orientation tag, Pillow already reports the upright
    # size and applies the orientation on load; read_image applied it a second time (sizes
    # swapped back, 180 degrees instead of none). And from a path, Pillow maps uncompressed
    # grayscale TIFF strips at the upright size: scrambled pixels for orientations 5-8
    stored = make_image((4, 2), mode, seed=1)  # 4 wide, 2 high
    stored.save(tmp_path / "plain.png")
    pixels = np.asarray(read_image(tmp_path / "plain.png"))  # as stored, in RGB, no orientation
    for o, upright in UPRIGHT.items():
        exif = Image.Exif()
        exif[0x0112] = o
        path = tmp_path / f"o{o}.{fmt.lower()}"
        stored.save(path, fmt, exif=exif.tobytes())
        image = read_image(path)
        assert image_header(path)[:2] == (image.height, image.width) == ((4, 2) if o >= 5 else (2, 4))
        assert np.array_equal(np.asarray(image), upright(pixels)), (fmt, mode, o)


def test_image_with_corrupt_exif_is_a_data_error_or_upright(tmp_path):
    # (no bug found: a JPEG whose EXIF block is overwritten with garbage either reads as if it
    # had no orientation, consistently in the header and the pixels, or is a DataError)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = image_bytes("JPEG", (8, 4), exif=exif.tobytes())
    at = data.index(b"Exif\x00\x00") + 6
    for garbage in (b"\xff" * 8, b"MM\x00*\x00\x00\x00\x08\x00\x05", b"II*\x00\xff\xff\xff\x7f"):
        path = tmp_path / "bad.jpg"
        path.write_bytes(data[:at] + garbage + data[at + len(garbage):])
        try:
            h, w, _, _ = image_header(path)
        except DataError as exc:
            assert str(path) in str(exc)
            continue
        image = read_image(path)
        assert image.mode == "RGB" and (image.height, image.width) == (h, w)


def test_decompression_bomb_header_is_a_data_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_size(2**31 - 1, 2**31 - 1))
    with pytest.raises(DataError, match=r"bomb\.png"):
        image_header(path)
    with pytest.raises(DataError, match=r"bomb\.png"):
        read_image(path)


# ======================================================================= 5. the model's checks

K = 3


@functools.cache
def tiny_model():
    import fasterrcnn

    torch.manual_seed(0)
    # anchors 16-64 px suit the 64-96 px inputs (the paper's 128-512 px would all be ignored)
    return fasterrcnn.build_model("small", num_classes=K, min_size=64, max_size=96, anchors={"scales": [1, 2, 4]})


IMAGE_FAULTS = ["int_image", "uint8_image", "bool_image", "2d_image", "4_channels", "1_channel", "nan_pixel",
                "inf_pixel", "pixel_above_1", "pixel_255", "negative_pixel", "numpy_image", "empty_image", "list_image"]
TARGET_FAULTS = ["not_a_dict", "no_boxes", "no_labels", "boxes_list", "boxes_shape_4", "boxes_shape_5", "labels_float",
                 "labels_2d", "labels_length", "labels_list", "nan_box", "inf_box", "inverted_x", "inverted_y",
                 "zero_width", "zero_height", "outside_right", "outside_left", "outside_below", "outside_above",
                 "label_0", "label_above_k", "label_negative"]
BATCH_FAULTS = ["no_images", "images_dict", "one_3d_tensor", "targets_none", "targets_too_few", "targets_dict"]


@st.composite
def model_inputs(draw, faults):
    n = draw(st.integers(1, 2))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    images, targets = [], []
    for _ in range(n):
        h, w = draw(st.integers(8, 80)), draw(st.integers(8, 80))
        dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]))
        images.append(torch.rand(3, h, w, generator=gen).to(dtype))
        boxes = []
        for _ in range(draw(st.integers(0, 3))):  # inside the image, or sticking out of it
            x1 = draw(st.floats(-5, w - 1))
            y1 = draw(st.floats(-5, h - 1))
            x2 = draw(st.floats(max(x1, 0) + 0.5, w + 5))
            y2 = draw(st.floats(max(y1, 0) + 0.5, h + 5))
            boxes.append([x1, y1, x2, y2])
        labels = torch.tensor([draw(st.integers(1, K)) for _ in boxes], dtype=draw(st.sampled_from([torch.int64, torch.int32])))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": labels,
                        "difficult": torch.zeros(len(boxes), dtype=torch.bool)})
    fault = draw(st.sampled_from([None] * 3 + faults))
    i = draw(st.integers(0, n - 1))
    img, t = images[i], targets[i]
    _, h, w = img.shape
    if fault in TARGET_FAULTS[10:] and len(t["boxes"]) == 0:  # these need a box to break
        t["boxes"] = torch.tensor([[1.0, 1.0, 5.0, 5.0]])
        t["labels"] = torch.tensor([1])
        t["difficult"] = torch.zeros(1, dtype=torch.bool)
    b = t["boxes"]
    edit = {
        "int_image": lambda: (img * 255).to(torch.int64),
        "uint8_image": lambda: (img * 255).to(torch.uint8),
        "bool_image": lambda: img > 0.5,
        "2d_image": lambda: img[0],
        "4_channels": lambda: torch.cat([img, img[:1]]),
        "1_channel": lambda: img[:1],
        "numpy_image": lambda: img.numpy(),
        "empty_image": lambda: img[:, :0],
        "list_image": lambda: img.tolist(),
        "pixel_255": lambda: img.float() * 255,
    }
    if fault in edit:
        images[i] = edit[fault]()
    elif fault in ("nan_pixel", "inf_pixel", "pixel_above_1", "negative_pixel"):
        value = {"nan_pixel": math.nan, "inf_pixel": draw(st.sampled_from([math.inf, -math.inf])),
                 "pixel_above_1": draw(st.floats(1.01, 1e4)), "negative_pixel": draw(st.floats(-1e4, -0.01))}[fault]
        img = img.clone()
        img[draw(st.integers(0, 2)), draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))] = value
        images[i] = img
    elif fault == "not_a_dict":
        targets[i] = [t["boxes"], t["labels"]]
    elif fault == "no_boxes":
        del t["boxes"]
    elif fault == "no_labels":
        del t["labels"]
    elif fault == "boxes_list":
        t["boxes"] = b.tolist()
    elif fault == "boxes_shape_4":
        t["boxes"] = b.reshape(-1) if len(b) != 1 else b[0]
        if len(b) == 0:
            t["boxes"] = torch.zeros(4)
    elif fault == "boxes_shape_5":
        t["boxes"] = torch.cat([b, b[:, :1]], dim=1)
    elif fault == "labels_float":
        t["labels"] = t["labels"].float()
    elif fault == "labels_2d":
        t["labels"] = t["labels"][:, None] if len(b) else torch.zeros(0, 1, dtype=torch.int64)
    elif fault == "labels_length":
        t["labels"] = torch.cat([t["labels"], t["labels"].new_ones(1)])
    elif fault == "labels_list":
        t["labels"] = t["labels"].tolist()
    elif fault in TARGET_FAULTS[10:]:
        b, labels = b.clone(), t["labels"].clone()
        j = draw(st.integers(0, len(b) - 1))
        x1, y1, x2, y2 = b[j].tolist()
        new = {
            "nan_box": [x1, math.nan, x2, y2],
            "inf_box": [x1, y1, math.inf, y2],
            "inverted_x": [x2, y1, x1, y2],
            "inverted_y": [x1, y2, x2, y1],
            "zero_width": [x1, y1, x1, y2],
            "zero_height": [x1, y1, x2, y1],
            "outside_right": [w + draw(st.floats(0, 50)), y1, w + 60, y2],
            "outside_left": [-60, y1, -draw(st.floats(0, 50)), y2],
            "outside_below": [x1, h + draw(st.floats(0, 50)), x2, h + 60],
            "outside_above": [x1, -60, x2, -draw(st.floats(0, 50))],
        }.get(fault)
        if new is not None:
            b[j] = torch.tensor(new)
        else:
            labels[j] = {"label_0": 0, "label_above_k": draw(st.integers(K + 1, 1000)), "label_negative": -1}[fault]
        t["boxes"], t["labels"] = b, labels
    elif fault == "no_images":
        images = []
    elif fault == "images_dict":
        images = {"image": images[0]}
    elif fault == "one_3d_tensor":
        images = images[0]
    elif fault == "targets_none":
        targets = None
    elif fault == "targets_too_few":
        targets = targets[:-1]
    elif fault == "targets_dict":
        targets = targets[0]
    return images, targets, fault, i


def snapshot(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(before: dict, model) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if before[k].dtype != after[k].dtype or not torch.equal(before[k], after[k])]
    assert not changed, f"a rejected call changed {changed[:5]}"


def assert_rejected(exc: BaseException, fault: str, i: int) -> None:
    assert isinstance(exc, (ValueError, TypeError)), f"{fault}: {type(exc).__name__}: {exc}"
    msg = str(exc)
    if fault in IMAGE_FAULTS:
        assert f"images[{i}]" in msg, f"{fault}: {msg}"
    elif fault in TARGET_FAULTS:
        assert f"targets[{i}]" in msg, f"{fault}: {msg}"
    else:
        assert "images" in msg or "targets" in msg, f"{fault}: {msg}"


@fuzz_settings(60)
@given(model_inputs(IMAGE_FAULTS + TARGET_FAULTS + BATCH_FAULTS))
def test_fuzz_model_inputs_train(case):
    images, targets, fault, i = case
    event(f"fault: {fault}")
    model = tiny_model().train()
    before = snapshot(model)
    try:
        losses = model(images, targets)
    except Exception as exc:  # noqa: BLE001 - the property is about which exceptions
        assert fault is not None, f"valid input rejected: {type(exc).__name__}: {exc}"
        assert_rejected(exc, fault, i)
        assert_same_state(before, model)
        return
    assert fault is None, f"{fault} at index {i} was accepted"
    assert losses and all(bool(torch.isfinite(v).all()) for v in losses.values()), losses


@fuzz_settings(30)
@given(model_inputs(IMAGE_FAULTS + BATCH_FAULTS[:3]))
def test_fuzz_model_inputs_eval(case):
    images, _, fault, i = case
    model = tiny_model().eval()
    before = snapshot(model)
    try:
        with torch.no_grad():
            dets = model(images)
    except Exception as exc:  # noqa: BLE001
        assert fault is not None, f"valid input rejected: {type(exc).__name__}: {exc}"
        assert_rejected(exc, fault, i)
        assert_same_state(before, model)
        return
    assert fault is None, f"{fault} at index {i} was accepted"
    assert len(dets) == len(images)
    for img, d in zip(images, dets):
        h, w = img.shape[-2:]
        boxes = d["boxes"]
        assert bool(torch.isfinite(boxes).all() and torch.isfinite(d["scores"]).all())
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all())
        assert bool(((d["labels"] >= 1) & (d["labels"] <= K)).all())
    assert_same_state(before, model)


@pytest.mark.parametrize("fault", ["nan_pixel", "pixel_above_1", "pixel_255", "negative_pixel", "inf_pixel"])
def test_model_rejects_bad_pixels_before_batchnorm(fault):
    # the new checks (check_images): NaN / out-of-range pixels never reach a BatchNorm layer
    model = tiny_model().train()
    img = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    value = {"nan_pixel": math.nan, "pixel_above_1": 1.5, "negative_pixel": -0.5, "inf_pixel": math.inf}.get(fault)
    if value is None:
        img = img * 255
    else:
        img[1, 3, 4] = value
    before = snapshot(model)
    target = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match=r"images\[1\]"):
        model([torch.rand(3, 30, 30), img], [target, target])
    assert_same_state(before, model)


@pytest.mark.parametrize("field, value", [
    ("labels", torch.tensor([True])),
    ("boxes", torch.tensor([[False, False, True, True]])),
    ("boxes", torch.tensor([[1.0, 1.0, 20.0, 20.0]], dtype=torch.complex64)),
])
def test_model_rejects_targets_of_the_wrong_dtype(field, value):
    # found by fuzzing the model's checks: bool labels and bool or complex boxes used to pass
    model = tiny_model().train()
    before = snapshot(model)
    target = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([1]), field: value}
    try:
        model([torch.rand(3, 40, 50)], [target])
    except (ValueError, TypeError) as exc:
        assert f"targets[0]['{field}']" in str(exc)
    except Exception as exc:  # noqa: BLE001
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    else:
        raise AssertionError(f"{field} of dtype {value.dtype} accepted")
    assert_same_state(before, model)


@pytest.mark.parametrize("box", [[50.0, 1.0, 60.0, 20.0], [-20.0, 1.0, 0.0, 20.0], [1.0, 40.0, 20.0, 45.0]])
def test_model_rejects_boxes_entirely_outside_their_image(box):
    # the new check (check_targets): a gt box with no part inside its 50x40 image
    model = tiny_model().train()
    before = snapshot(model)
    good = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([2])}
    bad = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0], box]), "labels": torch.tensor([1, 2])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\]"):
        model([torch.rand(3, 40, 50), torch.rand(3, 40, 50)], [good, bad])
    assert_same_state(before, model)


# ============================================================================== 6. YOLO txt

YOLO_TOL = 0.01
# normalised values: inside [0, 1], a little outside (within the tolerance or not), odd text
norm_text = st.one_of(
    st.floats(0, 1).map(repr), st.floats(0, 1).map(lambda v: f"{v:.6f}"), st.sampled_from(["0", "1", "0.5", "1.0", ".5"]),
    st.floats(-0.03, 1.03).map(repr), st.sampled_from(WEIRD_NUMBERS),
)
class_text = st.sampled_from(["0", "1", "2", "0", "1", "3", "-1", "1.0", "1.5", "1e400", "x", "01", "+1", "1e0"])


@st.composite
def yolo_line(draw) -> str:
    kind = draw(st.sampled_from(["box"] * 6 + ["polygon", "polygon", "fields", "text"]))
    if kind == "text":
        return draw(st.sampled_from(["# comment", "cat 0.5 0.5 0.1 0.1", "0,0.5,0.5,0.1,0.1", "0 0.5 0.5 0.1 0.1 # x"]))
    n = {"box": 4, "polygon": 2 * draw(st.integers(3, 5)), "fields": draw(st.sampled_from([0, 1, 3, 5, 7]))}[kind]
    if kind == "box" and draw(st.booleans()):  # a plausible box (cx, cy, w, h): mostly inside, sometimes over an edge
        cx, cy, w, h = (draw(st.floats(0, 1)) for _ in range(4))
        values = [repr(v) for v in (cx, cy, w, h)]
    else:
        values = [draw(mostly(st.floats(0, 1).map(repr), norm_text, 4)) for _ in range(n)]
    sep = draw(mostly(st.just(" "), st.sampled_from(["\t", "  ", "\xa0", " \t "]), 6))
    return sep.join([draw(mostly(st.sampled_from(["0", "1", "2"]), class_text, 6)), *values])


@st.composite
def yolo_label_file(draw) -> bytes | None:
    if draw(rare(6)):
        return None  # no label file: an image without objects
    lines = draw(st.lists(st.one_of(yolo_line(), yolo_line(), st.sampled_from(["", "   "])),
                          min_size=0 if draw(rare(6)) else 1, max_size=5))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n", "\n\n"]))
    data = (draw(st.sampled_from(["", "", "\ufeff"])) + text).encode("utf-8")
    mutation = draw(st.sampled_from([None] * 12 + ["truncate", "latin1", "garbage", "nul"]))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "latin1":
        data = data + b"\xe9\xff"
    elif mutation == "garbage":
        data = draw(st.binary(max_size=30))
    elif mutation == "nul":
        data = data.replace(b" ", b"\x00", 1)
    return data


@st.composite
def yolo_names(draw) -> tuple[str, str | None]:
    """(where the names are: "yaml" / "txt" / "none", the text of that file)."""
    where = draw(st.sampled_from(["yaml", "yaml", "yaml", "txt", "none"]))
    names = list(draw(st.permutations(CLASS_NAMES)))
    if where == "txt":
        lines = draw(mostly(st.just(names), st.sampled_from([names + ["", ""], ["cat", "", "dog"], ["cat", "cat"],
                                                                [" dog ", "cat"], []]), 5))
        return where, "\n".join(lines) + "\n"
    if where == "none":
        return where, None
    style = draw(st.sampled_from(["list", "flow", "dict", "dict_sparse", "odd"]))
    if style == "list":
        body = "names:\n" + "".join(f"  - {n}\n" for n in names)
    elif style == "flow":
        body = f"names: [{', '.join(names)}]\n"
    elif style == "dict":
        body = "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    elif style == "dict_sparse":
        body = "names:\n  0: cat\n  2: bird\n"
    else:
        body = draw(st.sampled_from(["names: [cat, no]\n", "names: [cat, cat]\n", "names: cat\n", "names: []\n",
                                     "names: {x: cat}\n", "names: {-1: cat}\n", "names: [2020-01-01]\n",
                                     "names: [cat, 7]\n", "names: [cat, null]\n", "names: [cat\n", "names: {0: [a]}\n",
                                     "names: !!python/object:object {}\n", "- names\n", "", "names: ['', dog]\n"]))
    if draw(rare(5)):
        body += f"nc: {draw(st.sampled_from(['3', '2', 'x', 'true', '3.0']))}\n"
    splits = draw(mostly(st.sampled_from(["train: images/train\n", "path: .\ntrain: [images/train]\n",
                                          "train: ../images/train\n", "path: /no/such/dir\ntrain: images/train\n",
                                          "train: train.txt\n", ""]),
                         st.sampled_from(["train: 7\n", "train: images/nowhere\n", "train: images/train\nval: images/val\n",
                                          "train: [images/train, 3]\n", "train:\n  - images/train\n  - train.txt\n"]), 4))
    return where, body + splits


@st.composite
def yolo_case(draw):
    labels = {name: draw(yolo_label_file()) for name in ("img0", "img1")}
    orphan = draw(rare(8))
    names = draw(yolo_names())
    listed = draw(st.sampled_from([["./images/train/img0.jpg", "images/train/img1.png"], ["images/train/img0.jpg"],
                                   ["images/train/missing.jpg"], [], ["/abs/img.jpg"]]))
    classes = draw(st.sampled_from([None, None, None, ["cat"], ["dog", "bird"], ["zebra"]]))
    transforms = draw(st.sampled_from([None, "eval", "train"]))
    split = draw(st.sampled_from(["train"] * 5 + [None, "val", "test"]))
    return labels, orphan, names, listed, classes, transforms, split


def write_yolo(root: str, labels, orphan, names, listed) -> None:
    for d in ("images/train", "labels/train"):
        os.makedirs(os.path.join(root, d))
    for (name, _, _, data), stem in zip((JPG, PNG), ("img0", "img1"), strict=True):
        with open(os.path.join(root, "images", "train", name), "wb") as f:
            f.write(data)
        if labels[stem] is not None:
            with open(os.path.join(root, "labels", "train", stem + ".txt"), "wb") as f:
                f.write(labels[stem])
    if orphan:
        with open(os.path.join(root, "labels", "train", "ghost.txt"), "w") as f:
            f.write("0 0.5 0.5 0.1 0.1\n")
    where, text = names
    if text is not None:
        with open(os.path.join(root, "data.yaml" if where == "yaml" else "classes.txt"), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(root, "train.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(listed) + "\n")


def check_yolo_lines(path: str) -> int:
    """The label file parses into consistent arrays (or a DataError naming it): its object count."""
    from fasterrcnn.data.yolo import read_label_file

    try:
        lines = read_label_file(path)
    except FasterRCNNError as exc:
        assert_names_file(exc, [path])
        return -1
    n = len(lines.class_ids)
    assert lines.class_ids.dtype == np.int64 and (lines.class_ids >= 0).all()
    assert lines.boxes.shape == (n, 4) and np.isfinite(lines.boxes).all()
    assert (lines.boxes >= -1.5 * YOLO_TOL - 0.5).all() and (lines.boxes <= 1.5 + 1.5 * YOLO_TOL).all()
    assert lines.lines.shape == (n,) and (np.diff(lines.lines) > 0).all() and lines.polygon.shape == (n,)
    return n


@fuzz_settings(70)
@given(yolo_case())
def test_fuzz_yolo(case):
    from fasterrcnn.data.yolo import YOLODataset

    labels, orphan, names, listed, classes, transforms, split = case
    with tempfile.TemporaryDirectory() as root:
        write_yolo(root, labels, orphan, names, listed)
        objects = {stem: check_yolo_lines(os.path.join(root, "labels", "train", stem + ".txt"))
                   for stem in labels if labels[stem] is not None}
        try:
            ds = YOLODataset(root, split, classes, make_transforms(transforms))
        except FasterRCNNError as exc:
            event("rejected: " + reason(exc))
            assert_names_file(exc, [root])
            return
        check_dataset(ds)
        assert len(ds.class_ids) == ds.num_classes and len(set(ds.class_ids)) == ds.num_classes
        event(f"built, {min(sum(len(r.labels) for r in ds.records), 3)} (or more) boxes")
        if transforms != "train":  # every object line is kept, skipped as degenerate, or of another class
            read = sum(objects[os.path.basename(r.file).rsplit(".", 1)[0]] for r in ds.records
                       if os.path.isfile(r.file.replace("images", "labels").rsplit(".", 1)[0] + ".txt"))
            kept = sum(len(r.labels) for r in ds.records)
            assert kept + ds.report["boxes_degenerate"] + ds.report["unknown_class"] == read


# ============================================================================ 7. LabelMe JSON


@st.composite
def labelme_points(draw, kind: str):
    n = {"rectangle": 2, "polygon": draw(st.integers(3, 5))}.get(kind, draw(st.integers(1, 3)))
    xy = st.one_of(st.integers(-5, 45), st.floats(-5, 45))
    return [[draw(xy), draw(xy)] for _ in range(n)]


@st.composite
def labelme_shape(draw, one_in):
    def field(good, bad=junk):
        return draw(mostly(good, bad, one_in))

    kind = draw(st.sampled_from(["rectangle"] * 4 + ["polygon"] * 3 + ["point", "circle", "line", "linestrip", None]))
    shape = {
        "label": field(st.sampled_from(CLASS_NAMES + [" cat "]), st.one_of(junk, st.sampled_from(["", "  "]))),
        "points": field(labelme_points(kind), st.one_of(junk, st.lists(st.lists(coord, max_size=3), max_size=4),
                                                        labelme_points("polygon"))),
        "group_id": None,
        "flags": {},
    }
    if kind is not None:
        shape["shape_type"] = field(st.just(kind), st.one_of(junk, st.sampled_from(["mask", "Rectangle", ""])))
    return with_keys(draw, shape, one_in)


@st.composite
def labelme_doc(draw, image):
    one_in = draw(st.sampled_from([1000, 30, 8]))
    name, w, h, _ = image

    def field(good, bad=junk):
        return draw(mostly(good, bad, one_in))

    doc = {
        "version": "5.4.1",
        "flags": {},
        "shapes": draw(mostly(st.lists(labelme_shape(one_in), min_size=0 if draw(rare(6)) else 1, max_size=4),
                              junk, 4 * one_in)),
        "imagePath": field(st.sampled_from([name, "./" + name, "..\\lm\\" + name]),
                           st.one_of(junk, st.sampled_from(["missing.jpg", "", "img0"]))),
        "imageData": draw(mostly(st.none(), st.sampled_from(["aGk=", "not base64"]), 6)),
        "imageHeight": field(st.just(h), st.one_of(junk, st.sampled_from([h + 1, 0, -h, float(h)]))),
        "imageWidth": field(st.just(w), st.one_of(junk, st.sampled_from([w - 1, 0, 1.5]))),
    }
    doc = with_keys(draw, doc, one_in)
    if draw(st.booleans()):
        doc = draw(mutate_json(doc))
    text = json.dumps(doc)
    if draw(rare(3)):  # (else the marker stays a string: one more odd value)
        text = text.replace(json.dumps(HUGE), "1" + "0" * 5000)
    data = text.encode("utf-8")
    mutation = draw(mostly(st.none(), st.sampled_from(["truncate", "bom", "empty", "nest", "latin1"]), one_in))
    if mutation == "truncate":
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    elif mutation == "bom":
        data = b"\xef\xbb\xbf" + data
    elif mutation == "empty":
        data = b""
    elif mutation == "nest":
        data = b'{"shapes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    elif mutation == "latin1":
        data = data.replace(b"cat", b"c\xe9t")
    return data


@st.composite
def labelme_case(draw):
    images = draw(st.sampled_from([[JPG], [PNG], [JPG, PNG]]))
    docs = {image[0].rsplit(".", 1)[0]: draw(labelme_doc(image)) for image in images}
    layout = draw(st.sampled_from(["flat", "flat", "split"]))
    split = draw(st.sampled_from(["train", "train", "train", None, "val"]))
    classes = draw(st.sampled_from([None, None, ["cat"], ["dog", "bird"]]))
    transforms = draw(st.sampled_from([None, "eval", "train"]))
    return docs, layout, split, classes, transforms


@fuzz_settings(70)
@given(labelme_case())
def test_fuzz_labelme(case):
    from fasterrcnn.data.labelme import LabelMeDataset, parse_labelme_json

    docs, layout, split, classes, transforms = case
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "lm") if layout == "flat" else os.path.join(root, "lm", "train")
        os.makedirs(folder)
        for name, _, _, data in (JPG, PNG):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        shapes = 0
        for stem, data in docs.items():
            path = os.path.join(folder, stem + ".json")
            with open(path, "wb") as f:
                f.write(data)
            try:  # the parser alone: valid values, or a DataError naming the JSON
                ann = parse_labelme_json(path)
            except FasterRCNNError as exc:
                assert_names_file(exc, [path])
                continue
            n = len(ann["labels"])
            shapes += n
            assert ann["boxes"].shape == (n, 4) and np.isfinite(ann["boxes"]).all()
            assert (ann["boxes"][:, :2] <= ann["boxes"][:, 2:]).all()
            assert all(isinstance(c, str) and c and c.strip() == c for c in ann["labels"])
            assert ann["size"] is None or (ann["size"][0] >= 1 and ann["size"][1] >= 1)
        try:
            ds = LabelMeDataset(os.path.join(root, "lm"), split, classes, make_transforms(transforms))
        except FasterRCNNError as exc:
            event("rejected: " + reason(exc))
            assert_names_file(exc, [root])
            return
        check_dataset(ds)
        event(f"built, {min(sum(len(r.labels) for r in ds.records), 3)} (or more) boxes")
        if transforms != "train":  # every box or polygon is kept, skipped as degenerate, or of another class
            kept = sum(len(r.labels) for r in ds.records)
            assert kept + ds.report["boxes_degenerate"] + ds.report["unknown_class"] == shapes
