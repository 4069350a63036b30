"""Warp-error metrics on synthetic panning videos and the PNG plot."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from stages.common import InputError
from stages.measure.metrics import plot_metrics, reference_flow, warp_error_series
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask, warp
from tests.synth import blurred_texture as texture

H, W, N, STEP = 72, 96, 6, 2




CANVAS = texture(H, W + N * STEP, seed=7)
# A dream "residual" that lives on the scene, so it pans with the content.
PATTERN = np.random.default_rng(8).normal(0, 25, (H, W + N * STEP, 3)).astype(np.float32)


def source(n: int = N) -> Iterator[np.ndarray]:
    """Camera panning right: the content moves STEP px left per frame. A generator, to check streaming."""
    for t in range(n):
        yield CANVAS[:, t * STEP:t * STEP + W].copy()


def coherent_dream(n: int = N) -> Iterator[np.ndarray]:
    for t, frame in enumerate(source(n)):
        residual = PATTERN[:, t * STEP:t * STEP + W]
        yield np.clip(frame + residual, 0, 255).astype(np.uint8)


def flickering_dream(n: int = N) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(9)
    for frame in source(n):
        yield np.clip(frame + rng.normal(0, 25, frame.shape), 0, 255).astype(np.uint8)


def test_identical_dream() -> None:
    res = warp_error_series(source(), source())
    assert res["frames"] == N
    assert res["dream_strength"] == 0.0
    assert res["warp_error"] == res["source_warp_error"]
    per = res["per_frame"]
    assert len(per["dream_strength"]) == N
    assert len(per["warp_error"]) == len(per["source_warp_error"]) == N - 1
    assert per["warp_error"] == per["source_warp_error"]
    assert res["source_warp_error"] < 20.0  # DIS on a clean pan: small interpolation error only


def test_flicker_scores_far_worse_than_coherent_dream() -> None:
    coherent = warp_error_series(source(), coherent_dream())
    flicker = warp_error_series(source(), flickering_dream())
    # Both dreams have a similar strength, only the temporal behaviour differs.
    assert 0.5 < flicker["dream_strength"] / coherent["dream_strength"] < 2.0
    assert flicker["warp_error"] > 10 * coherent["warp_error"]
    assert coherent["warp_error"] < 5 * coherent["source_warp_error"] + 50


def test_dreamed_size_differs_from_source() -> None:
    half = (W // 2, H // 2)
    small = (cv2.resize(f, half, interpolation=cv2.INTER_AREA) for f in source())
    res = warp_error_series(source(), small)
    assert res["frames"] == N
    assert res["dream_strength"] == 0.0
    assert res["warp_error"] == res["source_warp_error"]


def test_scene_cut_pair_is_skipped() -> None:
    frames = list(source(3))
    other = texture(H, W, seed=99)  # unrelated shot: flow is unreliable almost everywhere
    seq = [frames[0], frames[1], other, np.roll(other, 2, axis=1)]
    res = warp_error_series(seq, seq)
    per = res["per_frame"]
    assert res["frames"] == 4 and len(per["warp_error"]) == 3
    assert per["warp_error"][1] is None and per["source_warp_error"][1] is None
    assert per["warp_error"][0] is not None and per["warp_error"][2] is not None
    assert res["warp_error"] == pytest.approx((per["warp_error"][0] + per["warp_error"][2]) / 2)
    only_cut = warp_error_series([frames[0], other], [frames[0], other])
    assert only_cut["warp_error"] == 0.0 and only_cut["per_frame"]["warp_error"] == [None]


def test_length_mismatch_and_methods() -> None:
    with pytest.raises(ValueError):
        warp_error_series(source(4), source(3))
    with pytest.raises(InputError):
        warp_error_series(source(2), source(2), method="raft")
    far = warp_error_series(source(3), coherent_dream(3), method="farneback")
    assert far["frames"] == 3 and far["warp_error"] > 0
    # Any estimator with the FlowEstimator interface can be passed in (the pipeline uses this for RAFT).
    est = warp_error_series(source(3), coherent_dream(3), estimator=FlowEstimator("farneback"))
    assert est["warp_error"] == pytest.approx(far["warp_error"])


def test_wrap_x_series_on_panorama() -> None:
    pano = texture(48, 128, seed=3, periodic=True)
    frames = [np.roll(pano, 3 * t, axis=1) for t in range(4)]
    residual = np.random.default_rng(4).normal(0, 20, pano.shape)
    dreams = [np.clip(f + np.roll(residual, 3 * t, axis=1), 0, 255).astype(np.uint8)
              for t, f in enumerate(frames)]
    wrapped = warp_error_series(frames, dreams, wrap_x=True)
    plain = warp_error_series(frames, dreams, wrap_x=False)
    assert wrapped["source_warp_error"] < plain["source_warp_error"] + 1e-6
    assert wrapped["warp_error"] < 50


def test_pair_value_is_the_documented_formula() -> None:
    """One pair by hand with the stages' flow, mask and warp: sum M |D_t - warp(D_{t-1}, b)|^2 / sum M."""
    src, dream = list(source(2)), list(coherent_dream(2))
    b, f = reference_flow("dis", *src[0].shape[:2]).pair(src[0], src[1])
    mask = consistency_mask(b, f)
    prev = dream[0].astype(np.float32)
    sq = ((dream[1].astype(np.float32) - warp(prev, b)) ** 2).sum(axis=2)
    expected = float((sq * mask).sum(dtype=np.float64) / mask.sum(dtype=np.float64))
    res = warp_error_series(src, dream)
    assert res["per_frame"]["warp_error"] == [expected]


def test_plot_writes_valid_png(tmp_path) -> None:
    res = warp_error_series(source(), coherent_dream())
    png = tmp_path / "metrics.png"
    plot_metrics(res["per_frame"], png)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[2] == 3 and img.shape[0] > 100
    assert (img < 128).any()  # something was drawn
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.png"]  # no temp file left behind

    plot_metrics({"warp_error": [3.0, None, 5.0], "source_warp_error": [1.0, None, 1.0],
                  "dream_strength": [0.0, 10.0, 12.0, 11.0]}, png)
    assert cv2.imread(str(png)) is not None
    plot_metrics({"warp_error": [], "source_warp_error": [], "dream_strength": []}, png)
    assert cv2.imread(str(png)) is not None


def test_metrics_name_the_key_frames_where_the_flicker_peaks(tmp_path) -> None:
    """`deepdream metrics`' pulse summary, on real MP4s: a dream written with a key frame every 4 frames whose key
    frames alone carry fresh noise (an encoder's key-frame pulse). The worst pairs touch key frames, the key
    frames are listed and drawn, and the same dream without the noise reads an even curve."""
    from fractions import Fraction

    from pipeline.review.measure import pulse, run_metrics
    from stages.media.encode import Encoding, VideoWriter

    n, rng = N, np.random.default_rng(3)

    def write(path, frames, gop):
        with VideoWriter(path, width=W, height=H, time_base=Fraction(1, 30), rate=Fraction(30),
                         encoding=Encoding(crf=0, gop=gop, speed="ultrafast")) as w:
            for i, f in enumerate(frames):
                w.write(f, i)
        return path

    src = write(tmp_path / "src.mp4", list(source(n)), 30)
    even = list(coherent_dream(n))
    pulsed = [np.clip(f + (rng.normal(0, 30, f.shape) if i == 4 else 0), 0, 255).astype(np.uint8)
              for i, f in enumerate(even)]
    png = tmp_path / "p.png"
    res = run_metrics(src, write(tmp_path / "pulsed.mp4", pulsed, 4), plot=png, projection="flat")
    p = res["pulse"]
    assert p["key_frames"] == [0, 4]
    assert p["worst_over_median"] > 3, p
    assert {tuple(w["frames"]) for w in p["worst_pairs"][:2]} == {(3, 4), (4, 5)}
    assert [w["key_frame"] for w in sorted(p["worst_pairs"][:2], key=lambda w: w["frames"])] == [True, False]
    assert cv2.imread(str(png)) is not None
    calm = run_metrics(src, write(tmp_path / "even.mp4", even, 4), plot=None, projection="flat")["pulse"]
    assert calm["key_frames"] == [0, 4] and calm["worst_over_median"] < 1.5

    assert pulse([None, None], []) == {"worst_over_median": None, "worst_pairs": [], "key_frames": []}
    assert pulse([2.0, 4.0, 2.0], [2])["worst_pairs"][0] == {"frames": [1, 2], "over_median": 2.0, "key_frame": True}
