"""`deepdream probe` and `deepdream metrics` through the real CLI, in a subprocess, on real MP4 files."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages.media.decode import VideoReader
from stages.media.encode import Encoding, VideoWriter
from stages.vr.spherical_meta import inject_spherical
from tests.synth import make_audio_only, make_clip, make_text_file

pytestmark = pytest.mark.slow  # every test reads a subprocess run

ROOT = Path(__file__).resolve().parent.parent
ROOM = ROOT / "sample_media" / "testRoom1_1920Mono.mp4"
N = 12
LATE_FIRST, LATE_END = 5, N - 2  # the "late" dream covers source frames 5..9


class Run:
    """One CLI call in a subprocess, started at once and awaited on first use.

    Every call imports torch (a few seconds here), so the module starts them all together up front.
    """

    def __init__(self, *args) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, args)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._out: tuple[int, str, str] | None = None

    def result(self) -> tuple[int, str, str]:
        if self._out is None:
            try:
                out, err = self._proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                raise
            self._out = (self._proc.returncode, out, err)
        return self._out

    def json(self) -> tuple[dict, str]:
        rc, out, err = self.result()
        assert rc == 0, err
        return json.loads(out), err

    def user_error(self, *words: str) -> None:
        rc, out, err = self.result()
        assert rc == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert "Traceback" not in err and out == ""
        for word in words:
            assert word in lines[0], lines[0]


def rewrite(src: Path, dst: Path, *, first: int = 0, end: int | None = None, noise: float = 0.0) -> Path:
    """Re-encode frames [first, end) of `src` with their source pts, optionally plus fresh noise."""
    rng = np.random.default_rng(1)
    with VideoReader(src) as reader, VideoWriter(dst, width=reader.width, height=reader.height,
                                                 time_base=reader.time_base, rate=reader.rate,
                                                 encoding=Encoding(speed="ultrafast")) as writer:
        for f in reader:
            if f.index < first or (end is not None and f.index >= end):
                continue
            rgb = f.rgb
            if noise:
                rgb = np.clip(rgb + rng.normal(0, noise, rgb.shape), 0, 255).astype(np.uint8)
            writer.write(rgb, f.pts)
    return dst


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    clip = make_clip(d / "clip.mp4", frames=N, rate=Fraction(30000, 1001))
    stereo = make_clip(d / "tb_plain.mp4", width=128, height=128, frames=3, audio=False)
    inject_spherical(stereo, d / "tb360.mp4", stereo="top-bottom")
    return {
        "clip": clip,
        "noisy": rewrite(clip, d / "noisy.mp4", noise=20.0),
        "late": rewrite(clip, d / "late.mp4", first=LATE_FIRST, end=LATE_END),
        "early": rewrite(clip, d / "early.mp4", end=3),
        "tb360": d / "tb360.mp4",
        "text": make_text_file(d / "notes.mp4"),
        "audio": make_audio_only(d / "tone.m4a"),
        "dir": d,
    }


@pytest.fixture(scope="module")
def runs(media) -> dict[str, Run]:
    m, d = media, media["dir"]
    calls = {
        "probe_clip": ("probe", m["clip"]),
        "probe_room": ("probe", ROOM),
        "probe_room_flat": ("probe", ROOM, "--set", "projection=flat"),
        "probe_tb360": ("probe", m["tb360"]),
        "probe_missing": ("probe", d / "missing.mp4"),
        "probe_text": ("probe", m["text"]),
        "probe_audio": ("probe", m["audio"]),
        "metrics_self": ("metrics", m["clip"], m["clip"]),
        "metrics_noisy": ("metrics", m["clip"], m["noisy"], "--plot", d / "noise.png", "--flow", "farneback",
                          "--projection", "flat"),
        "metrics_late": ("metrics", m["clip"], m["late"], "--projection", "flat"),
        "metrics_missing": ("metrics", m["clip"], d / "nope.mp4"),
        "metrics_audio": ("metrics", m["audio"], m["clip"]),
        "metrics_no_overlap": ("metrics", m["early"], m["late"], "--projection", "flat"),
        "metrics_bad_plot": ("metrics", m["clip"], m["clip"], "--plot", d / "no" / "x.png"),
    }
    started = {name: Run(*args) for name, args in calls.items()}
    yield started
    for run in started.values():
        run.result()  # reap every child, also those a failed test did not wait for


# ----------------------------------------------------------------------------------------------- probe

def test_probe_synthetic_ntsc_clip(runs) -> None:
    info, _ = runs["probe_clip"].json()
    assert set(info) == {"width", "height", "fps", "frames", "duration", "video_codec", "pix_fmt",
                         "rotation", "sample_aspect_ratio", "audio", "projection", "stereo", "layout_source"}
    assert (info["width"], info["height"], info["fps"], info["frames"]) == (160, 96, "30000/1001", N)
    assert info["duration"] == pytest.approx(N * 1001 / 30000, abs=1e-3)
    assert (info["video_codec"], info["pix_fmt"], info["rotation"]) == ("h264", "yuv420p", 0)
    assert info["audio"] == "aac"
    assert (info["projection"], info["stereo"]) == ("flat", "mono")


def test_probe_360_without_metadata_is_guessed_with_a_warning(runs) -> None:
    info, err = runs["probe_room"].json()
    assert (info["width"], info["height"], info["audio"]) == (1920, 960, None)
    assert (info["projection"], info["stereo"], info["layout_source"]) == ("equirect", "mono", "heuristic")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "projection=flat" in warnings[0]


def test_probe_projection_forced_flat(runs) -> None:
    info, err = runs["probe_room_flat"].json()
    assert (info["projection"], info["stereo"]) == ("flat", "mono")
    assert "warning" not in err


def test_probe_spherical_metadata_top_bottom(runs) -> None:
    info, err = runs["probe_tb360"].json()
    assert (info["width"], info["height"]) == (128, 128)
    layout = (info["projection"], info["stereo"], info["layout_source"])
    assert layout == ("equirect", "top-bottom", "metadata")
    assert "warning" not in err


@pytest.mark.parametrize("name, words", [("probe_missing", ["not found", "missing.mp4"]),
                                         ("probe_text", ["notes.mp4"]),
                                         ("probe_audio", ["no video stream"])])
def test_probe_bad_input_is_one_error_line(runs, name: str, words: list[str]) -> None:
    runs[name].user_error(*words)


# --------------------------------------------------------------------------------------------- metrics

def test_metrics_of_a_clip_against_itself(runs, media) -> None:
    res, _ = runs["metrics_self"].json()
    assert res["frames"] == N and res["skipped_source_frames"] == 0
    assert res["dream_strength"] == 0.0
    assert res["warp_error"] == res["source_warp_error"]
    assert res["source"] == str(media["clip"]) and res["dreamed"] == str(media["clip"])
    assert "plot" not in res and res["wrap_x"] is False  # auto: the 5:3 clip is not a panorama
    per = res["per_frame"]
    assert len(per["dream_strength"]) == N and len(per["warp_error"]) == N - 1
    assert per["warp_error"] == per["source_warp_error"]


def test_metrics_noise_raises_warp_error_and_plot(runs, media) -> None:
    res, _ = runs["metrics_noisy"].json()
    assert res["frames"] == N and res["flow"] == "farneback"
    assert res["warp_error"] > res["source_warp_error"] + 200  # fresh noise, sigma 20: ~2 * 3 * 400
    assert res["dream_strength"] > 100
    png = media["dir"] / "noise.png"
    assert res["plot"] == str(png)
    img = cv2.imread(str(png))
    assert img is not None and img.shape[2] == 3 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(v is None or round(v, 4) == v for v in res["per_frame"]["warp_error"])  # rounded


def test_metrics_align_a_late_start_by_pts(runs) -> None:
    res, _ = runs["metrics_late"].json()
    assert res["frames"] == LATE_END - LATE_FIRST
    assert res["skipped_source_frames"] == LATE_FIRST
    # Matched to the right source frames the only difference is re-encoding; paired by index it
    # would be the scene moved by 5 frames of motion.
    assert res["dream_strength"] < 20
    assert res["warp_error"] < res["source_warp_error"] + 50


@pytest.mark.parametrize("name, words", [("metrics_missing", ["not found", "nope.mp4"]),
                                         ("metrics_audio", ["no video stream"]),
                                         ("metrics_no_overlap", ["no frames at the same time"]),
                                         ("metrics_bad_plot", ["does not exist"])])
def test_metrics_bad_inputs(runs, name: str, words: list[str]) -> None:
    runs[name].user_error(*words)


def test_a_closed_stdout_stops_quietly(tmp_path) -> None:
    """`deepdream probe x.mp4 | head -0`: the reader is gone before the JSON is written."""
    clip = make_clip(tmp_path / "c.mp4", frames=3, audio=False)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "probe", str(clip)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
