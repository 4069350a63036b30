"""Optical flow on synthetic textures with known motion: accuracy, signs, 360 wrap, RAFT loading."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from stages.common import InputError
from stages.temporal.flow import FLOW_METHODS, FlowEstimator, wrap_pad_width
from stages.temporal.warp import warp
from tests.synth import blurred_texture as texture


def shifted_pair(dx: float, dy: float, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """prev and cur where the content moved by (dx, dy) pixels from prev to cur."""
    big = texture(h + 40, w + 40, seed=5)
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(big, m, (big.shape[1], big.shape[0]), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    return big[20:20 + h, 20:20 + w].copy(), moved[20:20 + h, 20:20 + w].copy()


INTERIOR = (slice(12, -12), slice(12, -12))


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("dx,dy", [(3.0, -2.0), (2.5, 1.25)])
def test_recovers_translation_with_correct_signs(method: str, dx: float, dy: float) -> None:
    prev, cur = shifted_pair(dx, dy)
    backward, forward = FlowEstimator(method).pair(prev, cur)
    for flow in (backward, forward):
        assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    # Content moved by +d, so each current pixel came from -d (backward) and each previous one goes +d.
    err_b = np.linalg.norm(backward[INTERIOR] - [-dx, -dy], axis=2).mean()
    err_f = np.linalg.norm(forward[INTERIOR] - [dx, dy], axis=2).mean()
    assert err_b < 0.5 and err_f < 0.5, (err_b, err_f)


def test_backward_flow_warps_previous_onto_current() -> None:
    prev, cur = shifted_pair(4.0, 1.5)
    backward, _ = FlowEstimator().pair(prev, cur)
    pulled = warp(prev.astype(np.float32), backward)
    assert np.abs(pulled - cur)[INTERIOR].mean() < 1.5
    # The forward flow negated is not what we use, but on a pure translation it agrees in sign.
    assert np.sign(backward[INTERIOR][..., 0].mean()) == -1


def test_static_frames_give_near_zero_flow() -> None:
    a = texture(64, 96)
    backward, forward = FlowEstimator().pair(a, a)
    assert np.abs(backward).max() < 0.05 and np.abs(forward).max() < 0.05


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_wrap_x_flow_across_seam(method: str) -> None:
    prev = texture(96, 256, seed=2, periodic=True)
    cur = np.roll(prev, 5, axis=1)  # content slides right across the 360 seam
    backward, forward = FlowEstimator(method).pair(prev, cur, wrap_x=True)
    rows = slice(8, -8)
    for cols in (slice(0, 4), slice(-4, None)):
        assert np.linalg.norm(backward[rows, cols] - [-5, 0], axis=2).mean() < 0.5
        assert np.linalg.norm(forward[rows, cols] - [5, 0], axis=2).mean() < 0.5
    pulled = warp(prev.astype(np.float32), backward, wrap_x=True)
    err = np.abs(pulled - cur).mean(axis=2)[rows]
    assert err[:, :5].mean() < 1.0 and err[:, -5:].mean() < 1.0


def test_without_wrap_the_seam_columns_are_wrong() -> None:
    prev = texture(96, 256, seed=2, periodic=True)
    cur = np.roll(prev, 5, axis=1)
    backward, _ = FlowEstimator().pair(prev, cur, wrap_x=False)
    err = np.abs(warp(prev.astype(np.float32), backward) - cur).mean(axis=2)[8:-8]
    # Columns 0..4 show content that entered from the other side: not recoverable without wrap.
    assert err[:, :5].mean() > 5.0
    assert err[:, 20:-20].mean() < 1.0


def test_estimator_is_reusable_and_matches_fresh_calls() -> None:
    prev, cur = shifted_pair(2.0, 0.0, h=64, w=80)
    est = FlowEstimator("dis")
    first = est.pair(prev, cur)
    again = est.pair(prev, cur)
    fresh = FlowEstimator().pair(prev, cur)
    for a, b, c in zip(first, again, fresh, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_estimator_in_background_thread() -> None:
    prev, cur = shifted_pair(2.0, 1.0, h=64, w=80)
    results: list[tuple[np.ndarray, np.ndarray]] = []

    def work() -> None:
        est = FlowEstimator("farneback")  # one estimator per thread, as documented
        results.append(est.pair(prev, cur, wrap_x=True))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    expected = FlowEstimator("farneback").pair(prev, cur, wrap_x=True)
    np.testing.assert_array_equal(results[0][0], expected[0])


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_tiny_frames(method: str) -> None:
    a = texture(8, 10)
    backward, forward = FlowEstimator(method).pair(a, np.roll(a, 1, axis=1), wrap_x=True)
    assert backward.shape == forward.shape == (8, 10, 2)


def test_wrap_pad_width_bounds() -> None:
    assert wrap_pad_width(640) == 64
    assert wrap_pad_width(40) == 16
    assert wrap_pad_width(8) == 8


def test_bad_inputs() -> None:
    a = texture(32, 32)
    with pytest.raises(InputError, match="temporal.flow must be one of"):
        FlowEstimator("lucas-kanade")
    with pytest.raises(ValueError):
        FlowEstimator().pair(a, a[:16])
    with pytest.raises(ValueError):
        FlowEstimator().pair(a.astype(np.float32), a)
    assert FLOW_METHODS == ("dis", "farneback", "raft")


def test_raft_without_weights_is_input_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(InputError, match="temporal.flow=raft needs RAFT weights"):
        FlowEstimator("raft")
    with pytest.raises(InputError, match="temporal.flow=raft needs RAFT weights"):
        FlowEstimator("raft", weights=tmp_path / "missing.pth")


def test_raft_rejects_foreign_checkpoint(tmp_path) -> None:
    import torch

    path = tmp_path / "not_raft.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="not a torchvision RAFT checkpoint"):
        FlowEstimator("raft", weights=path)


@pytest.mark.slow
def test_raft_runs_from_local_checkpoint(tmp_path, monkeypatch) -> None:
    """Untrained weights only check loading, padding to /8, shapes and the hub-dir lookup, not accuracy."""
    import torch
    from torchvision.models.optical_flow import Raft_Small_Weights, raft_small

    torch.manual_seed(0)
    ckpt_dir = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    name = Raft_Small_Weights.DEFAULT.url.split("/")[-1]
    torch.save(raft_small(weights=None).state_dict(), ckpt_dir / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    est = FlowEstimator("raft")
    prev, cur = shifted_pair(2.0, 1.0, h=36, w=52)  # not multiples of 8
    backward, forward = est.pair(prev, cur, wrap_x=True)
    for flow in (backward, forward):
        assert flow.shape == (36, 52, 2) and flow.dtype == np.float32
        assert np.isfinite(flow).all()


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_working_resolution_flow_comes_back_in_frame_pixels(preset: str) -> None:
    """Flow computed at half the size (temporal.flow_max_side) is scaled back to the frame's pixels: a known
    sub-pixel translation is recovered, and warping with the small flow equals warping with it scaled up."""
    prev, cur = shifted_pair(3.0, -2.0, h=120, w=200)
    est = FlowEstimator("dis", preset=preset, max_side=100)
    small_b, _ = est.flow(est.prepare(prev), est.prepare(cur))
    assert small_b.shape == (60, 100, 2)
    backward, forward = est.pair(prev, cur)
    assert backward.shape == (120, 200, 2)
    err_b = np.linalg.norm(backward[INTERIOR] - [-3.0, 2.0], axis=2).mean()
    err_f = np.linalg.norm(forward[INTERIOR] - [3.0, -2.0], axis=2).mean()
    assert err_b < 0.6 and err_f < 0.6, (err_b, err_f)
    import torch

    from stages.temporal.warp import sample
    img = torch.from_numpy(prev.astype(np.float32)).permute(2, 0, 1)[None]
    via_small = sample(img, torch.from_numpy(small_b)[None], cubic=True)
    via_full = sample(img, torch.from_numpy(backward)[None], cubic=True)
    assert (via_small - via_full).abs().max() < 1e-2


def test_prepared_frames_give_the_pair_flows() -> None:
    """The flow thread prepares each frame once and pairs the prepared frames: the same flows as `pair`."""
    prev, cur = shifted_pair(2.0, 1.0)
    est = FlowEstimator()
    for wrap_x in (False, True):
        a, b = est.pair(prev, cur, wrap_x=wrap_x)
        c, d = est.flow(est.prepare(prev, wrap_x=wrap_x), est.prepare(cur, wrap_x=wrap_x))
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_unknown_preset_is_input_error() -> None:
    with pytest.raises(InputError, match="flow_preset"):
        FlowEstimator("dis", preset="slowest")


def _occluding_pair(wrap_x: bool) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """960×480: a background panning 4 px right and a square moving 24 px right over it; returns the pair and
    the band of the current frame that the square uncovered (nothing in the previous frame shows it)."""
    from tests.synth import scene_texture
    bg = texture(480, 960, seed=3, periodic=True) if wrap_x else scene_texture(480, 1100, seed=3)
    square = scene_texture(160, 160, seed=9)
    frames = []
    for i, sx in enumerate((400, 424)):
        f = np.ascontiguousarray(np.roll(bg, 4 * i, axis=1)[:, :960] if wrap_x else bg[:, 70 - 4 * i:1030 - 4 * i])
        f[160:320, sx:sx + 160] = square
        frames.append(f)
    return frames[0], frames[1], (slice(175, 305), slice(410, 420))


@pytest.mark.parametrize("wrap_x", [False, True])
def test_half_size_check_flow_keeps_the_mask(wrap_x: bool) -> None:
    """Paired: on a working copy of 960 px a render's forward flow (the consistency check's only use) runs at half
    the size. Its mask matches the one from a full-size forward flow, and both flag the band the square uncovered."""
    from stages.temporal.warp import consistency_mask

    prev, cur, uncovered = _occluding_pair(wrap_x)
    half, full = FlowEstimator("dis", half_check=True), FlowEstimator("dis")
    half_b, half_f = half.flow(half.prepare(prev, wrap_x=wrap_x), half.prepare(cur, wrap_x=wrap_x))
    full_b, full_f = full.flow(full.prepare(prev, wrap_x=wrap_x), full.prepare(cur, wrap_x=wrap_x))
    np.testing.assert_array_equal(half_b, full_b)  # the backward flow, the one that warps, is untouched
    assert half_f.shape == full_f.shape == (480, 960, 2)
    half_m, full_m = (consistency_mask(half_b, f, wrap_x=wrap_x) for f in (half_f, full_f))
    assert np.abs(half_m - full_m).mean() < 0.08, np.abs(half_m - full_m).mean()
    assert abs(half_m.mean() - full_m.mean()) < 0.05, (half_m.mean(), full_m.mean())
    assert half_m[uncovered].mean() < 0.5 and full_m[uncovered].mean() < 0.5, \
        (half_m[uncovered].mean(), full_m[uncovered].mean())
