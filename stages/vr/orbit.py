"""Camera motion of a 360° still animation: a rotation of the sphere plus a zoom toward the front view.

The rotation: the sphere turns at a constant angular velocity, integrated exactly over one frame (Rodrigues
of ω/fps), so yaw, pitch and roll given together do not depend on an order. What each does to the picture:
`yaw` > 0 moves it toward larger longitude (right, in the equirect and in the front view), `pitch` > 0
moves the front up, `roll` > 0 turns the front counter-clockwise as seen from inside (like a flat `rotate`).

The zoom is a Möbius dilation: project the sphere stereographically from the back point onto the plane
tangent at the front, scale that plane by z, project back. It is the one conformal map of the sphere that
fixes front and back and magnifies the front by exactly z (a flat zoom there), shrinking the back by 1/z;
it is also what the sky does to a viewer who moves toward the front (relativistic aberration). It reveals
nothing (a bijection of the sphere: no edge to fill), has no seam and no pole singularity, and the content
it pushes out of the front view gathers behind the viewer, where the dream keeps painting it.

Conventions are py360convert's, through `stages.vr.sphere` (x right, y up, z forward; equirect pixel
centres). The map is resampled on a frame padded across the 0/360° seam (`spherical.wrap_pad_x`) and
across the poles (the row beyond a pole is the pole row half a turn away, as `sphere.pad_sphere`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from stages.temporal.motion import resample
from stages.vr.sphere import directions_to_pixels, equirect_directions
from stages.vr.spherical import wrap_pad_x

PAD = 4  # rows and columns around the frame: Lanczos-4 reaches 3 pixels back and 4 ahead
MAX_FRAME_ZOOM = 2.0  # per frame, the front may grow (or shrink) at most this much


@dataclass(frozen=True, slots=True)
class SphereStep:
    """One frame's motion of the sphere (during 1/fps seconds)."""

    yaw: float = 0.0  # radians
    pitch: float = 0.0
    roll: float = 0.0
    zoom: float = 1.0  # magnification of the front view

    @property
    def still(self) -> bool:
        return self.zoom == 1.0 and self.yaw == 0.0 and self.pitch == 0.0 and self.roll == 0.0


def sphere_step(*, yaw: float, pitch: float, roll: float, zoom: float, fps: float) -> SphereStep:
    """Per-second rates (degrees, zoom factor) integrated over one frame of 1/fps seconds."""
    if not (fps > 0 and zoom > 0):
        raise ValueError(f"need fps > 0 and zoom > 0, got {fps}, {zoom}")
    return SphereStep(math.radians(yaw) / fps, math.radians(pitch) / fps, math.radians(roll) / fps,
                      zoom ** (1.0 / fps))


def rotation(step: SphereStep) -> np.ndarray:
    """3×3 float64, column form (p_new = R·p_old): the turn of the content during one step.

    The angular velocity is (−pitch, yaw, roll) about (x, y, z): a right-handed turn about y adds to the
    longitude, about x by −pitch lifts the front, about z turns right toward up (counter-clockwise)."""
    w = np.array([-step.pitch, step.yaw, step.roll], np.float64)
    angle = float(np.linalg.norm(w))
    if angle == 0.0:
        return np.eye(3)
    k = w / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


def stereographic_zoom(d: np.ndarray, zoom: float) -> np.ndarray:
    """Unit directions (…×3) → the same directions after a Möbius zoom by `zoom` toward +z (the front)."""
    if zoom == 1.0:
        return d
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    # Near the back point (z → −1) the plane coordinate runs off to infinity; that point maps to itself.
    den = np.maximum(1.0 + z, 1e-12)
    qx, qy = x / den * zoom, y / den * zoom
    q2 = qx * qx + qy * qy
    out = np.stack([2 * qx, 2 * qy, 1 - q2], axis=-1) / (1 + q2)[..., None]
    back = (1.0 + z) < 1e-9
    return np.where(back[..., None], d, out)


def sphere_map(h: int, w: int, step: SphereStep) -> tuple[np.ndarray, np.ndarray]:
    """Backward map of one step on an h×w equirect: for each new pixel, where it was (float32 column, row;
    columns may run outside 0..w−1 and are wrapped by `resample_equirect`)."""
    d = equirect_directions(h, w).double().numpy()
    d = stereographic_zoom(d, 1.0 / step.zoom)  # forward the zoom comes after the turn: undo it first
    d = d @ rotation(step)  # row vectors: p·R = (Rᵀ·p)ᵀ, the inverse turn
    col, row = directions_to_pixels(torch.from_numpy(d), h, w)
    return col.numpy().astype(np.float32), row.numpy().astype(np.float32)


def pad_equirect(img: np.ndarray, p: int) -> np.ndarray:
    """p pixels around an H×W×C equirect: columns wrap; the rows beyond a pole are the rows below it
    (mirrored) half a turn away, so a kernel that crosses a pole reads what lies across it."""
    h, w = img.shape[:2]
    if p > h:
        raise ValueError(f"pad {p} exceeds the height {h}")
    half = np.roll(img, w // 2, axis=1)
    return wrap_pad_x(np.concatenate([half[:p][::-1], img, half[h - p:][::-1]], axis=0), p)


def resample_equirect(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, mode: str = "bicubic") -> np.ndarray:
    """`motion.resample` on the sphere: seam and poles read across, never reflected or clamped."""
    h, w = img.shape[:2]
    p = min(PAD, h)
    mx = np.mod(map_x, np.float32(w)) + np.float32(p)
    my = np.clip(map_y, -0.5, h - 0.5) + np.float32(p)
    return resample(pad_equirect(img, p), mx, my, mode, border=cv2.BORDER_REPLICATE)


__all__ = ["MAX_FRAME_ZOOM", "SphereStep", "sphere_step", "rotation", "stereographic_zoom", "sphere_map",
           "pad_equirect", "resample_equirect"]
