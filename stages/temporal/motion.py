"""Camera motion of a still animation (`deepdream animate`): per-second rates → one frame's step → a
backward map, and the resampling that carries the previous dreamed frame along it.

Every rate is per second and a frame moves by the motion integrated over its 1/fps seconds (zoom z per
second → z^(1/fps) per frame; angles and shifts × 1/fps), so a render at 24 or 60 fps moves alike.
Flat frames: the picture grows by `zoom` about (center_x, center_y), turns counter-clockwise (as seen) by
`rotate` and slides right / down by `translate_x` / `translate_y` frame *widths* (both axes in one unit,
so equal values move at 45°). Revealed edges are reflected (`cv2.BORDER_REFLECT_101`) and come with a
mask (`reveal_mask`) so the frame step dreams them freely. The sphere's motion: `stages.vr.orbit`.

Pixel coordinates follow OpenCV's remap: pixel centres at integers. Images are H×W×C float32 on 0..255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Resampling kernels (`animate.resample`). Measured in bench/zoom_bench.py: what a kernel keeps of the dream
# over hundreds of feedback frames (README, Dream animation).
RESAMPLERS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}
FEATHER_PX = 2.0  # the reveal mask ramps from 1 to 0 over this many pixels at the old frame's edge
MIN_COVER = 0.5  # a frame must take at least this share of its pixels from the previous frame
_PROXY_W = 48  # width of the grid the coverage check samples (zoom, angle and shift scale with the frame)


@dataclass(frozen=True, slots=True)
class FlatStep:
    """One frame's motion of a flat picture (what it does on screen during 1/fps seconds)."""

    zoom: float = 1.0  # the picture grows by this factor (< 1 shrinks it, revealing the edges)
    angle: float = 0.0  # radians, counter-clockwise as seen
    shift_x: float = 0.0  # frame widths, right
    shift_y: float = 0.0  # frame widths, down
    center_x: float = 0.5  # zoom and rotation centre, share of the width
    center_y: float = 0.5  # share of the height

    @property
    def still(self) -> bool:
        return self.zoom == 1.0 and self.angle == 0.0 and self.shift_x == 0.0 and self.shift_y == 0.0


def flat_step(*, zoom: float, rotate: float, translate_x: float, translate_y: float, center_x: float,
              center_y: float, fps: float) -> FlatStep:
    """Per-second rates (zoom factor, degrees, frame widths) integrated over one frame of 1/fps seconds."""
    if not (fps > 0 and zoom > 0):
        raise ValueError(f"need fps > 0 and zoom > 0, got {fps}, {zoom}")
    return FlatStep(zoom ** (1.0 / fps), math.radians(rotate) / fps, translate_x / fps, translate_y / fps,
                    center_x, center_y)


def flat_map(h: int, w: int, step: FlatStep) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of one step: for each new pixel, where it was in the previous frame (float32 x, y).

    Forward the picture moves p → c + Rot(angle)·zoom·(p − c) + shift; this inverts it in float64.
    """
    cx, cy = step.center_x * w - 0.5, step.center_y * h - 0.5
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx = xs - cx - step.shift_x * w
    dy = ys - cy - step.shift_y * w
    # On screen (y down) a counter-clockwise turn by a is [[cos, sin], [−sin, cos]]; its inverse is the transpose.
    c, s = math.cos(step.angle), math.sin(step.angle)
    map_x = cx + (c * dx - s * dy) / step.zoom
    map_y = cy + (s * dx + c * dy) / step.zoom
    return map_x.astype(np.float32), map_y.astype(np.float32)


def reveal_mask(map_x: np.ndarray, map_y: np.ndarray, h: int, w: int) -> np.ndarray:
    """H×W float32: 1 where a new pixel comes from inside the previous frame, 0 where the motion revealed it
    (filled by reflection), with a FEATHER_PX ramp between so the dream has no hard line to follow."""
    inside = np.minimum(np.minimum(map_x + 0.5, w - 0.5 - map_x), np.minimum(map_y + 0.5, h - 0.5 - map_y))
    return np.clip(0.5 + inside / np.float32(FEATHER_PX), 0.0, 1.0).astype(np.float32)


def coverage(step: FlatStep, aspect: float) -> float:
    """Share of a frame (width/height = aspect) that the previous frame covers after `step` (to a pixel of a
    48-pixel-wide proxy: a check, not a measure)."""
    if step.zoom >= 1.0 and step.angle == 0.0 and step.shift_x == 0.0 and step.shift_y == 0.0:
        return 1.0  # a plain zoom in never reveals anything: no grid for every frame of a react render
    w = _PROXY_W
    h = max(2, round(w / aspect))
    mx, my = flat_map(h, w, step)
    return float(((mx >= -0.5) & (mx <= w - 0.5) & (my >= -0.5) & (my <= h - 0.5)).mean())


def resample(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, mode: str = "bicubic", *,
             border: int = cv2.BORDER_REFLECT_101) -> np.ndarray:
    """Pull H×W×C float32 `img` (0..255) through a backward map with the named kernel, clipped to 0..255
    (bicubic and Lanczos overshoot at edges). Outside the frame: `border` (reflection for flat frames)."""
    if mode not in RESAMPLERS:
        raise ValueError(f"resample mode must be one of {', '.join(RESAMPLERS)}, got {mode!r}")
    src = np.ascontiguousarray(img, dtype=np.float32)
    chunks = [cv2.remap(np.ascontiguousarray(src[..., c:c + 4]), map_x, map_y, RESAMPLERS[mode],
                        borderMode=border).reshape(*map_x.shape, -1)
              for c in range(0, src.shape[2], 4)]  # cv2.remap takes at most 4 channels
    out = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)
    return np.clip(out, 0.0, 255.0, out=out)


__all__ = ["RESAMPLERS", "FEATHER_PX", "MIN_COVER", "FlatStep", "flat_step", "flat_map", "reveal_mask",
           "coverage", "resample"]
