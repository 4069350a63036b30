"""Small helpers for equirectangular (360°) frames: seam padding, pole weights, detection, stereo.

Equirect images are periodic in x: column W-1 touches column 0. Anything that looks across the left
or right edge (convolutions, jitter, tiles, flow, warp) must see the other side, so it pads with
`wrap_pad_x`, processes, and crops with `crop_x`: this module is the one home of that rule. Rows are
not periodic (the top and bottom rows are single points on the poles), so only x wraps.

Layouts: numpy arrays are H×W×C (or H×W); torch tensors are N×C×H×W (or anything with H, W last).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from stages.common import InputError

log = logging.getLogger(__name__)

# Detection thresholds, tuned on testRoom1 (seam ratio 0.10-0.16) against 2:1 crops and stretches of
# ordinary photos (seam ratio 5-30; a noise-like Hubble field reaches 1.7 but fails the far test).
ASPECT_TOLERANCE = 0.01
SEAM_RATIO_MAX = 2.5  # mean |col0 - colW-1| / mean |adjacent column difference|
SEAM_FAR_MAX = 0.5  # seam difference / difference of columns half a turn apart
POLE_STD_MAX = 0.05  # std along the pole rows / std of the whole frame
EDGE_STD_MIN = 0.1  # std down each edge column / std of the whole frame; less = blank border
FLAT_DIFF = 0.5  # 8-bit levels: below this everywhere, the frame says nothing about wrapping
STEREO_CORR_MIN = 0.85


def _is_torch(a) -> bool:
    # By type name, so that flow, warp and metrics (numpy only) never pay for importing torch.
    return type(a).__module__.split(".")[0] == "torch"


def _x_axis(a) -> int:
    return a.dim() - 1 if _is_torch(a) else 1


def wrap_pad_x(a, left: int, right: int | None = None):
    """Pad the x axis from the opposite side: the left pad is the last columns, the right pad the first.

    numpy: H×W(×C), axis 1; torch: the last axis (N×C×H×W). Every stage that looks across the 0/360°
    meridian (convolution padding, flow, warp, mask smoothing) pads with this and crops with `crop_x`.
    Unlike F.pad(mode="circular") a pad may exceed the width (the row then repeats), which small octaves
    below a network's receptive field need.
    """
    right = left if right is None else right
    if left < 0 or right < 0:
        raise ValueError(f"pads must be >= 0, got {left}, {right}")
    if not (left or right):
        return a
    axis = _x_axis(a)
    w = a.shape[axis]
    if _is_torch(a):
        import torch

        if left <= w and right <= w:
            return torch.cat([a[..., w - left:], a, a[..., :right]], dim=axis)
        return a.index_select(axis, torch.arange(-left, w + right, device=a.device) % w)
    return np.take(a, np.arange(-left, w + right) % w, axis=axis)


def crop_x(a, left: int, right: int | None = None):
    """Undo wrap_pad_x: drop `left` and `right` columns of the x axis (numpy axis 1, torch last axis)."""
    right = left if right is None else right
    if left < 0 or right < 0:
        raise ValueError(f"pads must be >= 0, got {left}, {right}")
    w = a.shape[_x_axis(a)]
    return a[..., left:w - right] if _is_torch(a) else a[:, left:w - right]


def latitude_weight(h: int, exponent: float = 1.0, device=None):
    """cos(latitude)^exponent at each row centre, a 1×1×h×1 tensor: the share of the sphere a row covers."""
    import torch

    if h <= 0:
        raise ValueError(f"height must be positive, got {h}")
    lat = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * math.pi - math.pi / 2
    return torch.cos(lat).clamp_min(0).pow(exponent).view(1, 1, h, 1)


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
    is_torch = _is_torch(img)
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
        a, b = img.split(n // 2, dim=axis)
        return a, b
    a, b = np.split(img, 2, axis=axis)
    return a, b


def join_stereo(left, right, layout: str):
    """Inverse of split_stereo."""
    if tuple(left.shape) != tuple(right.shape):
        raise ValueError(f"eyes differ in shape: {tuple(left.shape)} vs {tuple(right.shape)}")
    axis, is_torch = _halves(left, layout)
    if is_torch:
        import torch

        return torch.cat([left, right], dim=axis)
    return np.concatenate([left, right], axis=axis)


def _block_mean(g: np.ndarray, target_w: int = 128) -> np.ndarray:
    # Averaging blocks hides the eyes' horizontal disparity, which would otherwise decorrelate
    # fine detail between the halves of a genuine stereo pair.
    f = max(1, g.shape[1] // target_w)
    h, w = (g.shape[0] // f) * f, (g.shape[1] // f) * f
    return g[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0 or b.size == 0:
        return 0.0
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
