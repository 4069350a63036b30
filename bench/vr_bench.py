"""Section `vr`: 360° equirect cost of seam wrapping, and the seam / pole report.

(a) A 3840×1920 equirect frame (`sample_media/testRoom1_2kMono.jpg` resized): ms per dream iteration,
    one `stages.dream.ascent.ascent_step` with the engine's schedule and tile=512, wrap handling on
    (`wrap_x=True`, pole_exponent 1: tiles wrap across the 0/360° meridian, feathered on both ends)
    vs off (`wrap_x=False`), as a ratio measured in the same run.
(b) The seam report: testRoom1_2kMono at 512×256, `dream.octaves=3, dream.iterations=10`, yawed by a few
    column counts (not multiples of 128: the room's grid lines sit at 90°), dreamed with spherical wrap
    on (`wrap_x=True, pole_exponent=1.0`) and off (`wrap_x=False, pole_exponent=0`); `seam_stats` of the
    residual and `pole_stats`, per rotation and the mean; PNG crops of the seam (rolled by W/2 so the
    seam is in the middle, ±96 columns, ×2 nearest) under out/bench/.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import replace

from bench.common import REPO, Context, banner, table

IMG = REPO / "sample_media" / "testRoom1_2kMono.jpg"
OUT_DIR = REPO / "out" / "bench"
BIG = (1920, 3840)  # (h, w)
SEAM = (256, 512)
ROTATIONS = (37, 101, 219, 333)
ROTATIONS_QUICK = (37, 219)
CROP = 96
TILE = 512
MODES = (("on", True, 1.0), ("off", False, 0.0))  # label, wrap_x, pole_exponent


def _read_rgb(size_hw: tuple[int, int]):
    import cv2

    bgr = cv2.imread(str(IMG), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(IMG)
    h, w = size_hw
    interp = cv2.INTER_AREA if w < bgr.shape[1] else cv2.INTER_CUBIC
    return cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=interp), cv2.COLOR_BGR2RGB)


class _Engines:
    def __init__(self) -> None:
        self.cache: dict = {}

    def get(self, device: str):
        if device not in self.cache:
            from pipeline.config import load_config
            from pipeline.render.engine import DreamEngine

            cfg = load_config("default", ["dream.octaves=3", "dream.iterations=10", f"dream.tile={TILE}",
                                          f"dream.device={device}"])
            t = time.perf_counter()
            self.cache[device] = DreamEngine(cfg)
            self.cache[device].load_s = time.perf_counter() - t
        return self.cache[device]

    def drop(self, device: str) -> None:
        self.cache.pop(device, None)
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()


def _tiles(h: int, w: int, wrap: bool) -> tuple[int, int]:
    """Tile grid (x, y) of one iteration, at the middle tile offset (the real one is random per step)."""
    from stages.dream.ascent import tile_starts

    ov = max(8, TILE // 4)
    ny = len(tile_starts(h, min(TILE, h), ov, (TILE - ov) // 2, wrap=False))
    nx = len(tile_starts(w, min(TILE, w), ov, (TILE - ov) // 2, wrap=wrap))
    return nx, ny


# ---------------------------------------------------------------- (a) ms per iteration, wrap on / off


def iteration_cost(ctx: Context, eng, device: str) -> dict:
    import torch

    from stages.dream import ascent as D

    cuda = device == "cuda"
    h, w = BIG
    x = D.to_tensor(_read_rgb(BIG), eng.device)
    gen = torch.Generator().manual_seed(0)
    schs = {lab: replace(eng.schedule, tile=TILE, equirect=True, wrap_x=wrap, pole_exponent=pe)
            for lab, wrap, pe in MODES}
    tiles = {lab: _tiles(h, w, wrap) for lab, wrap, _ in MODES}

    def step(sch, img) -> float:
        t = time.perf_counter()
        D.ascent_step(img, eng.net, eng.objective, sch, gen, eng.amp)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    res = {"device": device, "size": f"{w}x{h}", "tile": TILE,
           "tiles": {k: list(v) for k, v in tiles.items()},
           "tile_batch_px": eng.schedule.tile_batch_px, "amp": str(eng.amp)}
    # Warm up on one tile-sized crop (every tile has that shape); it also prices a tile for the budget.
    crop = x[:, :, :TILE, :TILE].clone()  # keeps the engine's memory format
    step(schs["off"], crop)
    t_tile = step(schs["off"], crop)
    n_tiles = max(a * b for a, b in tiles.values())
    per_iter = n_tiles * t_tile * (0.5 if cuda and eng.schedule.tile_batch_px else 1.1)
    warm, reps = (1, 3 if ctx.quick else 5) if cuda else (0, 1)
    need = 2 * (warm + reps) * per_iter + 2.0
    res["estimate_s"] = need
    if need > ctx.budget.left():
        return res | {"skipped": f"skipped: ~{need:.0f} s needed ({2 * (warm + reps)} iterations of ~"
                                 f"{per_iter:.1f} s), {max(ctx.budget.left(), 0):.0f} s of the budget left"}
    for _ in range(warm):
        for lab in schs:
            step(schs[lab], x)
    times: dict[str, list[float]] = {lab: [] for lab in schs}
    for _ in range(reps):  # interleaved, so drift in the machine's load hits both alike
        for lab in schs:
            times[lab].append(step(schs[lab], x))
    del x
    for lab, ts in times.items():
        res[lab] = {"ms": [1000 * t for t in ts], "ms_median": 1000 * statistics.median(ts),
                    "ms_min": 1000 * min(ts)}
    res["ratio_on_off"] = res["on"]["ms_min"] / res["off"]["ms_min"]
    return res


# ---------------------------------------------------------------- (b) seam and pole report


def _seam_crop(dreamed):
    import cv2
    import numpy as np

    from stages.dream.ascent import quantize

    w = dreamed.shape[1]
    c = np.roll(quantize(dreamed), w // 2, axis=1)[:, w // 2 - CROP:w // 2 + CROP]
    return cv2.resize(c, (c.shape[1] * 2, c.shape[0] * 2), interpolation=cv2.INTER_NEAREST)


def _labelled(img, text: str):
    import cv2
    import numpy as np

    head = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(head, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    mid = img.shape[1] // 2
    cv2.line(head, (mid, 22), (mid, 27), (0, 0, 255), 1)  # marks the seam without covering it
    return np.concatenate([head, img])


def _write_png(path, rgb) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def seam_report(ctx: Context, eng, device: str) -> dict:
    import numpy as np

    from stages.measure.metrics import pole_stats, seam_stats

    src = _read_rgb(SEAM)
    w = src.shape[1]
    rots = ROTATIONS_QUICK if ctx.quick else ROTATIONS
    rows: list[dict] = []
    crops: dict = {}
    per_dream = None
    notes = []
    for i, k in enumerate(rots):
        if per_dream is not None and 2 * per_dream * 1.5 > ctx.budget.left():
            notes.append(f"rotations cut to {i} of {len(rots)} by the budget "
                         f"({max(ctx.budget.left(), 0):.0f} s "
                         f"left, ~{2 * per_dream:.0f} s per rotation)")
            break
        s = np.roll(src, k, axis=1)
        for lab, wrap, pe in MODES:
            t = time.perf_counter()
            d = eng.dream(s, frame_index=0, schedule=replace(eng.schedule, equirect=True, wrap_x=wrap,
                                                             pole_exponent=pe))
            dt = time.perf_counter() - t
            per_dream = dt if per_dream is None else max(per_dream, dt)
            res = d - s.astype(np.float32)
            ctl = seam_stats(np.roll(res, w // 2, axis=1))  # the same stats at an interior meridian
            r = {"rotation": k, "wrap": lab, "dream_s": dt} | seam_stats(res) | pole_stats(s, d) \
                | {"ctl_continuity": ctl["continuity"], "ctl_band": ctl["band"]}
            rows.append(r)
            if i == 0:
                crops[lab] = _seam_crop(d)
    means = {}
    for lab, _, _ in MODES:
        sel = [r for r in rows if r["wrap"] == lab]
        if sel:
            means[lab] = {m: float(np.mean([r[m] for r in sel])) for m in
                          ("continuity", "band", "ctl_continuity", "ctl_band", "row_variance_ratio",
                           "pole_residual_ratio", "dream_s")}
    paths = {}
    if crops:
        k0 = rots[0]
        for lab, img in crops.items():
            paths[lab] = OUT_DIR / f"seam_wrap_{lab}.png"
            _write_png(paths[lab], img)
        if len(crops) == 2:
            gap = np.full((crops["on"].shape[0] + 28, 8, 3), 255, np.uint8)
            both = np.concatenate([_labelled(crops["on"], f"wrap on, yaw {k0} px"), gap,
                                   _labelled(crops["off"], f"wrap off, yaw {k0} px")], axis=1)
            paths["compare"] = OUT_DIR / "seam_compare.png"
            _write_png(paths["compare"], both)
    return {"device": device, "size": f"{w}x{src.shape[0]}", "rotations": list(rots), "rows": rows,
            "means": means, "pngs": {k: str(v) for k, v in paths.items()}, "notes": notes}


# ---------------------------------------------------------------- report


def _print_cost(costs: list[dict]) -> None:
    print(f"\n(a) ms per dream iteration at {BIG[1]}x{BIG[0]} equirect, tile={TILE} "
          "(one ascent_step, the engine's schedule)")
    rows = []
    for c in costs:
        tl = c.get("tiles", {})
        if c.get("skipped") or c.get("error"):
            rows.append([c["device"], "-", "-", "-", "-", "-", c.get("skipped") or c.get("error")])
            continue
        for lab, _, _ in MODES:
            nx, ny = tl[lab]
            rows.append([c["device"], lab, f"{nx}x{ny}", str(len(c[lab]["ms"])), f"{c[lab]['ms_median']:.0f}",
                         f"{c[lab]['ms_min']:.0f}", ""])
        rows.append([c["device"], "on/off", "", "", "", f"x{c['ratio_on_off']:.2f}",
                     "ratio of the fastest iterations"])
    print(table(["device", "wrap", "tiles x*y", "iters", "ms/iter", "min ms", "note"], rows,
                right=[False, False, True, True, True, True, False]))
    print("  tiles: grid at the middle tile offset (each step draws a random one); wrap on tiles the row "
          "modulo W, feathers both ends and yaws only")
    for c in costs:
        if c.get("tile_batch_px"):
            print(f"  {c['device']}: {c['tile_batch_px'] // (TILE * TILE)} tiles per forward, "
                  f"autocast {c['amp']}")


def _print_seam(rep: dict) -> None:
    print(f"\n(b) seam and pole report: {IMG.name} at {rep['size']}, dream.octaves=3, dream.iterations=10, "
          f"{rep['device']}")
    rows = [[str(r["rotation"]), r["wrap"], f"{r['continuity']:.3f}", f"{r['band']:.3f}",
             f"{r['ctl_continuity']:.3f}", f"{r['ctl_band']:.3f}", f"{r['row_variance_ratio']:.2f}",
             f"{r['pole_residual_ratio']:.3f}", f"{r['dream_s']:.1f}"] for r in rep["rows"]]
    for lab, m in rep["means"].items():
        rows.append(["mean", lab, f"{m['continuity']:.3f}", f"{m['band']:.3f}", f"{m['ctl_continuity']:.3f}",
                     f"{m['ctl_band']:.3f}", f"{m['row_variance_ratio']:.2f}",
                     f"{m['pole_residual_ratio']:.3f}", f"{m['dream_s']:.1f}"])
    print(table(["yaw px", "wrap", "continuity", "band", "ctl cont", "ctl band", "pole row var", "pole resid",
                 "dream s"], rows, right=[True, False] + [True] * 7))
    print("  continuity: |r(col 0) - r(col W-1)| / mean adjacent-column |dr| (about 1 = seamless, "
          "> 1 a cut); "
          "band: |r| within W/64 of the seam / mean |r| (about 1)")
    print("  ctl cont / ctl band: the same two stats at the meridian half a turn away (residual rolled by "
          "W/2): the image's own level")
    print("  pole row var: horizontal variance of the top/bottom W/32 rows, dreamed / source "
          "(1 = unchanged); "
          "pole resid: |r| in those rows / mean |r| (< 1: poles dreamed less)")
    print("  wrap on: wrap_x=True, pole_exponent=1.0; off: wrap_x=False, pole_exponent=0 "
          "(a flat frame's dream)")
    for n in rep["notes"]:
        print(f"  note: {n}")
    for lab, p in rep["pngs"].items():
        print(f"  png ({lab}): {p}")


def run(ctx: Context) -> dict:
    banner("vr: 360° equirect — wrap cost per iteration, seam and pole report")
    engines = _Engines()
    out: dict = {"costs": [], "seam": None}
    # The seam report runs first (one device: the first one), then the per-iteration cost per device.
    dev0 = ctx.devices[0]
    if ctx.budget.left() > (15 if dev0 == "cuda" else 45):  # a CPU rotation (2 dreams) takes ~40 s
        try:
            out["seam"] = seam_report(ctx, engines.get(dev0), dev0)
        except Exception as e:  # keep (a) alive
            out["seam"] = {"error": f"{type(e).__name__}: {e}"}
    else:
        out["seam"] = {"skipped": f"skipped: {max(ctx.budget.left(), 0):.0f} s of the budget left"}
    for dev in ctx.devices:
        if ctx.budget.left() < 10:
            left = max(ctx.budget.left(), 0)
            out["costs"].append({"device": dev, "skipped": f"skipped: {left:.0f} s left"})
            continue
        out["costs"].append(iteration_cost(ctx, engines.get(dev), dev))
        engines.drop(dev)
        print(f"  [{ctx.budget.elapsed():6.1f} s] {dev} {BIG[1]}x{BIG[0]} done", flush=True)
    _print_cost(out["costs"])
    seam = out["seam"]
    if seam and seam.get("rows"):
        _print_seam(seam)
    else:
        print(f"\n(b) seam report: {(seam or {}).get('skipped') or (seam or {}).get('error')}")
    return out
