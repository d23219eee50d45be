"""roi_pool / RoIPool against a brute-force reference written from the definition.

The reference follows torchvision's roi_pool kernel rule by rule with plain Python loops over
RoIs, bins, channels and cells: corners scaled and rounded half away from zero, RoI size
max(end - start + 1, 1), bins [floor(p * size / n), ceil((p + 1) * size / n)) offset and clamped,
empty bins 0, maximum over values > -FLT_MAX with a strict '>' in row-major order (first max
wins), gradient to the argmax.
"""

from __future__ import annotations

import importlib
import importlib.util
import math

import numpy as np
import pytest
import torch

from fasterrcnn.ops import RoIPool, roi_pool

roi_pool_module = importlib.import_module("fasterrcnn.ops.roi_pool.scan")  # the compiled scan, patched below

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(autouse=True, params=["compiled", "tables"])
def pool_path(request, monkeypatch) -> str:
    """Every test runs twice: with the numba-compiled scan that serves CPU inputs (where numba
    is installed; else that run is the same as the other), and with it unavailable, so that the
    sparse-table path answers."""
    if request.param == "tables":
        monkeypatch.setattr(roi_pool_module, "_compiled_scan", lambda: None)
    return request.param


def test_which_path_serves_cpu_inputs(pool_path, monkeypatch) -> None:
    """The compiled scan answers CPU inputs when numba is installed (and is not switched off),
    for every RoI, split between threads; the results are the reference's either way."""
    real = roi_pool_module._compiled_scan()
    if pool_path == "compiled" and importlib.util.find_spec("numba") is not None:
        assert real is not None
    calls = []
    if real is not None:
        monkeypatch.setattr(roi_pool_module, "_compiled_scan", lambda: lambda *a: calls.append(a[-3:-1]) or real(*a))
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 12, 15, generator=g)
    xy = torch.rand(40, 2, generator=g) * 100
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).double(), xy, xy + torch.rand(40, 2, generator=g) * 90 + 1], 1)
    out = roi_pool(x, rois.float(), (3, 4), 1 / 8)
    ref, _ = ref_roi_pool(x.double().numpy(), rois.numpy(), 3, 4, 1 / 8, np.float32)
    np.testing.assert_array_equal(out.double().numpy(), ref)
    if real is not None:
        covered = sorted(calls)
        assert covered[0][0] == 0 and covered[-1][1] == 40
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))  # the RoIs split without gaps


# --------------------------------------------------------------------------- reference
def c_round(v: float) -> int:
    """C round(): half away from zero."""
    t = math.trunc(v)
    if abs(v - t) >= 0.5:
        t += 1 if v > 0 else -1
    return int(t)


def ref_roi_pool(
    x: np.ndarray, rois: np.ndarray, out_h: int, out_w: int, scale: float, ftype: type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (output [K, C, out_h, out_w], argmax flat h * W + w or -1). Coordinate arithmetic
    is done in `ftype` (np.float32 mirrors the float32 kernel, np.float64 the float64 one)."""
    n, c, height, width = x.shape
    k = rois.shape[0]
    out = np.zeros((k, c, out_h, out_w), dtype=np.float64)
    arg = np.full((k, c, out_h, out_w), -1, dtype=np.int64)
    s = ftype(scale)
    for r in range(k):
        b = int(rois[r, 0])
        start_w = c_round(float(ftype(rois[r, 1]) * s))
        start_h = c_round(float(ftype(rois[r, 2]) * s))
        end_w = c_round(float(ftype(rois[r, 3]) * s))
        end_h = c_round(float(ftype(rois[r, 4]) * s))
        roi_w = max(end_w - start_w + 1, 1)
        roi_h = max(end_h - start_h + 1, 1)
        bin_h = ftype(roi_h) / ftype(out_h)
        bin_w = ftype(roi_w) / ftype(out_w)
        for ph in range(out_h):
            for pw in range(out_w):
                hs = int(math.floor(ftype(ph) * bin_h))
                he = int(math.ceil(ftype(ph + 1) * bin_h))
                ws = int(math.floor(ftype(pw) * bin_w))
                we = int(math.ceil(ftype(pw + 1) * bin_w))
                hs = min(max(hs + start_h, 0), height)
                he = min(max(he + start_h, 0), height)
                ws = min(max(ws + start_w, 0), width)
                we = min(max(we + start_w, 0), width)
                empty = he <= hs or we <= ws
                for ch in range(c):
                    best = 0.0 if empty else -FLT_MAX
                    idx = -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            if x[b, ch, h, w] > best:
                                best = x[b, ch, h, w]
                                idx = h * width + w
                    out[r, ch, ph, pw] = best
                    arg[r, ch, ph, pw] = idx
    return out, arg


def ref_grad(
    shape: tuple[int, ...], rois: np.ndarray, arg: np.ndarray, grad_out: np.ndarray
) -> np.ndarray:
    n, c, height, width = shape
    g = np.zeros((n, c, height * width), dtype=np.float64)
    for r in range(arg.shape[0]):
        b = int(rois[r, 0])
        for ch in range(c):
            for ph in range(arg.shape[2]):
                for pw in range(arg.shape[3]):
                    if arg[r, ch, ph, pw] >= 0:
                        g[b, ch, arg[r, ch, ph, pw]] += grad_out[r, ch, ph, pw]
    return g.reshape(shape)


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
    # some exact half-cell coordinates, to exercise the rounding rule
    half = torch.randint(0, 2 * int(img_w), (k, 4), generator=g).double() / 2
    boxes = torch.where((kind == 4)[:, None], half, boxes)
    bidx = torch.randint(0, n, (k, 1), generator=g).double()
    return torch.cat([bidx, boxes], 1)


CASES = [
    # (N, C, H, W, out_h, out_w, scale)
    (1, 3, 10, 12, 7, 7, 1.0),
    (2, 4, 9, 13, 3, 5, 1.0),
    (3, 2, 16, 11, 2, 4, 1 / 8),
    (2, 3, 12, 15, 7, 6, 1 / 16),
    (1, 2, 5, 4, 6, 6, 1 / 8),
    (2, 5, 20, 17, 1, 1, 1.0),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("case", CASES)
def test_matches_reference_float64(case: tuple, seed: int) -> None:
    n, c, h, w, oh, ow, scale = case
    g = torch.Generator().manual_seed(1000 * seed + h * w)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    rois = random_rois(g, 9, n, h / scale, w / scale)
    x.requires_grad_(True)
    out = roi_pool(x, rois, (oh, ow), scale)
    ref, arg = ref_roi_pool(x.detach().numpy(), rois.numpy(), oh, ow, scale)
    assert out.shape == (rois.shape[0], c, oh, ow) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=0, atol=1e-5)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(go)
    np.testing.assert_allclose(
        x.grad.numpy(), ref_grad(tuple(x.shape), rois.numpy(), arg, go.numpy()), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("case", CASES[:4])
def test_matches_reference_float32(case: tuple) -> None:
    """float32 (the fast packed-key path): exact values and argmax locations."""
    n, c, h, w, oh, ow, scale = case
    g = torch.Generator().manual_seed(7 + h)
    x = torch.randn(n, c, h, w, generator=g)
    rois = random_rois(g, 12, n, h / scale, w / scale).float()
    xg = x.clone().requires_grad_(True)
    out = roi_pool(xg, rois, (oh, ow), scale)
    ref, arg = ref_roi_pool(x.double().numpy(), rois.double().numpy(), oh, ow, scale, np.float32)
    np.testing.assert_array_equal(out.detach().double().numpy(), ref)
    out_nograd = roi_pool(x, rois, (oh, ow), scale)
    np.testing.assert_array_equal(out_nograd.double().numpy(), ref)
    go = torch.randn(out.shape, generator=g)
    out.backward(go)
    ref_g = ref_grad(tuple(x.shape), rois.numpy(), arg, go.double().numpy())
    np.testing.assert_allclose(xg.grad.double().numpy(), ref_g, rtol=1e-6, atol=1e-6)


def test_list_of_boxes_equals_tensor_form() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 10, 10, generator=g, dtype=torch.float64)
    b0 = torch.tensor([[0.0, 0.0, 9.0, 9.0], [2.0, 3.0, 5.0, 8.0]], dtype=torch.float64)
    b1 = torch.tensor([[1.0, 1.0, 4.0, 4.0]], dtype=torch.float64)
    rois = torch.tensor([[0, 0, 0, 9, 9], [0, 2, 3, 5, 8], [1, 1, 1, 4, 4]], dtype=torch.float64)
    torch.testing.assert_close(roi_pool(x, [b0, b1], 3), roi_pool(x, rois, 3), rtol=0, atol=0)
    ref, _ = ref_roi_pool(x.numpy(), rois.numpy(), 3, 3, 1.0)
    np.testing.assert_allclose(roi_pool(x, [b0, b1], 3).numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fill", ["zeros", "constant", "relu_ties"])
def test_ties_first_in_row_major_order(dtype: torch.dtype, fill: str) -> None:
    """Constant or all-zero maps (as after a ReLU): the value and the gradient location are
    those of the first maximum in row-major scan order."""
    g = torch.Generator().manual_seed(11)
    if fill == "zeros":
        x = torch.zeros(2, 3, 9, 11, dtype=dtype)
    elif fill == "constant":
        x = torch.full((2, 3, 9, 11), 2.5, dtype=dtype)
    else:
        x = torch.randint(-2, 3, (2, 3, 9, 11), generator=g).to(dtype).relu()
        x[:, :, ::2, 1::3] = -0.0  # -0.0 and 0.0 tie as in the kernel
    rois = random_rois(g, 15, 2, 9, 11).to(dtype)
    xg = x.clone().requires_grad_(True)
    out = roi_pool(xg, rois, (4, 3), 1.0)
    ref, arg = ref_roi_pool(
        x.double().numpy(),
        rois.double().numpy(),
        4,
        3,
        1.0,
        np.float32 if dtype == torch.float32 else np.float64,
    )
    np.testing.assert_array_equal(out.detach().double().numpy(), ref)
    go = torch.rand(out.shape, generator=g, dtype=dtype) + 1.0
    out.backward(go)
    ref_g = ref_grad(tuple(x.shape), rois.double().numpy(), arg, go.double().numpy())
    np.testing.assert_allclose(xg.grad.double().numpy(), ref_g, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_features(dtype: torch.dtype) -> None:
    """NaN is skipped and -inf never wins (the kernel's maximum starts at -FLT_MAX with '>'); a
    bin of only -inf gives -FLT_MAX and no gradient."""
    x = torch.randn(1, 2, 6, 6, dtype=dtype, generator=torch.Generator().manual_seed(5))
    x[0, 0, :3, :3] = float("-inf")
    x[0, 1, 1, 1] = float("nan")
    x[0, 1, 4, :] = float("-inf")
    x[0, :, 5, 4:] = -FLT_MAX  # never taken either (the kernel's '>' against -FLT_MAX)
    rois = torch.tensor(
        [[0, 0, 0, 5, 5], [0, 0, 0, 2, 2], [0, 1, 1, 1, 1], [0, 0, 4, 5, 4], [0, 4, 5, 5, 5]],
        dtype=dtype,
    )
    xg = x.clone().requires_grad_(True)
    out = roi_pool(xg, rois, (2, 2), 1.0)
    ref, arg = ref_roi_pool(x.double().numpy(), rois.double().numpy(), 2, 2, 1.0)
    np.testing.assert_array_equal(out.detach().double().numpy(), ref)
    go = torch.ones_like(out)
    out.backward(go)
    ref_g = ref_grad(tuple(x.shape), rois.double().numpy(), arg, go.double().numpy())
    np.testing.assert_array_equal(xg.grad.double().numpy(), ref_g)


def test_rounding_is_half_away_from_zero() -> None:
    """x1 = 2.5 -> cell 3 (C round), where torch.round would give 2."""
    x = torch.arange(8.0, dtype=torch.float64).view(1, 1, 1, 8).expand(1, 1, 2, 8).contiguous()
    x = -x  # maximum at the leftmost cell of the window
    out = roi_pool(x, torch.tensor([[0, 2.5, 0, 6.5, 1]], dtype=torch.float64), 1)
    assert out.item() == -3.0
    out = roi_pool(x, torch.tensor([[0, 5.0, 0, 13.0, 1]], dtype=torch.float64), (1, 1), 0.5)
    assert out.item() == -3.0  # 5 * 0.5 = 2.5 -> 3


def test_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    # distinct values (no ties), so the max is differentiable
    x = torch.randperm(2 * 3 * 8 * 9, generator=g).double().view(2, 3, 8, 9) / 10
    x.requires_grad_(True)
    rois = torch.tensor(
        [[0, 0, 0, 7, 6], [1, 2.2, 1.6, 6.4, 7.9], [1, -3, -2, 4, 3], [0, 5, 5, 5, 5]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 1.0), (x,))
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, 2, 0.5), (x,))


def test_vgg16_and_zf_sizes() -> None:
    x = torch.randn(1, 8, 38, 50)
    rois = torch.tensor([[0, 0, 0, 799, 599], [0, 100, 120, 300, 200]])
    assert roi_pool(x, rois.float(), 7, 1 / 16).shape == (2, 8, 7, 7)
    assert roi_pool(x, rois.float(), (6, 6), 1 / 16).shape == (2, 8, 6, 6)


def test_empty_boxes() -> None:
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = roi_pool(x, torch.zeros(0, 5), (7, 3))
    assert out.shape == (0, 4, 7, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert roi_pool(x, [torch.zeros(0, 4), torch.zeros(0, 4)], 2).shape == (0, 4, 2, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_dtypes(dtype: torch.dtype) -> None:
    """Pooling selects values, so bf16/fp16 results equal the float32 result on the
    bf16-rounded input exactly; dtype is preserved; the gradient flows."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 6, 12, 14, generator=g).to(dtype)
    rois = random_rois(g, 20, 2, 12 * 8, 14 * 8).float()
    xg = x.clone().requires_grad_(True)
    out = roi_pool(xg, rois, 5, 1 / 8)
    assert out.dtype == dtype
    ref = roi_pool(x.float(), rois, 5, 1 / 8)
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=0)
    out.float().sum().backward()
    assert xg.grad.dtype == dtype
    xf = x.float().requires_grad_(True)
    roi_pool(xf, rois, 5, 1 / 8).sum().backward()
    torch.testing.assert_close(xg.grad.float(), xf.grad, rtol=1e-2, atol=1e-2)


def test_autocast_bfloat16() -> None:
    """Under CPU autocast the op pools in float32 and returns the input's dtype, like
    torchvision's autocast wrapper."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 10, 10, generator=g)
    rois = random_rois(g, 10, 1, 80, 80).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = roi_pool(x, rois, 3, 1 / 8)
        out16 = roi_pool(x.bfloat16(), rois.bfloat16(), 3, 1 / 8)
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16
    torch.testing.assert_close(out32, roi_pool(x, rois, 3, 1 / 8), rtol=0, atol=0)
    ref = roi_pool(x.bfloat16().float(), rois.bfloat16().float(), 3, 1 / 8)
    torch.testing.assert_close(out16.float(), ref, rtol=0, atol=0)


def test_module() -> None:
    m = RoIPool((7, 7), 1 / 16)
    assert "output_size=(7, 7)" in repr(m) and "spatial_scale=0.0625" in repr(m)
    x = torch.randn(1, 3, 20, 20)
    rois = torch.tensor([[0, 10.0, 20.0, 200.0, 300.0]])
    torch.testing.assert_close(m(x, rois), roi_pool(x, rois, 7, 1 / 16))


def test_benchmark_workload_matches_reference() -> None:
    """The benchmark's RoIs (300 on a 38x50 map, scale 1/16, 7x7), float32 fast path against the
    reference with float32 coordinate arithmetic (few channels to keep the reference quick)."""
    from fasterrcnn.benchmark.ops import random_boxes

    boxes, _ = random_boxes(300, seed=1)
    rois = torch.cat([torch.zeros(300, 1), boxes], 1)
    x = torch.randn(1, 3, 38, 50, generator=torch.Generator().manual_seed(2))
    xg = x.clone().requires_grad_(True)
    out = roi_pool(xg, rois, 7, 1 / 16)
    ref, arg = ref_roi_pool(x.double().numpy(), rois.double().numpy(), 7, 7, 1 / 16, np.float32)
    np.testing.assert_array_equal(out.detach().double().numpy(), ref)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    out.backward(go)
    ref_g = ref_grad(tuple(x.shape), rois.numpy(), arg, go.double().numpy())
    np.testing.assert_allclose(xg.grad.double().numpy(), ref_g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "dtype, grad", [(torch.float32, True), (torch.float32, False), (torch.float64, True)]
)
def test_many_channels_in_blocks(dtype: torch.dtype, grad: bool) -> None:
    """Channels are processed in blocks (up to 64): 150 channels (blocks + a partial block) give
    the same values and gradients as pooling every channel on its own (itself checked against
    the reference above); input in channels_last memory format."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 150, 9, 12, generator=g, dtype=dtype).to(memory_format=torch.channels_last)
    rois = random_rois(g, 25, 2, 9 * 4, 12 * 4).to(dtype)
    xg = x.clone().requires_grad_(grad)
    out = roi_pool(xg, rois, (3, 4), 0.25)
    xs = [x[:, i : i + 1].clone().requires_grad_(grad) for i in range(150)]
    outs = [roi_pool(t, rois, (3, 4), 0.25) for t in xs]
    torch.testing.assert_close(out, torch.cat(outs, 1), rtol=0, atol=0)
    if grad:
        go = torch.randn(out.shape, generator=g, dtype=dtype)
        out.backward(go)
        torch.autograd.backward(outs, list(go.split(1, dim=1)))
        torch.testing.assert_close(xg.grad, torch.cat([t.grad for t in xs], 1), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1, 2, 1, 7), (1, 2, 6, 1), (2, 1, 1, 1)])
def test_single_row_or_column_maps(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    rois = random_rois(g, 10, shape[0], shape[2] * 2, shape[3] * 2)
    out = roi_pool(x, rois, (2, 3), 0.5)
    ref, arg = ref_roi_pool(x.detach().numpy(), rois.numpy(), 2, 3, 0.5)
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64)
    out.backward(go)
    np.testing.assert_allclose(
        x.grad.numpy(), ref_grad(shape, rois.numpy(), arg, go.numpy()), atol=1e-12
    )


def test_no_grad_mode_with_grad_input() -> None:
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    rois = torch.tensor([[0, 0.0, 0.0, 7.0, 7.0]])
    with torch.no_grad():
        out = roi_pool(x, rois, 2)
    assert not out.requires_grad
    torch.testing.assert_close(out, roi_pool(x, rois, 2).detach(), rtol=0, atol=0)


# --------------------------------------------------------------------------- errors
def test_errors() -> None:
    x = torch.randn(2, 3, 8, 8)
    ok = torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="input must be a 4-D"):
        roi_pool(torch.randn(3, 8, 8), ok, 2)
    with pytest.raises(TypeError, match="input must be a floating-point"):
        roi_pool(torch.ones(1, 1, 4, 4, dtype=torch.int64), ok, 2)
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        roi_pool(np.zeros((1, 1, 4, 4)), ok, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"boxes must be a Tensor\[K, 5\]"):
        roi_pool(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \[L, 4\]"):
        roi_pool(x, [torch.zeros(1, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(TypeError, match="boxes must be a Tensor"):
        roi_pool(x, "boxes", 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boxes contains non-finite"):
        roi_pool(x, torch.tensor([[0, 1.0, float("nan"), 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_pool(x, torch.tensor([[2, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_pool(x, torch.tensor([[0.5, 1.0, 1.0, 4.0, 4.0]]), 2)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(x, ok, 0)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(x, ok, (2, 2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(x, ok, 2, 0.0)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(x, ok, 2, float("inf"))
    with pytest.raises(TypeError, match="spatial_scale"):
        roi_pool(x, ok, 2, "1/16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_size"):
        RoIPool(-1, 1.0)
