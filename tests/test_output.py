"""What the viewer and the platform see: renders of every length finish (both codecs, resumes too), key
frames every GOP across segment boundaries, the file starts at 0 with no edit list, metrics pair a
`video.start` render with the right source frames."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import av
import pytest

from pipeline.cli import main
from pipeline.review.measure import run_metrics
from stages.media.encode import encoder_available
from tests.conftest import REPO, cli_env
from tests.synth import make_clip
from tests.test_video import moov_bytes

pytestmark = pytest.mark.slow  # every test renders
FAST = ["--set", "dream.octaves=1", "--set", "dream.iterations=1", "--set", "temporal.iterations=1"]

_RENDER_AND_RESUME = """
import json, sys
from pathlib import Path
import av
from pipeline.config import load_config
from pipeline.render.runner import run_video
src, out_dir, codec = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
class Kill(BaseException): pass
def kill(index, _):
    if index == 31:  # after the first 30-frame segment is committed
        raise Kill
result = {}
for frames in (31, 62):  # 31: a 1-frame last segment; 62: a resume after a kill, then a 2-frame one
    cfg = load_config("default", ["dream.octaves=1", "dream.iterations=1", "temporal.iterations=1",
                                  f"video.max_frames={frames}", f"encode.codec={codec}", "encode.speed=ultrafast"])
    out = out_dir / f"{frames}.mp4"
    try:
        run_video(src, out, cfg, on_frame=kill if frames > 32 else None)
    except Kill:
        run_video(src, out, cfg)  # the resume finishes the short last segment
    with av.open(str(out)) as c:
        result[frames] = [round(float(f.pts * f.time_base) * 30, 6) for f in c.decode(video=0)]
print(json.dumps(result))
"""


@pytest.mark.parametrize("codec", ["h264", "hevc"])
def test_renders_whose_last_segment_has_one_or_two_frames_finish(tmp_path, codec):
    """libx265 ends a 1- or 2-frame stream with an uninitialised dts; such segments and their resumes
    used to fail for good at the end of a render. (A process per codec: see test_encode.)"""
    if not encoder_available(codec):
        pytest.skip(f"no {codec} encoder")
    src = make_clip(tmp_path / "in.mp4", width=64, height=64, frames=64, audio=False)
    r = subprocess.run([sys.executable, "-c", _RENDER_AND_RESUME, str(src), str(tmp_path), codec],
                       cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == {"31": list(range(31)), "62": list(range(62))}


def test_key_frames_every_gop_whatever_the_segment_length(tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=48, height=32, frames=60, rate=Fraction(25), audio=False)
    dst = tmp_path / "out.mp4"
    assert main(["video", str(src), str(dst), *FAST, "--set", "checkpoint.segment_frames=30"]) == 0
    with av.open(str(dst)) as c:
        packets = sorted((p for p in c.demux(video=0) if p.pts is not None), key=lambda p: p.pts)
        keys = [float(p.pts * p.time_base) for p in packets if p.is_keyframe]
    assert keys == [0.0, 2.0]  # 50-frame GOPs (2 s, the default): 30-frame segments became 50


def test_a_late_start_gives_a_file_that_starts_at_zero_and_metrics_that_pair_it(tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=40, rate=Fraction(30000, 1001))
    dst = tmp_path / "out.mp4"
    assert main(["video", str(src), str(dst), *FAST, "--set", "video.start=0.5", "--set", "video.max_frames=12"]) == 0
    with av.open(str(dst)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.start_time == 0
        first_audio = min(p.pts * p.time_base for p in c.demux(a) if p.pts is not None)
        duration = c.duration / 1e6
    assert 0 <= first_audio < Fraction(1024, 48000)
    assert abs(duration - 12 * 1001 / 30000) < 0.03  # no 0.5 s of empty lead-in
    assert b"elst" not in moov_bytes(dst)
    m = run_metrics(src, dst, plot=None, projection="flat")
    assert m["frames"] == 12 and m["skipped_source_frames"] == 15
    # Paired with the right source frames, the dream is all that differs; paired 15 frames off it is not.
    assert m["warp_error"] < 20 * m["source_warp_error"] + 500


def test_youtube360_uses_two_b_frames_and_half_second_gops(tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=64, height=32, frames=30, rate=Fraction(30), audio=False)
    dst = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "pipeline", "video", str(src), str(dst), *FAST,
                        "--set", "encode.preset=youtube360", "--set", "projection=equirect"],
                       cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with av.open(str(dst)) as c:
        packets = list(c.demux(video=0))
        keys = sorted(float(p.pts * p.time_base) for p in packets if p.is_keyframe and p.pts is not None)
        cc = c.streams.video[0].codec_context
        assert cc.profile == "High" and cc.max_b_frames in (0, 2)
    assert keys == [0.0, 0.5]
    # At most 2 consecutive B-frames: no packet is shown more than 2 places before its decode position.
    order = [p.pts for p in packets if p.pts is not None]
    shown = sorted(order)
    assert max(shown.index(p) - i for i, p in enumerate(order)) <= 2
