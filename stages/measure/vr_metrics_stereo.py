"""Stereo consistency of a dreamed stereo frame: do both eyes dream the same thing?

The measure (as the issue defines it): warp the left eye's dream residual R_L = D_L − S_L into the right
eye by the *source's own* disparity and correlate it with the right residual R_R over the pixels where
that disparity passes its left–right check. 1 = one dream seen by two eyes; independent dreams of the
eyes score far lower (0.41 on a real top-bottom clip) although the source eyes correlate at ~0.99.

The disparity comes from the source eyes only (flow stage + consistency mask), never from the dream,
so the metric can be taken on any render. A render made with stereo carry warps by the same kind of
disparity; when a ground truth is known (the synthetic sample), pass it as `disp` for an independent
check.
"""

from __future__ import annotations

import numpy as np

from stages.temporal.warp import warp
from stages.vr.stereo import Disparity, estimate_disparity

MIN_RELIABLE = 0.5


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64) - a.mean(dtype=np.float64)
    b = b.astype(np.float64) - b.mean(dtype=np.float64)
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-12 else 0.0


def residual_correlation(left_residual: np.ndarray, right_residual: np.ndarray, disp: Disparity, *,
                         wrap_x: bool = True, min_reliable: float = MIN_RELIABLE) -> float:
    """Pearson correlation of warp(R_L, disparity) and R_R over reliable right-eye pixels, all channels."""
    warped = warp(np.asarray(left_residual, dtype=np.float32), disp.backward, wrap_x=wrap_x)
    sel = disp.reliable >= min_reliable
    if not sel.any():
        return 0.0
    return _pearson(warped[sel], np.asarray(right_residual, dtype=np.float32)[sel])


def stereo_stats(left_source: np.ndarray, right_source: np.ndarray, left_dreamed: np.ndarray,
                 right_dreamed: np.ndarray, *, estimator=None, disp: Disparity | None = None,
                 wrap_x: bool = True) -> dict:
    """Stereo consistency of one dreamed frame's eyes (H×W×3, 0..255; pass the 8-bit output frames).

    Either `disp` or an `estimator` (a `stages.temporal.flow.FlowEstimator`) to measure it from the sources.
    Returns: correlation (residuals, the headline), source_correlation (the same measure on the source
    eyes: the ceiling set by disparity and interpolation error), strength_left / strength_right (mean
    |residual| per channel, 0..255: a correlation is only worth as much as the dream it correlates) and
    reliable (share of right-eye pixels used).
    """
    if disp is None:
        if estimator is None:
            raise ValueError("stereo_stats needs a disparity or a flow estimator")
        disp = estimate_disparity(estimator, np.asarray(left_source), np.asarray(right_source), wrap_x=wrap_x)
    sl, sr = (np.asarray(a, dtype=np.float32) for a in (left_source, right_source))
    rl = np.asarray(left_dreamed, dtype=np.float32) - sl
    rr = np.asarray(right_dreamed, dtype=np.float32) - sr
    return {
        "correlation": residual_correlation(rl, rr, disp, wrap_x=wrap_x),
        "source_correlation": residual_correlation(sl, sr, disp, wrap_x=wrap_x),
        "strength_left": float(np.abs(rl).mean()),
        "strength_right": float(np.abs(rr).mean()),
        "reliable": float((disp.reliable >= MIN_RELIABLE).mean()),
    }


__all__ = ["residual_correlation", "stereo_stats", "MIN_RELIABLE"]
