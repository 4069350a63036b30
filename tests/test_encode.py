"""VideoWriter segments and join_segments, verified by decoding the results with FFmpeg."""

import struct
import subprocess
import sys
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stages.measure.metrics import warp_error_series
from stages.media.decode import VideoReader
from stages.media.encode import Encoding, VideoWriter, encoder_available, join_segments
from tests.synth import AUDIO_RATE, blurred_texture, make_clip, scene_frame


def _read(path):
    with VideoReader(path) as r:
        return r, list(r)


def _write_segments(tmp_path, frames, bounds, reader, faststart=True):
    paths = []
    for k, (a, b) in enumerate(bounds):
        p = tmp_path / f"seg{k}.mp4"
        with VideoWriter(p, width=reader.width, height=reader.height, time_base=reader.time_base,
                         rate=reader.rate, encoding=Encoding(speed="ultrafast"), faststart=faststart) as w:
            for f in frames[a:b]:
                w.write(f.rgb, f.pts)
        paths.append(p)
    return paths


def _audio_seconds(path) -> float:
    """Audio length as a player sees it: the sum of packet durations, which includes the end trim."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(audio=0) if p.pts is not None and p.pts >= 0]
        return float(sum(p.duration for p in packets) * c.streams.audio[0].time_base)


def _top_level_boxes(path) -> list[str]:
    data, names, pos = Path(path).read_bytes(), [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
        names.append(kind.decode("latin-1"))
        pos += size if size else len(data)
    return names


def _err(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_three_segments_join_to_all_frames_with_pts_and_audio(tmp_path):
    src = make_clip(tmp_path / "src.mp4", rate=Fraction(30000, 1001), frames=45)
    reader, frames = _read(src)
    segs = _write_segments(tmp_path, frames, [(0, 15), (15, 30), (30, 45)], reader)
    for seg in segs:
        with av.open(str(seg)) as c:
            assert next(iter(c.demux(video=0))).is_keyframe  # each checkpoint decodes on its own
    end = float((frames[-1].pts + 1001) * reader.time_base)
    out = tmp_path / "out.mp4"
    join_segments(segs, out, audio_source=src, start_s=0.0, end_s=end)
    r2, got = _read(out)
    assert r2.rate == Fraction(30000, 1001)
    assert [f.pts for f in got] == [f.pts for f in frames]
    # Order: each output frame is closest to its own source frame, not to a neighbour.
    for i, f in enumerate(got):
        errs = [_err(f.rgb, frames[j].rgb) for j in range(max(0, i - 1), min(45, i + 2))]
        assert min(errs) == _err(f.rgb, frames[i].rgb) < 4
    assert r2.has_audio
    assert abs(_audio_seconds(out) - end) <= 1024 / AUDIO_RATE


def test_join_from_mid_clip_starts_at_zero_and_trims_audio(tmp_path):
    src = make_clip(tmp_path / "src.mp4", frames=40)
    with VideoReader(src, start=0.5) as reader:
        frames = list(reader)
    segs = _write_segments(tmp_path, frames, [(0, 12), (12, 25)], reader)
    start_s = float(frames[0].pts * reader.time_base)
    end_s = start_s + 25 / 30
    out = tmp_path / "out.mp4"
    join_segments(segs, out, audio_source=src, start_s=start_s, end_s=end_s)
    _, got = _read(out)
    assert [f.pts for f in got] == [f.pts - frames[0].pts for f in frames]  # no empty lead-in
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        starts = [float(p.pts * p.time_base) for p in c.demux(a) if p.pts is not None]
    assert 0 <= starts[0] < 1024 / AUDIO_RATE  # in sync with the first frame within one audio frame
    assert abs(_audio_seconds(out) - (end_s - start_s)) <= 1024 / AUDIO_RATE


def test_vfr_pts_survive_writer_and_join(tmp_path):
    src = make_clip(tmp_path / "src.mp4", frames=30, vfr=True, seed=3)
    reader, frames = _read(src)
    segs = _write_segments(tmp_path, frames, [(0, 11), (11, 30)], reader)
    out = tmp_path / "out.mp4"
    join_segments(segs, out, audio_source=None, start_s=0.0, end_s=10.0)
    r2, got = _read(out)
    assert not r2.has_audio
    assert [f.pts * f.time_base for f in got] == [f.pts * f.time_base for f in frames]


def test_odd_size_is_padded_to_even(tmp_path, caplog):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (201, 333, 3), dtype=np.uint8)
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, width=333, height=201, time_base=Fraction(1, 30), rate=Fraction(30),
                     encoding=Encoding(speed="ultrafast")) as w:
        for i in range(3):
            w.write(img, None if i else 0)
    assert "padding" in caplog.text
    r, got = _read(out)
    assert (r.width, r.height) == (334, 202) and len(got) == 3
    assert [f.pts for f in got] == [0, 1, 2]
    # The padding column/row repeats the edge.
    assert _err(got[0].rgb[:, -1], got[0].rgb[:, -2]) < _err(got[0].rgb[:, 10], got[0].rgb[:, 11])


def test_writer_keyframe_interval_is_one_second(tmp_path):
    img = np.full((32, 48, 3), 128, np.uint8)
    out = tmp_path / "g.mp4"
    with VideoWriter(out, width=48, height=32, time_base=Fraction(1, 30), rate=Fraction(30),
                     encoding=Encoding(speed="ultrafast")) as w:
        for i in range(70):
            w.write(img, i)
    with av.open(str(out)) as c:
        keys = [i for i, p in enumerate(sorted((p for p in c.demux(video=0) if p.pts is not None),
                                               key=lambda p: p.pts)) if p.is_keyframe]
    assert keys == [0, 30, 60]


_HEVC_SCRIPT = """
import sys
from fractions import Fraction
from pathlib import Path
import numpy as np
from stages.media.encode import Encoding, VideoWriter, join_segments
d = Path(sys.argv[1])
with VideoWriter(d / "h.mp4", width=64, height=48, time_base=Fraction(1, 30), rate=Fraction(30),
                 encoding=Encoding(codec="hevc", speed="ultrafast")) as w:
    for i in range(4):
        w.write(np.full((48, 64, 3), 90, np.uint8), i)
join_segments([d / "h.mp4"], d / "j.mp4", audio_source=None, start_s=0, end_s=1)
"""


@pytest.mark.skipif(not encoder_available("hevc"), reason="no libx265 in this PyAV build")
def test_hevc_is_tagged_hvc1_also_after_join(tmp_path):
    # libx265 in the PyAV 18 wheel corrupts the heap when it runs in a process that already ran
    # libx264 (abort or "corrupted size vs. prev_size"), so the HEVC encode runs in a fresh process.
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _HEVC_SCRIPT, str(tmp_path)], cwd=repo, check=True, timeout=60)
    for p in (tmp_path / "h.mp4", tmp_path / "j.mp4"):
        with av.open(str(p)) as c:
            assert c.streams.video[0].codec_context.codec_tag == "hvc1"
            assert c.streams.video[0].codec_context.name == "hevc"
        assert len(_read(p)[1]) == 4


@pytest.mark.parametrize("faststart", [True, False])
def test_faststart_puts_moov_before_mdat(tmp_path, faststart):
    src = make_clip(tmp_path / "src.mp4", frames=6)
    reader, frames = _read(src)
    segs = _write_segments(tmp_path, frames, [(0, 6)], reader, faststart=faststart)
    out = tmp_path / "out.mp4"
    join_segments(segs, out, audio_source=src, start_s=0, end_s=0.2, faststart=faststart)
    for p in (segs[0], out):
        boxes = _top_level_boxes(p)
        assert (boxes.index("moov") < boxes.index("mdat")) == faststart


def test_pcm_audio_is_reencoded_to_aac(tmp_path):
    # MKV with PCM audio: MP4 players can't take pcm_s16le, so join_segments must re-encode.
    src = tmp_path / "src.mkv"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=AUDIO_RATE)
        a.layout = "mono"
        for i in range(30):
            img = np.full((32, 48, 3), i * 8, np.uint8)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(vs.encode(None))
        pcm = (np.sin(np.arange(AUDIO_RATE) / 10) * 8000).astype(np.int16)[None]
        for s in range(0, AUDIO_RATE, 960):
            fr = av.AudioFrame.from_ndarray(pcm[:, s:s + 960], format="s16", layout="mono")
            fr.sample_rate, fr.pts = AUDIO_RATE, s
            c.mux(a.encode(fr))
        c.mux(a.encode(None))
    reader, frames = _read(src)
    seg = tmp_path / "seg.mp4"
    with VideoWriter(seg, width=48, height=32, time_base=Fraction(1, 30), rate=Fraction(30),
                     encoding=Encoding(speed="ultrafast")) as w:
        for f in frames[10:25]:
            w.write(f.rgb, round(f.pts * reader.time_base * 30))
    out = tmp_path / "out.mp4"
    join_segments([seg], out, audio_source=src, start_s=10 / 30, end_s=25 / 30)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert abs(_audio_seconds(out) - 0.5) <= 1024 / AUDIO_RATE
    assert len(_read(out)[1]) == 15


def test_encoder_available():
    assert encoder_available("h264")
    assert not encoder_available("no-such-codec")


def _dream_like(h: int = 96, w: int = 160, n: int = 48, seed: int = 1):
    """(sources, dreams): a textured pan, and on it high-frequency detail that moves with it, half fixed and
    half boiling from frame to frame (an AR(1) process), as a carried dream re-dreamed each frame does."""
    rng = np.random.default_rng(seed)
    tex = blurred_texture(h, w, 0, sigma=4.0)
    fixed0 = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    boil = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    sources, dreams = [], []
    for i in range(n):
        s, fixed = scene_frame(tex, i, (1.5, 0.5)), scene_frame(fixed0, i, (1.5, 0.5))
        boil = 0.9 * scene_frame(boil, 1, (1.5, 0.5)) + 0.44 * rng.normal(0, 1, (h, w, 3)).astype(np.float32)
        detail = 40 * cv2.GaussianBlur(boil, (0, 0), 0.8) + 30 * cv2.GaussianBlur(fixed, (0, 0), 0.8)
        sources.append(s)
        dreams.append(np.clip(s + detail, 0, 255).astype(np.uint8))
    return sources, dreams


def _segments_joined(frames: list[np.ndarray], enc: Encoding, out: Path, gop: int) -> list[np.ndarray]:
    """Encoded as a render does: one file per GOP-long segment, joined by stream copy; decoded back."""
    segs, (h, w) = [], frames[0].shape[:2]
    for k in range(0, len(frames), gop):
        segs.append(out.with_name(f"{out.stem}_{k}.mp4"))
        with VideoWriter(segs[-1], width=w, height=h, time_base=Fraction(1, 30), rate=Fraction(30), encoding=enc,
                         faststart=False, frames=gop) as wr:
            for i in range(k, min(k + gop, len(frames))):
                wr.write(frames[i], i)
    join_segments(segs, out, audio_source=None, start_s=0.0, end_s=10.0)
    with av.open(str(out)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_key_frame_rate_control_calms_the_pulse(tmp_path):
    """Dream-like texture in 24-frame GOPs: a flat CRF 18 encode jumps at each key frame (P-frames smooth the
    boiling detail, the key frame codes it afresh); the render's rate control (a ramp before each key frame,
    the key frame boosted, at CRF + 4) lowers the worst pair's warp error against the median, in a file
    hardly larger."""
    from pipeline.config import load_config
    from pipeline.render.presets import encode_plan

    gop = 24
    sources, dreams = _dream_like()
    rc = replace(encode_plan(load_config("default", ["encode.gop=0.8"]), Fraction(30), "mono").encoding,
                 speed="medium")
    assert rc.gop == gop and rc.keyframe_ramp and rc.keyframe_boost > 1 and rc.crf == 24
    results = {}
    for name, enc in (("flat", Encoding(crf=18, gop=gop, profile="high")), ("rate control", rc)):
        out = tmp_path / f"{name.replace(' ', '_')}.mp4"
        per = warp_error_series(sources, _segments_joined(dreams, enc, out, gop))["per_frame"]["warp_error"]
        worst = int(np.argmax(per))
        results[name] = (max(per) / float(np.median(per)), worst, out.stat().st_size)
    (flat, flat_at, flat_size), (calm, _, calm_size) = results["flat"], results["rate control"]
    assert flat_at == gop - 1  # the pair that ends on the key frame
    assert calm < 0.93 * flat, results
    assert calm_size < 1.15 * flat_size, results
