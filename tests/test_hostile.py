"""Hostile inputs and crashes: a clear error (exit 2, one line, nothing written) or a correct render, and
checkpoints that cannot rot silently. Every file is generated here; crashes are simulated by raising
from the render's own hooks at the point a kill would land, which leaves the same files on disk."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import pipeline.render.passes as passes
from pipeline.config import load_config
from pipeline.render.checkpoint import MILESTONES, RunDir, run_dir_for
from pipeline.render.records import TemporalState
from pipeline.render.runner import run_video
from tests.conftest import CHELSEA, run_inprocess
from tests.synth import make_clip

FAST = ["dream.octaves=1", "dream.iterations=2", "temporal.iterations=1", "checkpoint.segment_frames=4",
        "encode.gop=0.134"]  # 4-frame GOPs at 30 fps, so 4-frame segments
FAST_CLI = [x for kv in FAST for x in ("--set", kv)]


class Crash(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way out may swallow it."""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) >= 1 and lines[-1].startswith("error: ") and "Traceback" not in err, err
    assert sum(line.startswith("error:") for line in lines) == 1, err
    return lines[-1]


def nothing_written(folder: Path, before: set[Path]) -> None:
    assert set(folder.iterdir()) == before, sorted(set(folder.iterdir()) - before)


# ------------------------------------------------------------------------------------------ stills


def test_image_onto_itself_is_refused_and_the_input_kept(tmp_path, capfd):
    src = tmp_path / "a.png"
    src.write_bytes(CHELSEA.read_bytes())
    link = tmp_path / "same.png"
    os.link(src, link)
    for dst in (src, link, tmp_path / "." / "a.png"):
        rc, _, err = run_inprocess(["image", src, dst, "--set", "dream.iterations=1"], capfd)
        assert rc == 2 and "is the input file" in error_line(err)
    assert src.read_bytes() == CHELSEA.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "same.png"]


def _png_header_only(path: Path, w: int, h: int) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_a_user_error(tmp_path, capfd):
    src = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    before = set(tmp_path.iterdir())
    rc, _, err = run_inprocess(["image", src, tmp_path / "o.png"], capfd)
    assert rc == 2 and "too large" in error_line(err)
    nothing_written(tmp_path, before)


@pytest.mark.slow
def test_still_and_sidecar_have_normal_permissions(tmp_path, capfd):
    dst = tmp_path / "o.png"
    rc, _, err = run_inprocess(["image", CHELSEA, dst, "--set", "input.max_side=48", "--set", "dream.octaves=1",
                                "--set", "dream.iterations=1"], capfd)
    assert rc == 0, err
    for p in (dst, tmp_path / "o.png.yaml"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask(), p


# ------------------------------------------------------------------------------------ bad configs


@pytest.mark.parametrize("override, key", [
    ("dream.step_size=.nan", "dream.step_size"), ("temporal.blend=.nan", "temporal.blend"),
    ("video.start=.nan", "video.start"), ("dream.layers={block9: .nan}", "dream.layers.block9"),
    ("dream.seed=18446744073709551615", "dream.seed"), ("dream.octave_scale=.inf", "dream.octave_scale"),
])
def test_non_finite_and_huge_values_are_refused_before_anything_is_written(tmp_path, capfd, override, key):
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=2, audio=False)
    before = set(tmp_path.iterdir())
    rc, _, err = run_inprocess(["video", src, tmp_path / "o.mp4", "--set", override], capfd)
    assert rc == 2 and error_line(err).startswith(f"error: {key}: ")
    nothing_written(tmp_path, before)


@pytest.mark.slow
def test_errors_found_at_model_load_leave_no_run_dir(tmp_path, capfd):
    """Weights that are no state dict, a guide that is no image: refused before the run dir exists, so the
    corrected command is not then refused as a changed config."""
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=3, audio=False)
    (tmp_path / "w.pth").write_text("not a state dict")
    (tmp_path / "guide.png").write_text("not an image")
    before = set(tmp_path.iterdir())
    dst = tmp_path / "o.mp4"
    for override in (f"model.weights={tmp_path / 'w.pth'}", f"dream.guide={tmp_path / 'guide.png'}"):
        rc, _, err = run_inprocess(["video", src, dst, "--set", override], capfd)
        assert rc == 2 and override.split("=")[0] in error_line(err), err
        nothing_written(tmp_path, before)
    rc, _, err = run_inprocess(["video", src, dst, *FAST_CLI], capfd)
    assert rc == 0, err


@pytest.mark.slow
def test_a_file_where_the_run_dir_goes_is_a_user_error(tmp_path, capfd):
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=2, audio=False)
    dst = tmp_path / "o.mp4"
    run_dir_for(dst).write_text("in the way")
    rc, _, err = run_inprocess(["video", src, dst, *FAST_CLI], capfd)
    assert rc == 2 and "move or delete it" in error_line(err)
    assert not dst.exists()


@pytest.mark.slow
@pytest.mark.parametrize("w, h", [(64, 1), (1, 64), (1, 1)])
def test_one_pixel_frames_render(tmp_path, capfd, w, h):
    src = make_clip(tmp_path / "in.mp4", width=w, height=h, frames=3, pix_fmt="yuv444p", audio=False)
    rc, _, err = run_inprocess(["video", src, tmp_path / "o.mp4", *FAST_CLI], capfd)
    assert rc == 0, err
    with av.open(str(tmp_path / "o.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 3


# ----------------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", width=64, height=48, frames=22)


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("ref") / "ref.mp4"
    run_video(clip, dst, load_config("default", FAST))
    return dst


def crash_after(clip: Path, dst: Path, frames: int) -> dict:
    """Render until `frames` frames are dreamed, then crash; returns the manifest left behind."""
    def on_frame(index: int, _: float) -> None:
        if index + 1 >= frames:
            raise Crash

    with pytest.raises(Crash):
        run_video(clip, dst, load_config("default", FAST), on_frame=on_frame)
    assert not dst.exists()
    return json.loads((run_dir_for(dst) / "manifest.json").read_text())


def resume(clip: Path, dst: Path) -> None:
    run_video(clip, dst, load_config("default", FAST))
    assert not run_dir_for(dst).exists()
    assert [p.name for p in dst.parent.iterdir() if p.name.startswith(".")] == []


def damage(path: Path, seed: int = 0) -> None:
    data = bytearray(path.read_bytes())
    n = min(2048, len(data) // 2)
    at = len(data) // 3
    data[at:at + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["garbled_segment", "missing_segment", "truncated_segment", "truncated_state",
                                  "manifest_behind_state", "old_segment_without_states"])
def test_damaged_checkpoint_resumes_to_the_undisturbed_output(clip, reference, tmp_path, case):
    dst = tmp_path / "out.mp4"
    manifest = crash_after(clip, dst, 18)
    run = run_dir_for(dst)
    segs = sorted((run / "segments").iterdir())
    assert len(segs) == len(manifest["segments"]) == 4
    if case == "garbled_segment":
        damage(segs[1])
    elif case == "missing_segment":
        segs[2].unlink()
    elif case == "truncated_segment":
        segs[3].write_bytes(segs[3].read_bytes()[:100])
    elif case == "truncated_state":
        last = run / "states" / manifest["segments"][-1]["state"]["file"]
        last.write_bytes(last.read_bytes()[:50])
    elif case == "manifest_behind_state":  # killed after the state and segment were written, before the manifest
        manifest["segments"].pop()
        (run / "manifest.json").write_text(json.dumps(manifest))
    elif case == "old_segment_without_states":  # only a render from the very start can rebuild segment 1
        for p in (run / "states").iterdir():
            if p.name != manifest["segments"][-1]["state"]["file"]:
                p.unlink()
        damage(segs[1], seed=1)
    resume(clip, dst)
    assert sha(dst) == sha(reference)


@pytest.mark.slow
def test_kill_during_finalize_leaves_no_debris_and_resumes(clip, reference, tmp_path, monkeypatch):
    dst = tmp_path / "out.mp4"
    calls = []
    real = passes.publish

    def killed_before_the_rename(tmp, final):
        calls.append(tmp)
        raise Crash

    monkeypatch.setattr(passes, "publish", killed_before_the_rename)
    with pytest.raises(Crash):
        run_video(clip, dst, load_config("default", FAST))
    assert calls and calls[0].parent == run_dir_for(dst) and calls[0].exists()
    monkeypatch.setattr(passes, "publish", real)
    # An older version's temp file beside OUTPUT is cleared too.
    (tmp_path / f".{dst.name}.12345.part.mp4").write_bytes(b"debris")
    resume(clip, dst)
    assert sha(dst) == sha(reference)
    for p in (dst, tmp_path / "out.mp4.yaml"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask(), p


@pytest.mark.slow
def test_a_touched_input_still_resumes_and_a_changed_one_says_what_changed(clip, tmp_path, capfd):
    src = tmp_path / "in.mp4"
    src.write_bytes(clip.read_bytes())
    dst = tmp_path / "out.mp4"
    crash_after(src, dst, 6)
    os.utime(src, (1, 1))
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    changed = tmp_path / "changed.mp4"
    changed.write_bytes(bytes(data))
    os.replace(changed, src)
    rc, _, err = run_inprocess(["video", src, dst, *FAST_CLI], capfd)
    assert rc == 2 and "its content changed" in error_line(err) and "--restart" in error_line(err)
    assert err.strip().splitlines() == [error_line(err)]  # refused before the model loads: its line is not printed
    src.write_bytes(clip.read_bytes())  # the same bytes again, new mtime: resumes
    rc, _, err = run_inprocess(["video", src, dst, *FAST_CLI], capfd)
    assert rc == 0 and "resuming at frame 4" in err, err


@pytest.mark.slow
def test_state_thinning_keeps_recent_states_and_few_milestones(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 100)
    run = RunDir.open(tmp_path / "o.mp4", input_path=src, config={}, config_hash="h", stream={}, restart=False)
    try:
        state = TemporalState(0, np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.float32))
        for n in range(200):
            temp = run.segment_temp(n)
            temp.write_bytes(b"segment %d" % n)
            state.next_index = 4 * (n + 1)
            run.commit_segment(n, temp, first_index=4 * n, frames=4, first_pts=4 * n, end_time=0.0, state=state)
        kept = [i for i, r in enumerate(run.records) if r["state"]]
        files = sorted(p.name for p in (run.path / "states").iterdir())
        assert files == [f"{i:06d}.npz" for i in kept]
        assert kept[-2:] == [198, 199] and len(kept) <= MILESTONES + 2
        every = run.manifest["milestone_every"]
        assert all(i % every == 0 for i in kept[:-2]) and max(np.diff(kept)) <= every
    finally:
        run.close()


def _float_wav(path: Path, pcm: np.ndarray, rate: int = 48000) -> Path:
    """32-bit float WAV, which can hold what no 16-bit one can: NaN and ±inf samples (a broken export)."""
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_f32le", rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.slow
def test_a_soundtrack_with_nan_and_inf_samples_reacts_and_muxes(tmp_path, capfd):
    """NaN samples are silence, ±inf full scale: the envelope and the AAC encoder (which refused them: an internal
    error, the run dir left behind) take the file; a weights file keyed by numbers is one error line."""
    t = np.arange(48000) / 48000
    pcm = np.sin(2 * np.pi * 220 * t) * (t % 0.25 < 0.05)
    pcm[::97], pcm[5::211], pcm[7::307] = np.nan, np.inf, -np.inf
    wav = _float_wav(tmp_path / "broken.wav", pcm)
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=6, audio=False)
    rc, _, err = run_inprocess(["video", clip, tmp_path / "react.mp4", *FAST_CLI, "--set", "react.amount=1",
                                "--set", f"react.audio={wav}"], capfd)
    assert rc == 0, err
    sets = ["input.max_side=32", "dream.iterations=1", "animate.fps=10", "animate.seconds=0.3", f"animate.audio={wav}"]
    rc, _, err = run_inprocess(["animate", CHELSEA, tmp_path / "zoom.mp4", *[x for s in sets for x in ("--set", s)]],
                               capfd)
    assert rc == 0, err
    with av.open(str(tmp_path / "zoom.mp4")) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    import torch

    torch.save({1: torch.zeros(1)}, tmp_path / "numbers.pth")
    before = set(tmp_path.iterdir())
    rc, _, err = run_inprocess(["video", clip, tmp_path / "o.mp4", "--set", f"model.weights={tmp_path}/numbers.pth"],
                               capfd)
    assert rc == 2 and "does not hold a state dict" in error_line(err)
    nothing_written(tmp_path, before)


def _garbled_head(path: Path, gop: int) -> Path:
    """30 frames whose first 1500 bytes of picture data are noise: the first key frame and what leans on it are lost."""
    from tests.synth import scene_frame, scene_texture

    texture = scene_texture(96, 128, 0)
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 128, 96, "yuv420p"
        vs.options = {"preset": "ultrafast", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(30):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(scene_frame(texture, i, (2.0, 1.0)), format="rgb24")))
        out.mux(vs.encode())
    data = bytearray(path.read_bytes())
    at = data.find(b"mdat") + 20
    data[at:at + 1500] = np.random.default_rng(0).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def test_damage_is_told_once_and_a_file_that_never_decodes_gets_one_line(tmp_path, capfd):
    """A file none of whose frames decode: one error line, not a warning per damaged packet before it. A file whose
    first GOP alone is lost: decoded from the next key frame, the damage told once though probe opens it twice."""
    rc, out, err = run_inprocess(["probe", _garbled_head(tmp_path / "all.mp4", 30)], capfd)
    assert rc == 2 and err.strip().splitlines() == [error_line(err)] and "no video frame" in err
    rc, out, err = run_inprocess(["probe", _garbled_head(tmp_path / "head.mp4", 5)], capfd)
    assert rc == 0, err
    assert err.count("damaged stream") == 1 and err.count("undecodable") <= 1, err
