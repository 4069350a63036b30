"""Section `dream`: ms per dream iteration and peak memory, with side-by-side ratios.

One iteration = one `stages.dream.ascent.ascent_step` (jitter + forward to the model's default layer + backward
to the input + normalised step), batch 1. Rows: device × model (efficientnet_lite0 with its real
weights, googlenet with random weights) × 512×512 / 1920×1080, and side by side in the same run:
frozen vs unfrozen parameters, tiled (512) vs untiled, on CUDA fp32 vs autocast and NCHW vs
channels_last, and a 4000×3000 image dreamed with tile=512 next to the 512×512 row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, replace
from functools import partial

from bench.case import LITE0, RESULT_TAG, Case, estimate_s, iters_that_fit, load_net, run_case
from bench.common import MIB, REPO, Context, banner, fmt_mib, fmt_ms, fmt_ratio, table

GOOGLENET = "googlenet"
MODELS = (LITE0, GOOGLENET)
SHORT = {LITE0: "lite0", GOOGLENET: "googlenet"}
SMALL, HD, HUGE = (512, 512), (1080, 1920), (3000, 4000)  # (h, w)
ENGINE_TILE_BATCH = 32 * 512 * 512  # pipeline.render.engine on CUDA: up to 32 tiles per forward (memory allowing)


# -------------------------------------------------- plans (priority order: the budget cuts the tail)


def plan_cpu(quick: bool) -> list[Case]:
    n_small, n_hd = (2, 1) if quick else (3, 2)
    c = partial(Case, device="cpu", warmup=1, cap_s=10.0 if quick else 20.0)
    tiled = partial(c, tile=512, warm_at_tile=True, variant="tile512")
    cases = [
        c(model=LITE0, h=SMALL[0], w=SMALL[1], iters=n_small),
        c(model=GOOGLENET, h=SMALL[0], w=SMALL[1], iters=n_small),
        c(model=LITE0, h=HD[0], w=HD[1], iters=n_hd),
        c(model=LITE0, h=SMALL[0], w=SMALL[1], iters=n_small, frozen=False, variant="unfrozen"),
        c(model=GOOGLENET, h=SMALL[0], w=SMALL[1], iters=n_small, frozen=False, variant="unfrozen"),
        tiled(model=LITE0, h=HD[0], w=HD[1], iters=n_hd),
        tiled(model=LITE0, h=HUGE[0], w=HUGE[1], iters=1),
    ]
    if not quick:
        cases += [c(model=GOOGLENET, h=HD[0], w=HD[1], iters=n_hd),
                  tiled(model=GOOGLENET, h=HD[0], w=HD[1], iters=1),
                  c(model=LITE0, h=HD[0], w=HD[1], iters=1, frozen=False, variant="unfrozen")]
    return cases


def plan_cuda(quick: bool) -> list[Case]:
    (w_s, n_s), (w_h, n_h), (w_u, n_u) = ((2, 10), (1, 5), (1, 2)) if quick else ((3, 20), (2, 10), (1, 3))
    cases: list[Case] = []
    for m in MODELS:
        for (h, w), warm, n in ((SMALL, w_s, n_s), (HD, w_h, n_h)):
            c = partial(Case, device="cuda", model=m, h=h, w=w, warmup=warm, iters=n, cap_s=5.0)
            cases += [c(), c(frozen=False, variant="unfrozen"), c(amp=True, variant="amp"),
                      c(channels_last=True, variant="cl"), c(amp=True, channels_last=True, variant="amp+cl")]
            if (h, w) == HD:
                cases += [c(tile=512, variant="tile512"),
                          c(tile=512, amp=True, channels_last=True, tile_batch_px=ENGINE_TILE_BATCH,
                            variant="engine")]
        c = partial(Case, device="cuda", model=m, h=HUGE[0], w=HUGE[1], warmup=w_u, iters=n_u, cap_s=10.0)
        cases += [c(tile=512, variant="tile512"),
                  c(tile=512, amp=True, channels_last=True, tile_batch_px=ENGINE_TILE_BATCH,
                    variant="engine")]
    return cases


VARIANTS = {
    "fp32": "frozen params (FeatureNet.finalize), fp32, NCHW, untiled (tile=0)",
    "unfrozen": "as fp32 but net.requires_grad_(True)",
    "tile512": "as fp32 but Schedule(tile=512): 512² tiles, 128 px feathered overlap, one per forward",
    "amp": "as fp32 under torch.autocast(amp_dtype_for(device))",
    "cl": "as fp32 with model and input in channels_last",
    "amp+cl": "autocast + channels_last, untiled",
    "engine": "what DreamEngine runs on CUDA: tile=512, up to 32 tiles per forward, autocast, channels_last",
}


# ---------------------------------------------------------------- running


def _run_subprocess(case: Case, timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "bench.case", json.dumps(asdict(case))]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return asdict(case) | {"error": f"timed out after {timeout_s:.0f} s",
                               "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):]) | {"wall_s": wall}
    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
    return asdict(case) | {"error": f"exit {p.returncode}: {tail[:160]}", "wall_s": wall}


class _Nets:
    """In-process CUDA models, built once per (model, frozen, channels_last)."""

    def __init__(self) -> None:
        self.cache: dict = {}

    def get(self, case: Case):
        key = (case.model, case.frozen, case.channels_last)
        if key not in self.cache:
            self.cache[key] = load_net(case.model, case.device, frozen=case.frozen,
                                       channels_last=case.channels_last)
        return self.cache[key]


def _progress(res: dict, elapsed: float) -> None:
    head = f"  [{elapsed:6.1f} s] {res['device']:4} {SHORT[res['model']]:9} {res['w']}x{res['h']:<5} " \
           f"{res['variant']:9}"
    if res.get("error") or res.get("skipped"):
        print(f"{head} {res.get('skipped') or res.get('error')}", flush=True)
        return
    print(f"{head} {fmt_ms(res['ms_median'])} ms/iter over {res['iters_done']}, "
          f"peak {fmt_mib(res['peak_bytes'])} MiB", flush=True)


def run_device(ctx: Context, device: str) -> list[dict]:
    cases = plan_cuda(ctx.quick) if device == "cuda" else plan_cpu(ctx.quick)
    nets = _Nets() if device == "cuda" else None
    refs: dict[str, float] = {}  # model → ms at 512² fp32 (estimates the rest)
    overhead = 3.0 if device == "cuda" else 8.0  # process start + imports + model load (CPU runs)
    results: list[dict] = []
    for case in cases:
        left = ctx.budget.left()
        fit = iters_that_fit(case, left, refs.get(case.model), overhead)
        if fit < 1:
            fixed, per = estimate_s(case, refs[case.model], overhead) if case.model in refs else (0, 0)
            res = asdict(case) | {"skipped": f"skipped: needs ~{fixed + per:.0f} s, {max(left, 0):.0f} s "
                                             f"of the budget left (--budget)"}
        else:
            cut = fit < case.iters
            if cut:
                case = replace(case, iters=fit)
            if device == "cuda":
                res = run_case(case, nets.get(case))
            else:
                res = _run_subprocess(case, timeout_s=max(30.0, left + 30.0))
                if res.get("wall_s") and "warm_s" in res and res.get("ms"):
                    overhead = max(overhead * 0.5, res["wall_s"] - res["warm_s"] - sum(res["ms"]) / 1000)
            if cut:
                res["note"] = f"iterations cut to {fit} by the budget"
        if case.variant == "fp32" and (case.h, case.w) == SMALL and res.get("ms_min"):
            refs[case.model] = res["ms_min"]
        results.append(res)
        _progress(res, ctx.budget.elapsed())
    return results


# ---------------------------------------------------------------- report


def _find(results: list[dict], device: str, model: str, hw: tuple[int, int], variant: str) -> dict | None:
    for r in results:
        if (r["device"], r["model"], (r["h"], r["w"]), r["variant"]) == (device, model, hw, variant) \
                and r.get("ms_median") is not None:
            return r
    return None


def ratios(results: list[dict]) -> list[dict]:
    """Each comparison as ms and peak-memory ratios, variant / baseline, both measured in this run."""
    pairs = [("unfrozen", "fp32", "unfrozen / frozen", (SMALL, HD)),
             ("tile512", "fp32", "tiled(512) / untiled", (HD,)),
             ("amp", "fp32", "autocast / fp32", (SMALL, HD)),
             ("cl", "fp32", "channels_last / NCHW", (SMALL, HD)),
             ("amp+cl", "fp32", "autocast+CL / fp32 NCHW", (SMALL, HD)),
             ("engine", "tile512", "engine tiled / plain tiled", (HD, HUGE))]
    out = []

    def row(device: str, model: str, size: str, what: str, a: dict, b: dict) -> dict:
        return {"device": device, "model": model, "size": size, "what": what,
                "ms_ratio": a["ms_min"] / b["ms_min"],
                "peak_ratio": a["peak_bytes"] / b["peak_bytes"] if b["peak_bytes"] else None,
                "peak_bytes": a["peak_bytes"], "peak_bytes_base": b["peak_bytes"]}

    for device in ("cpu", "cuda"):
        for model in MODELS:
            for var, base, label, sizes in pairs:
                for hw in sizes:
                    a, b = _find(results, device, model, hw, var), _find(results, device, model, hw, base)
                    if a and b:
                        out.append(row(device, model, f"{hw[1]}x{hw[0]}", label, a, b))
            big = _find(results, device, model, HUGE, "tile512")
            small = _find(results, device, model, SMALL, "fp32")
            if big and small:
                out.append(row(device, model, "4000x3000", "4000x3000 tile512 / 512x512", big, small))
    return out


def print_report(results: list[dict], rats: list[dict]) -> None:
    rows = []
    for r in results:
        notes = [n for n in (r.get("skipped"), r.get("error"), r.get("warning"), r.get("note")) if n]
        if r.get("ms") and r["tile"] and (r["h"] > r["tile"] or r["w"] > r["tile"]):
            notes.append(f"{r['work_px'] // (min(r['tile'], r['h']) * min(r['tile'], r['w']))} tiles")
        if r.get("ms") and r.get("iters_done", 0) < r["iters"]:
            notes.append(f"stopped after {r['iters_done']} (cap {r['cap_s']:.0f} s)")
        note = "; ".join(notes)
        rows.append([r["device"], SHORT[r["model"]], f"{r['w']}x{r['h']}", r["variant"],
                     str(r.get("iters_done", "-")), fmt_ms(r.get("ms_median")), fmt_ms(r.get("ms_min")),
                     fmt_ms(r.get("cpu_ms_median")),
                     fmt_ms(r.get("ms_per_mpx")), fmt_mib(r.get("peak_bytes")), note])
    print()
    heads = ["device", "model", "size", "variant", "iters", "ms/iter", "min ms", "CPU ms", "ms/MP",
             "peak MiB", "note"]
    print(table(heads, rows, right=[False] * 4 + [True] * 6 + [False]))
    mem = sorted({r["mem_kind"] for r in results if r.get("mem_kind")})
    for m in mem:
        print(f"  peak MiB: {m}")
    print("  ms/iter: median of the timed iterations after warm-up (tiled CPU rows warm up on one tile);")
    print("  min ms: the fastest one, which the ratios below use (robust to other load on a shared CPU);")
    print("  CPU ms: process CPU time per iteration, all threads (wall >> CPU/threads: the CPU was shared)")
    if rats:
        print("\nratios (variant / baseline, both measured in this run; ms from the fastest iteration)")
        print(table(["device", "model", "size", "comparison", "ms", "peak mem"],
                    [[q["device"], SHORT[q["model"]], q["size"], q["what"], f"x{q['ms_ratio']:.2f}",
                      f"x{q['peak_ratio']:.2f}" if q["peak_ratio"] is not None else "n/a"] for q in rats],
                    right=[False, False, False, False, True, True]))
    for q in rats:
        if q["size"] == "4000x3000":
            print(f"  {q['device']} {SHORT[q['model']]}: 4000x3000 with tile=512 peaks at "
                  f"{q['peak_bytes'] / MIB:.0f} MiB vs {q['peak_bytes_base'] / MIB:.0f} MiB for 512x512 "
                  f"({fmt_ratio(q['peak_bytes'], q['peak_bytes_base'])}; the image is x45.8 the pixels)")


def run(ctx: Context) -> dict:
    banner("dream: ms per iteration (one ascent_step) and peak memory")
    print("settings: batch 1; layer = the model's default (lite0 block9, googlenet inception4c); "
          "lite0 real weights, googlenet random weights; jitter 32, step 1.5")
    print(f"  mode {'--quick' if ctx.quick else 'default'}, devices {', '.join(ctx.devices)}, "
          f"budget {ctx.budget.total_s:.0f} s for the run; CPU cases each in a fresh process")
    for k, v in VARIANTS.items():
        print(f"  {k:9} {v}")
    results: list[dict] = []
    for device in ctx.devices:
        results += run_device(ctx, device)
    rats = ratios(results)
    print_report(results, rats)
    return {"cases": results, "ratios": rats, "variants": VARIANTS}
