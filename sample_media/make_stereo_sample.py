"""Render sample_media/stereo_room_tb.mp4: a synthetic top-bottom stereo 360° clip made from real mono 360° footage.

There is no real stereo 360° clip in the repository, so the right eye is *synthesised* from Google's mono
`testRoom1_1920Mono.mp4` (CC BY 4.0, see ATTRIBUTION-360.md) with a per-pixel disparity taken from a
simple depth proxy of the room. The left eye is the real footage (resized); the right eye is the left
eye re-rendered for a viewpoint 6.4 cm to the side, the way an omnidirectional-stereo (ODS) camera sees it:

* Background: an off-centre room (walls 1.4-2.6 m away, floor 1.6 m below, ceiling 1.2 m above). ODS
  angular disparity is 2·asin(r/ρ) for a point at horizontal distance ρ and eye radius r = 3.2 cm; like
  production ODS renderers, r fades to 0 toward the poles (× cos²latitude), so disparity is horizontal,
  smooth and shrinks toward the poles.
* Foreground: the four saturated red/blue objects on the room's axes are put 0.7 m from the camera, so
  they shift more than the wall behind them and leave *half-occluded* strips (seen by the right eye
  only) beside their edges; the background there is inpainted from its surroundings.
* The camera yaws 0.6° per frame (both eyes together), so optical flow between frames is non-trivial
  everywhere, on top of the room's own moving sphere and cylinder (which stay at wall depth).

Everything is rendered at 1024×512 per eye and downsampled to 512×256 (area), then written top-bottom
(left eye on top) as H.264 and tagged with the project's own V1+V2 spherical metadata (`top-bottom`).
`synth_pair` also returns the ground-truth disparity and half-occlusion mask, which the stereo
measurements use as an independent check of the estimated disparity:

    PYTHONPATH=. .venv/bin/python sample_media/make_stereo_sample.py
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from stages.temporal.warp import warp  # noqa: E402
from stages.vr.spherical import wrap_pad_x  # noqa: E402
from stages.vr.spherical_meta import inject_spherical  # noqa: E402

SRC = HERE / "testRoom1_1920Mono.mp4"
OUT = HERE / "stereo_room_tb.mp4"
WORK_W, EYE_W = 1024, 512  # synthesise at 2× and downsample: antialiased edges, sub-pixel disparity
FRAMES = 24
RATE = Fraction(30)
YAW_DEG_PER_FRAME = 0.6
EYE_RADIUS_M = 0.032  # half of a 64 mm interpupillary distance
OBJECT_DIST_M = 0.7


def _lat_lon(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    lat = (0.5 - (np.arange(h, dtype=np.float32) + 0.5) / h) * np.pi  # +π/2 at the top row
    lon = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 * np.pi - np.pi
    return np.meshgrid(lon, lat)


def _ods_disparity_px(rho: np.ndarray, lat: np.ndarray, w: int) -> np.ndarray:
    """ODS disparity in pixels for horizontal distance rho (m); the eye radius fades out toward the poles."""
    r = EYE_RADIUS_M * np.cos(lat) ** 2
    return (2 * np.arcsin(np.clip(r / np.maximum(rho, 1e-3), 0, 1)) * w / (2 * np.pi)).astype(np.float32)


def background_disparity(h: int, w: int) -> np.ndarray:
    """Disparity (px, left→right shift) of the room's walls, floor and ceiling: smooth, 0 at the poles."""
    lon, lat = _lat_lon(h, w)
    wall = 2.0 + 0.6 * np.cos(lon - 0.8)  # an off-centre camera: one wall nearer than the other
    floor = 1.6 / np.tan(np.clip(-lat, 1e-3, None))
    ceiling = 1.2 / np.tan(np.clip(lat, 1e-3, None))
    return _ods_disparity_px(np.minimum(wall, np.where(lat < 0, floor, ceiling)), lat, w)


def object_alpha(rgb: np.ndarray) -> np.ndarray:
    """Soft matte (0..1) of the red and blue axis objects: saturated, with almost no green."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    hit = ((np.maximum(r, b) > 90) & (g < 60)).astype(np.float32)
    lat = _lat_lon(*rgb.shape[:2])[1]
    hit *= (np.abs(lat) < np.pi / 4)  # not the green caps (they fail the green test anyway), no pole strays
    return cv2.GaussianBlur(hit, (0, 0), 0.7)


def _inpaint(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The background behind the objects, guessed from its surroundings (wrap-padded so the seam joins)."""
    pad = 32
    hole = (cv2.dilate((alpha > 0.02).astype(np.uint8), np.ones((5, 5), np.uint8)) * 255)
    out = cv2.inpaint(wrap_pad_x(rgb, pad), wrap_pad_x(hole, pad), 6, cv2.INPAINT_TELEA)
    return out[:, pad:-pad]


def synth_pair(world: np.ndarray, yaw_px: float, eye_w: int = EYE_W) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                               np.ndarray]:
    """(left, right, gt disparity, gt reliable), eyes eye_w × eye_w/2, from a mono equirect frame (any 2:1 size).

    gt disparity is the backward map of the right eye in pixels (right[y, x] = left[y, x + d]); gt reliable
    is 0 on the right eye's half-occluded pixels (background the left eye cannot see), 1 elsewhere.
    Both eyes are yawed by `yaw_px` (pixels of `world`) after synthesis.
    """
    h, w = world.shape[:2]
    alpha = object_alpha(world)
    d_bg = background_disparity(h, w)
    d_obj = _ods_disparity_px(np.full((h, w), OBJECT_DIST_M, np.float32), _lat_lon(h, w)[1], w)
    zero = np.zeros((h, w), np.float32)

    def shift(img: np.ndarray, d: np.ndarray) -> np.ndarray:
        return warp(img, np.dstack([d, zero]), wrap_x=True)

    d_bg_r = shift(d_bg, d_bg)  # the field as seen from the right eye (one fixed-point step; it is smooth)
    bg_r = shift(_inpaint(world, alpha).astype(np.float32), d_bg_r)
    obj_r, alpha_r = shift(world.astype(np.float32), d_obj), shift(alpha, d_obj)[..., None]
    right = alpha_r * obj_r + (1 - alpha_r) * bg_r
    disp = alpha_r[..., 0] * d_obj + (1 - alpha_r[..., 0]) * d_bg_r
    hidden = (1 - alpha_r[..., 0]) * shift(alpha, d_bg_r)  # right sees wall where the left sees an object
    reliable = 1 - np.clip(hidden, 0, 1)

    def out(a: np.ndarray) -> np.ndarray:
        a = warp(a, np.dstack([np.full((h, w), yaw_px, np.float32), zero]), wrap_x=True)
        return cv2.resize(a, (eye_w, eye_w // 2), interpolation=cv2.INTER_AREA)

    scale = eye_w / w
    left_e = np.clip(np.rint(out(world.astype(np.float32))), 0, 255).astype(np.uint8)
    right_e = np.clip(np.rint(out(right.astype(np.float32))), 0, 255).astype(np.uint8)
    return left_e, right_e, out(disp) * scale, out(reliable.astype(np.float32))


def world_frames(n: int = FRAMES) -> list[np.ndarray]:
    """The first n frames of the mono room clip at WORK_W×WORK_W/2 (area-resized)."""
    frames = []
    with av.open(str(SRC)) as c:
        for f in c.decode(video=0):
            frames.append(cv2.resize(f.to_ndarray(format="rgb24"), (WORK_W, WORK_W // 2),
                                     interpolation=cv2.INTER_AREA))
            if len(frames) == n:
                break
    return frames


def yaw_px(i: int) -> float:
    return i * YAW_DEG_PER_FRAME / 360.0 * WORK_W


def main(out_path: Path = OUT) -> Path:
    plain = out_path.with_name(out_path.stem + ".untagged.mp4")
    with av.open(str(plain), "w", format="mp4", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = EYE_W, EYE_W, "yuv420p"
        vs.options = {"crf": "20", "preset": "slow", "profile": "high", "g": str(FRAMES)}
        for i, world in enumerate(world_frames()):
            left, right, _, _ = synth_pair(world, yaw_px(i))
            frame = av.VideoFrame.from_ndarray(np.concatenate([left, right], axis=0), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    inject_spherical(plain, out_path, stereo="top-bottom")
    plain.unlink()
    return out_path


if __name__ == "__main__":
    p = main()
    print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
