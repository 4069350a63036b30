"""`deepdream animate`: a still dreamed in a feedback loop under camera motion (the classic infinite zoom).

    plan (animate_plan) → frame loop (main thread) ──out_q──▶ encode + checkpoint (workers.consume) → finalize

Frame 0 is the input dreamed with the full schedule. Frame i is frame i − 1's dream (its 8-bit source plus
its float residual, exactly as the TemporalState keeps them) moved by the camera's step for frame i,
resampled (`animate.resample`), rounded to 8 bits: that is frame i's source. It is dreamed as a carried
video frame is (`step.dream_frame`, warm: `temporal.iterations` per octave, `temporal.hold` pulling new
detail back toward the moved picture where it came from inside the old frame): the carried residual is 0,
because the moved dream already *is* the source. Pixels the motion revealed (reflected in from the edge)
have reliability 0 and dream freely. `temporal.enabled: false` dreams every frame with the full schedule
and no hold, as google/deepdream's notebook does. `temporal.steady` does not apply: in a feedback loop the
dream is the picture, and its growth is what the loop is for.

Checkpoints, resume, progress bar and the encoder are `deepdream video`'s: segments and states go through
`RunDir`, every frame's randomness is seeded by its index, so a killed render resumes byte-identical.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.config import Config, render_hash, to_dict, write_sidecar
from pipeline.render.animate_plan import AnimationPlan, Step, plan_animation
from pipeline.render.checkpoint import Pass, RunDir
from pipeline.render.engine import DreamEngine, check_config
from pipeline.render.passes import OnFrame, RunStats, keep_params
from pipeline.render.plan import check_video_output
from pipeline.render.records import END, DreamedFrame, SegmentEnd, TemporalState
from pipeline.render.step import dream_frame, eyes
from pipeline.render.workers import consume, offer
from stages.common import publish
from stages.dream.ascent import quantize
from stages.media.encode import join_segments
from stages.temporal.motion import FlatStep, flat_map, resample, reveal_mask
from stages.vr import spherical as S
from stages.vr.orbit import resample_equirect, sphere_map
from stages.vr.spherical_meta import inject_spherical

log = logging.getLogger(__name__)
QUEUE_DEPTH = 4


@functools.lru_cache(maxsize=4)
def _maps(h: int, w: int, step: Step) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(map x, map y, reveal mask or None on the sphere) of one step at one size: a constant motion
    builds them once for the whole render."""
    if isinstance(step, FlatStep):
        mx, my = flat_map(h, w, step)
        return mx, my, reveal_mask(mx, my, h, w)
    mx, my = sphere_map(h, w, step)
    return mx, my, None


def move(picture: np.ndarray, step: Step, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """One eye's dreamed picture (H×W×3 float32) carried by the camera's step → (moved, reliability H×W)."""
    h, w = picture.shape[:2]
    mx, my, mask = _maps(h, w, step)
    if mask is None:
        return resample_equirect(picture, mx, my, mode), np.ones((h, w), np.float32)
    return resample(picture, mx, my, mode), mask


def carried_source(plan: AnimationPlan, state: TemporalState, index: int) -> tuple[np.ndarray, list | None]:
    """Frame `index`'s source (H×W×3 uint8) and its motion for `dream_frame` (per eye: zero flow, since the
    residual it would carry is 0, and the reliability of the moved picture); frame 0: the input, no motion."""
    if index == 0 or state.prev_source is None:
        return plan.start, None
    dp = plan.video.dream
    dreamed = state.prev_source.astype(np.float32) + state.residual_array()
    step = plan.step(index)
    moved = [move(e, step, plan.resample) for e in eyes(dreamed, dp.stereo)]
    pictures = [quantize(m) for m, _ in moved]
    source = pictures[0] if dp.stereo == "mono" else S.join_stereo(*pictures, dp.stereo)
    return source, [(np.zeros((*mask.shape, 2), np.float32), mask) for _, mask in moved]


def animate_pass(plan: AnimationPlan, sink, engine: DreamEngine, p: Pass, stats: RunStats,
                 on_frame: OnFrame | None = None) -> None:
    """Frames [p.state.next_index, p.stop_index or the end): dreamed, encoded where `sink` lacks them (or
    `p.redo` says so), committed with the state after each segment (`checkpoint.Pass` semantics)."""
    vp, state = plan.video, p.state
    stop = plan.frames if p.stop_index is None else min(p.stop_index, plan.frames)
    if state.next_index >= stop:
        return
    if state.next_index and p.stop_index is None:
        log.info("resuming at frame %d (%d segments on disk)", state.next_index, len(sink.records))
    out_q: queue.Queue = queue.Queue(QUEUE_DEPTH)
    halt, errors = threading.Event(), []
    encoder = threading.Thread(target=consume, args=(sink, vp, out_q, halt, errors, stats.stages), name="encode",
                               daemon=True)
    encoder.start()
    bar = tqdm(total=plan.frames, initial=state.next_index, unit="frame", desc="animate", disable=None,
               dynamic_ncols=True)
    seg_frames, pending = vp.segment_frames, False
    try:
        for index in range(state.next_index, stop):
            if errors:
                break
            t0 = time.perf_counter()
            source, motion = carried_source(plan, state, index)
            zero = np.zeros(source.shape, np.float32) if motion else None
            row = vp.params.row(index) if vp.params is not None else None
            d = dream_frame(engine, vp.dream, source, index=index, prev_residual=zero, motion=motion, params=row)
            dt = time.perf_counter() - t0
            stats.dream_s += dt
            state = TemporalState(index + 1, source, d.residual)
            seg = index // seg_frames
            t0 = time.perf_counter()
            if p.encodes(index) and (not sink.committed(seg) or seg in p.redo):
                offer(out_q, DreamedFrame(index, index, d.rgb8(), float((index + 1) * vp.time_base)),
                      halt.is_set)
                pending = True
                if state.next_index % seg_frames == 0 or state.next_index == plan.frames:
                    offer(out_q, SegmentEnd(state), halt.is_set)
                    pending = False
            stats.wait_output_s += time.perf_counter() - t0
            stats.frames += 1
            bar.update(1)
            if on_frame is not None:
                on_frame(index, dt)
        if pending and not errors:
            offer(out_q, SegmentEnd(state), halt.is_set)
    except BaseException:
        halt.set()
        raise
    finally:
        bar.close()
        offer(out_q, END, lambda: not encoder.is_alive())
        encoder.join()
    if errors:
        raise errors[0]


def finalize_animation(src: Path, dst: Path, cfg: Config, plan: AnimationPlan, run: RunDir) -> None:
    """Join the segments (no re-encode), mux the soundtrack from 0 s, tag 360° metadata, one atomic rename."""
    segs = run.records
    tmp = run.temp_output()  # inside the run dir: a killed finalize leaves nothing beside OUTPUT
    join_segments(run.segment_paths(), tmp, audio_source=plan.soundtrack, start_s=0.0, end_s=segs[-1]["end_time"],
                  faststart=True)
    layout = plan.video.layout
    if layout.projection == "equirect":
        inject_spherical(tmp, tmp, stereo=layout.stereo)
    write_sidecar(dst, cfg, {"animated from": f"{src} ({plan.input_kind})",
                             "layout": f"{layout.projection} {layout.stereo} ({layout.how})"}, tmp_dir=run.path)
    publish(tmp, dst)
    run.remove()


def run_animation(src: Path, dst: Path, cfg: Config, *, restart: bool = False,
                  on_frame: OnFrame | None = None) -> RunStats:
    t_start = time.perf_counter()
    check_video_output(src, dst, cfg)
    check_config(cfg)
    plan = plan_animation(src, cfg)  # every remaining check: input, soundtrack, motion, encoder
    opening = dict(input_path=src, config=to_dict(cfg), config_hash=render_hash(cfg, animation=True),
                   stream=plan.stream_info(), restart=restart)
    RunDir.check(dst, **opening)
    engine = DreamEngine(cfg)
    run = RunDir.open(dst, **opening)
    stats = RunStats()
    with run.held():
        plan = replace(plan, video=keep_params(run, plan.video))
        for p in run.resume_passes():
            animate_pass(plan, run, engine, p, stats, on_frame)
        t0 = time.perf_counter()
        finalize_animation(src, dst, cfg, plan, run)
        stats.finalize_s = time.perf_counter() - t0
    stats.wall_s = time.perf_counter() - t_start
    log.info("wrote %s: %d frames dreamed in %.1f s (%.2f fps)", dst, stats.frames, stats.wall_s,
             stats.frames / max(stats.wall_s, 1e-9))
    return stats
