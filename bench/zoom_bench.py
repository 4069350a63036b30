"""Section `zoom`: what `deepdream animate`'s infinite zoom keeps of the dream's detail over hundreds of frames.

The real render (`pipeline.render.animate.run_animation`) of `sample_media/chelsea.png` at 192×128, the default
preset, motion.zoom 1.5 per second at 30 fps, 300 frames (100 with --quick), encoded losslessly (CRF 0) so the
decoded frames are exactly the 8-bit pictures the loop fed back. For each resampling kernel (animate.resample:
bilinear, bicubic, lanczos), with the re-dream on (the warm schedule, temporal.iterations 2) and withheld
(temporal.iterations 0: the loop only moves and resamples), the detail of the last frame against the first:
* `lap`: mean squared Laplacian of the luma (8-bit levels²), last ÷ first;
* `hf`: share of the luma's spectral energy (mean removed) above half the Nyquist frequency, last ÷ first.
Same input, same seed, same motion: only the kernel (or the re-dream) differs. Extra row: bicubic with
temporal.hold 0 (the new detail not pulled back toward the moved picture). The first frame and each case's
last frame, side by side in that order: out/bench/zoom_last_frames.png.

    python -m bench.zoom_bench [--frames 300] [--size 192]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, banner, table

IMG = REPO / "sample_media" / "chelsea.png"
KERNELS = ("bilinear", "bicubic", "lanczos")


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def detail(rgb: np.ndarray) -> tuple[float, float]:
    """(mean squared Laplacian, share of spectral energy above half-Nyquist) of an 8-bit frame's luma."""
    import cv2

    y = luma(rgb)
    lap = float(np.mean(cv2.Laplacian(y, cv2.CV_64F) ** 2))
    p = np.abs(np.fft.fft2(y - y.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
    high = np.hypot(fx, fy) > 0.25
    return lap, float(p[high].sum() / max(p.sum(), 1e-12))


def render(out: Path, frames: int, size: int, kernel: str, *, redream: bool, hold: float | None = None) -> list:
    import av

    from pipeline.config import load_config
    from pipeline.render.animate import run_animation

    sets = [f"input.max_side={size}", "animate.fps=30", f"animate.seconds={frames / 30}", "motion.zoom=1.5",
            f"animate.resample={kernel}", "encode.crf=0", "encode.speed=ultrafast", "checkpoint.segment_frames=60"]
    if not redream:
        sets.append("temporal.iterations=0")
    if hold is not None:
        sets.append(f"temporal.hold={hold}")
    run_animation(IMG, out, load_config("default", sets), restart=True)
    with av.open(str(out)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


SHEET = REPO / "out" / "bench" / "zoom_last_frames.png"


def measure(frames: int = 300, size: int = 192, sheet: Path | None = SHEET) -> dict:
    rows, lasts = {}, []
    cases = [(k, True, None) for k in KERNELS] + [(k, False, None) for k in KERNELS] + [("bicubic", True, 0.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for kernel, redream, hold in cases:
            name = f"{kernel}{'' if redream else ' (no re-dream)'}{'' if hold is None else f' hold {hold:g}'}"
            t0 = time.perf_counter()
            got = render(Path(tmp) / "z.mp4", frames, size, kernel, redream=redream, hold=hold)
            (lap0, hf0), (lap1, hf1) = detail(got[0]), detail(got[-1])
            rows[name] = {"frames": len(got), "lap_first": lap0, "lap_last": lap1, "lap_ratio": lap1 / lap0,
                          "hf_first": hf0, "hf_last": hf1, "hf_ratio": hf1 / hf0, "wall_s": time.perf_counter() - t0}
            lasts += [got[0]] if not lasts else []
            lasts.append(got[-1])
    if sheet is not None:
        from PIL import Image

        sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(lasts, axis=1)).save(sheet)
    return rows


def run(ctx) -> dict:
    frames = 100 if ctx.quick else 300
    banner(f"zoom: detail of frame {frames} vs frame 1, infinite zoom ×1.5/s at 30 fps, chelsea 192x128, CRF 0")
    if ctx.budget.left() < 60 * (2 if ctx.quick else 6):
        print("skipped: not enough budget left")
        return {"skipped": True}
    import torch

    torch.set_num_threads(1)
    rows = measure(frames)
    print(table(["kernel", "lap last/first", "hf last/first", "hf first", "s"],
                [[k, f"{r['lap_ratio']:.3f}", f"{r['hf_ratio']:.3f}", f"{r['hf_first']:.4f}", f"{r['wall_s']:.0f}"]
                 for k, r in rows.items()]))
    return {"frames": frames, "rows": rows}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", type=int, default=192)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    for k, r in measure(a.frames, a.size).items():
        print(f"{k:32} lap {r['lap_ratio']:.3f} ({r['lap_first']:.0f} -> {r['lap_last']:.0f})  "
              f"hf {r['hf_ratio']:.3f} ({r['hf_first']:.4f} -> {r['hf_last']:.4f})  {r['wall_s']:.0f} s")
