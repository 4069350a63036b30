"""Backward warping, consistency masks and the temporal init, on synthetic frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask, temporal_init, warp
from tests.synth import blurred_texture as texture


def const_flow(h: int, w: int, dx: float, dy: float) -> np.ndarray:
    flow = np.empty((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


@pytest.mark.parametrize("wrap_x", [False, True])
def test_zero_flow_is_exact_identity(wrap_x: bool) -> None:
    rng = np.random.default_rng(0)
    zero = np.zeros((31, 47, 2), np.float32)
    imgs = [texture(31, 47), rng.normal(0, 50, (31, 47, 3)).astype(np.float32),
            rng.random((31, 47)).astype(np.float32), rng.random((31, 47, 6)).astype(np.float32)]
    for img in imgs:
        out = warp(img, zero, wrap_x=wrap_x)
        assert out.dtype == img.dtype and out.shape == img.shape
        np.testing.assert_array_equal(out, img)


def test_integer_backward_flow_reproduces_shift() -> None:
    img = texture(60, 80).astype(np.float32)
    shifted = np.roll(img, (2, 3), axis=(0, 1))  # content moved down 2, right 3
    out = warp(img, const_flow(60, 80, -3, -2))
    np.testing.assert_array_equal(out[2:, 3:], shifted[2:, 3:])
    # Outside the frame the nearest edge pixel is used (border replicate, not zero).
    np.testing.assert_array_equal(out[0, 5:], img[0, 2:-3])


def test_subpixel_backward_flow_matches_bilinear_shift() -> None:
    img = texture(60, 80).astype(np.float32)
    m = np.float32([[1, 0, 2.5], [0, 1, -1.25]])
    expected = cv2.warpAffine(img, m, (80, 60), flags=cv2.INTER_LINEAR)
    out = warp(img, const_flow(60, 80, -2.5, 1.25))
    assert np.abs(out - expected)[4:-4, 4:-4].max() < 0.5


def test_wrap_x_warps_across_the_seam() -> None:
    img = texture(40, 64, periodic=True).astype(np.float32)
    np.testing.assert_array_equal(warp(img, const_flow(40, 64, -5, 0), wrap_x=True), np.roll(img, 5, axis=1))
    np.testing.assert_array_equal(warp(img, const_flow(40, 64, 7, 0), wrap_x=True), np.roll(img, -7, axis=1))
    half = warp(img, const_flow(40, 64, -0.5, 0), wrap_x=True)
    np.testing.assert_allclose(half, (img + np.roll(img, 1, axis=1)) / 2, atol=1e-3)
    # No vertical wrap: rows pulled from above the frame replicate the top row.
    down = warp(img, const_flow(40, 64, 0, -3), wrap_x=True)
    np.testing.assert_array_equal(down[0], img[0])
    plain = warp(img, const_flow(40, 64, -5, 0), wrap_x=False)
    assert np.abs(plain[:, :5] - np.roll(img, 5, axis=1)[:, :5]).mean() > 5


def test_uint8_warp_stays_uint8() -> None:
    img = texture(20, 30)
    out = warp(img, const_flow(20, 30, 0.5, 0.0))
    assert out.dtype == np.uint8 and out.shape == img.shape


def occluder_pair() -> tuple[np.ndarray, np.ndarray]:
    """A reddish square moving 8 px right over a static textured background."""
    bg = texture(120, 160, seed=1)
    square = texture(40, 40, seed=2, tint=(1.0, 0.3, 0.3))
    prev, cur = bg.copy(), bg.copy()
    prev[40:80, 40:80] = square
    cur[40:80, 48:88] = square
    return prev, cur


def test_mask_analytic_occlusion() -> None:
    h, w = 120, 160
    backward = np.zeros((h, w, 2), np.float32)
    forward = np.zeros((h, w, 2), np.float32)
    backward[40:80, 48:88, 0] = -8
    forward[40:80, 40:80, 0] = 8
    mask = consistency_mask(backward, forward)
    assert mask.dtype == np.float32 and mask.shape == (h, w)
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert mask[42:78, 41:47].max() < 0.5  # background revealed behind the square
    assert mask[44:76, 52:84].min() > 0.99  # square itself (away from its motion boundary)
    assert mask[:, 100:].min() > 0.99 and mask[90:].min() > 0.99


def test_mask_with_real_flow_on_occluder() -> None:
    prev, cur = occluder_pair()
    backward, forward = FlowEstimator().pair(prev, cur)
    mask = consistency_mask(backward, forward)
    assert mask[44:76, 41:47].mean() < 0.2
    assert mask[:, 110:].mean() > 0.95 and mask[95:].mean() > 0.95


def test_mask_out_of_frame() -> None:
    h, w = 40, 64
    b, f = const_flow(h, w, -10, 0), const_flow(h, w, 10, 0)
    plain = consistency_mask(b, f, sigma=0)
    assert plain[:, :10].max() == 0 and plain[:, 11:].min() == 1
    wrapped = consistency_mask(b, f, wrap_x=True, sigma=0)
    assert wrapped.min() == 1  # horizontal exits re-enter on the other side
    b, f = const_flow(h, w, 0, -6), const_flow(h, w, 0, 6)
    vertical = consistency_mask(b, f, wrap_x=True, sigma=0)
    assert vertical[:6].max() == 0 and vertical[7:].min() == 1


def test_mask_smoothing_wraps_horizontally() -> None:
    h, w = 30, 50
    b, f = const_flow(h, w, -3, 0), const_flow(h, w, 3, 0)
    f[:, 46:, 0] = -3  # inconsistent strip at the right edge, next to the seam
    mask = consistency_mask(b, f, wrap_x=True)
    assert mask[:, 0].max() < 1.0  # the blur reaches across the seam to column 0
    assert mask[:, 25].min() > 0.999


def test_temporal_init() -> None:
    h, w = 24, 32
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    residual = rng.normal(0, 40, (h, w, 3)).astype(np.float32)
    zero = np.zeros((h, w, 2), np.float32)
    ones, nothing = np.ones((h, w), np.float32), np.zeros((h, w), np.float32)

    np.testing.assert_array_equal(temporal_init(source, residual, zero, nothing, blend=1.0), source)
    full = temporal_init(source, residual, zero, ones, blend=1.0)
    np.testing.assert_allclose(full, np.clip(source + residual, 0, 255), atol=1e-4)
    assert full.dtype == np.float32 and full.min() >= 0 and full.max() <= 255
    half = temporal_init(source, residual, zero, ones * 0.5, blend=0.6)
    np.testing.assert_allclose(half, np.clip(source + 0.3 * residual, 0, 255), atol=1e-4)
    moved = temporal_init(source, residual, const_flow(h, w, -2, 0), ones, blend=1.0, wrap_x=True)
    np.testing.assert_allclose(moved, np.clip(source + np.roll(residual, 2, axis=1), 0, 255), atol=1e-4)
    with pytest.raises(ValueError):
        temporal_init(source, residual[:-1], zero, ones, blend=1.0)
