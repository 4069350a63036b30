"""Scale-out on a real local Ray cluster: chunk planning, a render as chunks, a killed worker, a killed driver,
bad input and Ray missing."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.scale.chunks import crossfade, plan_chunks
from tests.conftest import REPO, cli_env, run_inprocess
from tests.synth import make_clip

COMMON = ["dream.octaves=1", "dream.iterations=2", "temporal.iterations=1", "encode.gop=0.334",
          "checkpoint.segment_frames=10"]  # 10-frame GOPs and segments at 30 fps
RAY = ["scale.backend=ray", "scale.workers=2", "scale.chunk_seconds=0.7", "scale.warmup_frames=10"]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- planning


@pytest.mark.parametrize("frames, cuts", [(200, []), (600, [170, 400]), (95, [3]), (31, []), (300, [30, 60, 250])])
def test_chunks_cover_every_frame_once_on_segment_boundaries(frames, cuts):
    chunks = plan_chunks(frames, cuts, segment=10, target=60, warmup=15)
    covered = np.zeros(frames, int)
    for c in chunks:
        covered[c.start:c.end] += 1
        assert c.start % 10 == 0 and (c.end % 10 == 0 or c.end == frames)
        assert c.warm_start <= c.start and c.head_overlap % 10 == 0 and c.tail_overlap % 10 == 0
    assert (covered == 1).all()
    for a, b in zip(chunks, chunks[1:]):
        assert a.tail_overlap == b.head_overlap  # both sides of a boundary render the same overlap
        if b.head_overlap == 0 and b.start > 0:  # a cut boundary: the later chunk starts at the cut
            assert b.warm_start in cuts and b.warm_start in a.resets and b.start - b.warm_start < 10
        else:
            assert b.warm_start == b.start - 20  # warm-up 15 rounded up to whole segments


def test_boundaries_prefer_scene_cuts():
    chunks = plan_chunks(600, [140, 455], segment=10, target=150, warmup=30)
    assert [c.start for c in chunks] == [0, 140, 290, 460]  # cuts within half a chunk of the target win


@pytest.mark.parametrize("frames, target, workers, want", [(200, 300, 2, 100), (200, 60, 2, 50), (1000, 300, 4, 250),
                                                           (5, 300, 8, 1), (9000, 300, 64, 141)])
def test_chunks_come_in_whole_rounds_of_the_workers(frames, target, workers, want):
    from pipeline.scale.ray import balanced_target

    got = balanced_target(frames, target, workers)
    assert got == want
    assert math.ceil(frames / got) % workers == 0 or frames < workers


def test_crossfade_ramps_from_the_earlier_chunk_to_the_later():
    tail, head = np.full((2, 2, 3), 10, np.int16), np.full((2, 2, 3), 30, np.int16)
    ramp = [float(crossfade(tail, head, i, 4)[0, 0, 0]) for i in range(4)]
    assert ramp == [12.5, 17.5, 22.5, 27.5]


# ------------------------------------------------------------------------------------------ renders


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", width=64, height=48, frames=48, motion=(1.5, 0.5))


@pytest.fixture(scope="module")
def undisturbed(cluster, clip, tmp_path_factory) -> Path:
    from pipeline.config import load_config
    from pipeline.render.runner import run_video

    dst = tmp_path_factory.mktemp("ray") / "ray.mp4"
    run_video(clip, dst, load_config("default", COMMON + RAY))
    return dst


@pytest.mark.slow
def test_ray_render_is_whole_and_as_coherent_as_one_process(undisturbed, clip, tmp_path):
    import av

    from pipeline.config import load_config
    from pipeline.render.runner import run_video
    from stages.measure.metrics import warp_error_series
    from stages.media.decode import VideoReader

    one = tmp_path / "one.mp4"
    run_video(clip, one, load_config("default", COMMON))
    result = {}
    for name, path in (("one", one), ("ray", undisturbed)):
        with VideoReader(clip) as a, VideoReader(path) as b:
            result[name] = warp_error_series((f.rgb for f in a), (f.rgb for f in b))
        with av.open(str(path)) as c:
            assert c.streams.audio and sum(1 for _ in c.decode(video=0)) == 48
    # Paired with the one-process render of the same frames: chunks and cross-fades cost no coherence.
    assert result["ray"]["warp_error"] <= 1.2 * result["one"]["warp_error"], result
    assert result["ray"]["dream_strength"] >= 0.8 * result["one"]["dream_strength"]


def _chunk_workers() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"ChunkWorker" in (d / "cmdline").read_bytes():
                pids.append(int(d.name))
        except OSError:
            pass
    return pids


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _chunk_dirs() -> set[Path]:
    """The workers' per-chunk temp dirs (pipeline.scale.ray.ChunkSink)."""
    return set(Path(tempfile.gettempdir()).glob("deepdream-chunk-*"))


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_the_output_is_byte_identical(undisturbed, clip, tmp_path):
    from pipeline.config import load_config
    from pipeline.render.runner import run_video

    dst = tmp_path / "out.mp4"
    killed, stale = [], _chunk_dirs()

    def kill_one_mid_chunk() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            # A chunk is under way once its worker has made its temp dir; kill a worker that is computing.
            if _chunk_dirs() - stale:
                before = {p: _cpu_ticks(p) for p in _chunk_workers()}
                time.sleep(0.1)
                busy = [p for p, t in before.items() if _cpu_ticks(p) - t >= 3]  # >= 30 ms of CPU in 0.1 s
                if busy:
                    os.kill(busy[0], signal.SIGKILL)
                    killed.append(busy[0])
            time.sleep(0.05)

    t = threading.Thread(target=kill_one_mid_chunk)
    t.start()
    try:
        run_video(clip, dst, load_config("default", COMMON + RAY))
    finally:
        killed.append(None) if not killed else None  # stops the watcher if the render ended first
        t.join()
    assert killed[0] is not None, "no worker was busy long enough to be killed"
    assert sha(dst) == sha(undisturbed)


# Ray's per-node agents notice a dead raylet by polling, and exit about a minute later (measured 60-80 s):
# idle, they hold no CPU, GPU or file of the render. Everything that works (GCS, raylet, workers) must go.
IDLE_AGENTS = (b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")


def _session_processes(sid: int) -> list[int]:
    """Live working processes of session `sid` (the killed driver started one: Ray's services are its
    children)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit():
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid and fields[0] != "Z" \
                        and not (d / "cmdline").read_bytes().startswith(IDLE_AGENTS):
                    pids.append(int(d.name))
        except (OSError, ValueError, IndexError):
            pass
    return pids


@pytest.mark.slow
def test_a_killed_driver_resumes_from_its_committed_chunks(undisturbed, clip, tmp_path, capfd):
    """kill -9 of the driver (its own local Ray) once a chunk is committed: Ray's processes go with it, and
    the same command resumes from the committed chunks to the undisturbed render's bytes."""
    dst = tmp_path / "out.mp4"
    argv = ["video", clip, dst, *[x for kv in COMMON + RAY for x in ("--set", kv)]]
    driver = subprocess.Popen([sys.executable, "-m", "pipeline", *map(str, argv)], cwd=REPO, env=cli_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    overlaps = dst.parent / (dst.name + ".deepdream-run") / "overlaps"
    deadline = time.monotonic() + 240
    while driver.poll() is None and time.monotonic() < deadline:
        # an overlap file is published (renamed from its .part temp) once its chunk's result is committed
        if overlaps.is_dir() and any(overlaps.glob("*.npz")):
            break
        time.sleep(0.05)
    assert driver.poll() is None, "the driver finished before a chunk was committed"
    assert len(_session_processes(driver.pid)) > 2, "Ray's services should be the driver's session"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 30
    while _session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _session_processes(driver.pid), "Ray processes outlived their killed driver"
    assert not dst.exists()
    rc, _, err = run_inprocess(argv, capfd)
    assert rc == 0, err
    assert "chunks already committed" in err
    assert sha(dst) == sha(undisturbed)


@pytest.mark.slow
def test_bad_input_with_ray_is_one_line_and_writes_nothing(tmp_path, capfd):
    src = tmp_path / "notes.mp4"
    src.write_text("not a video\n" * 10)
    before = set(tmp_path.iterdir())
    rc, out, err = run_inprocess(["video", src, tmp_path / "o.mp4", "--set", "scale.backend=ray"], capfd)
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert set(tmp_path.iterdir()) == before


@pytest.mark.slow
@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "no-port"])
def test_an_unreachable_cluster_is_one_line_at_once_and_writes_nothing(tmp_path, capfd, address):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = make_clip(tmp_path / "in.mp4", width=32, height=32, frames=2, audio=False)
    before = set(tmp_path.iterdir())
    t = time.monotonic()
    rc, _, err = run_inprocess(["video", src, tmp_path / "o.mp4", "--set", "scale.backend=ray",
                                "--set", f"scale.address={address.format(port=port)}"], capfd)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: scale.address: "), err
    assert time.monotonic() - t < 60
    assert set(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_an_address_where_something_else_listens_is_refused_at_once(tmp_path, capfd):
    """A web server at scale.address answers TCP, so a connect alone passed, and Ray then retried it without end
    (stopped after 10 min). It does not speak gRPC, as Ray's head does: one line, at once."""
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # the server's own request log would land in the captured stderr
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    src = make_clip(tmp_path / "in.mp4", width=32, height=32, frames=2, audio=False)
    before = set(tmp_path.iterdir())
    t = time.monotonic()
    try:
        rc, _, err = run_inprocess(["video", src, tmp_path / "o.mp4", "--set", "scale.backend=ray",
                                    "--set", f"scale.address=127.0.0.1:{server.server_address[1]}"], capfd)
    finally:
        server.shutdown()
    assert rc == 2 and err.strip() == f"error: scale.address: something answers at '127.0.0.1:" \
                                      f"{server.server_address[1]}', but not a Ray cluster (no gRPC)", err
    assert time.monotonic() - t < 30 and set(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_ray_missing_names_the_extra(tmp_path):
    src = make_clip(tmp_path / "in.mp4", width=32, height=32, frames=2, audio=False)
    code = ("import sys; sys.modules['ray'] = None; from pipeline.cli import main; "
            f"sys.exit(main(['video', {str(src)!r}, {str(tmp_path / 'o.mp4')!r}, '--set', 'scale.backend=ray']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "deepdream-video[ray]" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.mp4.deepdream-run").exists()


@pytest.mark.slow
def test_a_cluster_with_token_authentication_says_how_to_join(tmp_path):
    """`ray start --head` with token authentication (Ray's default once a token exists): a driver given only the
    address is refused, and Ray's core printed a warning a second until then. One line that says what to set;
    with it set, the render joins and finishes."""
    import secrets
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(32)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    head = subprocess.Popen([Path(sys.executable).parent / "ray", "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={ray_dir}"],
                            env=cli_env(**auth), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        src = make_clip(tmp_path / "in.mp4", width=32, height=32, frames=4, audio=False)
        args = [sys.executable, "-m", "pipeline", "video", src, tmp_path / "o.mp4", "--set", "scale.backend=ray",
                "--set", f"scale.address=127.0.0.1:{port}", *[x for kv in COMMON for x in ("--set", kv)]]
        deadline = time.monotonic() + 60
        while True:  # until the head's gRPC answers (the render's own check says so)
            bare = {k: v for k, v in cli_env().items() if k not in auth}
            r = subprocess.run(args, cwd=REPO, env=bare, capture_output=True, text=True, timeout=120)
            if "no Ray cluster answers" not in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "uses token authentication; run with RAY_AUTH_MODE=token" in r.stderr, r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
        r = subprocess.run(args, cwd=REPO, env=cli_env(**auth), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and (tmp_path / "o.mp4").is_file(), r.stderr
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # what the head left: its raylet, GCS and workers share its session
        head.wait()
        shutil.rmtree(ray_dir, ignore_errors=True)
