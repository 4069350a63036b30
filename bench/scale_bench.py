"""Section `scale`: one render on a local Ray cluster (2 CPU workers, one thread each) against one process
with one thread, same frames and config, each in its own `python -m pipeline video` process.

Reports the wall-clock speed-up (Ray start-up and model loads included), the whole render's warp error
against the one-process render's, and the pop where chunks meet: each boundary's per-frame warp error
over the render's median, beside the same frames of the one-process render (which has no boundary there).
The clip is a camera pan over a real photo (`bench/footage.make_photo_pan`), one long shot, so every
boundary falls inside a shot and goes through the warm-up and cross-fade.

Environment: BENCH_SCALE_FRAMES (default 200), BENCH_SCALE_ROUNDS (interleaved rounds, default 3) and
BENCH_SCALE_SET (extra `key=value`s for the Ray side, e.g. "scale.warmup_frames=10").
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Context, banner, table

FRAMES, FRAMES_QUICK = 200, 100
ROUNDS, ROUNDS_QUICK = 3, 1
SIDE = 160
# The default chunking (10 s chunks, balanced over the workers: 2 x 100 frames here) and warm-up.
RAY = ["scale.backend=ray", "scale.workers=2", "scale.cpus_per_worker=1"]
COMMON = [f"input.max_side={SIDE}", "checkpoint.segment_frames=10", "encode.gop=0.334"]


def _render(src: Path, dst: Path, sets: list[str], one_core: bool = False) -> tuple[float, float]:
    """(wall s, frame-step s per frame as the render logs it). `one_core`: the process may use core 0 only, so its
    decode, flow and encode threads share the dream's core, as in a Ray worker with one CPU beside another."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [sys.executable, "-m", "pipeline", "video", str(src), str(dst)]
    for kv in sets:
        argv += ["--set", kv]
    pin = (lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if one_core else None
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=pin)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"render failed: {r.stderr.strip().splitlines()[-1:]}")
    step = re.search(r"the frame step ([0-9.]+) s per frame", r.stderr)
    return wall, float(step.group(1)) if step else float("nan")


def _series(src: Path, dst: Path) -> dict:
    from stages.measure.metrics import warp_error_series
    from stages.media.decode import VideoReader

    with VideoReader(src) as a, VideoReader(dst) as b:
        return warp_error_series((f.rgb for f in a), (f.rgb for f in b))


def _boundaries(src: Path, frames: int, extra: list[str]) -> list[int]:
    """The chunk starts the Ray render used: the same survey and plan, recomputed."""
    from pipeline.config import load_config
    from pipeline.scale.chunks import plan_chunks, survey
    from pipeline.scale.ray import balanced_target

    cfg = load_config("default", COMMON + RAY + extra)
    sv = survey(src, start=0.0, max_frames=frames, scene_cut=cfg.temporal.scene_cut)
    chunks = plan_chunks(len(sv.times), sv.cuts, segment=cfg.checkpoint.segment_frames,
                         target=balanced_target(len(sv.times), cfg.scale.chunk_seconds * 30, cfg.scale.workers),
                         warmup=cfg.scale.warmup_frames)
    return [c.start for c in chunks[1:]]


def _pop(per_frame: list, starts: list[int]) -> tuple[float, float]:
    """(worst boundary, worst anywhere) per-frame warp error over the median. Entry k is frames k, k+1."""
    vals = [v for v in per_frame if v is not None]
    med = statistics.median(vals)
    near = [per_frame[k] for s in starts for k in (s - 2, s - 1, s) if 0 <= k < len(per_frame)
            and per_frame[k] is not None]
    return max(near, default=0.0) / med, max(vals) / med


def run(ctx: Context) -> dict:
    from bench.footage import make_photo_pan

    extra = [kv for kv in os.environ.get("BENCH_SCALE_SET", "").split() if kv]  # e.g. scale.warmup_frames=10

    frames = int(os.environ.get("BENCH_SCALE_FRAMES", 0)) or (FRAMES_QUICK if ctx.quick else FRAMES)
    banner(f"scale: Ray, 2 CPU workers x 1 thread, vs one process x 1 thread ({frames} frames, {SIDE} px)")
    try:
        import ray  # noqa: F401
    except ImportError:
        print("  skipped: Ray is not installed (pip install 'deepdream-video[ray]')")
        return {"skipped": "no ray"}
    if (os.cpu_count() or 1) < 2:
        print("  skipped: needs 2 cores")
        return {"skipped": "one core"}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as td:
        tmp = Path(td)
        src = make_photo_pan(tmp / "pan.mp4", width=SIDE, height=SIDE * 9 // 16, frames=frames)
        runs: dict[str, list[float]] = {"one process": [], "ray x2": [], "one core": []}
        steps: dict[str, list[float]] = {"one process": [], "ray x2": [], "one core": []}
        series = {}
        rounds = int(os.environ.get("BENCH_SCALE_ROUNDS", 0)) or (ROUNDS_QUICK if ctx.quick else ROUNDS)
        for k in range(rounds):  # interleaved: machine noise hits both alike
            for name, sets in (("one process", COMMON), ("ray x2", COMMON + RAY + extra), ("one core", COMMON)):
                if k and ctx.budget.left() < 1.2 * max(runs[name]):
                    break
                dst = tmp / f"{name.split()[0]}.mp4"
                dst.unlink(missing_ok=True)
                wall, step = _render(src, dst, sets, one_core=name == "one core")
                runs[name].append(wall)
                steps[name].append(step)
                if name != "one core":
                    series.setdefault(name, _series(src, dst))  # renders are deterministic: measured once
                print(f"  [{ctx.budget.elapsed():6.1f} s] round {k} {name:12s} {runs[name][-1]:6.1f} s", flush=True)
        walls = {n: statistics.median(v) for n, v in runs.items() if v}
        step_med = {n: statistics.median(v) for n, v in steps.items() if v}
        starts = _boundaries(src, frames, extra)
    one, ray_ = series["one process"], series["ray x2"]
    pop_ray, worst_ray = _pop(ray_["per_frame"]["warp_error"], starts)
    pop_one, worst_one = _pop(one["per_frame"]["warp_error"], starts)
    res = {"frames": frames, "side": SIDE, "boundaries": starts, "wall_s": walls, "runs_s": runs,
           "speedup": walls["one process"] / walls["ray x2"],
           "warp_error": {"one": one["warp_error"], "ray": ray_["warp_error"]},
           "warp_ratio": ray_["warp_error"] / one["warp_error"],
           "strength_ratio": ray_["dream_strength"] / one["dream_strength"],
           "boundary_over_median": {"one": pop_one, "ray": pop_ray},
           "worst_over_median": {"one": worst_one, "ray": worst_ray},
           "step_s_per_frame": step_med, "step_ratio": step_med["ray x2"] / step_med["one process"],
           "step_ratio_one_core": step_med.get("one core", float("nan")) / step_med["one process"]}
    print()
    walls.pop("one core", None)
    print(table(["", "wall s (median)", "fps", "warp error", "strength", "boundary/median", "worst/median"],
                [[n, f"{walls[n]:.1f}", f"{frames / walls[n]:.2f}", f"{s['warp_error']:.1f}",
                  f"{s['dream_strength']:.1f}", f"{p:.2f}", f"{w:.2f}"]
                 for n, s, p, w in (("one process", one, pop_one, worst_one), ("ray x2", ray_, pop_ray, worst_ray))],
                right=[False] + [True] * 6))
    print(f"  frame step per frame: one process {step_med['one process']:.3f} s, in each Ray worker "
          f"{step_med['ray x2']:.3f} s (x{res['step_ratio']:.2f}), one process held to one core "
          f"{step_med.get('one core', float('nan')):.3f} s (x{res['step_ratio_one_core']:.2f}): a worker's decode, "
          "flow and encode threads share its core with its dream, where one process alone has the other core")
    print(f"  chunk starts {starts}; speed-up {res['speedup']:.2f}x (goal >= 1.3), warp error ray/one "
          f"x{res['warp_ratio']:.2f} (goal <= 1.2), worst frame / median {worst_ray:.2f} (goal <= 1.6)")
    return res
