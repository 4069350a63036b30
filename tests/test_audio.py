"""The audio envelope stage: decoding (AAC/MP4, WAV, offsets), onset/rms/beat features, the attack/release
follower, robust normalisation, alignment to frame times, and one-line errors for bad audio."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from stages.common import InputError
from stages.media import audio as A
from stages.media.decode import VideoReader
from tests.synth import kick_times, kick_track, make_audio_file, make_clip, make_kick_clip, make_text_file

FPS = Fraction(30)
SECONDS = 6.0


@pytest.fixture(scope="module")
def kick_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kick")
    pcm = kick_track(SECONDS)
    return {suffix: make_audio_file(d / f"kick{suffix}", pcm) for suffix in (".m4a", ".wav")}


def beat_and_between(values: np.ndarray, fps: Fraction = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Values at the frames on each kick and at the frames halfway to the next kick, paired."""
    kicks = kick_times(SECONDS)
    on = np.array([int(round(k * fps)) for k in kicks[:-1]])
    half = int(round(fps * Fraction(60, 120) / 2))
    return values[on], values[on + half]


def video_times(n: int, fps: Fraction = FPS) -> np.ndarray:
    return A.frame_times(range(n), 1 / fps)


# ------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("suffix", [".m4a", ".wav"])
def test_onset_peaks_on_the_kicks_and_falls_between(kick_files, suffix):
    env = A.envelope(kick_files[suffix], "onset")
    on, between = beat_and_between(env.at(video_times(int(SECONDS * FPS)), 1 / FPS))
    assert np.all(on > 0.6), on
    assert np.all(on > 2.0 * between), (on, between)  # paired, kick by kick


def test_onset_on_a_kick_frame_is_its_neighbourhood_maximum(kick_files):
    v = A.envelope(kick_files[".m4a"], "onset", attack=0.005, release=0.05).at(video_times(int(SECONDS * FPS)))
    for k in kick_times(SECONDS)[:-1]:
        i = int(round(k * FPS))
        assert v[i] == v[i - 3:i + 4].max(), (k, v[i - 3:i + 4])


def test_rms_follows_loudness():
    # Four 0.5 s steps of a 220 Hz tone, each twice as loud as the last.
    rate, levels = A.ANALYSIS_RATE, [0.05, 0.1, 0.2, 0.4]
    t = np.arange(int(0.5 * rate)) / rate
    pcm = np.concatenate([lv * np.sin(2 * np.pi * 220 * t) for lv in levels]).astype(np.float32)
    env = A.analyse([pcm], "rms", attack=0.01, release=0.01)
    mids = env.at([0.25 + 0.5 * i for i in range(4)])
    assert mids[-1] == pytest.approx(1.0, abs=0.02)
    assert np.allclose(mids[1:] / mids[:-1], 2.0, rtol=0.05), mids


@pytest.mark.parametrize("bpm", [96.0, 120.0, 140.0])
def test_beat_finds_the_tempo_and_the_kicks(bpm):
    pcm = kick_track(8.0, bpm, rate=A.ANALYSIS_RATE)
    env = A.analyse([pcm], "beat", attack=0.0, release=0.05)
    assert env.tempo == pytest.approx(bpm, abs=2.0)
    grid = env.t0 + np.arange(len(env.values)) / env.rate
    beats = grid[env.values == env.values.max()]
    kicks = kick_times(8.0, bpm)
    err = np.abs(beats[:, None] - kicks[None, :]).min(axis=1)
    assert len(beats) >= len(kicks) - 2 and np.all(err < 0.025), err  # every tracked beat is on a kick


def test_beat_on_the_kick_clip_file(kick_files):
    env = A.envelope(kick_files[".m4a"], "beat")
    assert env.tempo == pytest.approx(120.0, abs=2.0)
    on, between = beat_and_between(env.at(video_times(int(SECONDS * FPS)), 1 / FPS))
    assert np.all(on > 0.8) and np.all(on > 2.0 * between), (on, between)


# ------------------------------------------------------------------------------- follower, normalising


def test_follower_time_constants():
    rate, attack, release = 100.0, 0.05, 0.2
    x = np.r_[np.ones(100), np.zeros(100)]
    y = A.follow(x, rate, attack, release)
    assert y[round(attack * rate) - 1] == pytest.approx(1 - np.exp(-1), abs=1e-9)  # hop 0 is one step in
    assert y[99] == pytest.approx(1.0, abs=1e-6)
    assert y[100 + round(release * rate) - 1] / y[99] == pytest.approx(np.exp(-1), abs=1e-6)
    assert np.all(np.diff(y[:100]) >= 0) and np.all(np.diff(y[100:]) <= 0)
    np.testing.assert_array_equal(A.follow(x, rate, 0.0, 0.0), x)  # 0 s: follows exactly


def test_normalise_is_not_flattened_by_one_click():
    rng = np.random.default_rng(0)
    x = np.zeros(2000)
    x[::40] = rng.uniform(0.8, 1.2, 50)  # regular peaks
    x[1000] = 20.0  # one click 20× louder
    y = A.normalise(x)
    assert np.median(y[::40]) > 0.6 and y[1000] == 1.0  # peaks keep their height; the click is clipped
    lone = np.r_[np.full(999, 1e-3), 1.0]  # a lone click over faint hiss: the hiss stays faint
    assert A.normalise(lone).max() == 1.0 and A.normalise(lone)[:-1].max() < 0.1


def test_blocks_give_the_one_shot_stft():
    x = np.random.default_rng(1).normal(0, 0.1, 20000).astype(np.float32)
    whole = A.spectral_features([x], block=10**9)
    parts = A.spectral_features(np.split(x, [1, 777, 5000, 5003, 13000]), block=3000)
    assert len(whole[0]) == 1 + len(x) // A.HOP
    for a, b in zip(whole, parts):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------- alignment


def test_frame_times_are_exact_for_ntsc_rates():
    tb = Fraction(1, 30000)
    pts = [i * 1001 for i in (0, 1, 100_000, 3_000_000)]
    got = A.frame_times(pts, tb)
    assert list(got) == [float(p * tb) for p in pts]
    assert A.frame_times([1001 + 500], tb, origin=500)[0] == float(Fraction(1001, 30000))


def test_clicks_on_ntsc_frames_peak_on_those_frames(tmp_path):
    """Clicks placed at the exact times of frames g (30000/1001 fps) in a file whose audio starts at 0.25 s
    on the container clock: the envelope sampled at pts × time_base peaks on frame g itself."""
    fps, rate, start = Fraction(30000, 1001), 48000, 0.25
    pcm = np.random.default_rng(2).normal(0, 0.01, int(4 * rate))
    t = np.arange(int(0.1 * rate)) / rate
    hits = [20, 45, 77, 110]
    for g in hits:
        i = int(round((float(g / fps) - start) * rate))
        pcm[i:i + len(t)] += 0.7 * np.exp(-t / 0.02) * np.sin(2 * np.pi * 80 * t)
    env = A.envelope(make_audio_file(tmp_path / "clicks.m4a", pcm.astype(np.float32), start=start),
                     "onset", attack=0.005, release=0.03)
    v = env.at(A.frame_times([i * 1001 for i in range(130)], Fraction(1, 30000)))
    for g in hits:
        assert v[g] > 0.5 and v[g] == v[g - 3:g + 4].max(), (g, v[g - 3:g + 4])


def test_span_catches_a_peak_between_frame_times():
    values = np.zeros(100)
    values[50] = 1.0  # one hop at t = 0.5 s
    env = A.Envelope(values, 100.0, 0.0, "onset")
    times = [0.48, 0.485, 0.51]
    np.testing.assert_allclose(env.at(times), [0.0, 0.0, 0.0])  # point samples miss it
    np.testing.assert_allclose(env.at(times, 0.02), [1.0, 1.0, 0.0])  # [t, t + span] holds it, or not
    assert env.at([0.495], 0.0)[0] == pytest.approx(0.5)
    np.testing.assert_allclose(env.at([-1.0, 5.0], 0.1), [0.0, 0.0])  # outside the audio


def test_kick_clip_soundtrack_lines_up_with_its_frames(tmp_path):
    """`make_kick_clip` (the end-to-end react test's input): its own soundtrack, sampled at its frames'
    pts × time_base, is high on the kick frames and low halfway between."""
    with VideoReader(make_kick_clip(tmp_path / "kick.mp4", seconds=3.0)) as r:
        pts, tb, has_audio = [f.pts for f in r], r.time_base, r.has_audio
    assert has_audio and len(pts) == 90
    v = A.envelope(tmp_path / "kick.mp4", "onset").at(A.frame_times(pts, tb), 1 / FPS)
    on = [int(round(k * FPS)) for k in kick_times(3.0)[:-1]]
    assert np.all(v[on] > 0.6) and np.all(v[on] > 2.0 * v[np.add(on, 7)]), (v[on], v[np.add(on, 7)])


# ------------------------------------------------------------------------------------------- bad audio


def test_silent_soundtrack_gives_a_zero_envelope(tmp_path):
    p = make_audio_file(tmp_path / "silent.m4a", np.zeros(48000, np.float32))
    for feature in A.FEATURES:
        env = A.envelope(p, feature)
        assert len(env.values) > 80 and np.all(env.values == 0)


def one_line_input_error(path) -> str:
    with pytest.raises(InputError) as ei:
        A.envelope(path)
    assert "\n" not in str(ei.value)
    return str(ei.value)


def test_bad_audio_is_one_line(tmp_path):
    assert "has no audio stream" in one_line_input_error(make_clip(tmp_path / "mute.mp4", frames=3, audio=False))
    assert "cannot read" in one_line_input_error(make_text_file(tmp_path / "notes.mp4"))
    assert "not found" in one_line_input_error(tmp_path / "missing.wav")
