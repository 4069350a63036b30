"""Warping by backward flow, forward/backward consistency masks, dream init (scene cuts: stages.temporal.cuts).

Flow conventions are those of `stages.temporal.flow`: a backward flow ``b`` on frame t points, for each pixel,
to where that content was in frame t-1; a forward flow ``f`` on frame t-1 points to frame t. Images are
H x W x C (or H x W); values keep the caller's scale (0..255 for frames and residuals).

Out-of-frame samples use the nearest edge pixel (border replicate), never zero: a zero residual
would leave a dark/neutral band where the mask is only partly off after smoothing. With ``wrap_x``
(equirect 360) samples wrap horizontally and replicate vertically; there is no vertical wrap.
"""

from __future__ import annotations

import functools
import logging

import cv2
import numpy as np

from stages.vr.spherical import crop_x, wrap_pad_x

log = logging.getLogger(__name__)

# Ruder et al. (artistic-videos, consistencyChecker) thresholds.
_OCC_REL, _OCC_ABS = 0.01, 0.5
_MB_REL, _MB_ABS = 0.01, 0.002

@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of an h×w frame (read-only, cached: every frame of a render has one size)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.setflags(write=False)
    gy.setflags(write=False)
    return gx, gy


def _check_flow(flow: np.ndarray, shape: tuple[int, ...], name: str = "flow") -> None:
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[:2] != tuple(shape[:2]):
        raise ValueError(f"{name} must be {shape[0]} x {shape[1]} x 2, got {flow.shape}")


def warp(img: np.ndarray, flow: np.ndarray, *, wrap_x: bool = False, cubic: bool = False) -> np.ndarray:
    """Pull `img` through a backward map: out[y, x] = img at (x + flow_x, y + flow_y), bilinear (bicubic
    with `cubic`, which blurs less when the same content is warped again frame after frame).

    `img` is H x W or H x W x C, uint8 or float32 (other dtypes are converted to float32); the result
    has the same shape and dtype. Outside the frame the nearest edge pixel is used, except that with
    ``wrap_x`` columns wrap around. Zero flow returns an exact copy.
    """
    _check_flow(flow, img.shape)
    if img.dtype not in (np.uint8, np.float32):
        img = img.astype(np.float32)
    h, w = img.shape[:2]
    gx, gy = _grid(h, w)
    map_x = gx + flow[..., 0].astype(np.float32)
    map_y = gy + flow[..., 1].astype(np.float32)
    src = img
    if wrap_x:
        # Fold x into [0, W] and append the first columns (a bicubic tap also reaches one back) so that
        # sampling between W-1 and W blends with column 0; cv2.BORDER_WRAP would also wrap vertically,
        # which equirect must not do.
        map_x = np.mod(map_x, np.float32(w)) + np.float32(1)
        src = wrap_pad_x(img, 1, 3)
    interp = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    squeeze = src.ndim == 2
    if squeeze:
        src = src[..., None]
    # cv2.remap handles at most 4 channels per call.
    chunks = [
        cv2.remap(np.ascontiguousarray(src[..., c:c + 4]), map_x, map_y, interp,
                  borderMode=cv2.BORDER_REPLICATE).reshape(h, w, -1)
        for c in range(0, src.shape[2], 4)
    ]
    out = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=2)
    return out[..., 0] if squeeze else out


def _gradients(a: np.ndarray, wrap_x: bool) -> tuple[np.ndarray, np.ndarray]:
    # np.gradient needs two samples: a 1-pixel-high or -wide frame has no slope along that axis.
    gy = np.gradient(a, axis=0) if a.shape[0] > 1 else np.zeros_like(a)
    if wrap_x:
        gx = (np.roll(a, -1, axis=1) - np.roll(a, 1, axis=1)) * 0.5
    else:
        gx = np.gradient(a, axis=1) if a.shape[1] > 1 else np.zeros_like(a)
    return gx, gy


def _smooth(mask: np.ndarray, sigma: float, wrap_x: bool) -> np.ndarray:
    if sigma <= 0:
        return mask
    if not wrap_x:
        return cv2.GaussianBlur(mask, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    # GaussianBlur has no wrap border: blur a copy padded with the opposite columns and crop it.
    pad = min(mask.shape[1], int(np.ceil(4 * sigma)) + 1)
    blurred = cv2.GaussianBlur(wrap_pad_x(mask, pad), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop_x(blurred, pad))


def consistency_mask(backward: np.ndarray, forward: np.ndarray, *, wrap_x: bool = False,
                     sigma: float = 0.8) -> np.ndarray:
    """Reliability of the backward flow, H x W float32 in [0, 1] (1 = reliable, 0 = do not warp).

    A pixel is unreliable when the forward flow found where `backward` points does not lead back
    (occlusion/disocclusion), on motion boundaries of the backward flow, or when it points outside the
    frame (vertically only with ``wrap_x``). The binary result is Gaussian-smoothed by `sigma` so the
    dream does not show hard mask edges.
    """
    _check_flow(backward, backward.shape, "backward")
    _check_flow(forward, backward.shape, "forward")
    h, w = backward.shape[:2]
    b = backward.astype(np.float32, copy=False)
    f_at = warp(forward.astype(np.float32, copy=False), b, wrap_x=wrap_x)
    round_trip = ((b + f_at) ** 2).sum(axis=2)
    b_sq = (b ** 2).sum(axis=2)
    occluded = round_trip >= _OCC_REL * (b_sq + (f_at ** 2).sum(axis=2)) + _OCC_ABS

    ux, uy = _gradients(b[..., 0], wrap_x)
    vx, vy = _gradients(b[..., 1], wrap_x)
    boundary = ux ** 2 + uy ** 2 + vx ** 2 + vy ** 2 > _MB_REL * b_sq + _MB_ABS

    gx, gy = _grid(h, w)
    ty = gy + b[..., 1]
    outside = (ty < 0) | (ty > h - 1)
    if not wrap_x:
        tx = gx + b[..., 0]
        outside |= (tx < 0) | (tx > w - 1)

    reliable = (~(occluded | boundary | outside)).astype(np.float32)
    return np.clip(_smooth(reliable, sigma, wrap_x), 0.0, 1.0)


def temporal_init(source: np.ndarray, prev_residual: np.ndarray, backward: np.ndarray, mask: np.ndarray, *,
                  blend: float, wrap_x: bool = False) -> np.ndarray:
    """Starting image for dreaming frame t: S_t + blend * M_t * warp(R_{t-1}, b_t), clipped to 0..255.

    `source` is H x W x 3 float32 in 0..255, `prev_residual` the previous dream minus its source in the
    same scale and size; returns H x W x 3 float32.
    """
    if prev_residual.shape != source.shape:
        raise ValueError(f"residual {prev_residual.shape} does not match source {source.shape}")
    if mask.shape != source.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match source {source.shape}")
    # Bicubic: the residual is warped again every frame, and bilinear's blur would wash its detail out.
    warped = warp(prev_residual.astype(np.float32, copy=False), backward, wrap_x=wrap_x, cubic=True)
    out = source.astype(np.float32) + np.float32(blend) * mask[..., None].astype(np.float32) * warped
    return np.clip(out, 0.0, 255.0, out=out)
