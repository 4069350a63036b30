"""End-to-end `deepdream video`: timing, audio, temporal coherence, awkward and bad inputs."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.render.runner import run_video
from stages.measure.metrics import warp_error_series
from stages.media.decode import VideoReader
from tests.synth import make_audio_only, make_clip, make_text_file, truncate

FAST = ["--set", "dream.octaves=2", "--set", "dream.iterations=3", "--set", "temporal.iterations=1",
        "--set", "checkpoint.segment_frames=8", "--set", "encode.gop=0.267"]  # 8-frame GOPs at 30 fps


def render(src: Path, dst: Path, *extra: str) -> int:
    return main(["video", str(src), str(dst), *FAST, *extra])


def frames_of(path: Path) -> list[tuple[Fraction, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(f.pts * f.time_base, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def top_level_boxes(path: Path) -> list[str]:
    data, out, pos = path.read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        size = struct.unpack(">Q", data[pos + 8:pos + 16])[0] if size == 1 else size
        out.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return out


def moov_bytes(path: Path) -> bytes:
    data, pos = path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"moov":
            return data[pos:pos + size]
        pos += size
    raise AssertionError("no moov box")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in line for line in err)
    return errors[0]


@pytest.mark.slow
def test_ntsc_rate_pts_and_audio_survive(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", width=96, height=64, frames=20, rate=Fraction(30000, 1001))
    dst = tmp_path / "out.mp4"
    assert render(src, dst) == 0
    got, want = frames_of(dst), frames_of(src)
    assert [t for t, _ in got] == [t for t, _ in want]
    with av.open(str(dst)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert Fraction(v.guessed_rate) == Fraction(30000, 1001)
        assert a.codec_context.name == "aac"
        audio_end = max(float((p.pts + p.duration) * p.time_base) for p in c.demux(a) if p.pts is not None)
    video_end = float(want[-1][0] + Fraction(1001, 30000))
    assert abs(audio_end - video_end) <= 1024 / a.codec_context.sample_rate + 1e-6
    assert top_level_boxes(dst).index("moov") < top_level_boxes(dst).index("mdat")
    assert (tmp_path / "out.mp4.yaml").is_file()
    assert not (tmp_path / "out.mp4.deepdream-run").exists()
    # the dream changed the pictures
    assert np.abs(got[5][1].astype(int) - want[5][1].astype(int)).mean() > 2


@pytest.mark.slow
def test_start_and_max_frames_select_a_range_with_audio_trimmed(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=30, rate=Fraction(30))
    dst = tmp_path / "out.mp4"
    assert render(src, dst, "--set", "video.start=0.5", "--set", "video.max_frames=6") == 0
    got = frames_of(dst)
    assert [t for t, _ in got] == [Fraction(i, 30) for i in range(6)]  # the file starts at 0, no lead-in
    with av.open(str(dst)) as c:
        a = c.streams.audio[0]
        times = [float(p.pts * p.time_base) for p in c.demux(a) if p.pts is not None]
        assert c.streams.video[0].start_time == 0
    assert 0 <= min(times) < 1024 / 48000 and max(times) <= 0.2 + 1e-6
    assert b"elst" not in moov_bytes(dst)  # no edit list


@pytest.mark.slow
def test_temporal_coherence_on_known_motion(tmp_path: Path) -> None:
    """Flow-warped initialisation must at least halve the warp error without fading the dream."""
    src = make_clip(tmp_path / "in.mp4", width=128, height=80, frames=14, motion=(2.0, 1.0), audio=False)
    result = {}
    for on in (False, True):
        cfg = load_config("default", ["dream.octaves=2", "dream.iterations=6", "temporal.iterations=2",
                                      "temporal.blend=0.9", f"temporal.enabled={str(on).lower()}"])
        dst = tmp_path / f"out_{on}.mp4"
        run_video(src, dst, cfg)
        with VideoReader(src) as a, VideoReader(dst) as b:
            result[on] = warp_error_series((f.rgb for f in a), (f.rgb for f in b))
    ratio = result[True]["warp_error"] / result[False]["warp_error"]
    strength = result[True]["dream_strength"] / result[False]["dream_strength"]
    assert ratio <= 0.5, f"warp error on/off = {ratio:.3f}"
    assert strength >= 0.7, f"dream strength on/off = {strength:.3f}"


@pytest.mark.slow
def test_scene_cut_resets_the_chain(tmp_path: Path) -> None:
    a = make_clip(tmp_path / "a.mp4", width=64, height=48, frames=6, audio=False, seed=1)
    b = make_clip(tmp_path / "b.mp4", width=64, height=48, frames=6, audio=False, seed=7)
    joined = tmp_path / "cut.mp4"
    with av.open(str(joined), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i, (_, img) in enumerate(frames_of(a) + [(t, 255 - im) for t, im in frames_of(b)]):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    stats = run_video(joined, tmp_path / "out.mp4", load_config("default", ["dream.octaves=1",
                                                                            "dream.iterations=2"]))
    assert stats.resets == [6]


@pytest.mark.slow
def test_odd_size_rotated_and_vfr_inputs(tmp_path: Path) -> None:
    odd = make_clip(tmp_path / "odd.mp4", width=333, height=201, frames=3, pix_fmt="yuv444p", audio=False)
    assert render(odd, tmp_path / "odd_out.mp4", "--set", "input.max_side=111") == 0
    f = frames_of(tmp_path / "odd_out.mp4")
    assert len(f) == 3 and f[0][1].shape[:2] == (66, 110)  # a downscaled size is chosen even

    rot = make_clip(tmp_path / "rot.mp4", width=64, height=48, frames=3, rotation=90, audio=False)
    assert render(rot, tmp_path / "rot_out.mp4") == 0
    assert frames_of(tmp_path / "rot_out.mp4")[0][1].shape[:2] == (64, 48)

    vfr = make_clip(tmp_path / "vfr.mp4", width=64, height=48, frames=10, vfr=True, audio=False)
    assert render(vfr, tmp_path / "vfr_out.mp4") == 0
    assert [t for t, _ in frames_of(tmp_path / "vfr_out.mp4")] == [t for t, _ in frames_of(vfr)]


def _zero_frame_video(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    return path


@pytest.mark.parametrize("kind", ["missing", "text", "truncated", "audio_only", "zero_frames", "directory"])
def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys, kind: str) -> None:
    src = tmp_path / "in.mp4"
    if kind == "text":
        make_text_file(src)
    elif kind == "truncated":
        truncate(make_clip(src, frames=10, faststart=False), 0.5)
    elif kind == "audio_only":
        make_audio_only(src)
    elif kind == "zero_frames":
        _zero_frame_video(src)
    elif kind == "directory":
        src.mkdir()
    dst = tmp_path / "out.mp4"
    assert render(src, dst) == 2
    one_error_line(capsys)
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_bad_output_paths(tmp_path: Path, capsys) -> None:
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=2, audio=False)
    assert render(src, tmp_path / "nope" / "out.mp4") == 2
    assert "does not exist" in one_error_line(capsys)
    assert render(src, tmp_path / "out.avi") == 2
    assert ".mp4" in one_error_line(capsys)
    assert render(src, tmp_path / "out.mp4", "--set", "temporal.flow=sideways") == 2
    assert "temporal.flow" in one_error_line(capsys)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.slow
def test_a_cut_short_download_renders_every_frame_that_decodes(tmp_path: Path, capsys) -> None:
    """A faststart clip with B-frames cut at 80 % of its bytes: the render writes every frame PyAV decodes
    from it without frame threads (frame threads alone lost the two held for reordering), each at its own
    time, and one line says how many of the file's frames are missing."""
    src = make_clip(tmp_path / "in.mp4", width=160, height=96, frames=30, speed="medium", motion=(3.0, 1.0))
    truncate(src, 0.8)
    with av.open(str(src)) as c:
        s, plain = c.streams.video[0], []
        s.thread_type = "SLICE"
        for packet in c.demux(s):
            try:
                plain += [f.pts * f.time_base for f in packet.decode()]
            except av.FFmpegError:
                pass
        try:
            plain += [f.pts * f.time_base for f in s.codec_context.decode(None)]
        except av.FFmpegError:
            pass  # the demuxer's flush packet drained it
    dst = tmp_path / "out.mp4"
    assert render(src, dst, "--set", "temporal.enabled=false") == 0
    assert [t for t, _ in frames_of(dst)] == [t - plain[0] for t in plain]
    line = f"decoded {len(plain)} of 30 frames ({30 - len(plain)} missing): the file looks truncated"
    assert line in capsys.readouterr().err
