"""Box geometry and box coding against hand-computed values and brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from fasterrcnn.ops import (
    BBOX_XFORM_CLIP,
    BoxCoder,
    box_area,
    box_iou,
    clip_boxes_to_image,
    decode_boxes,
    encode_boxes,
    remove_small_boxes,
)


def random_boxes(n: int, seed: int, size: float = 100.0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * size
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * size / 2 + 0.5
    return torch.cat([xy, xy + wh], 1)


def brute_iou(a: list[float], b: list[float], one: float = 0.0) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0]) + one
    ih = min(a[3], b[3]) - max(a[1], b[1]) + one
    inter = max(iw, 0.0) * max(ih, 0.0)
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    return inter / (area_a + area_b - inter)


def test_box_area_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.0, 8.0]])
    assert box_area(boxes).tolist() == [50.0, 0.0]
    assert box_area(boxes, legacy_plus_one=True).tolist() == [66.0, 6.0]


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 5.0, 10.0]])
    # overlap 5x5=25, union 100+100-25=175; identical; disjoint; half contained
    assert torch.allclose(box_iou(a, b), torch.tensor([[25 / 175, 1.0, 0.0, 0.5]]))


@pytest.mark.parametrize("legacy", [False, True])
def test_box_iou_matches_brute_force(legacy: bool):
    a, b = random_boxes(17, 0), random_boxes(23, 1)
    one = 1.0 if legacy else 0.0
    ref = torch.tensor([[brute_iou(x, y, one) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    out = box_iou(a, b, legacy_plus_one=legacy)
    assert out.shape == (17, 23) and out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_box_iou_empty_and_degenerate():
    assert box_iou(torch.zeros(0, 4), random_boxes(3, 0).float()).shape == (0, 3)
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert math.isnan(box_iou(z, z).item())  # 0/0, as torchvision: compares false with any threshold


def test_box_iou_bfloat16_upcasts():
    a = random_boxes(5, 2).bfloat16()
    out = box_iou(a, a)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.diagonal(), torch.ones(5))


def test_clip_boxes_to_image():
    boxes = torch.tensor([[-5.0, -3.0, 120.0, 40.0], [10.0, 60.0, 20.0, 90.0]])
    assert clip_boxes_to_image(boxes, (50, 100)).tolist() == [[0, 0, 100, 40], [10, 50, 20, 50]]
    assert clip_boxes_to_image(boxes, (50, 100), legacy_plus_one=True).tolist() == [[0, 0, 99, 40], [10, 49, 20, 49]]
    # works on [..., 4] and keeps dtype
    b3 = boxes.double()[None].expand(3, 2, 4)
    out = clip_boxes_to_image(b3, (50, 100))
    assert out.shape == (3, 2, 4) and out.dtype == torch.float64


def test_remove_small_boxes():
    boxes = torch.tensor([[0.0, 0, 16, 16], [0, 0, 15, 30], [0, 0, 15, 15], [5, 5, 4, 30]])
    assert remove_small_boxes(boxes, 16).tolist() == [0]
    assert remove_small_boxes(boxes, 16, legacy_plus_one=True).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "fn, args, match",
    [
        (box_iou, (torch.zeros(3, 5), torch.zeros(2, 4)), r"boxes1 must have shape \[\.\.\., 4\]"),
        (box_iou, (torch.zeros(3, 4), [1, 2, 3, 4]), "boxes2 must be a torch.Tensor"),
        (box_iou, (torch.zeros(2, 3, 4), torch.zeros(2, 4)), r"two Tensor\[N, 4\]"),
        (clip_boxes_to_image, (torch.zeros(3, 4), (10,)), "height, width"),
        (remove_small_boxes, (torch.zeros(2, 2, 4), 1.0), r"\[N, 4\]"),
    ],
)
def test_box_ops_errors(fn, args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fn(*args)


# ---------------------------------------------------------------- box coding (paper Eq. 2)


def test_encode_hand_computed():
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), w 10, h 20
    gt = torch.tensor([[2.0, 4.0, 22.0, 14.0]])  # centre (12, 9), w 20, h 10
    t = encode_boxes(gt, anchor)
    expected = [(12 - 5) / 10, (9 - 10) / 20, math.log(20 / 10), math.log(10 / 20)]
    torch.testing.assert_close(t, torch.tensor([expected]))
    # weights multiply each coordinate (the detection head's 1/stds = (10, 10, 5, 5))
    tw = encode_boxes(gt, anchor, (10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(tw, torch.tensor([expected]) * torch.tensor([10.0, 10, 5, 5]))


def test_encode_legacy_plus_one_hand_computed():
    anchor = torch.tensor([[0.0, 0.0, 9.0, 19.0]])  # +1: w 10, h 20, centre (5, 10)
    gt = torch.tensor([[2.0, 4.0, 21.0, 13.0]])  # +1: w 20, h 10, centre (12, 9)
    t = encode_boxes(gt, anchor, legacy_plus_one=True)
    torch.testing.assert_close(t, torch.tensor([[0.7, -0.05, math.log(2), math.log(0.5)]]))


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_decode_round_trip(legacy, weights):
    anchors, gt = random_boxes(200, 3), random_boxes(200, 4)
    coder = BoxCoder(weights, legacy_plus_one=legacy)
    deltas = coder.encode(gt, anchors)
    torch.testing.assert_close(coder.decode(deltas, anchors), gt, rtol=0, atol=1e-9)


def test_decode_class_specific_layout_and_zero_deltas():
    boxes = random_boxes(7, 5)
    deltas = torch.zeros(7, 4 * 3, dtype=torch.float64)
    out = decode_boxes(deltas, boxes)
    assert out.shape == (7, 12)
    for k in range(3):
        torch.testing.assert_close(out[:, 4 * k : 4 * k + 4], boxes)


def test_decode_clamps_dw_dh_so_it_never_overflows():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = decode_boxes(torch.tensor([[0.0, 0.0, 1e4, 1e4]]), boxes)
    assert torch.isfinite(out).all()
    # clamped at log(1000/16): the box is at most 1000 px wide
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(16.0 * math.exp(BBOX_XFORM_CLIP)))
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_decode_reduced_precision_computes_in_float32():
    anchors, gt = random_boxes(50, 6).float(), random_boxes(50, 7).float()
    deltas = encode_boxes(gt, anchors)
    d16, a16 = deltas.bfloat16(), anchors.bfloat16()
    out = decode_boxes(d16, a16)
    assert out.dtype == torch.float32
    # exactly the float32 computation on the bf16-rounded inputs: nothing is done in bf16
    assert torch.equal(out, decode_boxes(d16.float(), a16.float()))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: encode_boxes(torch.zeros(3, 4), torch.zeros(2, 4)), "same shape"),
        (lambda: decode_boxes(torch.zeros(3, 5), torch.zeros(3, 4)), r"Tensor\[N, 4\*K\]"),
        (lambda: decode_boxes(torch.zeros(3, 4), torch.zeros(2, 4)), r"Tensor\[N, 4\*K\]"),
        (lambda: BoxCoder((1.0, 1.0, 1.0)), "four positive numbers"),
        (lambda: encode_boxes(torch.tensor([[0.0, 0, float("nan"), 1]]), torch.ones(1, 4)), "non-finite"),
    ],
)
def test_box_coding_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_hflip_boxes_follows_the_mirrored_pixels():
    from fasterrcnn.ops import hflip_boxes

    # continuous coordinates: the box [2, 5) x [1, 3) covers pixel columns 2, 3, 4 of a 10-wide image
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[1:3, 2:5] = True
    cols = torch.where(mask.flip(-1).any(0))[0]
    flipped = hflip_boxes(torch.tensor([[2.0, 1, 5, 3]]), 10)
    assert flipped.tolist() == [[float(cols.min()), 1.0, float(cols.max() + 1), 3.0]] == [[5.0, 1.0, 8.0, 3.0]]
    # the +1 convention: the box [2, 4] (pixel indices) covers the same columns; mirrored: [5, 7]
    legacy = hflip_boxes(torch.tensor([[2.0, 1, 4, 2]]), 10, legacy_plus_one=True)
    assert legacy.tolist() == [[float(cols.min()), 1.0, float(cols.max()), 2.0]] == [[5.0, 1.0, 7.0, 2.0]]
    boxes = torch.rand(20, 4) * 50
    boxes[:, 2:] += boxes[:, :2]
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes, 120.0), 120.0), boxes)  # an involution
    assert hflip_boxes(torch.zeros(0, 4), 10).shape == (0, 4)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_compiled_kernel_equals_the_tensor_code(monkeypatch, legacy, dtype):
    """On CPU, large inputs go to the numba kernel: bitwise the tensor code's results, NaN for 0/0."""
    import fasterrcnn.ops.boxes as boxes_mod

    if boxes_mod._compiled_iou() is None:
        pytest.skip("numba is not installed")
    a, b = random_boxes(300, 1).to(dtype), random_boxes(500, 2).to(dtype)
    a[0] = b[0] = 0.0  # two empty boxes: 0/0
    assert boxes_mod._use_compiled(a, b)
    compiled = box_iou(a, b, legacy_plus_one=legacy)
    monkeypatch.setattr(boxes_mod, "_COMPILED_MIN_PAIRS", 10**12)
    tensor_code = box_iou(a, b, legacy_plus_one=legacy)
    assert torch.equal(torch.nan_to_num(compiled, nan=-1), torch.nan_to_num(tensor_code, nan=-1))
    assert (torch.isnan(compiled) == torch.isnan(tensor_code)).all()
    a1 = a[1:].clone().requires_grad_()  # autograd takes the out-of-place tensor code
    box_iou(a1, b[1:]).sum().backward()
    assert a1.grad is not None and torch.isfinite(a1.grad).all()
