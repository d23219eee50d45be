"""roi_align / RoIAlign against a brute-force reference written from the definition.

The reference follows torchvision's roi_align kernel rule by rule with plain Python loops over
RoIs, bins and sampling points: corners scaled (and shifted by -0.5 when aligned; at least 1 x 1
when not), a sampling_ratio^2 or adaptive ceil(roi / out) grid per bin, bilinear interpolation
with points outside [-1, H] x [-1, W] contributing 0 and coordinates clamped at 0 and at the last
row/column, and the average over the grid with count max(grid_h * grid_w, 1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fasterrcnn.ops import RoIAlign, roi_align


# --------------------------------------------------------------------------- reference
def bilinear_terms(y: float, x: float, height: int, width: int) -> list[tuple[int, int, float]]:
    """(h, w, weight) of the four neighbours of a sampling point, as in the kernel."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return []
    y = max(y, 0.0)
    x = max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return [
        (y_low, x_low, hy * hx),
        (y_low, x_high, hy * lx),
        (y_high, x_low, ly * hx),
        (y_high, x_high, ly * lx),
    ]


def ref_roi_align(
    x: np.ndarray,
    rois: np.ndarray,
    out_h: int,
    out_w: int,
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    grad_out: np.ndarray | None = None,
    ftype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """(output [K, C, out_h, out_w], gradient w.r.t. x for `grad_out`). Coordinates are computed
    in `ftype` with the kernel's order of operations."""
    n, c, height, width = x.shape
    k = rois.shape[0]
    out = np.zeros((k, c, out_h, out_w))
    grad = np.zeros_like(x, dtype=np.float64)
    s = ftype(scale)
    offset = ftype(0.5) if aligned else ftype(0.0)
    for r in range(k):
        b = int(rois[r, 0])
        x1 = ftype(rois[r, 1]) * s - offset
        y1 = ftype(rois[r, 2]) * s - offset
        x2 = ftype(rois[r, 3]) * s - offset
        y2 = ftype(rois[r, 4]) * s - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, ftype(1.0)), max(roi_h, ftype(1.0))
        bin_h, bin_w = roi_h / ftype(out_h), roi_w / ftype(out_w)
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / ftype(out_h)))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / ftype(out_w)))
        count = max(grid_h * grid_w, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = np.zeros(c)
                for iy in range(grid_h):
                    yy = y1 + ftype(ph) * bin_h + ftype(iy + 0.5) * bin_h / ftype(grid_h)
                    for ix in range(grid_w):
                        xx = x1 + ftype(pw) * bin_w + ftype(ix + 0.5) * bin_w / ftype(grid_w)
                        for h, w, wt in bilinear_terms(float(yy), float(xx), height, width):
                            acc += wt * x[b, :, h, w]
                            if grad_out is not None:
                                grad[b, :, h, w] += wt * grad_out[r, :, ph, pw] / count
                out[r, :, ph, pw] = acc / count
    return out, grad


# --------------------------------------------------------------------------- cases
def random_rois(g: torch.Generator, k: int, n: int, img_h: float, img_w: float) -> torch.Tensor:
    """A mix of ordinary, partly/wholly outside, tiny (< 1 cell) and degenerate boxes."""
    cx = torch.rand(k, generator=g, dtype=torch.float64) * img_w * 1.4 - 0.2 * img_w
    cy = torch.rand(k, generator=g, dtype=torch.float64) * img_h * 1.4 - 0.2 * img_h
    bw = torch.rand(k, generator=g, dtype=torch.float64) * img_w * 0.8
    bh = torch.rand(k, generator=g, dtype=torch.float64) * img_h * 0.8
    kind = torch.randint(0, 6, (k,), generator=g)
    bw = torch.where(kind == 1, bw * 0.02, bw)  # tiny
    bh = torch.where(kind == 1, bh * 0.02, bh)
    bw = torch.where(kind == 2, -bw * 0.3, bw)  # x2 < x1
    bw = torch.where(kind == 3, torch.zeros_like(bw), bw)  # zero width
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    whole = torch.tensor(
        [-0.5 * img_w, -0.5 * img_h, 1.5 * img_w, 1.5 * img_h], dtype=torch.float64
    )
    boxes = torch.where((kind == 4)[:, None], whole, boxes)  # covers (and exceeds) the map
    bidx = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([bidx, boxes], 1)


CASES = [
    # (N, C, H, W, out_h, out_w, scale)
    (1, 3, 10, 12, 7, 7, 1.0),
    (2, 2, 9, 13, 3, 5, 1.0),
    (3, 2, 16, 11, 2, 4, 1 / 8),
    (2, 3, 12, 15, 7, 6, 1 / 16),
    (1, 2, 5, 4, 1, 1, 1 / 8),
]


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2, 3])
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float64(case: tuple, sampling_ratio: int, aligned: bool) -> None:
    n, c, h, w, oh, ow, scale = case
    g = torch.Generator().manual_seed(h * w + sampling_ratio + 10 * aligned)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(g, 8, n, h / scale, w / scale)
    out = roi_align(x, rois, (oh, ow), scale, sampling_ratio, aligned)
    assert out.shape == (rois.shape[0], c, oh, ow) and out.dtype == torch.float64
    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ref, ref_g = ref_roi_align(
        x.detach().numpy(), rois.numpy(), oh, ow, scale, sampling_ratio, aligned, go.numpy()
    )
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=1e-5)
    out.backward(go)
    np.testing.assert_allclose(x.grad.numpy(), ref_g, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("case", CASES[:4])
def test_matches_reference_float32(case: tuple, sampling_ratio: int, aligned: bool) -> None:
    """float32: coordinates in float32 as the float32 kernel; values within float32 rounding."""
    n, c, h, w, oh, ow, scale = case
    g = torch.Generator().manual_seed(5 + h)
    x = torch.randn(n, c, h, w, generator=g)
    rois = random_rois(g, 10, n, h / scale, w / scale).float()
    xg = x.clone().requires_grad_(True)
    out = roi_align(xg, rois, (oh, ow), scale, sampling_ratio, aligned)
    go = torch.randn(out.shape, generator=g)
    ref, ref_g = ref_roi_align(
        x.double().numpy(),
        rois.double().numpy(),
        oh,
        ow,
        scale,
        sampling_ratio,
        aligned,
        go.double().numpy(),
        np.float32,
    )
    np.testing.assert_allclose(out.detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        out2 = roi_align(x, rois, (oh, ow), scale, sampling_ratio, aligned)
    torch.testing.assert_close(out2, out.detach(), rtol=0, atol=0)
    out.backward(go)
    np.testing.assert_allclose(xg.grad.double().numpy(), ref_g, rtol=1e-5, atol=1e-5)


def test_benchmark_workload_matches_reference() -> None:
    """The benchmark's RoIs (300 on a 38x50 map, scale 1/16, 7x7, sampling_ratio 2, aligned),
    float32, against the reference (few channels to keep the reference quick)."""
    from fasterrcnn.benchmark.ops import random_boxes

    boxes, _ = random_boxes(300, seed=1)
    rois = torch.cat([torch.zeros(300, 1), boxes], 1)
    x = torch.randn(1, 2, 38, 50, generator=torch.Generator().manual_seed(2))
    xg = x.clone().requires_grad_(True)
    out = roi_align(xg, rois, 7, 1 / 16, 2, True)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    ref, ref_g = ref_roi_align(
        x.double().numpy(),
        rois.double().numpy(),
        7,
        7,
        1 / 16,
        2,
        True,
        go.double().numpy(),
        np.float32,
    )
    np.testing.assert_allclose(out.detach().double().numpy(), ref, rtol=1e-5, atol=1e-5)
    out.backward(go)
    np.testing.assert_allclose(xg.grad.double().numpy(), ref_g, rtol=1e-5, atol=1e-4)


def test_list_of_boxes_equals_tensor_form() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 10, 10, generator=g, dtype=torch.float64)
    b0 = torch.tensor([[0.0, 0.0, 9.0, 9.0], [2.2, 3.1, 5.7, 8.4]], dtype=torch.float64)
    b1 = torch.tensor([[1.5, 1.0, 4.0, 4.5]], dtype=torch.float64)
    rois = torch.cat(
        [torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64), torch.cat([b0, b1])], 1
    )
    out = roi_align(x, [b0, b1], (3, 2), 1.0, -1, True)
    torch.testing.assert_close(out, roi_align(x, rois, (3, 2), 1.0, -1, True), rtol=0, atol=0)
    ref, _ = ref_roi_align(x.numpy(), rois.numpy(), 3, 2, 1.0, -1, True)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_known_values() -> None:
    """Hand-checkable cases: a linear ramp is reproduced exactly by bilinear sampling."""
    ramp = torch.arange(10, dtype=torch.float64).view(1, 1, 1, 10).expand(1, 1, 6, 10).contiguous()
    # aligned box [2, 6] x [1, 4] -> sample centres at x = 1.5 + (j + 0.5) * 4 / 4 -> 2, 3, 4, 5
    out = roi_align(
        ramp, torch.tensor([[0, 2.0, 1.0, 6.0, 4.0]], dtype=torch.float64), (1, 4), 1.0, 1, True
    )
    torch.testing.assert_close(
        out.flatten(), torch.tensor([2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    )
    # a zero-size aligned box samples nothing (adaptive grid 0): output 0
    out = roi_align(
        ramp, torch.tensor([[0, 3.0, 3.0, 3.0, 3.0]], dtype=torch.float64), 2, 1.0, -1, True
    )
    assert torch.equal(out, torch.zeros_like(out))
    # not aligned, the same box is forced to 1 x 1: samples inside [3, 4]
    out = roi_align(
        ramp, torch.tensor([[0, 3.0, 3.0, 3.0, 3.0]], dtype=torch.float64), 1, 1.0, 2, False
    )
    torch.testing.assert_close(out.flatten(), torch.tensor([3.5], dtype=torch.float64))
    # wholly outside the map (beyond the -1 / W margin): 0
    out = roi_align(
        ramp, torch.tensor([[0, 20.0, 20.0, 30.0, 30.0]], dtype=torch.float64), 2, 1.0, 2, False
    )
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize(
    "aligned, sampling_ratio, scale",
    [(False, -1, 1.0), (True, 2, 1.0), (False, 3, 0.25), (True, -1, 0.5)],
)
def test_gradcheck(aligned: bool, sampling_ratio: int, scale: float) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(
        [
            [0, 0, 0, 5, 4],
            [1, 2.2, 1.6, 5.4, 6.9],
            [1, -3, -2, 4, 3],
            [0, 5, 3, 5.3, 3.2],
            [1, 5, 4, 3, 2],
        ],
        dtype=torch.float64,
    )
    rois = torch.cat([boxes[:, :1], boxes[:, 1:] / scale], 1)
    assert torch.autograd.gradcheck(
        lambda t: roi_align(t, rois, (3, 2), scale, sampling_ratio, aligned), (x,)
    )


def test_empty_boxes() -> None:
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5), (7, 3), 1.0, 2, True)
    assert out.shape == (0, 4, 7, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert roi_align(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 4, 2, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_dtypes(dtype: torch.dtype) -> None:
    """Computed in float32 and rounded once: equal to the float32 result on the rounded input
    within one rounding of the output dtype (rtol 2^-7 for bfloat16, 2^-10 for float16); and
    close to the float32 result on the unrounded input (atol/rtol 3e-2)."""
    g = torch.Generator().manual_seed(4)
    x32 = torch.randn(2, 6, 12, 14, generator=g)
    x = x32.to(dtype)
    rois = random_rois(g, 20, 2, 12 * 8, 14 * 8).float()
    xg = x.clone().requires_grad_(True)
    out = roi_align(xg, rois, 5, 1 / 8, 2, True)
    assert out.dtype == dtype
    eps = 2.0**-7 if dtype == torch.bfloat16 else 2.0**-10
    ref = roi_align(x.float(), rois, 5, 1 / 8, 2, True)
    torch.testing.assert_close(out.float(), ref, rtol=eps, atol=1e-6)
    torch.testing.assert_close(
        out.float(), roi_align(x32, rois, 5, 1 / 8, 2, True), rtol=3e-2, atol=3e-2
    )
    out.float().sum().backward()
    assert xg.grad.dtype == dtype
    xf = x.float().requires_grad_(True)
    roi_align(xf, rois, 5, 1 / 8, 2, True).sum().backward()
    torch.testing.assert_close(xg.grad.float(), xf.grad, rtol=eps, atol=1e-6)


def test_autocast_bfloat16() -> None:
    """Under CPU autocast the op computes in float32 and returns the input's dtype (as
    torchvision's autocast wrapper); the internal arithmetic is not recast to bfloat16."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 10, 10, generator=g)
    rois = random_rois(g, 10, 1, 80, 80).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = roi_align(x, rois, 3, 1 / 8, -1, False)
        out16 = roi_align(x.bfloat16(), rois.bfloat16(), 3, 1 / 8, -1, False)
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16
    torch.testing.assert_close(out32, roi_align(x, rois, 3, 1 / 8, -1, False), rtol=0, atol=0)
    ref = roi_align(x.bfloat16().float(), rois.bfloat16().float(), 3, 1 / 8, -1, False)
    torch.testing.assert_close(out16.float(), ref, rtol=2.0**-7, atol=1e-6)
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        roi_align(xg, rois, 3, 1 / 8, 2, True).sum().backward()
    xr = x.clone().requires_grad_(True)
    roi_align(xr, rois, 3, 1 / 8, 2, True).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=0)


def test_module() -> None:
    m = RoIAlign((7, 7), 1 / 16, 2, aligned=True)
    assert "sampling_ratio=2" in repr(m) and "aligned=True" in repr(m)
    x = torch.randn(1, 3, 20, 20)
    rois = torch.tensor([[0, 10.0, 20.0, 200.0, 300.0]])
    torch.testing.assert_close(m(x, rois), roi_align(x, rois, 7, 1 / 16, 2, True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_many_channels_in_blocks(dtype: torch.dtype) -> None:
    """The forward gather-sum runs in blocks of 64 channels: 150 channels (blocks + a partial
    block) equal the channel-by-channel results; input in channels_last memory format."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 150, 9, 12, generator=g, dtype=dtype).to(memory_format=torch.channels_last)
    rois = random_rois(g, 25, 2, 9 * 4, 12 * 4).to(dtype)
    xg = x.clone().requires_grad_(True)
    out = roi_align(xg, rois, (3, 4), 0.25, -1, True)
    xs = [x[:, i : i + 1].clone().requires_grad_(True) for i in range(150)]
    outs = [roi_align(t, rois, (3, 4), 0.25, -1, True) for t in xs]
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, torch.cat(outs, 1), rtol=tol, atol=tol)
    go = torch.randn(out.shape, generator=g, dtype=dtype)
    out.backward(go)
    torch.autograd.backward(outs, list(go.split(1, dim=1)))
    torch.testing.assert_close(xg.grad, torch.cat([t.grad for t in xs], 1), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(1, 2, 1, 7), (1, 2, 6, 1), (2, 1, 1, 1)])
@pytest.mark.parametrize("aligned", [False, True])
def test_single_row_or_column_maps(shape: tuple[int, ...], aligned: bool) -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(g, 10, shape[0], shape[2] * 2, shape[3] * 2)
    out = roi_align(x, rois, (2, 3), 0.5, -1, aligned)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    ref, ref_g = ref_roi_align(x.detach().numpy(), rois.numpy(), 2, 3, 0.5, -1, aligned, go.numpy())
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-12)
    out.backward(go)
    np.testing.assert_allclose(x.grad.numpy(), ref_g, atol=1e-12)


# --------------------------------------------------------------------------- errors
def test_errors() -> None:
    x = torch.randn(2, 3, 8, 8)
    ok = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="input must be a 4-D"):
        roi_align(torch.randn(3, 8, 8), ok, 2)
    with pytest.raises(TypeError, match="input must be a floating-point"):
        roi_align(torch.ones(1, 1, 4, 4, dtype=torch.int64), ok, 2)
    with pytest.raises(ValueError, match=r"boxes must be a Tensor\[K, 5\]"):
        roi_align(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\] must have shape \[L, 4\]"):
        roi_align(x, [torch.zeros(2, 3)], 2)
    with pytest.raises(ValueError, match="boxes contains non-finite"):
        roi_align(x, torch.tensor([[0, 1.0, float("inf"), 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(x, torch.tensor([[-1, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_align(x, ok, (3, 0))
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_align(x, ok, 2, -1.0)
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_align(x, ok, 2, 1.0, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="aligned"):
        roi_align(x, ok, 2, 1.0, 2, "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sampling_ratio"):
        RoIAlign(7, 1 / 16, None)  # type: ignore[arg-type]
