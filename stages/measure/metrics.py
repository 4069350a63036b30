"""Temporal-coherence metrics of a dreamed video against its source, and a PNG plot of them.

All values use the 0..255 pixel scale:

* ``warp_error`` / ``source_warp_error``: for each consecutive pair, the mask-weighted mean over pixels
  of the squared difference summed over the 3 channels, ``sum M |O_t - warp(O_{t-1}, b_t)|^2 / sum M``
  (per pixel at most 3 * 255^2), with flow ``b`` and mask ``M`` always from the SOURCE frames. The
  source value is the floor set by flow/interpolation error; a coherent dream stays close to it.
* ``dream_strength``: per frame ``mean((D_t - S_t)^2)`` over pixels AND channels (per-channel MSE).

Per-pair lists have ``frames - 1`` entries: entry ``i`` belongs to the pair (i, i+1). A pair that the
render's own cut test (`stages.temporal.cuts`, on the source frames) calls a scene cut, where the pipeline restarts
the dream on purpose, has ``None`` and is left out of the mean, as does a pair whose flow is reliable on
less than the scene-cut share of the pixels (inside fast motion: the few pixels left there measure the
flow's failures more than the dream); the means are 0.0 if no pair is left.

Flow comes from `stages.temporal.flow` (DIS / Farneback, or any object with the
`stages.temporal.flow.FlowEstimator.pair` interface, e.g. a RAFT estimator), warping and the Ruder consistency
mask from `stages.temporal.warp`: the measurement uses exactly the maths the render uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from stages.common import InputError, write_atomic
from stages.temporal.cuts import SCENE_CUT_MIN_RELIABLE, cut_flags, pair_stats
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask, warp

log = logging.getLogger(__name__)

# The scene-cut share of the default config: pairs the render would restart at are skipped.
_MIN_RELIABLE = SCENE_CUT_MIN_RELIABLE

# Flow methods measured without an estimator; RAFT needs weights, so it comes in as one.
_CV_METHODS = ("dis", "farneback")


def _masked_error(cur: np.ndarray, warped_prev: np.ndarray, mask: np.ndarray) -> float:
    sq = ((cur - warped_prev) ** 2).sum(axis=2)
    return float((sq * mask).sum(dtype=np.float64) / mask.sum(dtype=np.float64))


def _mean(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else 0.0


def reference_flow(method: str, h: int, w: int) -> FlowEstimator:
    """The measurement's flow, which does not follow a render's speed settings: DIS is OpenCV's MEDIUM on the
    frame (its flow is half the frame's size) whatever the size; Farneback works at the frame's size."""
    return FlowEstimator(method, max_side=max(16, (max(h, w) + 1) // 2) if method == "dis" else None)


def warp_error_series(source_frames: Iterable[np.ndarray], dreamed_frames: Iterable[np.ndarray], *,
                      method: str = "dis", wrap_x: bool = False, estimator=None) -> dict:
    """Flow-based flicker metrics; frames are H x W x 3 uint8 RGB, consumed one pair at a time.

    When the dreamed frames have another size, each source frame is resized to it (INTER_AREA) so
    flow is measured in the dreamed frame's pixels. Raises ValueError when the two sequences have
    different lengths or the dreamed size changes mid-video. `method` is "dis" or "farneback"; for
    RAFT pass ``estimator`` (a `stages.temporal.flow.FlowEstimator`, or anything with its ``pair`` method).
    """
    if estimator is None and method not in _CV_METHODS:
        raise InputError(f"metrics flow must be dis or farneback (pass a RAFT estimator), got {method!r}")
    per_warp: list[float | None] = []
    per_src: list[float | None] = []
    per_strength: list[float] = []
    pairs: list = [None]  # PairStats per frame (none for the first): the render's cut test
    prev_src_u8: np.ndarray | None = None
    prev_src = prev_dream = None
    size: tuple[int, int] | None = None

    for src_u8, dream_u8 in zip(source_frames, dreamed_frames, strict=True):
        h, w = dream_u8.shape[:2]
        if size is None:
            size = (h, w)
        elif size != (h, w):
            raise ValueError(f"dreamed frame size changed from {size} to {(h, w)}")
        if src_u8.shape[:2] != (h, w):
            src_u8 = cv2.resize(src_u8, (w, h), interpolation=cv2.INTER_AREA)
        if estimator is None:
            estimator = reference_flow(method, h, w)
        src = src_u8.astype(np.float32)
        dream = dream_u8.astype(np.float32)
        per_strength.append(float(np.mean((dream - src) ** 2, dtype=np.float64)))

        if prev_src_u8 is not None:
            backward, forward = estimator.pair(prev_src_u8, src_u8, wrap_x=wrap_x)
            mask = consistency_mask(backward, forward, wrap_x=wrap_x)
            pairs.append(pair_stats(mask, prev_src_u8, src_u8))
            if mask.mean() >= _MIN_RELIABLE:  # fewer reliable pixels than that measure the flow, not the dream
                per_warp.append(_masked_error(dream, warp(prev_dream, backward, wrap_x=wrap_x), mask))
                per_src.append(_masked_error(src, warp(prev_src, backward, wrap_x=wrap_x), mask))
            else:
                per_warp.append(None)
                per_src.append(None)
        prev_src_u8, prev_src, prev_dream = src_u8, src, dream

    for j, cut in enumerate(cut_flags(pairs, min_reliable=_MIN_RELIABLE)):
        if cut:  # the render restarts the dream there on purpose: the same test, so the same pairs
            log.info("metrics: pair %d-%d looks like a cut (%.0f%% reliable flow), skipped", j - 1, j,
                     100 * pairs[j].reliable)
            per_warp[j - 1] = per_src[j - 1] = None

    return {
        "warp_error": _mean(per_warp),
        "source_warp_error": _mean(per_src),
        "dream_strength": _mean(per_strength),
        "frames": len(per_strength),
        "per_frame": {"warp_error": per_warp, "source_warp_error": per_src, "dream_strength": per_strength},
    }


# Plot layout in pixels; BGR colours because the canvas goes straight to cv2.imencode.
_W, _H = 960, 480
_LEFT, _RIGHT, _TOP, _BOTTOM = 90, 30, 50, 60
_SERIES = (("warp_error", "warp error", (200, 80, 30), 1),
           ("source_warp_error", "source warp error", (150, 150, 150), 1),
           ("dream_strength", "dream strength", (40, 40, 210), 0))
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** np.floor(np.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _render(per_frame: dict, envelope=None, key_frames=()) -> np.ndarray:
    img = np.full((_H, _W, 3), 255, np.uint8)
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _TOP, _H - _BOTTOM
    series = [(label, colour, offset, list(per_frame.get(key) or []))
              for key, label, colour, offset in _SERIES]
    values = [v for *_, vals in series for v in vals if v is not None]
    n_frames = max([len(vals) + offset for _, _, offset, vals in series] + [1])
    y_max = _nice_max(max(values) if values else 0.0)

    # Grid and y tick labels (5 intervals), then the axes on top.
    for i in range(6):
        y = int(round(y1 - (y1 - y0) * i / 5))
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.putText(img, f"{y_max * i / 5:g}", (8, y + 4), _FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    last = max(n_frames - 1, 1)
    for i in range(6):
        frame = round(last * i / 5)
        x = int(round(x0 + (x1 - x0) * frame / last))
        cv2.line(img, (x, y1), (x, y1 + 5), (0, 0, 0), 1)
        cv2.putText(img, str(frame), (x - 8, y1 + 20), _FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.line(img, (x0, y0), (x0, y1), (0, 0, 0), 1)
    cv2.line(img, (x0, y1), (x1, y1), (0, 0, 0), 1)
    cv2.putText(img, "frame", ((x0 + x1) // 2 - 20, _H - 15), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "squared error (0..255 scale)", (x0, 22), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not values:
        cv2.putText(img, "no data", ((x0 + x1) // 2 - 30, (y0 + y1) // 2), _FONT, 0.7, (0, 0, 0), 1,
                    cv2.LINE_AA)

    if key_frames:
        # Key frames of the dreamed file under the curves: an encoder's pulse lines up with them.
        for k in key_frames:
            x = int(round(x0 + (x1 - x0) * k / last))
            for y in range(y0, y1, 8):
                cv2.line(img, (x, y), (x, min(y + 4, y1)), (120, 190, 120), 1)
        ly = y0 + 14 + 20 * (len(series) + (envelope is not None and len(envelope) > 0))
        cv2.line(img, (x1 - 175, ly - 10), (x1 - 175, ly + 2), (120, 190, 120), 1)
        cv2.putText(img, "key frame", (x1 - 150, ly), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for label_i, (label, colour, offset, vals) in enumerate(series):
        # None (skipped pair) breaks the line instead of drawing through it.
        run: list[tuple[int, int]] = []
        for i, v in enumerate(vals + [None]):
            if v is None:
                if len(run) > 1:
                    cv2.polylines(img, [np.array(run, np.int32)], False, colour, 2, cv2.LINE_AA)
                elif run:
                    cv2.circle(img, run[0], 3, colour, -1, cv2.LINE_AA)
                run = []
                continue
            x = x0 + (x1 - x0) * (i + offset) / last
            y = y1 - (y1 - y0) * min(float(v) / y_max, 1.0)
            run.append((int(round(x)), int(round(y))))
        ly = y0 + 14 + 20 * label_i
        cv2.line(img, (x1 - 190, ly - 4), (x1 - 160, ly - 4), colour, 2, cv2.LINE_AA)
        cv2.putText(img, label, (x1 - 150, ly), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if envelope is not None and len(envelope):
        # The audio envelope that drove a reactive render, on its own 0..1 scale (the plot's full height).
        colour = (160, 40, 160)
        pts = [(int(round(x0 + (x1 - x0) * i / last)), int(round(y1 - (y1 - y0) * float(np.clip(v, 0, 1)))))
               for i, v in enumerate(envelope)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 1, cv2.LINE_AA)
        ly = y0 + 14 + 20 * len(series)
        cv2.line(img, (x1 - 190, ly - 4), (x1 - 160, ly - 4), colour, 2, cv2.LINE_AA)
        cv2.putText(img, "react envelope (0..1)", (x1 - 150, ly), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def plot_metrics(per_frame: dict, png_path: str | os.PathLike, envelope=None, *, key_frames=()) -> None:
    """Draw the per-frame series of `warp_error_series` as a PNG (OpenCV only), written atomically.

    Pair series are drawn at the later frame of each pair; ``None`` entries leave a gap; `key_frames` (frame
    indices) are dashed verticals.
    """
    ok, data = cv2.imencode(".png", _render(per_frame, envelope, key_frames))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    write_atomic(Path(png_path), lambda f: f.write(data.tobytes()))


def seam_stats(residual: np.ndarray) -> dict:
    """How visible the 0/360° meridian is in a dream residual r = dreamed − source (H×W[×C]).

    continuity: mean |r(col 0) − r(col W−1)| ÷ mean |r(col k) − r(col k+1)| over the interior (≈1
    seamless; a cut shows as > 1). band: mean |r| over the W/64 columns each side of the seam ÷ mean
    |r| overall (≈1 seamless; zero padding leaves an under-dreamed strip < 1, doubled work a hot one > 1).
    Both are noisy on one image: average them over frames or yaw rotations.
    """
    r = np.asarray(residual, dtype=np.float32)
    w = r.shape[1]
    interior = float(np.abs(np.diff(r[:, 1:-1], axis=1)).mean())
    seam = float(np.abs(r[:, 0] - r[:, -1]).mean())
    k = max(1, w // 64)
    band = float(np.concatenate([np.abs(r[:, :k]), np.abs(r[:, -k:])], axis=1).mean())
    return {"continuity": seam / max(interior, 1e-9), "band": band / max(float(np.abs(r).mean()), 1e-9)}


def pole_stats(source: np.ndarray, dreamed: np.ndarray, rows: int | None = None) -> dict:
    """Pinching at the poles: horizontal variance of the top and bottom rows, dreamed ÷ source.

    A pole row is one point of the sphere smeared across the width, so a real panorama's pole rows are
    near-uniform; a dream that swirls there raises their variance by orders of magnitude.
    """
    s = np.asarray(source, dtype=np.float32)
    d = np.clip(np.asarray(dreamed, dtype=np.float32), 0, 255)
    n = rows or max(1, s.shape[0] // 32)
    caps = lambda a: np.concatenate([a[:n], a[-n:]])  # noqa: E731
    var_s = float(caps(s).var(axis=1).mean())
    var_d = float(caps(d).var(axis=1).mean())
    return {"row_variance_ratio": var_d / max(var_s, 1.0), "source_row_variance": var_s,
            "pole_residual_ratio": float(np.abs(caps(d - s)).mean() / max(np.abs(d - s).mean(), 1e-9))}
