"""Anchors: the nine canonical anchors of SPEC.md, tiling order, border rule."""

from __future__ import annotations

import pytest
import torch

from fasterrcnn.anchors import AnchorGenerator, anchors_inside, generate_base_anchors, grid_anchors

# SPEC.md, "Anchors": the canonical base anchors for stride 16, in this order.
CANONICAL = [
    [-83, -39, 100, 56], [-175, -87, 192, 104], [-359, -183, 376, 200],
    [-55, -55, 72, 72], [-119, -119, 136, 136], [-247, -247, 264, 264],
    [-35, -79, 52, 96], [-79, -167, 96, 184], [-167, -343, 184, 360],
]  # fmt: skip


def test_base_anchors_are_exactly_the_canonical_nine():
    anchors = generate_base_anchors(base_size=16, ratios=(0.5, 1, 2), scales=(8, 16, 32))
    assert anchors.dtype == torch.float32
    assert anchors.tolist() == CANONICAL
    assert generate_base_anchors().tolist() == CANONICAL  # the defaults are the paper's


def test_base_anchor_areas_and_ratios_follow_the_paper():
    a = generate_base_anchors()
    w, h = a[:, 2] - a[:, 0] + 1, a[:, 3] - a[:, 1] + 1
    # areas ~128^2, 256^2, 512^2 for each ratio: the rounded base boxes are 23x12, 16x16 and
    # 11x22 pixels (areas 276, 256, 242 instead of 256), so areas differ by up to 7.8%
    for i, target in enumerate([128**2, 256**2, 512**2] * 3):
        base_area = [276, 256, 242][i // 3]
        assert (w[i] * h[i]).item() == base_area * (target / 256)
        assert abs((w[i] * h[i]).item() / target - 1) < 0.08
    # ratio h/w = 0.5, 1, 2 (ratio-major order), within rounding
    for i, ratio in enumerate([0.5] * 3 + [1.0] * 3 + [2.0] * 3):
        assert abs((h[i] / w[i]).item() / ratio - 1) < 0.05


def test_single_ratio_and_scale():
    assert generate_base_anchors(16, (1.0,), (8,)).tolist() == [[-55, -55, 72, 72]]


def test_grid_anchors_order_is_y_x_a():
    base = generate_base_anchors()
    H, W, k = 3, 5, 9
    out = grid_anchors(base, (H, W), 16)
    assert out.shape == (H * W * k, 4)
    for y in range(H):
        for x in range(W):
            for a in range(k):
                expected = base[a] + torch.tensor([16.0 * x, 16.0 * y, 16.0 * x, 16.0 * y])
                assert torch.equal(out[(y * W + x) * k + a], expected)


def test_grid_anchors_matches_rpn_output_flattening():
    """A [N, k*4, H, W] head output permuted to [N, H, W, k, 4] lines up with grid_anchors."""
    base = generate_base_anchors()
    H, W, k = 4, 6, 9
    anchors = grid_anchors(base, (H, W), 16)
    # fake head output whose channel a*4+c at (y, x) holds anchor coordinate c
    head = anchors.reshape(H, W, k * 4).permute(2, 0, 1)[None]  # [1, k*4, H, W]
    flat = head.permute(0, 2, 3, 1).reshape(1, -1, 4)
    assert torch.equal(flat[0], anchors)


def test_grid_anchors_rectangular_stride_and_empty():
    base = generate_base_anchors()
    out = grid_anchors(base, (2, 2), (8, 32))
    assert torch.equal(out[9 * 1], base[0] + torch.tensor([32.0, 0, 32, 0]))
    assert torch.equal(out[9 * 2], base[0] + torch.tensor([0.0, 8, 0, 8]))
    assert grid_anchors(base, (0, 7)).shape == (0, 4)


def test_anchors_inside_border_rule():
    anchors = torch.tensor([[0.0, 0, 100, 50], [-1, 0, 10, 10], [0, 0, 100.5, 10], [10, 10, 20, 20]])
    assert anchors_inside(anchors, (50, 100)).tolist() == [True, False, False, True]
    assert anchors_inside(anchors, (50, 100), allowed_border=1).tolist() == [True, True, True, True]
    assert anchors_inside(anchors, (50, 100), allowed_border=-1).all()


def test_anchor_generator_caches_and_moves():
    gen = AnchorGenerator()
    assert gen.num_anchors == 9
    a1 = gen((38, 50))
    assert a1.shape == (38 * 50 * 9, 4)
    assert gen((38, 50)) is a1  # cached
    torch.testing.assert_close(a1, grid_anchors(generate_base_anchors(), (38, 50), 16))
    assert gen((10, 10), dtype=torch.float64).dtype == torch.float64


def test_anchor_errors():
    with pytest.raises(ValueError, match="positive"):
        generate_base_anchors(16, (0.0, 1.0), (8,))
    with pytest.raises(ValueError, match=r"Tensor\[k, 4\]"):
        grid_anchors(torch.zeros(9), (2, 2))
