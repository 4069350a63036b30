"""Backward warping, consistency masks and the temporal init, on synthetic frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from stages.temporal import carry as C
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask, warp
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
    # Exact up to float rounding of the sample positions (grid_sample normalises them to −1..1).
    np.testing.assert_allclose(out[2:, 3:], shifted[2:, 3:], atol=1e-3)
    # Outside the frame the nearest edge pixel is used (border replicate, not zero).
    np.testing.assert_allclose(out[0, 5:], img[0, 2:-3], atol=1e-3)


def test_subpixel_backward_flow_matches_bilinear_shift() -> None:
    img = texture(60, 80).astype(np.float32)
    m = np.float32([[1, 0, 2.5], [0, 1, -1.25]])
    expected = cv2.warpAffine(img, m, (80, 60), flags=cv2.INTER_LINEAR)
    out = warp(img, const_flow(60, 80, -2.5, 1.25))
    assert np.abs(out - expected)[4:-4, 4:-4].max() < 0.5


def test_wrap_x_warps_across_the_seam() -> None:
    img = texture(40, 64, periodic=True).astype(np.float32)
    np.testing.assert_allclose(warp(img, const_flow(40, 64, -5, 0), wrap_x=True), np.roll(img, 5, axis=1), atol=1e-3)
    np.testing.assert_allclose(warp(img, const_flow(40, 64, 7, 0), wrap_x=True), np.roll(img, -7, axis=1), atol=1e-3)
    for cubic in (False, True):  # both samplers wrap, bicubic with its wider taps
        np.testing.assert_allclose(warp(img, const_flow(40, 64, 3, 0), wrap_x=True, cubic=cubic),
                                   np.roll(img, -3, axis=1), atol=1e-3)
    half = warp(img, const_flow(40, 64, -0.5, 0), wrap_x=True)
    np.testing.assert_allclose(half, (img + np.roll(img, 1, axis=1)) / 2, atol=1e-3)
    # No vertical wrap: rows pulled from above the frame replicate the top row.
    down = warp(img, const_flow(40, 64, 0, -3), wrap_x=True)
    np.testing.assert_allclose(down[0], img[0], atol=1e-3)
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


def temporal_init(source, residual, flow, mask, *, blend, wrap_x=False) -> np.ndarray:
    """carry.start_image on arrays, as the frame step calls it on the dream's device."""
    b, m = C.frame_motion(flow, mask, source.shape[:2], "cpu")
    return C.to_host(C.start_image(C.to_device(source, "cpu"), C.to_device(residual, "cpu"), b, m, blend=blend,
                                   wrap_x=wrap_x))


def test_temporal_init() -> None:
    h, w = 24, 32
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
    residual = rng.normal(0, 40, (h, w, 3)).astype(np.float32)
    zero = np.zeros((h, w, 2), np.float32)
    ones, nothing = np.ones((h, w), np.float32), np.zeros((h, w), np.float32)

    np.testing.assert_array_equal(temporal_init(source, residual, zero, nothing, blend=1.0), source)
    full = temporal_init(source, residual, zero, ones, blend=1.0)
    np.testing.assert_allclose(full, np.clip(source + residual, 0, 255), atol=1e-3)
    assert full.dtype == np.float32 and full.min() >= 0 and full.max() <= 255
    half = temporal_init(source, residual, zero, ones * 0.5, blend=0.6)
    np.testing.assert_allclose(half, np.clip(source + 0.3 * residual, 0, 255), atol=1e-3)
    moved = temporal_init(source, residual, const_flow(h, w, -2, 0), ones, blend=1.0, wrap_x=True)
    np.testing.assert_allclose(moved, np.clip(source + np.roll(residual, 2, axis=1), 0, 255), atol=1e-3)
    with pytest.raises(ValueError):
        C.start_image(C.to_device(source, "cpu"), C.to_device(residual[:-1], "cpu"), torch.zeros(1, h, w, 2),
                      torch.ones(1, 1, h, w), blend=1.0)


# --- the torch maths against the OpenCV/numpy path it replaced (git 0cab3d6), on 8-bit frames ------------

def _remap_before(img: np.ndarray, flow: np.ndarray, *, wrap_x: bool, cubic: bool) -> np.ndarray:
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y, src = gx + flow[..., 0], gy + flow[..., 1], img
    if wrap_x:
        map_x = np.mod(map_x, np.float32(w)) + np.float32(1)
        src = np.concatenate([img[:, -1:], img, img[:, :3]], axis=1)
    return cv2.remap(np.ascontiguousarray(src), map_x, map_y, cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _mask_before(b: np.ndarray, f: np.ndarray, *, wrap_x: bool, sigma: float = 0.8) -> np.ndarray:
    h, w = b.shape[:2]
    f_at = _remap_before(f, b, wrap_x=wrap_x, cubic=False)
    occluded = ((b + f_at) ** 2).sum(2) >= 0.01 * ((b ** 2).sum(2) + (f_at ** 2).sum(2)) + 0.5
    def grads(a):
        gy = np.gradient(a, axis=0)
        gx = (np.roll(a, -1, 1) - np.roll(a, 1, 1)) * 0.5 if wrap_x else np.gradient(a, axis=1)
        return gx, gy
    (ux, uy), (vx, vy) = grads(b[..., 0]), grads(b[..., 1])
    boundary = ux ** 2 + uy ** 2 + vx ** 2 + vy ** 2 > 0.01 * (b ** 2).sum(2) + 0.002
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    outside = (gy + b[..., 1] < 0) | (gy + b[..., 1] > h - 1)
    if not wrap_x:
        outside |= (gx + b[..., 0] < 0) | (gx + b[..., 0] > w - 1)
    rel = (~(occluded | boundary | outside)).astype(np.float32)
    pad = int(np.ceil(4 * sigma)) + 1 if wrap_x else 0
    padded = np.concatenate([rel[:, w - pad:], rel, rel[:, :pad]], axis=1) if pad else rel
    out = cv2.GaussianBlur(padded, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.clip(out[:, pad:pad + w], 0, 1)


@pytest.mark.parametrize("wrap_x", [False, True])
def test_torch_maths_match_the_opencv_path_within_one_level(wrap_x: bool) -> None:
    """Real flow on a moving texture: the bicubic residual warp, the start image and the mask agree with the
    OpenCV/numpy path they replaced to within one 8-bit level (the warp's rounding: OpenCV samples at 1/32 px)."""
    h, w = 72, 128
    a = texture(h, w + 7, periodic=False)[:, :w]
    b_img = np.roll(a, 3, axis=1)
    b_img[20:40, 30:60] = 255 - b_img[20:40, 30:60]  # something that does not move with the rest: occlusion
    bw, fw = FlowEstimator("dis").pair(a, b_img, wrap_x=wrap_x)
    residual = np.random.default_rng(3).normal(0, 30, (h, w, 3)).astype(np.float32)
    old_mask, new_mask = _mask_before(bw, fw, wrap_x=wrap_x), consistency_mask(bw, fw, wrap_x=wrap_x)
    assert np.abs(old_mask - new_mask).mean() < 0.01  # a sample that lands on a threshold may flip one pixel
    old = np.clip(b_img + 0.9 * old_mask[..., None] * _remap_before(residual, bw, wrap_x=wrap_x, cubic=True), 0, 255)
    new = temporal_init(b_img.astype(np.float32), residual, bw, old_mask, blend=0.9, wrap_x=wrap_x)
    assert np.abs(np.rint(old) - np.rint(new)).max() <= 1
