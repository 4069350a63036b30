"""`deepdream video`: the frame loop.

    decode + flow + mask (thread) ──in_q──▶ dream (main thread) ──out_q──▶ encode + checkpoint (thread)

Flow is computed on source frames only, so it runs ahead of the dream. Queues are bounded, so memory
stays flat on any length of video. Segments close every `checkpoint.segment_frames` frames together with
the TemporalState after them; a killed render resumes from the last closed segment and, because every
frame's randomness is seeded by its index, ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.checkpoint import RunDir, fsync_dir, fsync_file
from pipeline.config import Config, config_hash, dump_yaml, to_dict
from pipeline.engine import DreamEngine, check_config
from pipeline.errors import InputError
from pipeline.layout import Layout, resolve_layout
from pipeline.presets import EncodeSettings, capped_max_side, encode_settings
from pipeline.records import FrameRecord, TemporalState
from stages import spherical as S
from stages.decode import VideoReader
from stages.dream import quantize
from stages.encode import VideoWriter, encoder_available, join_segments
from stages.flow import FlowEstimator
from stages.spherical_meta import inject_spherical
from stages.still import check_output_path, write_atomic
from stages.warp import consistency_mask, is_scene_cut, temporal_init

log = logging.getLogger(__name__)
QUEUE_DEPTH = 4
_END = object()


@dataclass
class RunStats:
    frames: int = 0
    wall_s: float = 0.0
    dream_s: float = 0.0
    wait_input_s: float = 0.0  # dream idle, waiting for decode/flow
    wait_output_s: float = 0.0  # dream blocked, waiting for the encoder
    finalize_s: float = 0.0
    resets: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    """Everything decided before the first frame: sizes, layout, encoder, stream identity."""

    layout: Layout
    max_side: int | None
    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    has_audio: bool
    frames_estimate: int | None
    enc: EncodeSettings

    @property
    def wrap_x(self) -> bool:
        return self.layout.wrap_x

    def stream_info(self) -> dict:
        return {"width": self.width, "height": self.height, "time_base": str(self.time_base),
                "rate": str(self.rate), "projection": self.layout.projection, "stereo": self.layout.stereo}


def _check_output(src: Path, dst: Path) -> None:
    if dst.suffix.lower() not in (".mp4", ".m4v"):
        raise InputError(f"output {dst}: must be an .mp4 file")
    check_output_path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise InputError("output must not be the input file")


def plan_render(src: Path, cfg: Config) -> Plan:
    with VideoReader(src, start=cfg.video.start, max_frames=1, max_side=cfg.input.max_side) as r:
        first = next(iter(r)).rgb
        side = (r.side_projection, r.side_stereo)
        src_w, src_h, rate, tb, has_audio = r.source_width, r.source_height, r.rate, r.time_base, r.has_audio
    layout = resolve_layout(cfg, first, side_projection=side[0], side_stereo=side[1])
    rate = rate or Fraction(30)
    enc = encode_settings(cfg, rate, layout.stereo)
    if not encoder_available(enc.codec):
        raise InputError(f"encode.codec: this PyAV build has no {enc.codec} encoder")
    max_side = capped_max_side(src_w, src_h, cfg.input.max_side, enc.max_size)
    if max_side != cfg.input.max_side:
        log.info("encode.preset %s: frames scaled to fit %dx%d", cfg.encode.preset, *enc.max_size)
    with VideoReader(src, start=cfg.video.start, max_frames=cfg.video.max_frames, max_side=max_side) as r:
        w, h, est = r.width, r.height, r.frames_estimate
    if layout.stereo != "mono":
        S.split_stereo(np.zeros((h, w, 1), np.uint8), layout.stereo)  # scaled size still splits evenly
    return Plan(layout, max_side, w, h, tb, rate, has_audio, est, enc)


def _eyes(img: np.ndarray, stereo: str) -> list[np.ndarray]:
    return list(S.split_stereo(img, stereo)) if stereo != "mono" else [img]


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, errors: list):
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            if errors:
                return _END


def _put_while(q: queue.Queue, item, thread: threading.Thread) -> None:
    while thread.is_alive():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def _produce(src: Path, cfg: Config, plan: Plan, state: TemporalState, in_q: queue.Queue,
             stop: threading.Event, errors: list) -> None:
    """Decode, then per eye: backward/forward flow, reliability mask and the scene-cut test."""
    try:
        stereo, wrap = plan.layout.stereo, plan.wrap_x and cfg.spherical.wrap
        est = FlowEstimator(cfg.temporal.flow) if cfg.temporal.enabled else None
        prev = state.prev_source
        with VideoReader(src, start=cfg.video.start, max_frames=cfg.video.max_frames, max_side=plan.max_side) as r:
            for fr in r:
                if stop.is_set():
                    return
                if fr.index < state.next_index:
                    continue  # done in an earlier run; its result is in a segment and the state
                motion, cut = None, ""
                if est is not None and prev is not None:
                    motion = []
                    for pe, ce in zip(_eyes(prev, stereo), _eyes(fr.rgb, stereo)):
                        b, f = est.pair(pe, ce, wrap_x=wrap)
                        motion.append((b, consistency_mask(b, f, wrap_x=wrap)))
                    is_cut, reason = is_scene_cut(motion[0][1], _eyes(prev, stereo)[0], _eyes(fr.rgb, stereo)[0],
                                                  min_reliable=cfg.temporal.scene_cut)
                    cut = reason if is_cut else ""
                _put(in_q, FrameRecord(fr.index, fr.pts, fr.time_base, fr.rgb, motion, cut), stop)
                prev = fr.rgb
    except BaseException as e:  # re-raised by the main thread
        errors.append(e)
    finally:
        _put(in_q, _END, stop)


def _consume(run: RunDir, plan: Plan, out_q: queue.Queue, stop: threading.Event, errors: list) -> None:
    """Encode frames into segment files; on a commit item, close the segment and checkpoint it."""
    writer, temp, seg_no = None, None, len(run.manifest["segments"])
    first_index = first_pts = None
    count, end_time = 0, 0.0
    enc = plan.enc
    try:
        while True:
            item = out_q.get()
            if item is _END:
                break
            kind, payload = item
            if kind == "frame":
                index, pts, rgb, end_time = payload
                if writer is None:
                    temp = run.segment_temp(seg_no)
                    writer = VideoWriter(temp, width=plan.width, height=plan.height, time_base=plan.time_base,
                                         rate=plan.rate, codec=enc.codec, crf=enc.crf, preset=enc.speed,
                                         gop=enc.gop, profile=enc.profile, level=enc.level,
                                         maxrate_kbps=enc.maxrate_kbps, faststart=False)
                    first_index, first_pts, count = index, pts, 0
                writer.write(rgb, pts)
                count += 1
            elif kind == "commit" and writer is not None:
                writer.close()
                writer = None
                run.commit_segment(seg_no, temp, first_index=first_index, frames=count, first_pts=first_pts,
                                   end_time=end_time, state=payload)
                seg_no += 1
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


def dream_frame(engine: DreamEngine, cfg: Config, plan: Plan, rec: FrameRecord,
                state: TemporalState) -> tuple[np.ndarray, bool]:
    """One frame: temporal initialisation from the warped previous residual, then the dream.

    Returns (dreamed float32 0..255, whether the temporal chain was reset here).
    """
    stereo, wrap = plan.layout.stereo, plan.wrap_x and cfg.spherical.wrap
    src_eyes = _eyes(rec.source, stereo)
    warm = cfg.temporal.enabled and rec.motion is not None and state.prev_residual is not None and not rec.cut
    if warm:
        inits = [temporal_init(s.astype(np.float32), r, b, m, blend=cfg.temporal.blend, wrap_x=wrap)
                 for s, r, (b, m) in zip(src_eyes, _eyes(state.prev_residual, stereo), rec.motion)]
    else:
        inits = src_eyes
    x = np.stack(inits) if stereo != "mono" else inits[0]
    out = engine.dream(x, frame_index=rec.index, iterations=cfg.temporal.iterations if warm else None,
                       wrap_x=wrap, pole_exponent=cfg.spherical.pole_exponent if plan.wrap_x else 0.0)
    if stereo != "mono":
        out = S.join_stereo(out[0], out[1], stereo)
    return out, bool(rec.cut)


def run_video(src: Path, dst: Path, cfg: Config, *, restart: bool = False) -> RunStats:
    t_start = time.perf_counter()
    _check_output(src, dst)
    check_config(cfg)
    if cfg.temporal.enabled and cfg.temporal.flow == "raft":
        FlowEstimator("raft")  # fails now, with the fix in the message, if RAFT weights are absent
    plan = plan_render(src, cfg)
    run = RunDir.open(dst, input_path=src, config=to_dict(cfg), config_hash=config_hash(cfg),
                      stream=plan.stream_info(), restart=restart)
    try:
        stats = _render(src, cfg, plan, run)
        t0 = time.perf_counter()
        _finalize(src, dst, cfg, plan, run)
        stats.finalize_s = time.perf_counter() - t0
    finally:
        run.close()
    stats.wall_s = time.perf_counter() - t_start
    log.info("wrote %s: %d frames rendered in %.1f s (%.2f fps), %d temporal resets", dst, stats.frames,
             stats.wall_s, stats.frames / max(stats.wall_s, 1e-9), len(stats.resets))
    return stats


def _render(src: Path, cfg: Config, plan: Plan, run: RunDir) -> RunStats:
    state = run.load_state()
    stats = RunStats()
    if plan.frames_estimate is not None and state.next_index >= plan.frames_estimate:
        return stats
    if state.next_index:
        log.info("resuming at frame %d (%d segments on disk)", state.next_index, len(run.manifest["segments"]))
    engine = DreamEngine(cfg)
    in_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
    out_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
    stop, errors = threading.Event(), []
    producer = threading.Thread(target=_produce, args=(src, cfg, plan, state, in_q, stop, errors),
                                name="decode+flow", daemon=True)
    consumer = threading.Thread(target=_consume, args=(run, plan, out_q, stop, errors), name="encode", daemon=True)
    producer.start()
    consumer.start()
    n = cfg.checkpoint.segment_frames
    frame_s = float(1 / plan.rate)
    bar = tqdm(total=plan.frames_estimate, initial=state.next_index, unit="frame", desc="dream", disable=None,
               dynamic_ncols=True)
    pending = False
    try:
        while True:
            t0 = time.perf_counter()
            rec = _get(in_q, errors)
            stats.wait_input_s += time.perf_counter() - t0
            if rec is _END or errors:
                break
            t0 = time.perf_counter()
            dreamed, reset = dream_frame(engine, cfg, plan, rec, state)
            stats.dream_s += time.perf_counter() - t0
            if log.isEnabledFor(logging.DEBUG):
                log.debug("frame %d crc: source %08x flow %08x residual-in %08x dreamed %08x", rec.index,
                          zlib.crc32(rec.source.tobytes()),
                          zlib.crc32(rec.motion[0][0].tobytes()) if rec.motion else 0,
                          zlib.crc32(state.prev_residual.tobytes()) if state.prev_residual is not None else 0,
                          zlib.crc32(dreamed.tobytes()))
            if reset:
                stats.resets.append(rec.index)
                log.info("frame %d: scene cut (%s); the dream starts fresh", rec.index, rec.cut)
            state = TemporalState(rec.index + 1, rec.source, dreamed - rec.source.astype(np.float32))
            end_time = float(rec.pts * rec.time_base) + frame_s if rec.pts is not None else 0.0
            t0 = time.perf_counter()
            _put(out_q, ("frame", (rec.index, rec.pts, quantize(dreamed), end_time)), stop)
            pending = True
            if state.next_index % n == 0:
                _put(out_q, ("commit", state), stop)
                pending = False
            stats.wait_output_s += time.perf_counter() - t0
            stats.frames += 1
            bar.update(1)
        if pending and not errors:
            _put(out_q, ("commit", state), stop)
    except BaseException:
        stop.set()
        raise
    finally:
        bar.close()
        _put_while(out_q, _END, consumer)  # the encoder finishes (or drops) what it holds, then exits
        consumer.join()
        stop.set()
        producer.join(timeout=10)
    if errors:
        raise errors[0]
    return stats


def _finalize(src: Path, dst: Path, cfg: Config, plan: Plan, run: RunDir) -> None:
    """Join segments (no re-encode), mux the audio, tag 360° metadata, then one atomic rename."""
    segs = run.manifest["segments"]
    if not segs:
        raise InputError(f"{src.name}: no frames in the selected range")
    first_time = float((segs[0]["first_pts"] or 0) * plan.time_base)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part.mp4")
    try:
        join_segments(run.segment_paths(), tmp, audio_source=src if plan.has_audio else None,
                      start_s=first_time, end_s=segs[-1]["end_time"], faststart=True)
        if plan.layout.projection == "equirect":
            inject_spherical(tmp, tmp, stereo=plan.layout.stereo)
        fsync_file(tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    text = dump_yaml(cfg) + f"# source: {src}\n# layout: {plan.layout.projection} {plan.layout.stereo}" \
                            f" ({plan.layout.how})\n"
    write_atomic(dst.with_name(dst.name + ".yaml"), lambda f: f.write(text.encode()))
    run.remove()
