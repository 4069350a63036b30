"""Section `base`: this tree against a baseline commit, `deepdream video` with the default preset on the same
frames, interleaved (baseline, new, baseline, new, ...) so machine noise hits both alike.

`BENCH_BASE=<commit> make bench` (or `python -m bench --base <commit>`) checks the commit out beside the
tree (a detached git worktree in a temp dir), runs each side's own CLI in a fresh process (`python -m
pipeline video`, PYTHONPATH set to that side's tree), and measures every output with this tree's
`deepdream metrics`: wall time, warp error and dream strength, and their ratios new / baseline.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Context, banner, table

SRC = REPO / "sample_media" / "pan_cat.mp4"
FRAMES, FRAMES_QUICK = 45, 20
ROUNDS, ROUNDS_QUICK = 3, 1


def _worktree(commit: str, into: Path) -> Path:
    path = into / f"base-{commit[:10]}"
    r = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), commit],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cannot check out {commit}: {r.stderr.strip()}")
    return path


def _render(tree: Path, src: Path, dst: Path, frames: int, threads: int | None) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipeline", "video", str(src), str(dst), "--set",
                        f"video.max_frames={frames}"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{tree.name}: render failed: {r.stderr.strip().splitlines()[-1:]}")
    return wall


def _metrics(src: Path, dst: Path) -> dict:
    from pipeline.review.measure import run_metrics

    m = run_metrics(src, dst, plot=None, projection="flat")
    return {"warp_error": m["warp_error"], "dream_strength": m["dream_strength"]}


def run(ctx: Context) -> dict:
    commit = getattr(ctx.args, "base", None) or os.environ.get("BENCH_BASE")
    banner("base: deepdream video against a baseline commit (interleaved, same frames)")
    if not commit:
        print("  skipped: set BENCH_BASE=<commit> (or --base) to compare with a baseline")
        return {"skipped": "no BENCH_BASE"}
    frames = FRAMES_QUICK if ctx.quick else FRAMES
    rounds = ROUNDS_QUICK if ctx.quick else ROUNDS
    rows, res = [], {"baseline": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="bench_base_") as td:
        tmp = Path(td)
        base = _worktree(commit, tmp)
        try:
            print(f"  baseline {commit} at {base}; input {SRC.name}, {frames} frames, default preset, "
                  f"{rounds} round(s), each side in its own process")
            for k in range(rounds):
                if k and ctx.budget.left() < 1.2 * sum(r["wall_s"] for r in rows[-2:]):
                    print(f"  rounds cut to {k} by the budget")
                    break
                for side, tree in (("baseline", base), ("new", REPO)):
                    dst = tmp / f"{side}_{k}.mp4"
                    wall = _render(tree, SRC, dst, frames, None)
                    row = {"side": side, "round": k, "wall_s": wall} | _metrics(SRC, dst)
                    rows.append(row)
                    res[side].append(row)
                    print(f"  [{ctx.budget.elapsed():6.1f} s] round {k} {side:8s} {wall:6.1f} s  "
                          f"warp {row['warp_error']:.1f}  strength {row['dream_strength']:.1f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                           capture_output=True)
            shutil.rmtree(base, ignore_errors=True)
    med = {s: {k: statistics.median(r[k] for r in v) for k in ("wall_s", "warp_error", "dream_strength")}
           for s, v in res.items() if v}
    if len(med) == 2:
        b, n = med["baseline"], med["new"]
        ratio = {"speed": b["wall_s"] / n["wall_s"], "warp_error": n["warp_error"] / b["warp_error"],
                 "dream_strength": n["dream_strength"] / b["dream_strength"]}
        print()
        print(table(["", "wall s (median)", "fps", "warp error", "dream strength"],
                    [[s, f"{m['wall_s']:.1f}", f"{frames / m['wall_s']:.2f}", f"{m['warp_error']:.1f}",
                      f"{m['dream_strength']:.1f}"] for s, m in med.items()],
                    right=[False, True, True, True, True]))
        print(f"  new / baseline: {ratio['speed']:.2f}x faster (wall clock, model load included); warp error "
              f"x{ratio['warp_error']:.2f} (goal <= 1.15), dream strength x{ratio['dream_strength']:.2f} "
              "(goal >= 0.9)")
        return {"commit": commit, "frames": frames, "rows": rows, "median": med, "ratio": ratio}
    return {"commit": commit, "rows": rows}
