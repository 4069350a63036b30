"""VideoReader and probe on small real MP4s written by PyAV/libx264."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stages.common import InputError
from stages.media.decode import VideoReader, probe
from tests.synth import make_audio_only, make_clip, make_text_file, scene_frame, scene_texture, truncate


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_ntsc_rate_count_pts_and_probe(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", rate=Fraction(30000, 1001), frames=24)
    info = probe(clip)
    assert info["fps"] == "30000/1001"
    assert (info["width"], info["height"], info["frames"]) == (160, 96, 24)
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio"] == "aac"
    assert info["rotation"] == 0 and info["side_projection"] is None and info["side_stereo"] is None
    assert info["duration"] == pytest.approx(24 * 1001 / 30000, abs=1e-3)
    with VideoReader(clip) as r:
        assert r.rate == Fraction(30000, 1001) and r.has_audio and r.frames_estimate == 24
        frames = list(r)
    assert [f.index for f in frames] == list(range(24))
    # Exact integer pts on the 1/30000 clock: no float drift.
    assert [f.pts * f.time_base for f in frames] == [Fraction(1001 * i, 30000) for i in range(24)]
    tex = scene_texture(96, 160, 0)
    f0 = frames[0].rgb
    assert f0.dtype == np.uint8 and f0.shape == (96, 160, 3) and f0.flags["C_CONTIGUOUS"]
    assert _err(f0, tex) < 5
    # Known motion: frame 10 matches the texture shifted by 10·(2, 1), not frame 0.
    assert _err(frames[10].rgb, scene_frame(tex, 10, (2.0, 1.0))) < 6 < _err(frames[10].rgb, tex)


def test_start_and_max_frames(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=60, audio=False)
    with VideoReader(clip, start=1.0, max_frames=10) as r:
        assert r.frames_estimate == 10
        frames = list(r)
    assert len(frames) == 10 and [f.index for f in frames] == list(range(10))
    assert frames[0].pts * frames[0].time_base == 1
    tex = scene_texture(96, 160, 0)
    assert _err(frames[0].rgb, scene_frame(tex, 30, (2.0, 1.0))) < 6
    with VideoReader(clip, start=1.5) as r:
        assert r.frames_estimate == 15
        assert len(list(r)) == 15


def test_max_side_downscales_but_never_upscales(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=3, audio=False)
    with VideoReader(clip, max_side=80) as r:
        assert (r.width, r.height) == (80, 48)
        assert next(iter(r)).rgb.shape == (48, 80, 3)
    with VideoReader(clip, max_side=1000) as r:
        assert (r.width, r.height) == (160, 96)


def test_downscaled_sizes_are_even():
    from stages.media.decode import fit_size as _fit

    assert _fit(333, 201, 111) == (110, 66)  # the longer side fits, the other keeps the aspect, both even
    assert _fit(201, 333, 111) == (66, 110)
    assert _fit(1080, 1080, 33) == (32, 32)  # a top-bottom stereo frame still splits into two eyes
    assert _fit(4000, 3, 100) == (100, 2)
    assert _fit(333, 201, None) == (333, 201) and _fit(333, 201, 400) == (333, 201)  # never upscaled


def test_odd_dimensions(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=333, height=201, frames=3, pix_fmt="yuv444p", audio=False)
    with VideoReader(clip) as r:
        assert (r.width, r.height) == (333, 201)
        frames = list(r)
    assert len(frames) == 3 and frames[0].rgb.shape == (201, 333, 3)


@pytest.mark.parametrize("rotation,k", [(90, 1), (-90, -1), (180, 2)])
def test_display_rotation_is_applied(tmp_path, rotation, k):
    clip = make_clip(tmp_path / "c.mp4", frames=3, rotation=rotation, audio=False)
    assert probe(clip)["rotation"] == rotation
    with VideoReader(clip, max_side=80) as r:
        assert r.rotation == rotation
        expected_shape = (80, 48) if rotation % 180 else (48, 80)
        assert (r.height, r.width) == expected_shape
        frames = list(r)
    assert frames[0].rgb.shape == (*expected_shape, 3)
    with VideoReader(clip) as r:
        first = next(iter(r)).rgb
    tex = scene_texture(96, 160, 0)
    assert _err(first, np.rot90(tex, k)) < 5


def test_vfr_pts_kept(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=20, vfr=True, audio=False)
    with av.open(str(clip)) as c:
        truth = sorted(p.pts for p in c.demux(video=0) if p.pts is not None)
    with VideoReader(clip) as r:
        pts = [f.pts for f in r]
    assert pts == truth
    steps = np.diff(pts)
    assert steps.min() != steps.max()  # really variable


def test_ten_bit_input(tmp_path):
    if "yuv420p10le" not in [f.name for f in av.codec.Codec("libx264", "w").video_formats]:
        pytest.skip("this libx264 build has no 10-bit support")
    clip = make_clip(tmp_path / "c.mp4", frames=4, pix_fmt="yuv420p10le", audio=False)
    assert probe(clip)["pix_fmt"] == "yuv420p10le"
    with VideoReader(clip) as r:
        frames = list(r)
    assert len(frames) == 4 and frames[0].rgb.dtype == np.uint8
    assert _err(frames[0].rgb, scene_texture(96, 160, 0)) < 5


def test_truncated_file_yields_what_decodes(tmp_path, caplog):
    clip = truncate(make_clip(tmp_path / "c.mp4", frames=60, audio=False), 0.5)
    with VideoReader(clip) as r:
        n = len(list(r))
    assert 0 < n < 60
    assert "truncated" in caplog.text


def test_a_damaged_packet_is_skipped_and_counted(tmp_path, caplog):
    """Bytes zeroed mid-file: every frame that still decodes comes out, and one line says how many are
    missing and why."""
    clip = make_clip(tmp_path / "c.mp4", width=320, height=180, frames=30, audio=False, motion=(7.0, 3.0))
    data = bytearray(clip.read_bytes())
    at = int(len(data) * 0.4)
    data[at:at + 400] = bytes(400)
    clip.write_bytes(bytes(data))
    with av.open(str(clip)) as c:  # what PyAV itself decodes, packet by packet, passing over errors
        s, plain = c.streams.video[0], 0
        for packet in c.demux(s):
            try:
                plain += len(packet.decode())
            except av.FFmpegError:
                pass
    with VideoReader(clip) as r:
        n = len(list(r))
    assert n == plain < 30
    assert f"decoded {n} of 30 frames ({30 - n} missing): {r.skipped_packets} damaged packets skipped" in caplog.text


def _pts_decoded(path, *, frame_threads: int | None) -> list[int]:
    """Every frame PyAV decodes, packet by packet, passing over errors, then drained: on `frame_threads`
    threads (as the reader decoded before), or without frame threads (None)."""
    with av.open(str(path)) as c:
        s, pts = c.streams.video[0], []
        s.thread_type = "AUTO" if frame_threads else "SLICE"
        if frame_threads:
            s.codec_context.thread_count = frame_threads
        for packet in c.demux(s):
            try:
                pts += [f.pts for f in packet.decode()]
            except av.FFmpegError:
                pass
        try:
            pts += [f.pts for f in s.codec_context.decode(None)]
        except av.FFmpegError:
            pass
    return pts


def test_frames_frame_threads_drop_at_damage_are_kept(tmp_path, caplog):
    """A faststart file with B-frames, cut short as an interrupted download leaves it, or with bytes zeroed
    mid-file: frame threads alone (the reader before) silently lose the frames in flight at the damage
    (those held for reordering at a cut: 19 frames instead of 21); the reader gives every frame that
    decodes without frame threads, in order, on 8 threads."""
    clip = make_clip(tmp_path / "c.mp4", width=320, height=180, frames=30, speed="medium", motion=(3.0, 1.0))
    data = clip.read_bytes()
    damaged = []
    for keep in (0.8, 0.85, 0.9, 0.95):
        damaged.append(tmp_path / f"cut{keep}.mp4")
        damaged[-1].write_bytes(data[:int(len(data) * keep)])
    zeroed = bytearray(data)
    at = int(len(data) * 0.7)
    zeroed[at:at + 2000] = bytes(2000)
    damaged.append(tmp_path / "zeroed.mp4")
    damaged[-1].write_bytes(bytes(zeroed))
    lost_before = 0
    for path in damaged:
        plain = _pts_decoded(path, frame_threads=None)
        with VideoReader(path, threads=8) as r:
            assert [f.pts for f in r] == plain, path.name
        lost_before += len(plain) - len(_pts_decoded(path, frame_threads=8))
    assert lost_before > 0
    assert "decoding again from the key frame before it without frame threads" in caplog.text


def test_healthy_files_stay_on_frame_threads(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", width=320, height=180, frames=30, speed="medium")
    for start in (0.0, 0.5):
        with VideoReader(clip, threads=8, start=start) as r:
            assert len(list(r)) == (30 if start == 0 else 15) and not r.recovered


def _bad(tmp_path, kind):
    if kind == "missing":
        return tmp_path / "nope.mp4", {}
    if kind == "directory":
        return tmp_path, {}
    if kind == "empty":
        (tmp_path / "e.mp4").write_bytes(b"")
        return tmp_path / "e.mp4", {}
    if kind == "text":
        return make_text_file(tmp_path / "t.mp4"), {}
    if kind == "audio-only":
        return make_audio_only(tmp_path / "a.mp4"), {}
    if kind == "truncated-to-nothing":
        return truncate(make_clip(tmp_path / "c.mp4", frames=30, audio=False), 0.05), {}
    if kind == "truncated-no-moov":
        return truncate(make_clip(tmp_path / "c.mp4", frames=30, faststart=False), 0.6), {}
    if kind == "start-past-end":
        return make_clip(tmp_path / "c.mp4", frames=10, audio=False), {"start": 5.0}
    if kind == "start-after-last-frame":
        # Inside the container duration (0.333 s) but after the last frame's timestamp (0.3 s).
        return make_clip(tmp_path / "c.mp4", frames=10, audio=False), {"start": 0.32}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "text", "audio-only",
                                  "truncated-to-nothing", "truncated-no-moov", "start-past-end",
                                  "start-after-last-frame"])
def test_bad_input_raises_one_line_input_error(tmp_path, kind):
    path, kwargs = _bad(tmp_path, kind)
    with pytest.raises(InputError) as ei:
        with VideoReader(path, **kwargs) as r:
            list(r)
    msg = str(ei.value)
    assert msg and "\n" not in msg
    if kind not in ("start-past-end", "start-after-last-frame"):
        with pytest.raises(InputError):
            probe(path)


def _mkv(path, pts_ms: list[int]):
    """A Matroska file (no frame count in its header) with frames at these milliseconds."""
    tex = scene_texture(64, 96)
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=30)
        s.width, s.height, s.pix_fmt, s.time_base = 96, 64, "yuv420p", Fraction(1, 1000)
        for i, t in enumerate(pts_ms):
            f = av.VideoFrame.from_ndarray(scene_frame(tex, i, (2.0, 0.0)), format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def test_a_gap_in_a_variable_rate_file_is_not_called_missing_frames(tmp_path, caplog):
    """Without a frame count in the container the frames expected come from time: a half-second gap between
    frames is the file's timing, not lost frames; cutting the same kind of file short is still reported."""
    gap = _mkv(tmp_path / "gap.mkv", [0, 33, 67, 100, 600, 633])
    with VideoReader(gap) as r:
        assert sum(1 for _ in r) == 6
    assert "missing" not in caplog.text
    whole = _mkv(tmp_path / "whole.mkv", [round(i * 1000 / 30) for i in range(60)])
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    with VideoReader(cut) as r:
        n = sum(1 for _ in r)
    assert n < 50 and "missing): the file looks truncated" in caplog.text


def _disc_clip(path, sar: Fraction, size: int = 240) -> Path:
    """Frames of `size`² coded pixels holding a disc drawn squeezed by the pixels' shape, so a player that honours
    the sample aspect ratio `sar` shows it round (as a DV or anamorphic camera records a ball)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    disc = ((xx - size / 2) * float(sar)) ** 2 + (yy - size / 2) ** 2 < (size / 5) ** 2
    rgb = np.where(disc[..., None], np.uint8(230), np.uint8(20)).repeat(3, axis=2)
    with av.open(str(path), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.codec_context.sample_aspect_ratio = sar
        for _ in range(3):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(vs.encode(None))
    return path


def _disc_aspect(rgb: np.ndarray) -> float:
    ys, xs = np.nonzero(rgb[..., 1] > 128)
    return (xs.max() - xs.min() + 1) / (ys.max() - ys.min() + 1)


@pytest.mark.parametrize("sar,size", [(Fraction(2), (480, 240)), (Fraction(1, 2), (240, 480)),
                                      (Fraction(32, 27), (284, 240))])
def test_non_square_pixels_are_read_square(tmp_path, sar, size):
    clip = _disc_clip(tmp_path / "c.mp4", sar)
    with av.open(str(clip)) as c:  # what the file holds: the disc squeezed by the pixels' shape
        coded = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert _disc_aspect(coded) == pytest.approx(1 / float(sar), rel=0.06)
    assert probe(clip)["sample_aspect_ratio"] == str(sar)
    with VideoReader(clip) as r:
        assert (r.width, r.height) == size
        frame = next(iter(r)).rgb
    assert frame.shape == (size[1], size[0], 3)
    assert _disc_aspect(frame) == pytest.approx(1.0, rel=0.06)  # round, as a player shows it
    with VideoReader(clip, max_side=120) as r:  # then scaled like any frame
        assert max(r.width, r.height) == 120 and _disc_aspect(next(iter(r)).rgb) == pytest.approx(1.0, rel=0.1)


def test_a_garbage_sample_aspect_ratio_is_ignored(tmp_path, caplog):
    clip = _disc_clip(tmp_path / "c.mp4", Fraction(100))
    with VideoReader(clip) as r:
        assert (r.width, r.height, r.sample_aspect) == (240, 240, None)
    assert "ignoring sample aspect ratio 100" in caplog.text


def _with_cover(path, video: bool) -> Path:
    """An MP4 with cover art (a one-frame MJPEG "video" stream marked attached_pic), with or without a real video."""
    from tests.synth import _add_tone, _mux_tone

    with av.open(str(path), "w", format="mp4") as c:
        cover = c.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        v = c.add_stream("libx264", rate=25) if video else None
        if v is not None:
            v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
        tone, pcm = _add_tone(c, 0.4)
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24")
        for p in [*cover.encode(picture), *cover.encode(None)]:
            p.pts = p.dts = 0
            c.mux(p)
        for i in range(10 if v is not None else 0):
            f = av.VideoFrame.from_ndarray(scene_frame(scene_texture(96, 160, 0), i, (2.0, 1.0)), format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        if v is not None:
            c.mux(v.encode(None))
        _mux_tone(c, tone, pcm)
    return path


def test_cover_art_is_not_the_video(tmp_path):
    clip = _with_cover(tmp_path / "c.mp4", video=True)
    with VideoReader(clip) as r:
        assert (r.width, r.height) == (160, 96) and len(list(r)) == 10
    song = _with_cover(tmp_path / "song.m4a", video=False)
    with av.open(str(song)) as c:  # PyAV lists the cover as a video stream
        assert [s.codec_context.name for s in c.streams.video] == ["mjpeg"]
    with pytest.raises(InputError, match="no video stream, only cover art"):
        VideoReader(song)


def test_frames_whose_time_does_not_move_forward_are_dropped(tmp_path, caplog):
    """A broken mux with repeated times (0, 100, 100, 200, … ms): a player shows one frame per time, and an encoder
    refuses a time that does not increase (the render failed in the muxer). The reader hands on one frame per time,
    says how many it dropped, and a render of the file finishes with its frames at their own times."""
    from pipeline.config import load_config
    from pipeline.render.runner import run_video
    from stages.media.decode import scan_times

    path = tmp_path / "dup.mkv"
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("mjpeg", rate=10)
        s.width, s.height, s.pix_fmt, s.time_base = 64, 48, "yuvj420p", Fraction(1, 1000)
        tex = scene_texture(48, 64, 0)
        for i, pts in enumerate([0, 100, 100, 200, 300, 300, 400]):
            for p in s.encode(av.VideoFrame.from_ndarray(scene_frame(tex, i, (2.0, 0.0)), format="rgb24")):
                p.pts = p.dts = pts
                p.time_base = Fraction(1, 1000)
                c.mux(p)
    with VideoReader(path) as r:
        assert [f.pts for f in r] == [0, 100, 200, 300, 400]
    assert "2 frames stamped at or before the frame before them dropped" in caplog.text
    assert scan_times(path)[0] == [0, 100, 200, 300, 400]
    out = tmp_path / "out.mp4"
    run_video(path, out, load_config("default", ["dream.octaves=1", "dream.iterations=1", "temporal.iterations=1"]))
    with av.open(str(out)) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
