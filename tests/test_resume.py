"""Crash safety: a SIGKILLed render resumes and ends bit-identical; changed runs are refused; one writer.
(Damaged checkpoints, a changed input and a kill during finalize: tests/test_hostile.py.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.render.runner import run_video
from tests.conftest import cli_env, run_inprocess
from tests.synth import make_clip

pytestmark = pytest.mark.slow  # every test renders, most in a subprocess

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["--set", "dream.octaves=2", "--set", "dream.iterations=3", "--set", "temporal.iterations=2",
            "--set", "checkpoint.segment_frames=5", "--set", "encode.gop=0.167"]  # 5-frame GOPs at 30 fps


def cmd(src: Path, dst: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "video", str(src), str(dst), *SETTINGS, *extra]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def frames_done(dst: Path) -> int:
    try:
        return json.loads((dst.parent / (dst.name + ".deepdream-run") / "manifest.json").read_text())["frames_done"]
    except (OSError, ValueError, KeyError):
        return 0


def start_and_kill(args: list[str], dst: Path, after_frames: int) -> None:
    """Starts a real render and SIGKILLs it once `after_frames` frames are checkpointed."""
    proc = subprocess.Popen(args, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while frames_done(dst) < after_frames:
        assert proc.poll() is None, "render finished before it could be killed; make the clip longer"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", width=96, height=64, frames=40)


@pytest.fixture(scope="module")
def reference(clip: Path, tmp_path_factory) -> list[np.ndarray]:
    dst = tmp_path_factory.mktemp("ref") / "ref.mp4"
    r = run(cmd(clip, dst))
    assert r.returncode == 0, r.stderr
    return decoded(dst)


def test_killed_render_resumes_bit_identical(clip: Path, reference: list[np.ndarray], tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    start_and_kill(cmd(clip, dst), dst, after_frames=10)
    assert not dst.exists(), "OUTPUT must not exist before the render is complete"
    done = frames_done(dst)
    assert 10 <= done < 40
    r = run(cmd(clip, dst))
    assert r.returncode == 0, r.stderr
    assert f"resuming at frame {done}" in r.stderr
    frames = decoded(dst)
    assert len(frames) == len(reference) == 40
    for i, (a, b) in enumerate(zip(frames, reference)):
        assert np.array_equal(a, b), f"frame {i} differs after resume"


def test_changed_config_is_refused_and_restart_starts_over(clip: Path, tmp_path: Path, capfd) -> None:
    dst = tmp_path / "out.mp4"
    args = ["video", clip, dst, *SETTINGS]

    def crash(index: int, _: float) -> None:
        if index >= 6:
            raise KeyboardInterrupt  # stands for the kill: the checkpoint on disk is the same

    with pytest.raises(KeyboardInterrupt):
        run_video(clip, dst, load_config("default", SETTINGS[1::2]), on_frame=crash)
    rc, _, err = run_inprocess([*args, "--set", "dream.seed=7"], capfd)
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error:") and "dream.seed 0 -> 7" in lines[-1] and "--restart" in lines[-1]
    assert "Traceback" not in err and not dst.exists()
    rc, _, err = run_inprocess([*args, "--set", "dream.seed=7", "--set", "video.max_frames=6", "--restart"], capfd)
    assert rc == 0, err
    assert "resuming" not in err
    assert len(decoded(dst)) == 6


def test_second_render_into_the_same_output_is_refused(clip: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    first = subprocess.Popen(cmd(clip, dst), cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while frames_done(dst) < 5:
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # holds its lock, as a render busy on a long frame would
        r = run(cmd(clip, dst))
        assert r.returncode == 2
        assert "another render" in r.stderr.strip().splitlines()[-1]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
