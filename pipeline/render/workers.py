"""The two threads around the dream: decode + flow ahead of it, encode + checkpoint behind it.

Queues are bounded, so memory stays flat on any length of video. A thread that fails puts its
exception in the shared `errors` list; the main thread re-raises it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import Config
from pipeline.render.checkpoint import Pass
from pipeline.render.plan import VideoPlan
from pipeline.render.records import END, DreamedFrame, FrameRecord, SegmentEnd
from pipeline.render.step import eyes
from stages.media.decode import VideoReader
from stages.media.encode import VideoWriter
from stages.temporal.cuts import PairStats, colour_hist, is_scene_cut, stats_from
from stages.temporal.flow import FlowEstimator, Prepared
from stages.temporal.warp import consistency_mask
from stages.vr.stereo import estimate_disparity

POLL_S = 0.2
BACKGROUND_NICE = 5


@dataclass
class StageTimes:
    """Seconds each background thread spent working (not waiting on a queue), wall and its own CPU: the bench's
    split (the encoder's own worker threads are in neither). Each field has one writer thread."""
    decode_s: float = 0.0
    flow_s: float = 0.0  # flow, reliability masks, scene-cut test and stereo disparity
    encode_s: float = 0.0  # encoding, segment close and commit
    decode_cpu: float = 0.0
    flow_cpu: float = 0.0
    encode_cpu: float = 0.0


class _Clock:
    """Wall and this thread's CPU seconds since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.thread_time() - self.cpu


def background_priority() -> None:
    """Lower this thread's priority (and that of threads it starts: x264's, OpenCV's): the dream on the
    main thread is the render's critical path, and decode, flow and encode only need to keep ahead of it."""
    try:
        # Relative to the thread that started it: a Ray worker runs at nice 15, and an absolute 5 would
        # put these threads ahead of every worker's dream on the machine (measured: 2 Ray workers on 2
        # cores were no faster than one process).
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE))
    except (AttributeError, OSError):  # not Linux, or not allowed: it only costs some speed
        pass


def offer(q: queue.Queue, item, give_up: Callable[[], bool]) -> bool:
    """Put `item`, waiting for room, unless `give_up()` turns true first (the other side is gone)."""
    while not give_up():
        try:
            q.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


def take(q: queue.Queue, give_up: Callable[[], bool]):
    """The next item, or END once `give_up()` is true and nothing is waiting."""
    while True:
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            if give_up():
                return END


class CutDecider:
    """Holds each frame until the pair after it is known, then decides whether it starts a new shot
    (`stages.temporal.cuts.is_scene_cut` needs a pair of context on either side to tell a cut from fast motion)."""

    def __init__(self, prev: PairStats | None, min_reliable: float) -> None:
        self.prev, self.min_reliable = prev, min_reliable  # prev: the pair before the held frame's
        self.held: FrameRecord | None = None

    def push(self, rec: FrameRecord) -> FrameRecord | None:
        """Hold `rec`; give back the frame held before it, decided."""
        out = self.flush(rec.pair)
        self.held = rec
        return out

    def needs_next(self) -> bool:
        return self.held is not None and self.held.pair is not None

    def flush(self, nxt: PairStats | None = None) -> FrameRecord | None:
        """The held frame, decided with `nxt` (the pair after it; None at the end of the clip)."""
        rec, self.held = self.held, None
        if rec is not None and rec.pair is not None:
            cut, reason = is_scene_cut(self.prev, rec.pair, nxt, min_reliable=self.min_reliable)
            rec.cut = reason if cut else ""
        if rec is not None:
            self.prev = rec.pair
        return rec


@dataclass(slots=True)
class Seen:
    """A source frame as the flow thread keeps it for the next pair: per eye ready for the solver, and the first
    eye's colour histogram (each made once per frame, not once per pair)."""

    rgb: np.ndarray
    prepared: list[Prepared]
    hist: np.ndarray


def look(est: FlowEstimator, rgb: np.ndarray, dp) -> Seen:
    views = eyes(rgb, dp.stereo)
    return Seen(rgb, [est.prepare(e, wrap_x=dp.wrap_x) for e in views], colour_hist(views[0]))


def pair_motion(est: FlowEstimator, prev: Seen, cur: Seen, dp) -> tuple[list, PairStats]:
    """Per eye: backward flow and reliability mask at the flow's working size; the cut test's numbers from the
    first eye (decided by `stages.temporal.cuts.is_scene_cut`, as the survey and the metrics decide theirs)."""
    motion = []
    for pe, ce in zip(prev.prepared, cur.prepared):
        b, f = est.flow(pe, ce)
        motion.append((b, consistency_mask(b, f, wrap_x=dp.wrap_x)))
    return motion, stats_from(motion[0][1], prev.hist, cur.hist)


class _Flow:
    """Flow, masks, cut numbers and disparity of each frame, for up to `threads` frames at once (they depend
    on source frames only; OpenCV releases the GIL), handed back in frame order. One estimator per thread:
    a solver keeps buffers between calls. Results do not depend on the thread count."""

    def __init__(self, dp, threads: int) -> None:
        self.dp, self.threads = dp, threads
        self._local = threading.local()
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="flow",
                                                           initializer=background_priority) if threads > 1 else None
        self._inflight: collections.deque = collections.deque()

    def estimator(self) -> FlowEstimator:
        if not hasattr(self._local, "est"):
            self._local.est = self.dp.flow_estimator()
        return self._local.est

    def disparity_estimator(self) -> FlowEstimator:
        if not hasattr(self._local, "disp"):
            self._local.disp = self.dp.disparity_estimator()
        return self._local.disp

    def _job(self, prev: Seen | None, cur: Seen):
        clock, dp, est = _Clock(), self.dp, self.estimator()
        disparity = estimate_disparity(self.disparity_estimator(), *eyes(cur.rgb, dp.stereo), wrap_x=dp.wrap_x) \
            if dp.stereo_carry else None
        motion, stats = pair_motion(est, prev, cur, dp) if dp.temporal and prev is not None else (None, None)
        return motion, stats, disparity, clock.lap()

    def submit(self, fr, prev: Seen | None, cur: Seen) -> list:
        """Queue frame `fr` (seen as `cur`, after `prev`); returns the frames now done:
        [(frame, motion, stats, disparity, (wall s, CPU s))]."""
        if self._pool is None:
            return [(fr, *self._job(prev, cur))]
        self._inflight.append((fr, self._pool.submit(self._job, prev, cur)))
        return self.drain(keep=self.threads)

    def drain(self, keep: int = 0) -> list:
        done = []
        while len(self._inflight) > keep:
            fr, fut = self._inflight.popleft()
            done.append((fr, *fut.result()))
        return done

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def produce(src: Path, cfg: Config, plan: VideoPlan, p: Pass, in_q: queue.Queue, stop: threading.Event,
            errors: list, times: StageTimes | None = None) -> None:
    """Decode frames [p.state.next_index, p.stop_index), then per eye: backward/forward flow, reliability mask
    and the scene-cut test (decided one frame late, see CutDecider), on `plan.dream.flow_threads` threads."""
    background_priority()
    times = times or StageTimes()
    dp, state, stop_index = plan.dream, p.state, p.stop_index
    flow = _Flow(dp, dp.flow_threads if dp.temporal or dp.stereo_carry else 1)
    decider = CutDecider(state.prev_pair, dp.scene_cut)

    def hand_on(done: list) -> None:
        for fr, motion, stats, disparity, (wall, cpu) in done:
            times.flow_s += wall
            times.flow_cpu += cpu
            ready = decider.push(FrameRecord(fr.index, fr.pts, fr.time_base, fr.rgb, motion, "", disparity, stats))
            if ready is not None:
                offer(in_q, ready, stop.is_set)

    try:
        est = flow.estimator()  # this thread's: it prepares each frame for the solver once
        seen = look(est, state.prev_source, dp) if state.prev_source is not None and dp.temporal else None
        start, first = (p.seek[0], p.seek[1]) if p.seek else (cfg.video.start, 0)
        limit = None if cfg.video.max_frames is None else cfg.video.max_frames - first
        with VideoReader(src, start=start, max_frames=limit, max_side=plan.max_side) as r:
            frames = iter(r)
            while True:
                clock = _Clock()
                fr = next(frames, None)
                wall, cpu = clock.lap()
                times.decode_s += wall
                times.decode_cpu += cpu
                if fr is None or stop.is_set():
                    break
                fr.index += first
                if fr.index < state.next_index:
                    continue  # done in an earlier run; its result is in a segment and the state
                clock = _Clock()
                cur = look(est, fr.rgb, dp) if dp.temporal else Seen(fr.rgb, [], np.zeros(0, np.float32))
                wall, cpu = clock.lap()
                times.flow_s += wall
                times.flow_cpu += cpu
                if stop_index is not None and fr.index >= stop_index:
                    hand_on(flow.drain())
                    if decider.needs_next() and dp.temporal:  # the held frame's cut test looks one pair ahead
                        offer(in_q, decider.flush(pair_motion(est, seen, cur, dp)[1]), stop.is_set)
                    break
                hand_on(flow.submit(fr, seen, cur))
                seen = cur
        if not stop.is_set():
            hand_on(flow.drain())
            if decider.held is not None:
                offer(in_q, decider.flush(), stop.is_set)
    except BaseException as e:  # re-raised by the main thread
        errors.append(e)
    finally:
        flow.close()
        offer(in_q, END, stop.is_set)


def consume(sink, plan: VideoPlan, out_q: queue.Queue, stop: threading.Event, errors: list,
            times: StageTimes | None = None) -> None:
    """Encode frames into segment files; on a SegmentEnd, close the segment and commit it to `sink` (the run
    directory, or a scale-out chunk's collector)."""
    background_priority()
    times = times or StageTimes()
    writer, temp, seg_no = None, None, 0
    first_index = first_pts = None
    count, end_time = 0, 0.0
    try:
        while True:
            item = out_q.get()
            if item is END:
                break
            clock = _Clock()
            if isinstance(item, DreamedFrame):
                if writer is None:
                    seg_no = item.index // plan.segment_frames
                    temp = sink.segment_temp(seg_no)
                    writer = VideoWriter(temp, width=plan.width, height=plan.height, time_base=plan.time_base,
                                         rate=plan.rate, encoding=plan.enc.encoding, faststart=False,
                                         frames=plan.segment_frames)
                    first_index, first_pts, count = item.index, item.pts, 0
                writer.write(item.rgb, item.pts)
                end_time = item.end_time
                count += 1
            elif isinstance(item, SegmentEnd) and writer is not None:
                writer.close()
                writer = None
                sink.commit_segment(seg_no, temp, first_index=first_index, frames=count, first_pts=first_pts,
                                   end_time=end_time, state=item.state)
            wall, cpu = clock.lap()
            times.encode_s += wall
            times.encode_cpu += cpu
    except BaseException as e:
        errors.append(e)
        stop.set()
    finally:
        if writer is not None:  # frames after the last checkpoint: an unfinished segment is discarded
            try:
                writer.close()
            except Exception:
                pass
            temp.unlink(missing_ok=True)
