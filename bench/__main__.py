"""`python -m bench [--quick] [--only dream[,video,...]] [--device cpu|cuda|all] [--json PATH]`.

Prints the machine, then each selected section's table. To add a section (e.g. `video`, `vr`):
write `bench/<name>_bench.py` with `run(ctx: bench.common.Context) -> dict` that prints its table
(use `common.banner` / `common.table`) and returns JSON-able numbers, honour `ctx.quick`,
`ctx.devices` and `ctx.budget.left()`, then add one line to SECTIONS below. Sections are imported
lazily: one that fails to import or raises is reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.common import Budget, Context, machine_info, print_machine

# name → (module, function, one-line description); run in this order.
SECTIONS: dict[str, tuple[str, str, str]] = {
    "dream": ("bench.dream_bench", "run",
              "ms per dream iteration + peak memory: models x sizes, frozen, tiled, amp, 4000x3000"),
    "video": ("bench.video_bench", "run", "decode → dream → encode frames per second"),
    "vr": ("bench.vr_bench", "run", "360° equirect: wrap cost per iteration, seam and pole report"),
    "sphere": ("bench.sphere_bench", "run", "360° equirect vs sphere-true dreaming: pole streaks, pole strength, "
               "seam, cost"),
    "stereo": ("bench.stereo_bench", "run", "360° stereo: one dream carried to the other eye vs independent eyes"),
    "pulse": ("bench.pulse_bench", "run", "key-frame pulse: worst pair / median warp error, lossless vs encoded, "
              "same dream, file size"),
    "scale": ("bench.scale_bench", "run", "Ray with 2 CPU workers vs one process: speed-up, pop where chunks meet"),
    "feed": ("bench.feed_bench", "run", "everything around the dream (decode, flow, warp, encode) at 1080p and "
             "3840x1920 equirect, now vs before"),
    "zoom": ("bench.zoom_bench", "run", "deepdream animate: detail kept over 300 frames of infinite zoom, per "
             "resampling kernel, with and without the re-dream"),
    "base": ("bench.base_bench", "run", "deepdream video against BENCH_BASE=<commit>, interleaved"),
}

# Whole-run wall-clock budgets (s): CPU-only machine / with CUDA (CUDA cases run first there).
DEFAULT_BUDGET = {"cpu": 450.0, "cpu_quick": 240.0, "cuda": 180.0, "cuda_quick": 150.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="sections:\n" + "\n".join(f"  {k:8} {v[2]}"
                                                                    for k, v in SECTIONS.items()))
    p.add_argument("--quick", action="store_true", help="fewer iterations, skip the slowest CPU cases")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "all"), default="auto",
                   help="auto/all: CUDA (when present) then CPU; or one of them")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds for the whole run; cases that would not fit are skipped and "
                        "listed (default: 450 on CPU, 240 with --quick; 180 when CUDA is present)")
    p.add_argument("--json", metavar="PATH", help="write every measured number to PATH")
    p.add_argument("--base", metavar="COMMIT", default=None,
                   help="baseline commit for the `base` section (default: $BENCH_BASE; none: skipped)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section {unknown[0]!r}; choose from: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    import torch

    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        print("error: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    devices = {"cpu": ["cpu"], "cuda": ["cuda"]}.get(args.device, ["cuda", "cpu"] if has_cuda else ["cpu"])
    key = ("cuda" if "cuda" in devices else "cpu") + ("_quick" if args.quick else "")
    budget = Budget(args.budget if args.budget is not None else DEFAULT_BUDGET[key], start=t0)
    info = machine_info()
    print_machine(info)
    print(f"  run            sections {', '.join(only)}; devices {', '.join(devices)}; "
          f"{'--quick' if args.quick else 'default'} mode; budget {budget.total_s:.0f} s")
    ctx = Context(quick=args.quick, devices=devices, budget=budget, machine=info, args=args)
    report: dict = {"machine": info, "argv": sys.argv[1:], "devices": devices, "quick": args.quick,
                    "budget_s": budget.total_s, "sections": {}}
    status = 0
    for name in only:
        module, func, _ = SECTIONS[name]
        t = time.perf_counter()
        try:
            result = getattr(importlib.import_module(module), func)(ctx)
        except Exception as e:  # one broken section must not hide the others
            traceback.print_exc()
            print(f"section {name} failed: {type(e).__name__}: {e}")
            result, status = {"error": f"{type(e).__name__}: {e}"}, 1
        result["wall_s"] = time.perf_counter() - t
        report["sections"][name] = result
    wall = time.perf_counter() - t0
    report["wall_s"] = wall
    report["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    la = report["loadavg_end"]
    print(f"\ntotal wall time {wall:.1f} s" + (f"; load average at end {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"
                                             if la else ""))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
