"""`deepdream video`: plan → passes of the frame loop (`pipeline.render.passes`) → finalize; or hand over to Ray.

A render resumes from its run directory: `RunDir.resume_passes` says which frames each pass dreams
(normally one pass from the last committed segment; more when a damaged segment is re-rendered).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.config import Config, render_hash, to_dict
from pipeline.render.checkpoint import RunDir
from pipeline.render.engine import DreamEngine, check_config
from pipeline.render.passes import OnFrame, RunStats, finalize, keep_params, render_pass
from pipeline.render.plan import check_video_output, plan_video
from stages.temporal.flow import FlowEstimator

log = logging.getLogger(__name__)


def run_video(src: Path, dst: Path, cfg: Config, *, restart: bool = False,
              on_frame: OnFrame | None = None) -> RunStats:
    if cfg.scale.backend == "ray":
        from pipeline.scale.ray import run_scaled

        return run_scaled(src, dst, cfg, restart=restart)
    t_start = time.perf_counter()
    check_video_output(src, dst, cfg)
    check_config(cfg)
    if cfg.temporal.enabled and cfg.temporal.flow == "raft":
        FlowEstimator("raft")  # fails now, with the fix in the message, if RAFT weights are absent
    plan = plan_video(src, cfg)
    opening = dict(input_path=src, config=to_dict(cfg), config_hash=render_hash(cfg), stream=plan.stream_info(),
                   restart=restart)
    RunDir.check(dst, **opening)
    engine = DreamEngine(cfg)  # weights and guide are checked here, before anything is written
    run = RunDir.open(dst, **opening)
    stats = RunStats()
    with run.held():
        plan = keep_params(run, plan)
        for p in run.resume_passes():
            render_pass(src, cfg, plan, run, engine, p, stats, on_frame)
        t0 = time.perf_counter()
        finalize(src, dst, cfg, plan, run)
        stats.finalize_s = time.perf_counter() - t0
    stats.wall_s = time.perf_counter() - t_start
    log.info("wrote %s: %d frames rendered in %.1f s (%.2f fps; the frame step %.3f s per frame), %d temporal resets",
             dst, stats.frames, stats.wall_s, stats.frames / max(stats.wall_s, 1e-9),
             stats.dream_s / max(stats.frames, 1), len(stats.resets))
    return stats
