"""`scale.backend: ray`: one render as chunks on a Ray cluster, joined as if one process had rendered it.

    survey (driver) → chunks → Ray actors, each with the model loaded, render chunks → segments and overlap
    residuals back to the driver → the driver commits them, cross-fades each overlap into its segments,
    and finalizes (join, audio, 360° tags) exactly as a one-process render.

Chunks are deterministic (every frame seeded by its index), so a chunk Ray retries after a worker died
gives the same bytes; the driver owns the run directory, so a killed driver resumes from the chunks it
committed. Chunk planning: `pipeline/scale/chunks.py`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config, from_dict, render_hash, to_dict
from pipeline.errors import InputError
from pipeline.render.checkpoint import Pass, RunDir
from pipeline.render.engine import DreamEngine, check_config
from pipeline.render.passes import RunStats, finalize, keep_params, render_pass
from pipeline.render.plan import VideoPlan, check_video_output, plan_video
from pipeline.render.records import TemporalState
from pipeline.scale.chunks import Chunk, Survey, crossfade, plan_chunks, survey
from stages.common import write_atomic
from stages.dream.ascent import quantize
from stages.media.decode import VideoReader, short_error
from stages.media.encode import VideoWriter

log = logging.getLogger(__name__)
POLL_S = 0.5


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise InputError("scale.backend=ray needs Ray: pip install 'deepdream-video[ray]' (or pip install ray)") \
            from e
    return ray


class ChunkSink:
    """Where a worker's render pass puts its segments: a temp dir, read back into bytes for the driver."""

    PREFIX = "deepdream-chunk-"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-"))
        self.records: list = []
        self.segments: list[tuple[int, bytes, dict]] = []

    def segment_temp(self, number: int) -> Path:
        return self.dir / f"{number:06d}.mp4"

    def committed(self, number: int) -> bool:
        return False

    def commit_segment(self, number: int, temp: Path, *, state, **meta) -> None:
        self.segments.append((number, temp.read_bytes(), meta))
        temp.unlink()

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    def sweep(cls) -> None:
        """Remove the temp dirs of workers on this machine that were killed mid-chunk (their pid is gone)."""
        for d in Path(tempfile.gettempdir()).glob(f"{cls.PREFIX}*-*"):
            pid = d.name[len(cls.PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class ChunkWorker:
    """A Ray actor's body: the model stays loaded, chunks come one at a time."""

    def __init__(self, src: str, cfg: dict, plan: VideoPlan, threads: int) -> None:
        import cv2
        import torch

        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        ChunkSink.sweep()  # a restarted worker clears what the killed one left
        self.src, self.cfg, self.plan = Path(src), from_dict(cfg), plan
        self.engine = DreamEngine(self.cfg)
        self.progress: tuple[int, int] = (-1, 0)  # (chunk, frames done): read by `done` from another thread

    def done(self) -> tuple[int, int]:
        """The chunk in hand and its frames done; answered while `render` runs (a threaded actor)."""
        return self.progress

    def render(self, chunk: Chunk, seek_time: float) -> dict:
        """Render `chunk`, whose first frame (its warm start) lies `seek_time` seconds into the stream."""
        p = Pass(TemporalState(chunk.warm_start), chunk.end, encode_from=chunk.start,
                 encode_until=chunk.encode_until, capture=chunk.capture, resets=frozenset(chunk.resets),
                 seek=(seek_time, chunk.warm_start))
        sink, stats = ChunkSink(), RunStats()
        self.progress = (chunk.number, 0)

        def on_frame(index: int, _: float) -> None:
            self.progress = (chunk.number, index + 1 - chunk.warm_start)

        try:
            captured = render_pass(self.src, self.cfg, self.plan, sink, self.engine, p, stats, on_frame)
            return {"segments": sink.segments, "captured": captured, "frames": stats.frames,
                    "dream_s": stats.dream_s}
        finally:
            sink.close()


class Progress:
    """Frames done across the workers for the one bar: finished chunks, plus what each worker reports of
    the chunk in hand (a retried chunk counts from 0 again; the bar keeps its maximum)."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def set(self, chunk: int, frames: int) -> None:
        if chunk >= 0:
            self.done[chunk] = max(frames, self.done.get(chunk, 0))

    def total(self) -> int:
        return sum(self.done.values())


def run_scaled(src: Path, dst: Path, cfg: Config, *, restart: bool = False) -> RunStats:
    t_start = time.perf_counter()
    check_video_output(src, dst, cfg)
    check_config(cfg)
    ray = import_ray()
    with contextlib.ExitStack() as cluster:
        if cfg.scale.address:  # joined before the model loads: a wrong address or a refused join is a config error
            _check_reachable(cfg.scale.address)
            shape = cluster.enter_context(_cluster(ray, cfg))
        plan = plan_video(src, cfg)
        opening = dict(input_path=src, config=to_dict(cfg), config_hash=render_hash(cfg),
                       stream=plan.stream_info(), restart=restart)
        RunDir.check(dst, **opening)
        DreamEngine(cfg)  # weights and guide fail here, before anything is written (workers load their own)
        stats = RunStats()
        surveyed = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="survey").submit(
            survey, src, start=cfg.video.start, max_frames=cfg.video.max_frames, scene_cut=cfg.temporal.scene_cut)
        if not cfg.scale.address:  # a local cluster starts while the input is surveyed
            shape = cluster.enter_context(_cluster(ray, cfg))
        n_workers, gpw = shape
        # The workers load their model while the driver surveys the input.
        # max_concurrency 2: `done` is answered while `render` runs. No separate progress actor: an idle
        # Ray actor process costs ~20 % of a core in polling, a tenth of a 2-core machine.
        actor = ray.remote(ChunkWorker).options(num_cpus=cfg.scale.cpus_per_worker, num_gpus=gpw,
                                                max_restarts=-1, max_task_retries=-1, max_concurrency=2)
        workers = [actor.remote(str(src.resolve()), to_dict(cfg), plan, cfg.scale.cpus_per_worker)
                   for _ in range(n_workers)]
        sv = surveyed.result()  # decoded while Ray started
        chunks = plan_chunks(len(sv.times), sv.cuts, segment=plan.segment_frames, warmup=cfg.scale.warmup_frames,
                             target=balanced_target(len(sv.times), cfg.scale.chunk_seconds * float(plan.rate),
                                                    n_workers))
        log.info("%d frames in %d chunks (%d scene cuts); overlaps of %d frames; %d Ray workers (%d CPU, %g GPU "
                 "each)", len(sv.times), len(chunks), len(sv.cuts), max((c.head_overlap for c in chunks), default=0),
                 n_workers, cfg.scale.cpus_per_worker, gpw)
        run = RunDir.open(dst, **opening)
        with run.held():
            plan = keep_params(run, plan)
            (run.path / "overlaps").mkdir(exist_ok=True)
            todo = [c for c in chunks if not _chunk_done(run, c)]
            if len(todo) < len(chunks):
                log.info("resuming: %d of %d chunks already committed", len(chunks) - len(todo), len(chunks))
            if todo:
                _render_chunks(ray, workers, src, plan, sv, chunks, todo, run, stats)
            for c in chunks:
                _compose(src, plan, sv, chunks, c, run)
            t0 = time.perf_counter()
            finalize(src, dst, cfg, plan, run)
            stats.finalize_s = time.perf_counter() - t0
    stats.wall_s = time.perf_counter() - t_start
    log.info("wrote %s: %d frames dreamed on Ray in %.1f s (%.2f fps; the frame step %.3f s per frame in the workers)",
             dst, stats.frames, stats.wall_s, len(sv.times) / max(stats.wall_s, 1e-9),
             stats.dream_s / max(stats.frames, 1))
    return stats


def balanced_target(frames: int, target: float, workers: int) -> int:
    """The chunk length: about `target` frames, but as many chunks as a whole number of rounds of the
    workers, so that none idles through the last round (200 frames, 2 workers, 10 s chunks: 2 × 100)."""
    rounds = math.ceil(math.ceil(frames / max(1.0, target)) / workers)
    return max(1, math.ceil(frames / (rounds * workers)))


class _core_stderr:
    """Ray's C++ core writes to descriptor 2 itself (a refused join: a warning a second until it gives up), held in
    an unnamed temp file while joining: replayed after a join, dropped after a failure, which one error line tells."""
    failed = False

    def __enter__(self):
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def text(self) -> str:
        self._file.seek(0)
        return self._file.read().decode(errors="replace")

    def __exit__(self, *exc):
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if not self.failed and exc[0] is None:
            os.write(2, self.text().encode())
        self._file.close()


@contextlib.contextmanager
def _cluster(ray, cfg: Config):
    """Ray for this render: the cluster at `scale.address`, or a local one started here and stopped after.
    Yields (workers, GPUs per worker)."""
    started = not ray.is_initialized()
    if started:
        address = cfg.scale.address
        kw = {"address": address} if address else \
            {"num_cpus": (cfg.scale.workers or 1) * cfg.scale.cpus_per_worker, "include_dashboard": False}
        with _core_stderr() as said:
            try:
                ray.init(log_to_driver=False, configure_logging=False, **kw)
            except ConnectionError as e:
                said.failed = True
                if "InvalidAuthToken" in said.text():  # the C++ core said it; the exception does not
                    raise InputError(f"scale.address: the Ray cluster at {address!r} uses token authentication; "
                                     "run with RAY_AUTH_MODE=token and its token in ~/.ray/auth_token or "
                                     "RAY_AUTH_TOKEN") from e
                raise InputError(f"scale.address: cannot join a Ray cluster at {address!r} ({short_error(e)})") from e
    try:
        yield _workers(ray, cfg)
    finally:
        if started:
            ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port address must answer within seconds: Ray itself retries an unreachable one for minutes."""
    if address == "auto":
        return  # Ray looks for a local cluster and says at once when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"scale.address: must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as s:
            # Ray's head (GCS) and its client server speak gRPC: HTTP/2, whose server answers the client's preface
            # with a SETTINGS frame. Anything else listening there (a web server, a database) would leave Ray
            # retrying without end.
            s.sendall(_H2_PREFACE)
            head = _read(s, 9)
    except OSError as e:
        raise InputError(f"scale.address: no Ray cluster answers at {address!r} ({short_error(e)})") from e
    if len(head) < 9 or head[3] != 0x04:
        raise InputError(f"scale.address: something answers at {address!r}, but not a Ray cluster (no gRPC)")


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _read(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _segments(a: int, b: int, segment: int) -> range:
    return range(a // segment, -(-b // segment))


def _overlap_file(run: RunDir, kind: str, chunk: int) -> Path:
    return run.path / "overlaps" / f"{kind}_{chunk:05d}.npz"


def _chunk_done(run: RunDir, c: Chunk) -> bool:
    seg = run.manifest["stream"]["segment_frames"]
    if not all(run.committed(s) for s in _segments(c.start, c.encode_until, seg)):
        return False
    for kind, (a, b) in (("head", (c.start - c.head_overlap, c.start)), ("tail", (c.encode_until, c.end))):
        if b > a and not all(run.committed(s) for s in _segments(a, b, seg)) \
                and not _overlap_file(run, kind, c.number).is_file():
            return False
    return True


def _workers(ray, cfg: Config) -> tuple[int, float]:
    gpus = float(ray.cluster_resources().get("GPU", 0))
    per = cfg.scale.gpus_per_worker if cfg.scale.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    n = cfg.scale.workers or (max(1, int(gpus // per)) if per else 1)
    return n, per


def _render_chunks(ray, workers: list, src: Path, plan: VideoPlan, sv: Survey, chunks: list[Chunk],
                   todo: list[Chunk], run: RunDir, stats: RunStats) -> None:
    progress = Progress()
    queue, running = list(todo), {}
    total = sum(c.frames for c in todo)
    bar = tqdm(total=total, unit="frame", desc="dream", disable=None, dynamic_ncols=True)

    def start(w) -> None:
        c = queue.pop(0)
        running[w.render.remote(c, sv.times[c.warm_start])] = (w, c, time.perf_counter())

    try:
        for w in workers[:len(queue)]:
            start(w)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
            for ref in ready:
                w, c, t0 = running.pop(ref)
                result = ray.get(ref)
                log.info("chunk %d: %d frames in %.1f s on a worker (%.1f s dreaming)", c.number, result["frames"],
                         time.perf_counter() - t0, result["dream_s"])
                progress.set(c.number, result["frames"])
                _ingest(run, c, result, stats)
                _compose(src, plan, sv, chunks, c, run)
                if queue:
                    start(w)
            busy = [w for w, *_ in running.values()]
            if busy:
                done, _ = ray.wait([w.done.remote() for w in busy], num_returns=len(busy), timeout=POLL_S)
                for ref in done:
                    try:
                        progress.set(*ray.get(ref))
                    except Exception:  # the worker died; Ray restarts it and retries its chunk
                        pass
            bar.update(min(total, progress.total()) - bar.n)
    finally:
        bar.close()


def _ingest(run: RunDir, c: Chunk, result: dict, stats: RunStats) -> None:
    for number, data, meta in result["segments"]:
        temp = run.segment_temp(number)
        temp.write_bytes(data)
        run.commit_segment(number, temp, state=None, **meta)
    captured = result["captured"]
    for kind, (a, b) in (("head", (c.start - c.head_overlap, c.start)), ("tail", (c.encode_until, c.end))):
        if b > a:
            arrays = {"index": np.arange(a, b), "residual": np.stack([captured[i] for i in range(a, b)])}
            write_atomic(_overlap_file(run, kind, c.number), lambda f, arrays=arrays: np.savez(f, **arrays))
    stats.frames += result["frames"]
    stats.dream_s += result["dream_s"]


def _compose(src: Path, plan: VideoPlan, sv: Survey, chunks: list[Chunk], c: Chunk, run: RunDir) -> None:
    """Cross-fade the overlap at chunk c's start, once both sides are in, into its segments."""
    a, b = c.start - c.head_overlap, c.start
    seg = plan.segment_frames
    if b <= a or all(run.committed(s) for s in _segments(a, b, seg)):
        return
    files = _overlap_file(run, "tail", c.number - 1), _overlap_file(run, "head", c.number)
    if not all(f.is_file() for f in files):
        return
    with np.load(files[0]) as t, np.load(files[1]) as h:
        tail, head = t["residual"], h["residual"]
    n = b - a
    writer = first = None
    frame_s = float(1 / plan.rate)
    with VideoReader(src, start=sv.times[a], max_frames=n, max_side=plan.max_side) as r:
        for i, fr in enumerate(r):
            index = a + i
            if writer is None:
                temp, first, count = run.segment_temp(index // seg), fr, 0
                writer = VideoWriter(temp, width=plan.width, height=plan.height, time_base=plan.time_base,
                                     rate=plan.rate, encoding=plan.enc.encoding, faststart=False, frames=seg)
            dreamed = fr.rgb.astype(np.float32) + crossfade(tail[i], head[i], i, n)
            writer.write(quantize(dreamed), fr.pts)
            count += 1
            if (index + 1) % seg == 0 or i + 1 == n:
                writer.close()
                writer = None
                end = float(fr.pts * fr.time_base) + frame_s if fr.pts is not None else 0.0
                run.commit_segment(index // seg, temp, first_index=first.index + a, frames=count,
                                   first_pts=first.pts, end_time=end, state=None)
