"""Small helpers for equirectangular (360°) frames: wrap-around padding, yaw, pole weights, stereo.

Equirect images are periodic in x: column W-1 touches column 0. Anything that looks across the left
or right edge (convolutions, jitter, tiles, flow) must see the other side, so we pad with wrapped
columns, process, and crop. Rows are not periodic (the top and bottom rows are single points on the
poles), which is why only x wraps here.

Layouts: numpy arrays are H×W×C (or H×W); torch tensors are N×C×H×W (or anything with H, W last).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from stages import InputError

log = logging.getLogger(__name__)

STEREO_LAYOUTS = ("mono", "top-bottom", "left-right")

# Detection thresholds, tuned on testRoom1 (seam ratio 0.10-0.16) against 2:1 crops and stretches of
# ordinary photos (seam ratio 5-30; a noise-like Hubble field reaches 1.7 but fails the far test).
ASPECT_TOLERANCE = 0.01
SEAM_RATIO_MAX = 2.5  # mean |col0 - colW-1| / mean |adjacent column difference|
SEAM_FAR_MAX = 0.5  # seam difference / difference of columns half a turn apart
POLE_STD_MAX = 0.05  # std along the pole rows / std of the whole frame
EDGE_STD_MIN = 0.1  # std down each edge column / std of the whole frame; less = blank border
FLAT_DIFF = 0.5  # 8-bit levels: below this everywhere, the frame says nothing about wrapping
STEREO_CORR_MIN = 0.85


def wrap_pad_x(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last axis circularly: the left pad is the last columns, the right pad the first ones.

    Unlike F.pad(mode="circular"), pad may exceed the width (the image then repeats), which happens
    for small octaves whose width is below a network's receptive field.
    """
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if pad == 0:
        return t
    w = t.shape[-1]
    idx = torch.arange(-pad, w + pad, device=t.device) % w
    return t.index_select(t.dim() - 1, idx)


def crop_x(t, pad: int):
    """Undo wrap_pad_x: drop `pad` columns on each side of the last axis (numpy or torch)."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return t if pad == 0 else t[..., pad:t.shape[-1] - pad]


def yaw_roll(t, shift: int):
    """Roll horizontally by `shift` columns, an exact yaw rotation of the sphere.

    numpy: H×W(×C), axis 1. torch: the last axis (N×C×H×W). Undo with yaw_roll(t, -shift).
    """
    if isinstance(t, torch.Tensor):
        return torch.roll(t, shifts=int(shift), dims=-1)
    arr = np.asarray(t)
    if arr.ndim < 2:
        raise ValueError(f"yaw_roll needs an H×W(×C) array, got shape {arr.shape}")
    return np.roll(arr, int(shift), axis=1)


def latitude_weights(h: int) -> np.ndarray:
    """cos(latitude) at each row centre, shape (h,): the area each equirect row covers on the sphere."""
    if h <= 0:
        raise ValueError(f"height must be positive, got {h}")
    lat = (0.5 - (np.arange(h, dtype=np.float64) + 0.5) / h) * np.pi
    return np.cos(lat).astype(np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim == 3:
        a = a[..., :3].mean(axis=2, dtype=np.float32)
    elif a.ndim != 2:
        raise ValueError(f"expected an H×W×C or H×W image, got shape {a.shape}")
    a = a.astype(np.float32, copy=False)
    if np.issubdtype(np.asarray(rgb).dtype, np.floating) and a.size and float(a.max()) <= 1.0:
        a = a * 255.0  # thresholds are in 8-bit levels
    # Rows are subsampled for speed on 4K+ frames; columns stay full resolution because the seam
    # test compares single adjacent columns.
    return a[:: max(1, a.shape[0] // 512)]


def _aspect_is(h: int, w: int, ratio: float) -> bool:
    return h > 0 and abs(w / h - ratio) <= ratio * ASPECT_TOLERANCE


def detect_equirect(rgb: np.ndarray) -> tuple[bool, str]:
    """Guess whether a frame without metadata is a mono 360° equirect; returns (decision, reason).

    Evidence: a 2:1 aspect; the left and right edges continue each other (the seam difference is
    like an ordinary adjacent-column difference and much smaller than the difference between columns
    half a turn apart); near-uniform pole rows support a borderline seam.
    """
    h, w = np.asarray(rgb).shape[:2]
    if not _aspect_is(h, w, 2.0):
        return False, f"aspect {w}x{h} is not 2:1"
    g = _gray(rgb)
    seam = float(np.abs(g[:, 0] - g[:, -1]).mean())
    adjacent = float(np.abs(np.diff(g, axis=1)).mean())
    far = float(np.abs(g - np.roll(g, w // 2, axis=1)).mean())
    if adjacent < FLAT_DIFF and far < FLAT_DIFF:
        return False, f"{w}x{h} frame is too flat to judge the wrap-around"
    ratio = seam / max(adjacent, 1e-6)
    overall = max(float(g.std()), 1e-6)
    edges = min(float(g[:, 0].std()), float(g[:, -1].std())) / overall
    if edges < EDGE_STD_MIN:
        # Blank borders (letterbox, scanned photo, logo) match each other trivially.
        return False, f"2:1 frame with a blank edge column (std ratio {edges:.3f}), cannot judge the seam"
    band = max(1, g.shape[0] // 64)
    poles = max(float(g[:band].std(axis=1).mean()), float(g[-band:].std(axis=1).mean())) / overall
    poles_uniform = poles < POLE_STD_MAX
    seam_vs_far = seam / max(far, 1e-6)
    stats = (f"seam/adjacent {ratio:.2f} (max {SEAM_RATIO_MAX}), seam/far {seam_vs_far:.2f} "
             f"(max {SEAM_FAR_MAX}), pole std {poles:.3f} ({'uniform' if poles_uniform else 'textured'})")
    log.debug("equirect check %dx%d: %s", w, h, stats)
    if ratio < SEAM_RATIO_MAX and (seam_vs_far < SEAM_FAR_MAX or poles_uniform):
        return True, f"2:1 frame whose left and right edges join: {stats}"
    return False, f"2:1 frame but the edges do not join like a 360° image: {stats}"


def _halves(img, layout: str):
    is_torch = isinstance(img, torch.Tensor)
    if layout not in ("top-bottom", "left-right"):
        raise ValueError(f"stereo layout must be 'top-bottom' or 'left-right', got {layout!r}")
    if is_torch:
        axis = img.dim() - 2 if layout == "top-bottom" else img.dim() - 1
    else:
        if np.ndim(img) < 2:
            raise ValueError(f"expected an H×W(×C) array, got shape {np.shape(img)}")
        axis = 0 if layout == "top-bottom" else 1
    return axis, is_torch


def split_stereo(img, layout: str):
    """Split a stereo frame into (left eye, right eye). Top-bottom: left eye on top."""
    axis, is_torch = _halves(img, layout)
    n = img.shape[axis]
    if n % 2:
        what = "height" if layout == "top-bottom" else "width"
        raise InputError(f"stereo {layout} needs an even {what}, got {n}")
    if is_torch:
        a, b = torch.split(img, n // 2, dim=axis)
        return a, b
    a, b = np.split(img, 2, axis=axis)
    return a, b


def join_stereo(left, right, layout: str):
    """Inverse of split_stereo."""
    if tuple(left.shape) != tuple(right.shape):
        raise ValueError(f"eyes differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}")
    axis, is_torch = _halves(left, layout)
    if is_torch:
        return torch.cat([left, right], dim=axis)
    return np.concatenate([left, right], axis=axis)


def _block_mean(g: np.ndarray, target_w: int = 128) -> np.ndarray:
    # Averaging blocks hides the eyes' horizontal disparity, which would otherwise decorrelate
    # fine detail between the halves of a genuine stereo pair.
    f = max(1, g.shape[1] // target_w)
    h, w = (g.shape[0] // f) * f, (g.shape[1] // f) * f
    return g[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = _block_mean(a), _block_mean(b)
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denom if denom > 1e-6 else 0.0


def detect_stereo(rgb: np.ndarray, projection: str) -> tuple[str, str]:
    """Guess the stereo layout of a frame without metadata; returns (layout, reason).

    Only equirect frames are judged: a 1:1 frame with similar halves is top-bottom, 4:1 is
    left-right. Note that detect_equirect wants 2:1, so for a 1:1 or 4:1 frame test one eye from
    split_stereo() rather than the whole frame.
    """
    if projection != "equirect":
        return "mono", f"projection {projection!r}: stereo is not guessed"
    h, w = np.asarray(rgb).shape[:2]
    if _aspect_is(h, w, 1.0):
        layout, axis = "top-bottom", 0
    elif _aspect_is(h, w, 4.0):
        layout, axis = "left-right", 1
    else:
        return "mono", f"aspect {w}x{h} is not a stereo 360° layout (1:1 or 4:1)"
    g = np.asarray(rgb)
    g = g[..., :3].mean(axis=2, dtype=np.float32) if g.ndim == 3 else g.astype(np.float32)
    n = g.shape[axis] // 2
    a, b = (g[:n], g[n:2 * n]) if axis == 0 else (g[:, :n], g[:, n:2 * n])
    corr = _similarity(a, b)
    if corr >= STEREO_CORR_MIN:
        return layout, f"{w}x{h} frame whose halves correlate at {corr:.2f} (min {STEREO_CORR_MIN})"
    return "mono", f"{w}x{h} frame but its halves correlate only at {corr:.2f} (min {STEREO_CORR_MIN})"
