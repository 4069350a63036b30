"""Stereo carry vs independent eyes: stereo correlation, dream cost, re-dreamed share, temporal chain.

Inputs: the committed synthetic stereo clip `sample_media/stereo_room_tb.mp4` (512×512 top-bottom, eyes
512×256) and a still made from `testRoom1_2kMono.jpg` by the same generator, whose ground-truth disparity
and half-occlusions are known (`make_stereo_sample.synth_pair`). Modes, paired on the same input and seed:

* independent: today's frame step, both eyes as one batch of two with one generator;
* carry: `stages.vr.stereo.dream_stereo` (left eye dreamed, residual carried by disparity, unreliable
  right-eye pixels dreamed on a crop atlas);
* carry-full: the same with the masked ascent over the whole right eye (no crops): the exact reference.

Correlation = `stages.measure.vr_metrics_stereo` on the 8-bit outputs with three disparities: the issue's (DIS
on the source eyes, the carry's own estimator), Farneback (an independent estimator) and the ground
truth. Cost = CPU seconds of this process per stereo frame (one torch thread), modes interleaved.
Temporal chain: frames 0..N−1, each eye continued with `stages.temporal.warp.temporal_init` and DIS flow between
consecutive source frames (blend 0.9, 3 warm iterations per octave, seed + frame index).

    PYTHONPATH=. OMP_NUM_THREADS=1 python -m bench.stereo_bench [--frames 0,12] [--chain 6] [--big] [--json P]

Measured (AMD EPYC, 2 cores shared with other jobs, 1 torch thread, CPU seconds; `--big`):

    input           mode         corr DIS  Farneback  GT     re-dreamed  right cost  CPU s  vs indep
    clip f0         independent  0.304     0.297      0.311  1.000       1.00        11.5   1.00
    clip f0         carry        0.997     0.897      0.917  0.022       0.29         8.9   0.77
    clip f12        independent  0.298     0.303      0.299  1.000       1.00        11.5   1.00
    clip f12        carry        0.997     0.900      0.938  0.022       0.22         7.6   0.66
    still 512x256   independent  0.326     0.329      0.328  1.000       1.00        11.3   1.00
    still 512x256   carry        0.998     0.895      0.933  0.022       0.53         8.0   0.70
    still 1024x512  independent  0.310     0.314      0.313  1.000       1.00        69.5   1.00
    still 1024x512  carry        0.998     0.816      0.898  0.013       0.13        33.5   0.48
    (carry-full, the masked ascent over the whole right eye: same correlations, 0.81-1.15 x independent)

A batch of two eyes costs only 1.87x one eye on this CPU at 512x256, so carry cannot go below ~0.53 of
it there; the crops' fixed context margin weighs less on larger eyes. Temporal chain (6 frames): carry
0.997-0.999 (GT 0.917 -> 0.953) every frame, independent 0.30-0.34; right-eye warp error 206.8 (carry)
vs 199.9 (independent), source floor 102.2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.common import REPO, banner, machine_info, print_machine, table

CLIP = REPO / "sample_media" / "stereo_room_tb.mp4"
STILL = REPO / "sample_media" / "testRoom1_2kMono.jpg"
MODES = ("independent", "carry", "carry-full")


def _generator_module():
    sys.path.insert(0, str(REPO / "sample_media"))
    import make_stereo_sample

    return make_stereo_sample


class Bench:
    def __init__(self, iterations: int = 10, warm: int = 3) -> None:
        import torch

        from stages.dream import zoo
        from stages.dream.ascent import Objective, Schedule
        from stages.temporal.flow import FlowEstimator

        torch.set_num_threads(1)
        self.net = zoo.build_model("efficientnet_lite0")
        self.obj = Objective({n: 1.0 for n in zoo.DEFAULT_LAYERS["efficientnet_lite0"]})
        self.sch = Schedule(octaves=4, iterations=iterations, equirect=True, wrap_x=True, pole_exponent=1.0)
        self.warm = replace(self.sch, iterations=warm)
        self.dis, self.fb = FlowEstimator("dis"), FlowEstimator("farneback")

    def dream(self, mode: str, L, R, disp, sch, seed: int, left_init=None, right_init=None) -> dict:
        """One stereo frame in `mode`; returns eyes (float 0..255), CPU seconds and carry statistics."""
        import torch

        from stages.dream.ascent import dream_octaves, to_array, to_tensor
        from stages.vr.stereo import dream_stereo

        cpu = torch.device("cpu")
        t = time.process_time()
        if mode == "independent":
            x = torch.cat([to_tensor(left_init if left_init is not None else L, cpu),
                           to_tensor(right_init if right_init is not None else R, cpu)])
            y = dream_octaves(x, self.net, self.obj, sch, torch.Generator().manual_seed(seed))
            out = {"left": to_array(y[:1]), "right": to_array(y[1:]), "redreamed": 1.0, "right_cost": 1.0}
        else:
            r = dream_stereo(L, R, disp, self.net, self.obj, sch, seed, left_init=left_init, right_init=right_init,
                             crops=mode == "carry")
            out = {"left": r.left, "right": r.right, "redreamed": r.redreamed, "right_cost": r.right_cost}
        out["cpu_s"] = time.process_time() - t
        return out

    def stats(self, L, R, out: dict, disp, gt) -> dict:
        from stages.dream.ascent import quantize
        from stages.measure.vr_metrics_stereo import stereo_stats

        dl, dr = quantize(out["left"]), quantize(out["right"])
        s = stereo_stats(L, R, dl, dr, disp=disp)
        fb = stereo_stats(L, R, dl, dr, estimator=self.fb)
        res = {"corr_dis": s["correlation"], "corr_farneback": fb["correlation"],
               "strength_left": s["strength_left"], "strength_right": s["strength_right"],
               "source_corr_dis": s["source_correlation"]}
        if gt is not None:
            g = stereo_stats(L, R, dl, dr, disp=gt)
            res |= {"corr_gt": g["correlation"], "source_corr_gt": g["source_correlation"]}
        return res


def _gt(gen_mod, world, yaw_px: float, eye_w: int):
    from stages.vr.stereo import Disparity

    _, _, d, rel = gen_mod.synth_pair(world, yaw_px, eye_w)
    z = np.zeros_like(d)
    return Disparity(np.dstack([d, z]), np.dstack([-d, z]), (rel > 0.5).astype(np.float32))


def fresh_frames(b: Bench, pairs: list[tuple[str, np.ndarray, np.ndarray, object]], reps: int) -> list[dict]:
    """Each (name, L, R, gt) dreamed fresh in every mode, interleaved `reps` times for the timings."""
    from stages.vr.stereo import estimate_disparity

    rows = []
    for name, L, R, gt in pairs:
        t = time.process_time()
        disp = estimate_disparity(b.dis, L, R)
        disp_s = time.process_time() - t
        err = np.abs(disp.backward[..., 0] - gt.backward[..., 0])[gt.reliable > 0.5] if gt is not None else None
        times: dict[str, list[float]] = {m: [] for m in MODES}
        outs: dict[str, dict] = {}
        for _ in range(reps):
            for m in MODES:
                outs[m] = b.dream(m, L, R, disp, b.sch, 0)
                times[m].append(outs[m]["cpu_s"])
        for m in MODES:
            row = {"input": name, "mode": m, "cpu_s_min": min(times[m]), "cpu_s": times[m],
                   "redreamed": outs[m]["redreamed"], "right_cost": outs[m]["right_cost"],
                   "disparity_cpu_s": disp_s, "reliable": disp.reliable_share}
            if err is not None:
                row |= {"disp_err_median": float(np.median(err)), "disp_err_p90": float(np.percentile(err, 90))}
            rows.append(row | b.stats(L, R, outs[m], disp, gt))
        base = min(times["independent"])
        for r in rows[-len(MODES):]:
            r["cost_vs_independent"] = r["cpu_s_min"] / base
    return rows


def temporal_chain(b: Bench, frames: list[np.ndarray], gts: list, modes=("independent", "carry")) -> list[dict]:
    """Frames 0..N−1 as a temporal chain in each mode; per-frame correlation and per-eye warp error."""
    from stages.measure.metrics import warp_error_series
    from stages.temporal.warp import consistency_mask, temporal_init
    from stages.vr.stereo import estimate_disparity

    rows = []
    for m in modes:
        prev = None
        dreamed_l, dreamed_r = [], []
        for i, tb in enumerate(frames):
            L, R = tb[:256], tb[256:]
            disp = estimate_disparity(b.dis, L, R)
            inits = [None, None]
            if prev is not None:
                for k, (ps, cs, res) in enumerate(((prev[0], L, prev[2]), (prev[1], R, prev[3]))):
                    bw, fw = b.dis.pair(ps, cs, wrap_x=True)
                    mask = consistency_mask(bw, fw, wrap_x=True)
                    inits[k] = temporal_init(cs.astype(np.float32), res, bw, mask, blend=0.9, wrap_x=True)
            out = b.dream(m, L, R, disp, b.sch if prev is None else b.warm, i, *inits)
            rows.append({"mode": m, "frame": i, "cpu_s": out["cpu_s"], "redreamed": out["redreamed"],
                         "right_cost": out["right_cost"]} | b.stats(L, R, out, disp, gts[i]))
            prev = (L, R, out["left"] - L, out["right"] - R)
            dreamed_l.append(np.clip(np.rint(out["left"]), 0, 255).astype(np.uint8))
            dreamed_r.append(np.clip(np.rint(out["right"]), 0, 255).astype(np.uint8))
        for eye, src, dr in (("left", [f[:256] for f in frames], dreamed_l), ("right", [f[256:] for f in frames],
                                                                            dreamed_r)):
            w = warp_error_series(src, dr, wrap_x=True)
            rows.append({"mode": m, "frame": "all", "eye": eye, "warp_error": w["warp_error"],
                         "source_warp_error": w["source_warp_error"]})
    return rows


def load_clip(n: int | None = None) -> list[np.ndarray]:
    import av

    with av.open(str(CLIP)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if n is not None and len(out) == n:
                break
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", default="0,12", help="clip frames dreamed fresh in every mode")
    p.add_argument("--chain", type=int, default=6, help="frames in the temporal chain (0 = skip)")
    p.add_argument("--reps", type=int, default=2, help="interleaved repetitions for the timings")
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--big", action="store_true", help="also the still at 1024×512 per eye (slow)")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import cv2

    print_machine(machine_info())
    gm = _generator_module()
    b = Bench(args.iterations)
    frames = load_clip(max([int(x) for x in args.frames.split(",")] + [args.chain - 1]) + 1)
    worlds = gm.world_frames(len(frames))
    gts = [_gt(gm, worlds[i], gm.yaw_px(i), 512) for i in range(len(frames))]
    pairs = [(f"clip f{i}", frames[i][:256], frames[i][256:], gts[i]) for i in map(int, args.frames.split(","))]
    still = cv2.cvtColor(cv2.imread(str(STILL), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    for eye_w in (512, 1024) if args.big else (512,):
        world = cv2.resize(still, (2 * eye_w, eye_w), interpolation=cv2.INTER_AREA)
        L, R, _, _ = gm.synth_pair(world, 0.0, eye_w)
        pairs.append((f"still {eye_w}x{eye_w // 2}", L, R, _gt(gm, world, 0.0, eye_w)))
    report: dict = {"iterations": args.iterations, "fresh": fresh_frames(b, pairs, args.reps)}
    banner("stereo carry: fresh frames (EfficientNet-Lite0 block9, 4 octaves x %d its, 1 torch thread)"
           % args.iterations)
    print(table(["input", "mode", "corr DIS", "corr Farneback", "corr GT", "strength L/R", "re-dreamed",
                 "right cost", "CPU s", "vs indep"],
                [[r["input"], r["mode"], f"{r['corr_dis']:.3f}", f"{r['corr_farneback']:.3f}",
                  f"{r.get('corr_gt', float('nan')):.3f}", f"{r['strength_left']:.1f}/{r['strength_right']:.1f}",
                  f"{r['redreamed']:.3f}", f"{r['right_cost']:.2f}", f"{r['cpu_s_min']:.1f}",
                  f"{r['cost_vs_independent']:.2f}"] for r in report["fresh"]],
                right=[False, False] + [True] * 8))
    for r in report["fresh"][::len(MODES)]:
        print(f"  {r['input']}: source corr DIS {r['source_corr_dis']:.3f} GT {r.get('source_corr_gt', 0):.3f}; "
              f"disparity {r['disparity_cpu_s'] * 1000:.0f} ms CPU, reliable {r['reliable']:.3f}, "
              f"error vs GT median {r.get('disp_err_median', 0):.2f} px, p90 {r.get('disp_err_p90', 0):.2f} px")
    if args.chain:
        report["chain"] = temporal_chain(b, frames[:args.chain], gts[:args.chain])
        banner(f"temporal chain: clip frames 0..{args.chain - 1}, blend 0.9, 3 warm iterations")
        per = [r for r in report["chain"] if r["frame"] != "all"]
        print(table(["mode", "frame", "corr DIS", "corr GT", "strength L/R", "re-dreamed", "CPU s"],
                    [[r["mode"], str(r["frame"]), f"{r['corr_dis']:.3f}", f"{r['corr_gt']:.3f}",
                      f"{r['strength_left']:.1f}/{r['strength_right']:.1f}", f"{r['redreamed']:.3f}",
                      f"{r['cpu_s']:.1f}"] for r in per], right=[False] + [True] * 6))
        for r in report["chain"]:
            if r["frame"] == "all":
                print(f"  {r['mode']:12s} {r['eye']:5s} eye: warp error {r['warp_error']:.1f} "
                      f"(source {r['source_warp_error']:.1f})")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def render_correlation(crf: int, side: int = 512, frames: int = 8, octaves: int = 2) -> dict:
    """The committed clip through `deepdream video` (default preset, stereo carry) at `side` px, `frames`
    frames, `octaves` octaves and CRF `crf` (0 = lossless); per-frame stereo correlation of the decoded
    output against the source (DIS on the source eyes, `stages.measure.vr_metrics_stereo`)."""
    import tempfile

    import av
    import cv2

    from pipeline.config import load_config
    from pipeline.render.runner import run_video
    from stages.measure.vr_metrics_stereo import stereo_stats
    from stages.temporal.flow import FlowEstimator
    from stages.vr.spherical import split_stereo

    def decode(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), c.decode(video=0))]

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "out.mp4"
        t = time.perf_counter()
        run_video(CLIP, dst, load_config("default", [f"input.max_side={side}", f"video.max_frames={frames}",
                                                     f"dream.octaves={octaves}", f"encode.crf={crf}"]))
        wall = time.perf_counter() - t
        out, kib = decode(dst), dst.stat().st_size / 1024
    src = [cv2.resize(s, out[0].shape[1::-1], interpolation=cv2.INTER_AREA) for s in decode(CLIP)]
    est = FlowEstimator("dis")
    st = [stereo_stats(*split_stereo(s, "top-bottom"), *split_stereo(d, "top-bottom"), estimator=est)
          for s, d in zip(src, out)]
    return {"crf": crf, "correlation": float(np.mean([s["correlation"] for s in st])),
            "per_frame": [s["correlation"] for s in st],
            "strength_left": float(np.mean([s["strength_left"] for s in st])),
            "strength_right": float(np.mean([s["strength_right"] for s in st])), "wall_s": wall, "kib": kib}


def run(ctx) -> dict:
    """`python -m bench --only stereo`: the committed clip rendered at 512 px, 8 frames, 2 octaves with
    stereo carry, at CRF 0 (lossless), 12 and 18 (the default): what the carry keeps and what the encode
    takes (about 10 s a render on one CPU thread). --quick: 256 px, 4 frames."""
    side, frames = (256, 4) if ctx.quick else (512, 8)
    rows, per = [], None
    for crf in (0, 12, 18):
        if per is not None and per * 1.3 > ctx.budget.left():
            break
        t = time.perf_counter()
        rows.append(render_correlation(crf, side, frames))
        per = time.perf_counter() - t
    if not rows:
        print("stereo: skipped, no budget left")
        return {"skipped": True}
    banner(f"stereo carry through the encode: stereo_room_tb.mp4 at {side} px, {frames} frames, 2 octaves")
    print(table(["CRF", "corr (mean)", "first / last frame", "strength L/R", "KiB", "wall s"],
                [[str(r["crf"]), f"{r['correlation']:.3f}", f"{r['per_frame'][0]:.3f} / {r['per_frame'][-1]:.3f}",
                  f"{r['strength_left']:.2f}/{r['strength_right']:.2f}", f"{r['kib']:.0f}", f"{r['wall_s']:.0f}"]
                 for r in rows], right=[True] * 6))
    return {"side": side, "frames": frames, "renders": rows}
