"""Scene cuts told apart from fast motion: the pure test on pair statistics, and renders of a whip pan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pipeline.render.workers as workers
from pipeline.config import load_config
from pipeline.render.runner import run_video
from stages.media.decode import VideoReader
from stages.temporal import cuts
from stages.temporal.cuts import PairStats, cut_flags, histogram_distance, is_scene_cut, pair_stats
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask, warp
from tests.synth import blurred_texture, whip_pan_frames, write_clip

WHIP, CUT = (8, 20), 26  # the whip pan's frames and the real cut of `whip_clip`


def whip_clip(path: Path) -> Path:
    return write_clip(path, whip_pan_frames(72, 128, peak=0.7, frames=32, whip=WHIP, cut=CUT), rate=24, crf=12)


def stats_of(frames: list[np.ndarray]) -> list[PairStats | None]:
    est, out = FlowEstimator(), [None]
    for a, b in zip(frames, frames[1:]):
        bw, fw = est.pair(a, b)
        out.append(pair_stats(consistency_mask(bw, fw), a, b))
    return out


def test_histogram_distance() -> None:
    warm = blurred_texture(120, 160, seed=3, tint=(1.0, 0.8, 0.5))
    cool = blurred_texture(120, 160, seed=4, tint=(0.4, 0.7, 1.0))
    assert histogram_distance(warm, warm) == pytest.approx(0.0, abs=1e-6)
    assert histogram_distance(warm, cool) > 0.8
    assert histogram_distance(warm, np.roll(warm, 7, axis=1)) < 0.1


def test_the_decision_needs_steady_neighbours_for_a_flow_cut() -> None:
    steady, failed = PairStats(0.95, 0.05), PairStats(0.1, 0.3)
    assert is_scene_cut(steady, failed, steady)[0]
    assert is_scene_cut(None, failed, None)[0]  # no context (a clip's ends): as a cut
    assert not is_scene_cut(failed, failed, steady)[0] and not is_scene_cut(steady, failed, failed)[0]
    assert is_scene_cut(failed, PairStats(0.9, cuts.STRONG_COLOUR_JUMP + 0.1), failed)[0]  # colours jump
    assert is_scene_cut(steady, steady, steady) == (False, "")
    assert not is_scene_cut(steady, PairStats(0.6, 0.55), steady)[0]  # a pan that shows new colours
    assert is_scene_cut(steady, PairStats(0.5, 0.2), steady, min_reliable=0.6)[0]  # temporal.scene_cut


def test_a_whip_pan_is_motion_and_the_real_cut_is_a_cut() -> None:
    """Paired: the same pair statistics with and without their neighbours."""
    frames = whip_pan_frames(72, 128, peak=0.7, frames=32, whip=WHIP, cut=CUT)
    stats = stats_of(frames)
    with_context = [i for i, c in enumerate(cut_flags(stats)) if c]
    alone = [i for i, s in enumerate(stats) if s is not None and is_scene_cut(None, s, None)[0]]
    assert with_context == [CUT]
    assert CUT in alone and len([i for i in alone if WHIP[0] <= i <= WHIP[1]]) >= 4, alone


def residual_jumps(src: Path, out: Path, span: tuple[int, int]) -> float:
    """Mean over the pairs in `span` of |R_t − warp(R_{t−1})|² on the source's reliable pixels, with R the
    8-bit output minus its source: how far the dream itself jumps, whatever the blurred source does."""
    with VideoReader(src) as a, VideoReader(out) as b:
        s = [f.rgb.astype(np.float32) for f in a]
        r = [f.rgb.astype(np.float32) - x for f, x in zip(b, s)]
    est, errs = FlowEstimator(), []
    for t in range(span[0], span[1] + 1):
        bw, fw = est.pair(s[t - 1].astype(np.uint8), s[t].astype(np.uint8))
        m = consistency_mask(bw, fw)
        if m.sum() > 1:
            errs.append(float((((r[t] - warp(r[t - 1], bw)) ** 2).sum(axis=2) * m).sum() / m.sum()))
    return float(np.mean(errs))


@pytest.mark.slow
def test_a_render_carries_the_dream_through_a_whip_pan(tmp_path: Path, monkeypatch) -> None:
    """Paired renders of one clip: the cut test with its neighbours (the render's) against the same test
    shown the pair alone (the old rule). Only the real cut resets, and the dream does not jump mid-shot."""
    src = whip_clip(tmp_path / "whip.mp4")
    cfg = load_config("default", ["dream.octaves=2", "dream.iterations=3", "temporal.iterations=1"])
    on = run_video(src, tmp_path / "on.mp4", cfg)
    monkeypatch.setattr(workers, "is_scene_cut", lambda prev, cur, nxt, **kw: is_scene_cut(None, cur, None, **kw))
    off = run_video(src, tmp_path / "off.mp4", cfg)
    assert on.resets == [CUT]
    assert len(off.resets) >= 4 and CUT in off.resets
    span = (WHIP[0] + 3, WHIP[1] - 3)  # the pairs where the flow fails (< 40 % reliable)
    jump_on, jump_off = (residual_jumps(src, tmp_path / f"{k}.mp4", span) for k in ("on", "off"))
    assert jump_on < 0.8 * jump_off, (jump_on, jump_off)  # measured 0.62 (128×72, 2 octaves)


@pytest.mark.slow
def test_flow_on_several_threads_gives_the_same_bytes(tmp_path: Path) -> None:
    """Flow for several frames at once (temporal.flow_threads, as beside a GPU dream) changes only the speed:
    the whip clip (motion, fast motion and a cut, so the one-frame lookahead is crossed too) renders to the
    same bytes, with the same resets, on 1 and 3 flow threads."""
    src = whip_clip(tmp_path / "whip.mp4")
    out = {}
    for n in (1, 3):
        cfg = load_config("default", ["dream.octaves=1", "dream.iterations=2", "temporal.iterations=1",
                                      f"temporal.flow_threads={n}", "checkpoint.segment_frames=8",
                                      "encode.gop=0.333"])
        out[n] = (run_video(src, tmp_path / f"t{n}.mp4", cfg).resets, (tmp_path / f"t{n}.mp4").read_bytes())
    assert out[1][0] == out[3][0] == [CUT]
    assert out[1][1] == out[3][1]
