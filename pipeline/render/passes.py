"""One pass of `deepdream video`'s frame loop, and the finalize that turns committed segments into OUTPUT.

    decode + flow + mask (thread) ──in_q──▶ dream (main thread) ──out_q──▶ encode + checkpoint (thread)

Flow is computed on source frames only, so it runs ahead of the dream. Segments close every
`checkpoint.segment_frames` frames together with the TemporalState after them; a killed render resumes
from the last closed segment and, because every frame's randomness is seeded by its index, ends
bit-identical to an uninterrupted one. Used by a single-process render (`pipeline.render.runner`) and by each
scale-out chunk (`pipeline.scale.ray`), so neither imports the other for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from pipeline.config import Config, write_sidecar
from pipeline.errors import InputError
from pipeline.music.table import TABLE_FILE, row_for, stored_table, table_json
from pipeline.render.checkpoint import Pass, RunDir
from pipeline.render.engine import DreamEngine
from pipeline.render.plan import VideoPlan
from pipeline.render.records import END, DreamedFrame, FrameRecord, SegmentEnd, TemporalState
from pipeline.render.step import Dreamed, dream_frame
from pipeline.render.workers import StageTimes, consume, offer, produce, take
from stages.common import publish, write_atomic
from stages.media.encode import join_segments
from stages.vr.spherical_meta import inject_spherical

log = logging.getLogger(__name__)
QUEUE_DEPTH = 4

OnFrame = Callable[[int, float], None]  # (frame index, seconds its dream took); raising aborts the render


@dataclass
class RunStats:
    frames: int = 0
    wall_s: float = 0.0
    dream_s: float = 0.0
    dream_cpu: float = 0.0  # the main thread's own CPU in the frame step (the dream's intra-op threads not included)
    wait_input_s: float = 0.0  # dream idle, waiting for decode/flow
    wait_output_s: float = 0.0  # dream blocked, waiting for the encoder
    finalize_s: float = 0.0
    resets: list[int] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)  # the background threads' busy time


def keep_params(run: RunDir, plan: VideoPlan) -> VideoPlan:
    """The parameter table a resumed render started with, or this one, stored in the run dir now."""
    table = stored_table(run.path, run.manifest, plan.params)
    if table is not None and run.manifest.get("params") != table.digest():
        write_atomic(run.path / TABLE_FILE, lambda f: f.write(table_json(table)))
        run.manifest["params"] = table.digest()
        run.write_manifest()
    return replace(plan, params=table)


def _log_checksums(rec: FrameRecord, state: TemporalState, d: Dreamed) -> None:
    """Per-frame CRCs (--verbose): where two renders that should be identical part ways."""
    log.debug("frame %d crc: source %08x flow %08x residual-in %08x dreamed %08x", rec.index,
              zlib.crc32(rec.source.tobytes()), zlib.crc32(rec.motion[0][0].tobytes()) if rec.motion else 0,
              zlib.crc32(state.residual_array().tobytes()) if state.prev_residual is not None else 0,
              zlib.crc32(d.array().tobytes()))


class _Threads:
    """The decode/flow producer and the encode/checkpoint consumer around the main thread's dream."""

    def __init__(self, src: Path, cfg: Config, plan: VideoPlan, sink, p: Pass, times: StageTimes) -> None:
        self.in_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.out_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.stop, self.errors = threading.Event(), []
        self.producer = threading.Thread(target=produce, name="decode+flow", daemon=True,
                                         args=(src, cfg, plan, p, self.in_q, self.stop, self.errors, times))
        self.consumer = threading.Thread(target=consume, args=(sink, plan, self.out_q, self.stop, self.errors, times),
                                         name="encode", daemon=True)
        self.producer.start()
        self.consumer.start()

    def next_frame(self):
        return take(self.in_q, lambda: bool(self.errors))

    def send(self, item) -> None:
        offer(self.out_q, item, self.stop.is_set)

    def finish(self) -> None:
        """The encoder finishes (or drops) what it holds, then both threads end."""
        offer(self.out_q, END, lambda: not self.consumer.is_alive())
        self.consumer.join()
        self.stop.set()
        self.producer.join(timeout=10)


def render_pass(src: Path, cfg: Config, plan: VideoPlan, sink, engine: DreamEngine, p: Pass, stats: RunStats,
                on_frame: OnFrame | None = None) -> dict[int, np.ndarray]:
    """One pass of the frame loop (see `checkpoint.Pass`). Segments go to `sink` (a RunDir, or a scale-out
    chunk's collector: `segment_temp`, `commit_segment`, `committed`); returns the captured residuals
    (frame index → int16 H×W×3, shown − source rounded) of the frames in `p.capture`."""
    state = p.state
    captured: dict[int, np.ndarray] = {}
    if p.stop_index is None and plan.frames_estimate is not None and state.next_index >= plan.frames_estimate:
        return captured
    if state.next_index and p.stop_index is None and not p.resets:
        log.info("resuming at frame %d (%d segments on disk)", state.next_index, len(sink.records))
    seg_frames = plan.segment_frames
    threads = _Threads(src, cfg, plan, sink, p, stats.stages)
    frame_s = float(1 / plan.rate)
    bar = tqdm(total=plan.frames_estimate, initial=state.next_index, unit="frame", desc="dream", disable=None,
               dynamic_ncols=True)
    pending = False  # frames sent since the last SegmentEnd
    try:
        while True:
            t0 = time.perf_counter()
            rec = threads.next_frame()
            stats.wait_input_s += time.perf_counter() - t0
            if rec is END or threads.errors:
                break
            t0, c0 = time.perf_counter(), time.thread_time()
            fresh = rec.cut or rec.index in p.resets
            row = row_for(plan.params, float((rec.pts - plan.origin) * rec.time_base)) if rec.pts is not None \
                else None
            d = dream_frame(engine, plan.dream, rec.source, index=rec.index, prev_residual=state.prev_residual,
                            motion=None if fresh else rec.motion, ref_strength=state.ref_strength,
                            disparity=rec.disparity, params=row, keep=plan.enc.keep(rec.index))
            dt = time.perf_counter() - t0
            stats.dream_s += dt
            stats.dream_cpu += time.thread_time() - c0
            if log.isEnabledFor(logging.DEBUG):
                _log_checksums(rec, state, d)
            if rec.cut:
                stats.resets.append(rec.index)
                log.info("frame %d: scene cut (%s); the dream starts fresh", rec.index, rec.cut)
            state = TemporalState(rec.index + 1, rec.source, d.residual, d.ref, rec.pair)
            seg = rec.index // seg_frames
            t0 = time.perf_counter()
            # A committed segment is dreamed only to carry the chain to a damaged one.
            if p.encodes(rec.index) and (not sink.committed(seg) or seg in p.redo):
                end_time = float(rec.pts * rec.time_base) + frame_s if rec.pts is not None else 0.0
                threads.send(DreamedFrame(rec.index, rec.pts, d.rgb8(), end_time))
                pending = True
                if state.next_index % seg_frames == 0:
                    threads.send(SegmentEnd(state))
                    pending = False
            elif p.captures(rec.index):
                captured[rec.index] = np.rint(d.array() - rec.source).astype(np.int16)  # the frame shown
            stats.wait_output_s += time.perf_counter() - t0
            stats.frames += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(rec.index, dt)
        if pending and not threads.errors:
            threads.send(SegmentEnd(state))
    except BaseException:
        threads.stop.set()
        raise
    finally:
        bar.close()
        threads.finish()
    if threads.errors:
        raise threads.errors[0]
    return captured


def finalize(src: Path, dst: Path, cfg: Config, plan: VideoPlan, run: RunDir) -> None:
    """Join segments (no re-encode), mux the audio, tag 360° metadata, then one atomic rename."""
    segs = run.records
    if not segs:
        raise InputError(f"{src.name}: no frames in the selected range")
    first_time = float((segs[0]["first_pts"] or 0) * plan.time_base)
    tmp = run.temp_output()  # inside the run dir: a killed finalize leaves nothing beside OUTPUT
    join_segments(run.segment_paths(), tmp, audio_source=src if plan.has_audio else None,
                  start_s=first_time, end_s=segs[-1]["end_time"], faststart=True)
    if plan.layout.projection == "equirect":
        inject_spherical(tmp, tmp, stereo=plan.layout.stereo)
    write_sidecar(dst, cfg, {"source": src, "layout": f"{plan.layout.projection} {plan.layout.stereo} "
                                                      f"({plan.layout.how})"}, tmp_dir=run.path)
    publish(tmp, dst)
    run.remove()
