"""fasterrcnn.ops.nms / batched_nms against a brute-force reference written from the definition.

The reference (`ref_nms`) is torchvision's CPU kernel spelled out plainly: visit the boxes by
decreasing score (stable: equal scores, lower index first); keep a box unless a kept box
overlaps it with IoU > threshold; IoU = inter / ((area_i + area_j) - inter) computed in the
boxes' dtype (float16/bfloat16 upcast to float32) and compared with the threshold as a
Python float (a double, as the C++ kernel does). `ref_nms_scalar` is the same rule one pair
at a time, used to check `ref_nms` itself on small inputs.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fasterrcnn.benchmark.ops import random_boxes
from fasterrcnn.ops import batched_nms, nms

# the package's modules, whose settings the tests patch: the dispatcher, the compiled loop, the hash
nms_module = importlib.import_module("fasterrcnn.ops.nms")
loop_module = importlib.import_module("fasterrcnn.ops.nms.loop")
grid_module = importlib.import_module("fasterrcnn.ops.nms.grid")
DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """Run this file's many small NMS calls on one intra-op thread: on a shared, busy
    machine, OpenMP workers spin-waiting between ops make them several times slower. The
    results do not depend on the thread count (`test_benchmark_workload_keeps_torchvision_
    count` also runs with the default count)."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(DEFAULT_THREADS)


@pytest.fixture(autouse=True, params=["compiled", "torch"])
def greedy_path(request, monkeypatch) -> str:
    """Every test runs twice: with the numba-compiled greedy loop that serves calls keeping
    <= 2,048 boxes (where numba is installed; else that run is the same as the other), and
    with that loop unavailable, so that the vectorised block loop answers those calls."""
    if request.param == "torch":
        monkeypatch.setattr(loop_module, "_compiled_greedy_loop", lambda: None)
    return request.param


def test_which_path_serves_which_call(greedy_path, monkeypatch) -> None:
    """The compiled loop answers exactly the calls that keep <= 2,048 boxes (early stop, or
    that few boxes) without categories (when numba is installed and the loop is not switched off); the results are the
    reference's either way."""
    real = loop_module._compiled_greedy_loop()
    if greedy_path == "compiled" and importlib.util.find_spec("numba") is not None:
        assert real is not None
    calls = []
    if real is not None:
        monkeypatch.setattr(loop_module, "_compiled_greedy_loop", lambda: lambda *a: calls.append(1) or real(*a))
    boxes, scores = random_boxes(2000, seed=3)
    keep = nms(boxes, scores, 0.7, max_keep=300)
    assert keep.tolist() == ref_nms(boxes, scores, 0.7, max_keep=300)
    assert nms(boxes, scores, 0.7, max_keep=2000).tolist() == ref_nms(boxes, scores, 0.7, max_keep=2000)  # the loop
    assert nms(boxes, scores, 0.7).tolist() == ref_nms(boxes, scores, 0.7)  # 2,000 boxes, no stop: the loop
    many, many_scores = random_boxes(3000, seed=4)
    nms(many, many_scores, 0.7, max_keep=2100)  # above 2,048 kept: the vectorised path
    nms(many, many_scores, 0.7)  # 3,000 boxes, no stop: the vectorised path
    batched_nms(boxes, scores, torch.zeros(2000, dtype=torch.int64), 0.7, max_keep=300)  # categories: vectorised
    assert calls == ([1, 1, 1] if real is not None else [])


# --------------------------------------------------------------------------------------------
# reference


def _np_boxes(boxes: torch.Tensor) -> np.ndarray:
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()  # the documented upcast of reduced precision / integer boxes
    return boxes.numpy()


def _order(scores: torch.Tensor) -> list[int]:
    s = scores.double().tolist()  # exact for every score dtype
    return sorted(range(len(s)), key=lambda i: (-s[i], i))


def ref_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    threshold: float,
    plus_one: bool = False,
    max_keep: int | None = None,
) -> list[int]:
    """Greedy NMS: a Python loop over boxes by decreasing score; each kept box suppresses the
    later boxes it overlaps with IoU > threshold (IoU vectorised over the later boxes only)."""
    b = _np_boxes(boxes)
    one = b.dtype.type(1 if plus_one else 0)
    zero = b.dtype.type(0)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = ((x2 - x1) + one) * ((y2 - y1) + one)
    order = np.array(_order(scores), dtype=np.int64)
    suppressed = np.zeros(len(b), dtype=bool)
    keep: list[int] = []
    for p, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(int(i))
        if max_keep is not None and len(keep) == max_keep:
            break
        j = order[p + 1 :]
        iw = np.maximum((np.minimum(x2[i], x2[j]) - np.maximum(x1[i], x1[j])) + one, zero)
        ih = np.maximum((np.minimum(y2[i], y2[j]) - np.maximum(y1[i], y1[j])) + one, zero)
        inter = iw * ih
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / ((area[i] + area[j]) - inter)
        suppressed[j[iou.astype(np.float64) > threshold]] = True
    return keep


def ref_nms_scalar(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, plus_one: bool = False
) -> list[int]:
    """The same rule, one pair at a time with numpy scalars of the boxes' dtype."""
    b = _np_boxes(boxes)
    t = b.dtype.type
    one = t(1 if plus_one else 0)

    def area(k: int) -> np.floating:
        return ((b[k, 2] - b[k, 0]) + one) * ((b[k, 3] - b[k, 1]) + one)

    keep: list[int] = []
    for i in _order(scores):
        suppressed = False
        for k in keep:
            iw = max(t(0), (min(b[k, 2], b[i, 2]) - max(b[k, 0], b[i, 0])) + one)
            ih = max(t(0), (min(b[k, 3], b[i, 3]) - max(b[k, 1], b[i, 1])) + one)
            inter = iw * ih
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = inter / ((area(k) + area(i)) - inter)
            if float(iou) > threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


def ref_batched(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    threshold: float,
    plus_one: bool = False,
    max_keep: int | None = None,
) -> list[int]:
    """NMS per category (subsets run through `ref_nms`), merged by decreasing score."""
    keep: list[int] = []
    for c in torch.unique(idxs).tolist():
        members = torch.nonzero(idxs == c).squeeze(1)
        sub = ref_nms(boxes[members], scores[members], threshold, plus_one)
        keep += members[sub].tolist()
    s = scores.double().tolist()
    keep.sort(key=lambda i: (-s[i], i))
    return keep if max_keep is None else keep[:max_keep]


# --------------------------------------------------------------------------------------------
# random inputs


def make_boxes(
    kind: str, n: int, g: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Box sets that stress different parts of the algorithm."""
    if kind == "uniform":  # the benchmark's soup: spread out, sides 16..512 px
        cx, cy = torch.rand(n, generator=g) * 800, torch.rand(n, generator=g) * 600
        lw = math.log(16) + (math.log(512) - math.log(16)) * torch.rand(n, 2, generator=g)
        w, h = lw.exp().unbind(1)
        b = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    elif kind == "clustered":  # RPN-like: many jittered copies of a few objects
        k = max(1, n // 50)
        centres = torch.rand(k, 4, generator=g) * torch.tensor([600.0, 400.0, 200.0, 200.0])
        base = torch.cat([centres[:, :2], centres[:, :2] + 20 + centres[:, 2:]], 1)
        pick = torch.randint(0, k, (n,), generator=g)
        side = (base[pick, 2:] - base[pick, :2]).repeat(1, 2)
        b = base[pick] + torch.randn(n, 4, generator=g) * 0.08 * side
    elif kind == "grid":  # small integer coordinates: exact duplicates, exact IoU ties
        xy = torch.randint(0, 6, (n, 2), generator=g).float()
        wh = torch.randint(1, 5, (n, 2), generator=g).float()
        b = torch.cat([xy, xy + wh], 1)
    elif kind == "degenerate":  # a mix with zero-width/height, inverted and duplicate boxes
        xy = torch.randint(0, 8, (n, 2), generator=g).float()
        wh = torch.randint(-2, 5, (n, 2), generator=g).float()
        b = torch.cat([xy, xy + wh], 1)
        b[: n // 4] = b[n // 4 : 2 * (n // 4)]
    elif kind == "chain":  # each box overlaps the next a lot and the one after less
        x = torch.arange(n, dtype=torch.float64) * 1.5
        b = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], 1).float()
    else:
        raise AssertionError(kind)
    return b.to(dtype)


def make_scores(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.rand(n, generator=g)
    if kind == "quantised":  # many ties
        return torch.randint(0, 8, (n,), generator=g).float() / 8
    if kind == "equal":
        return torch.full((n,), 0.5)
    if kind == "decreasing":  # with "chain" boxes: the longest suppression chain
        return torch.linspace(1, 0, n)
    raise AssertionError(kind)


KINDS = ["uniform", "clustered", "grid", "degenerate", "chain"]
SCORE_KINDS = ["random", "quantised", "equal", "decreasing"]
THRESHOLDS = [0.0, 0.3, 0.5, 0.7, 1.0]
SIZES = [0, 1, 2, 3, 7, 30, 60, 100, 200, 300] * 3 + [1000, 2000]  # 1 case in 16 is large


def random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, float, str]:
    g = torch.Generator().manual_seed(seed)
    kind = KINDS[seed % len(KINDS)]
    n = SIZES[int(torch.randint(0, len(SIZES), (1,), generator=g))]
    if n > 300 and seed % 3:  # keep the suite fast: most big cases are spread or clustered
        kind = "uniform" if seed % 2 else "clustered"
    score_kind = SCORE_KINDS[int(torch.randint(0, len(SCORE_KINDS), (1,), generator=g))]
    t = THRESHOLDS[seed // len(KINDS) % len(THRESHOLDS)]
    boxes = make_boxes(kind, n, g)
    return (
        boxes,
        make_scores(score_kind, n, g),
        t,
        f"seed={seed} kind={kind} n={n} scores={score_kind} t={t}",
    )


# --------------------------------------------------------------------------------------------
# the reference itself


@pytest.mark.parametrize("plus_one", [False, True])
def test_reference_agrees_with_pairwise_definition(plus_one: bool) -> None:
    for seed in range(60):
        boxes, scores, t, what = random_case(seed)
        if boxes.shape[0] > 40:
            boxes, scores = boxes[:40], scores[:40]
        for dtype in (torch.float32, torch.float64):
            b = boxes.to(dtype)
            assert ref_nms(b, scores, t, plus_one) == ref_nms_scalar(b, scores, t, plus_one), what


# --------------------------------------------------------------------------------------------
# nms == reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference_on_random_sets(dtype: torch.dtype) -> None:
    for seed in range(250):
        boxes, scores, t, what = random_case(seed)
        boxes = boxes.to(dtype)
        got = nms(boxes, scores, t)
        assert got.dtype == torch.int64
        assert got.tolist() == ref_nms(boxes, scores, t), what


@pytest.mark.parametrize("t", [0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0, 1.5, -0.1])
def test_matches_reference_on_benchmark_like_boxes(t: float) -> None:
    boxes, scores = random_boxes(1500, seed=3)
    assert nms(boxes, scores, t).tolist() == ref_nms(boxes, scores, t)


def test_benchmark_workload_keeps_torchvision_count() -> None:
    # torchvision 0.29 keeps 5,015 of the ops benchmark's 6,000 boxes at IoU 0.7
    boxes, scores = random_boxes(6000)
    keep = nms(boxes, scores, 0.7)
    assert keep.numel() == 5015
    assert keep.tolist() == ref_nms(boxes, scores, 0.7)
    assert torch.equal(nms(boxes, scores, 0.7, max_keep=300), keep[:300])
    torch.set_num_threads(DEFAULT_THREADS)  # the multi-threaded kernels agree
    try:
        assert torch.equal(nms(boxes, scores, 0.7), keep)
        assert torch.equal(nms(boxes, scores, 0.7, max_keep=300), keep[:300])
    finally:
        torch.set_num_threads(1)


def test_dense_and_grid_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [random_case(seed) for seed in range(40)]
    fast = [nms(b, s, t) for b, s, t, _ in cases]
    monkeypatch.setattr(nms_module, "_GRID_MIN_THRESHOLD", math.inf)  # always dense
    monkeypatch.setattr(nms_module, "_GRID_MIN_THRESHOLD_BATCHED", math.inf)
    for (b, s, t, what), k in zip(cases, fast, strict=True):
        assert torch.equal(nms(b, s, t), k), what


def test_block_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    # small blocks: many of them, suppressions across block boundaries, max_keep mid-way
    monkeypatch.setattr(grid_module, "_GRID_BLOCK", 16)
    monkeypatch.setattr(grid_module, "_GRID_MAX_BLOCK", 64)
    monkeypatch.setattr(nms_module, "_DENSE_BLOCK", 8)
    monkeypatch.setattr(nms_module, "_DENSE_MAX_KEEP", 8)
    monkeypatch.setattr(nms_module, "_DENSE_SMALL_BLOCK", 4)
    for seed in range(40):
        boxes, scores, t, what = random_case(seed)
        boxes, scores = boxes[:300], scores[:300]
        assert nms(boxes, scores, t).tolist() == ref_nms(boxes, scores, t), what
        want = ref_nms(boxes, scores, t)[:20]  # max_keep > _DENSE_MAX_KEEP: the grid path
        assert nms(boxes, scores, t, max_keep=20).tolist() == want, what
        # max_keep <= _DENSE_MAX_KEEP: every pair, in blocks of _DENSE_SMALL_BLOCK
        assert nms(boxes, scores, t, max_keep=7).tolist() == want[:7], what


def test_long_suppression_chain() -> None:
    # box k overlaps box k+1 with IoU 0.74: greedy keeps every other box; the within-block
    # fixpoint needs many rounds
    n = 1500
    boxes = make_boxes("chain", n, torch.Generator())
    scores = make_scores("decreasing", n, torch.Generator())
    keep = nms(boxes, scores, 0.7)
    assert keep.tolist() == ref_nms(boxes, scores, 0.7) == list(range(0, n, 2))


def test_ties_duplicates_and_degenerate_boxes() -> None:
    boxes = torch.tensor(
        [
            [0, 0, 10, 10],
            [0, 0, 10, 10],  # duplicate, same score: the lower index wins
            [5, 5, 5, 9],  # zero width: IoU 0 with everything, always kept
            [5, 5, 5, 9],  # two empty boxes: IoU 0/0 = NaN, never suppresses
            [3, 3, 1, 1],  # inverted
            [0, 0, 10, 10],
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.5, 0.5, 0.9, 0.9, 0.7, 0.6])
    for t in (0.0, 0.5, 1.0):
        assert nms(boxes, scores, t).tolist() == ref_nms(boxes, scores, t)
    assert nms(boxes, scores, 0.5).tolist() == [2, 3, 4, 5]
    assert nms(boxes, torch.zeros(6), 0.5).tolist() == [0, 2, 3, 4]


def test_single_box_and_empty() -> None:
    assert nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([0.3]), 0.5).tolist() == [0]
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        out = nms(torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), 0.5)
        assert out.dtype == torch.int64 and out.shape == (0,)
        out = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
        assert out.dtype == torch.int64 and out.shape == (0,)
    assert nms(torch.rand(5, 4), torch.rand(5), 0.5, max_keep=0).shape == (0,)


def test_threshold_compared_as_double() -> None:
    # inter 3, union 10: the float32 IoU is 0.3f = 0.30000001192..., which is > 0.3 as a
    # double (torchvision's comparison) though not > float32(0.3)
    boxes = torch.tensor([[0, 0, 10, 1], [0, 0, 3, 1]], dtype=torch.float32)
    scores = torch.tensor([1.0, 0.5])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes.double(), scores, 0.3).tolist() == [0, 1]  # 3/10 == 0.3 in float64
    # IoU exactly at the threshold never suppresses (strictly greater)
    half = torch.tensor([[0, 0, 2, 1], [0, 0, 1, 1]], dtype=torch.float32)
    assert nms(half, scores, 0.5).tolist() == [0, 1]
    assert nms(half, scores, 0.4999).tolist() == [0]


def test_reduced_precision_boxes_use_float32_iou() -> None:
    for seed in range(30):
        boxes, scores, t, what = random_case(seed)
        for dtype in (torch.bfloat16, torch.float16):
            b, s = boxes.to(dtype), scores.to(dtype)
            assert nms(b, s, t).tolist() == ref_nms(b.float(), s, t), what


def test_integer_and_non_contiguous_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = make_boxes("grid", 200, g)
    scores = make_scores("quantised", 200, g)
    assert nms(boxes.long(), scores, 0.3).tolist() == ref_nms(boxes, scores, 0.3)
    strided = torch.stack([boxes, boxes], 2)[:, :, 0]  # non-contiguous view of the same boxes
    assert not strided.is_contiguous()
    assert nms(strided, torch.stack([scores, scores], 1)[:, 0], 0.3).tolist() == ref_nms(
        boxes, scores, 0.3
    )
    for b in (boxes, boxes.double()):  # inputs untouched
        before = b.clone()
        nms(b, scores, 0.5, legacy_plus_one=True)
        batched_nms(b, scores, torch.zeros(200, dtype=torch.int64), 0.5, legacy_plus_one=True)
        assert torch.equal(b, before)


def test_extreme_coordinates_fall_back_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    base = make_boxes("uniform", 300, g, torch.float64)
    scores = torch.rand(300, generator=g)
    for scale, shift in ((1e-20, 0.0), (1e14, 0.0), (1.0, 1e16), (1e-6, 1e4)):
        b = base * scale + shift
        for t in (0.3, 0.7):
            assert nms(b, scores, t).tolist() == ref_nms(b, scores, t), (scale, shift, t)


def pair_iou(a: torch.Tensor, b: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """IoU of boxes a[k] and b[k], with the reference's arithmetic (torch ops are IEEE)."""
    one = 1.0 if plus_one else 0.0
    area_a = ((a[:, 2] - a[:, 0]) + one) * ((a[:, 3] - a[:, 1]) + one)
    area_b = ((b[:, 2] - b[:, 0]) + one) * ((b[:, 3] - b[:, 1]) + one)
    iw = ((torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])) + one).clamp(min=0)
    ih = ((torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])) + one).clamp(min=0)
    inter = iw * ih
    return inter / ((area_a + area_b) - inter)


def boundary_pairs(
    n: int, t: float, mode: str, dtype: torch.dtype, plus_one: bool, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boxes a[k] and b_in[k] / b_out[k] (moved or shrunk by bisection) with IoU(a, b_in) > t
    >= IoU(a, b_out), the two as close as the dtype allows: pairs right at the threshold."""
    a = make_boxes("uniform", n, g, torch.float64).to(dtype)
    a64 = a.double()
    w, h = a64[:, 2] - a64[:, 0], a64[:, 3] - a64[:, 1]
    zero = torch.zeros_like(w)

    def other(f: torch.Tensor) -> torch.Tensor:
        if mode == "shift":  # along x: the near condition is tight
            d = torch.stack([f * w, zero, f * w, zero], 1)
        elif mode == "diagonal":
            d = torch.stack([f * w, f * h, f * w, f * h], 1)
        elif mode == "shrink":  # nested, narrower: IoU = width ratio, the ratio condition
            d = torch.stack([zero, zero, -f * w, zero], 1)
        else:  # "grow": nested, wider and taller
            d = torch.stack([zero, zero, f * w * 4, f * h * 4], 1)
        return (a64 + d).to(dtype)

    lo, hi = torch.zeros_like(w), torch.ones_like(w)
    for _ in range(60):
        mid = (lo + hi) / 2
        above = pair_iou(a, other(mid), plus_one).double() > t
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    b_in, b_out = other(lo), other(hi)
    assert bool((pair_iou(a, b_in, plus_one).double() > t).all())
    assert not bool((pair_iou(a, b_out, plus_one).double() > t).any())
    return a, b_in, b_out


@pytest.mark.parametrize("plus_one", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairs_at_the_threshold(dtype: torch.dtype, plus_one: bool) -> None:
    # the pre-filter's margins are exercised where they matter: IoU a hair above / at t
    g = torch.Generator().manual_seed(11)
    for t in (0.1, 0.3, 0.5, 0.7, 0.95):
        for mode in ("shift", "diagonal", "shrink", "grow"):
            a, b_in, b_out = boundary_pairs(60, t, mode, dtype, plus_one, g)
            pair_scores = torch.tensor([1.0, 0.5])
            for k in range(0, 60, 7):  # isolated pairs
                assert nms(
                    torch.stack([a[k], b_in[k]]), pair_scores, t, legacy_plus_one=plus_one
                ).tolist() == [0]
                assert nms(
                    torch.stack([a[k], b_out[k]]), pair_scores, t, legacy_plus_one=plus_one
                ).tolist() == [0, 1]
            # all pairs together in a soup of other boxes
            soup = make_boxes("uniform", 300, g, dtype)
            boxes = torch.cat([a, b_in, b_out, soup])
            scores = torch.cat([torch.full((60,), 2.0), torch.rand(420, generator=g)])
            want = ref_nms(boxes, scores, t, plus_one)
            assert nms(boxes, scores, t, legacy_plus_one=plus_one).tolist() == want, (t, mode)


# --------------------------------------------------------------------------------------------
# max_keep


def test_max_keep_is_a_prefix() -> None:
    for seed in range(60):
        boxes, scores, t, what = random_case(seed)
        full = nms(boxes, scores, t)
        for k in (1, 3, 50, 300, boxes.shape[0], boxes.shape[0] + 5):
            assert torch.equal(nms(boxes, scores, t, max_keep=k), full[:k]), (what, k)


def test_max_keep_rpn_setting() -> None:
    boxes, scores = random_boxes(6000, seed=5)
    keep = nms(boxes, scores, 0.7, max_keep=300)
    assert keep.tolist() == ref_nms(boxes, scores, 0.7, max_keep=300)


# --------------------------------------------------------------------------------------------
# legacy +1 convention


def test_legacy_plus_one_matches_reference() -> None:
    for seed in range(150):
        boxes, scores, t, what = random_case(seed)
        if seed % 2:
            boxes = boxes.double()
        got = nms(boxes, scores, t, legacy_plus_one=True)
        assert got.tolist() == ref_nms(boxes, scores, t, plus_one=True), what
        k = 5
        assert torch.equal(nms(boxes, scores, t, max_keep=k, legacy_plus_one=True), got[:k]), what


def test_legacy_plus_one_changes_the_measure() -> None:
    # pixel boxes [0, 0, 1, 1] and [1, 0, 2, 1]: continuous widths 1, no overlap; +1 widths 2,
    # overlap one column of 2 pixels -> IoU 2 / 6 = 1/3
    boxes = torch.tensor([[0.0, 0, 1, 1], [1, 0, 2, 1]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.3).tolist() == [0, 1]
    assert nms(boxes, scores, 0.3, legacy_plus_one=True).tolist() == [0]
    # [0, 0, 0, 0] is an empty box in continuous terms but one pixel in the +1 convention
    dot = torch.tensor([[0.0, 0, 0, 0], [0, 0, 0, 0]])
    assert nms(dot, scores, 0.5).tolist() == [0, 1]
    assert nms(dot, scores, 0.5, legacy_plus_one=True).tolist() == [0]


# --------------------------------------------------------------------------------------------
# batched_nms


def test_batched_matches_per_class_reference() -> None:
    for seed in range(120):
        boxes, scores, t, what = random_case(seed)
        n = boxes.shape[0]
        g = torch.Generator().manual_seed(seed)
        num_classes = [1, 2, 5, 50, max(n, 1)][seed % 5]
        idxs = torch.randint(0, num_classes, (n,), generator=g) * 7 - 20  # negative ids too
        plus_one = seed % 4 == 3
        got = batched_nms(boxes, scores, idxs, t, legacy_plus_one=plus_one)
        assert got.tolist() == ref_batched(boxes, scores, idxs, t, plus_one), what
        assert torch.equal(
            batched_nms(boxes, scores, idxs, t, max_keep=10, legacy_plus_one=plus_one), got[:10]
        )


def test_batched_classes_never_suppress_each_other() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 4)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    idxs = torch.tensor([3, 1, 3, 10**12])  # any integer ids
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1, 3]
    for dtype in (torch.int32, torch.uint8, torch.int16):
        assert batched_nms(boxes, scores, idxs.clamp(max=5).to(dtype), 0.5).tolist() == [0, 1, 3]


def test_batched_detector_setting() -> None:
    # the detector's per-class NMS at 0.3: 300 RoIs x 20 classes, boxes shared across classes
    g = torch.Generator().manual_seed(7)
    rois = make_boxes("clustered", 300, g)
    boxes = rois.repeat(20, 1) + torch.randn(6000, 4, generator=g)
    idxs = torch.arange(1, 21).repeat_interleave(300)
    scores = torch.rand(6000, generator=g)
    assert batched_nms(boxes, scores, idxs, 0.3).tolist() == ref_batched(boxes, scores, idxs, 0.3)


# --------------------------------------------------------------------------------------------
# argument errors


def test_errors() -> None:
    b, s = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(TypeError, match="boxes must be a torch.Tensor"):
        nms([[0, 0, 1, 1]], s, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="boxes must have shape"):
        nms(torch.rand(3, 5), s, 0.5)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        nms(torch.rand(2, 3, 4), s, 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\]"):
        nms(b, torch.rand(3, 1), 0.5)
    with pytest.raises(ValueError, match="same length"):
        nms(b, torch.rand(4), 0.5)
    with pytest.raises(TypeError, match="scores must be a torch.Tensor"):
        nms(b, [0.1, 0.2, 0.3], 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scores must be a real-valued"):
        nms(b, torch.ones(3, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match="boxes contains non-finite"):
        nms(torch.tensor([[0.0, 0, 1, 1], [0, 0, math.nan, 1]]), torch.rand(2), 0.5)
    with pytest.raises(ValueError, match="boxes contains non-finite"):
        nms(torch.tensor([[0.0, 0, math.inf, 1]]), torch.rand(1), 0.5)
    with pytest.raises(ValueError, match="scores contains non-finite"):
        nms(b, torch.tensor([0.1, math.nan, 0.2]), 0.5)
    with pytest.raises(ValueError, match="scores contains non-finite"):
        nms(b, torch.tensor([0.1, -math.inf, 0.2]), 0.5)
    for bad in ("0.5", None, torch.tensor(0.5), True, [0.5]):
        with pytest.raises(TypeError, match="iou_threshold must be a real number"):
            nms(b, s, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="iou_threshold is NaN"):
        nms(b, s, math.nan)
    with pytest.raises(ValueError, match="max_keep must be >= 0"):
        nms(b, s, 0.5, max_keep=-1)
    with pytest.raises(TypeError, match="max_keep must be an int"):
        nms(b, s, 0.5, max_keep=2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="idxs must be a torch.Tensor"):
        batched_nms(b, s, [0, 1, 2], 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"idxs must have shape \[N\]"):
        batched_nms(b, s, torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(TypeError, match="idxs must be an integer tensor"):
        batched_nms(b, s, torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="idxs must be an integer tensor"):
        batched_nms(b, s, torch.zeros(3, dtype=torch.bool), 0.5)
    with pytest.raises(TypeError, match="iou_threshold must be a real number"):
        batched_nms(b, s, torch.zeros(3, dtype=torch.int64), "0.5")  # type: ignore[arg-type]


def test_numpy_scalars_are_accepted() -> None:
    b, s = torch.rand(10, 4) * 10, torch.rand(10)
    b[:, 2:] += b[:, :2]
    assert torch.equal(nms(b, s, np.float64(0.5), max_keep=np.int64(3)), nms(b, s, 0.5, max_keep=3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    for seed in range(60):
        boxes, scores, t, what = random_case(seed)
        idxs = torch.randint(0, 3, (boxes.shape[0],), generator=torch.Generator().manual_seed(seed))
        for dtype in (torch.float32, torch.float64, torch.float16):
            b, s = boxes.to(dtype), scores.to(dtype)
            want = nms(b, s, t)
            got = nms(b.cuda(), s.cuda(), t)
            assert got.device.type == "cuda" and got.cpu().tolist() == want.tolist(), (what, dtype)
            want = batched_nms(b, s, idxs, t, max_keep=20)
            assert (
                batched_nms(b.cuda(), s.cuda(), idxs.cuda(), t, max_keep=20).cpu().tolist()
                == want.tolist()
            )
    out = nms(torch.zeros(0, 4, device="cuda"), torch.zeros(0, device="cuda"), 0.5)
    assert out.device.type == "cuda" and out.dtype == torch.int64


def test_rpn_early_stop_on_clustered_boxes() -> None:
    # a trained RPN's top-6000 crowd around a few objects: most candidates are suppressed and
    # the early stop at 300 kept scans deep into the list (the small-block dense path)
    g = torch.Generator().manual_seed(7)
    centres = torch.rand(6, 2, generator=g) * torch.tensor([800.0, 600.0])
    sizes = 30 + torch.rand(6, 2, generator=g) * 200
    k = torch.randint(0, 6, (6000,), generator=g)
    c = centres[k] + torch.randn(6000, 2, generator=g) * sizes[k] * 0.15
    wh = sizes[k] * torch.exp(torch.randn(6000, 2, generator=g) * 0.2)
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)
    scores = torch.rand(6000, generator=g)
    want = ref_nms(boxes, scores, 0.7, max_keep=300)
    assert len(want) == 300
    assert nms(boxes, scores, 0.7, max_keep=300).tolist() == want
