"""Stereo carry: one dream for both eyes of a stereo 360° frame, carried from the left eye by disparity.

Dreaming the two eyes independently (even as one batch with one seed) gives each eye its own
hallucination: DeepDream amplifies whatever the network half-sees, and a few pixels of disparity are
enough to make it see different things. In a headset that is binocular rivalry. Here the dream lives in
the left eye only; the right eye is

    start_R = S_R + M · warp(R_L, d) + (1 − M) · C_R      (C_R: the right eye's own temporal carry, or 0)

then dreamed with a per-pixel step mask 1 − M (same seed), i.e. only where the transfer is unreliable:
half-occluded strips beside near objects that the left eye cannot see, and wherever the disparity fails
its left–right check. R_L = D_L − S_L is the left residual, d the disparity from the right eye to the
left (the flow stage's backward map, `stages.temporal.flow` conventions), M its reliability: the left–right
consistency mask (`stages.temporal.warp.consistency_mask`: Ruder et al.'s round-trip, boundary and out-of-frame
tests), with ambiguous pixels (flat colour, blurred depth edges) rescued by a colour test.

Cost: the masked ascent computes gradients only on crops around the unreliable pixels (plus context), so
a stereo frame costs one eye's dream plus a small share of another (`dream_stereo` reports the share).

Arrays are numpy H×W×3 float32 in 0..255 (uint8 accepted for sources), flows H×W×2 float32 pixels,
masks H×W float32 in 0..1; the dream itself runs on torch tensors through `stages.dream.ascent`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import cv2
import numpy as np
import torch

from stages.dream.ascent import MIN_OCTAVE_SIDE, Objective, Schedule, dream_octaves, to_array, to_tensor
from stages.temporal.warp import consistency_mask, warp
from stages.vr.spherical import crop_x, latitude_weight, wrap_pad_x

# Pixels with a step-mask value below this are left alone by the crop planner (the soft mask's tails).
ACTIVE_MIN = 0.02
# Context around each unreliable region in a crop, in pixels of the eye: the network's receptive field
# is wider, but the dream there is monocular (one eye sees it) and only needs to look like the rest.
CROP_MARGIN = 16
# Above this share of the eye's area in the crop atlas, one masked dream of the whole eye is about as cheap
# (one call, no margins) and exact.
MAX_CROP_SHARE = 0.8
# Disparity fill for pixels that fail the left–right check: Gaussian reach in pixels and the weight of
# the zero-disparity prior (a few pixels' worth, so a lone reliable pixel does not dictate a region).
FILL_SIGMA = 12.0
FILL_PRIOR = 0.02
# Colour test for rescuing those pixels: mean |left(x + d) − right(x)| over channels (0..255 levels),
# averaged over a ~3 px neighbourhood, below this = the filled disparity explains the right eye.
PHOTO_SIGMA = 1.5
PHOTO_MAX_ERR = 10.0
PHOTO_SUBPIXEL = 0.5  # + this many pixels' worth of the row's colour gradient
# How far along the row (pixels) a failed pixel looks for the near and far disparity of its neighbours.
CANDIDATE_REACH = 16


@dataclass(frozen=True, slots=True)
class Disparity:
    """Disparity between the source eyes of one stereo frame (computed on sources only, ahead of the dream)."""

    backward: np.ndarray  # on the right eye, H×W×2: right[y, x] ≈ left[y + dy, x + dx]
    forward: np.ndarray  # on the left eye, H×W×2: left[y, x] ≈ right[y + dy, x + dx]
    reliable: np.ndarray  # on the right eye, H×W in 0..1: 1 = carry the left dream here, 0 = dream afresh

    @property
    def reliable_share(self) -> float:
        return float(self.reliable.mean())


def disparity_from_flows(backward: np.ndarray, forward: np.ndarray, *, left: np.ndarray | None = None,
                         right: np.ndarray | None = None, wrap_x: bool = True, horizontal: bool = True,
                         sigma: float = 0.8) -> Disparity:
    """Disparity and its reliability from the flow pair (right → left, left → right) of the source eyes.

    `horizontal` drops the vertical component. Stereo 360° (ODS) disparity is horizontal by construction:
    both eyes' rays at a pixel lie in the same latitude plane, so a scene point differs only in yaw,
    by an angle that shrinks toward the poles (renderers fade the eye distance there). Whatever vertical
    flow the solver reports is noise (aperture problem along horizontal edges, textureless caps), and
    noise shifts the carried dream up and down. Keep it (horizontal=False) for a badly rectified rig.

    Reliability starts as the left–right consistency mask (`stages.temporal.warp.consistency_mask`). With the
    source eyes given, pixels that fail it are rescued where they are merely *ambiguous*: each gets the
    best-matching of three disparities (a smooth fill from the reliable pixels around, decaying to 0,
    the pole value, where nothing is reliable; the nearest and the farthest reliable disparity within
    CANDIDATE_REACH along its row, i.e. object or background at a blurred depth edge), and counts as
    reliable when the left eye's colour there matches the right eye's. Without this, uniform regions (pole
    caps, plain walls, flat objects), where a solver's flow is arbitrary and fails the round trip, would
    be dreamed afresh in the right eye: rivalry exactly where a headset shows large calm areas. A true
    half-occlusion fails the colour test unless the background it reveals looks like a neighbour's; then
    carrying that neighbour's dream into it is harmless, since only one eye sees it.
    """
    b = np.array(backward, dtype=np.float32)
    f = np.array(forward, dtype=np.float32)
    if horizontal:
        b[..., 1] = 0.0
        f[..., 1] = 0.0
    m = consistency_mask(b, f, wrap_x=wrap_x, sigma=sigma)
    if left is None or right is None:
        return Disparity(b, f, m)
    left, right = np.asarray(left, dtype=np.float32), np.asarray(right, dtype=np.float32)
    fill = np.dstack([_normalized_blur(b[..., c], m, wrap_x) for c in range(2)])
    b = m[..., None] * b + (1.0 - m[..., None]) * fill
    err = _colour_error(left, right, b, wrap_x)
    # Depth edges: the solver blurs disparity across them, so a failed pixel beside an object is often
    # explained by the nearest or the farthest reliable disparity along its row (object or background).
    failed = m < 0.5
    reliable_x = np.where(failed, np.nan, b[..., 0])
    for pick in (np.fmax, np.fmin):
        cand = _row_extreme(reliable_x, pick, wrap_x)
        usable = failed & np.isfinite(cand)
        trial = b.copy()
        trial[..., 0] = np.where(usable, cand, b[..., 0])
        e = _colour_error(left, right, trial, wrap_x)
        better = usable & (e < err)
        b[better], err = trial[better], np.where(better, e, err)
    # Tolerance: a flat level, plus half a pixel of misregistration along the row (a sub-pixel error at
    # a high-contrast edge is a large colour error, not a wrong disparity).
    grad = np.abs(cv2.Sobel(right.mean(axis=2), cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)) / 8
    matches = _blur((err < PHOTO_MAX_ERR + PHOTO_SUBPIXEL * _blur(grad, PHOTO_SIGMA, wrap_x)).astype(np.float32),
                    sigma, wrap_x)
    return Disparity(b, f, np.maximum(m, matches))


def _colour_error(left: np.ndarray, right: np.ndarray, backward: np.ndarray, wrap_x: bool) -> np.ndarray:
    """Mean |left(x + d) − right(x)| over channels, averaged over a few pixels around."""
    return _blur(np.abs(warp(left, backward, wrap_x=wrap_x) - right).mean(axis=2), PHOTO_SIGMA, wrap_x)


def _row_extreme(values: np.ndarray, pick, wrap_x: bool) -> np.ndarray:
    """Running max (pick=np.fmax) or min (np.fmin) of the non-NaN values within ±CANDIDATE_REACH along each row."""
    k = CANDIDATE_REACH
    padded = wrap_pad_x(values, k) if wrap_x else np.pad(values, ((0, 0), (k, k)), constant_values=np.nan)
    w = values.shape[1]
    out = padded[:, :w].copy()
    for off in range(1, 2 * k + 1):
        out = pick(out, padded[:, off:off + w])
    return out


def _blur(a: np.ndarray, sigma: float, wrap_x: bool) -> np.ndarray:
    """Gaussian blur; with `wrap_x` the columns wrap around (pad from the other side, blur, crop)."""
    pad = min(a.shape[1], int(math.ceil(3 * sigma)) + 1) if wrap_x else 0
    out = cv2.GaussianBlur(wrap_pad_x(a, pad), (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(crop_x(out, pad))


def _normalized_blur(values: np.ndarray, weight: np.ndarray, wrap_x: bool) -> np.ndarray:
    """Weighted smooth fill Σ G·w·v / (Σ G·w + ε): far from any weight it decays to 0 (no disparity)."""
    return _blur(values * weight, FILL_SIGMA, wrap_x) / (_blur(weight, FILL_SIGMA, wrap_x) + FILL_PRIOR)


def estimate_disparity(estimator, left: np.ndarray, right: np.ndarray, *, wrap_x: bool = True,
                       horizontal: bool = True) -> Disparity:
    """Disparity of one stereo frame's source eyes (H×W×3 uint8) with a flow estimator.

    `estimator` is a `stages.temporal.flow.FlowEstimator` (or anything with its `pair(prev, cur, wrap_x=)`): the
    left eye plays the previous frame and the right eye the current one, so its backward flow is the
    right eye's map into the left. Both directions are solved, as for motion: −forward is not backward
    at occlusions, and that difference is exactly what the consistency mask needs.
    """
    backward, forward = estimator.pair(left, right, wrap_x=wrap_x)
    return disparity_from_flows(backward, forward, left=left, right=right, wrap_x=wrap_x, horizontal=horizontal)


def transfer_residual(left_residual: np.ndarray, disp: Disparity, *, wrap_x: bool = True) -> np.ndarray:
    """The left eye's dream residual D_L − S_L pulled into the right eye by the disparity (H×W×3 float32)."""
    return warp(np.asarray(left_residual, dtype=np.float32), disp.backward, wrap_x=wrap_x)


def right_eye_start(right_source: np.ndarray, left_residual: np.ndarray, disp: Disparity, *,
                    wrap_x: bool = True, right_init: np.ndarray | None = None,
                    grow: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(start image, step mask) for the right eye's masked ascent.

    start = S_R + M·warp(R_L) + (1 − M)·(right_init − S_R); `right_init` is the right eye's own temporal
    start (`stages.temporal.warp.temporal_init`), so re-dreamed strips continue their own chain instead of
    flickering; without it they start from the source. The step mask is 1 − M with the unreliable region
    grown by `grow` pixels: the solver's disparity is blurred across depth edges, and a carried residual
    a pixel off at an occlusion edge is worse than a re-dreamed pixel.
    """
    src = np.asarray(right_source, dtype=np.float32)
    m = disp.reliable
    if grow > 0:
        m = cv2.erode(m, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    m3 = m[..., None]
    start = src + m3 * transfer_residual(left_residual, disp, wrap_x=wrap_x)
    if right_init is not None:
        start += (1.0 - m3) * (np.asarray(right_init, dtype=np.float32) - src)
    return np.clip(start, 0.0, 255.0), (1.0 - m).astype(np.float32)


def _widest_gap_centre(cols: np.ndarray) -> int:
    """Centre column of the longest cyclic run of False in `cols` (some column must be False)."""
    w = len(cols)
    best, best_start, run, start = 0, 0, 0, 0
    for i in range(2 * w):  # twice round, so a run across the seam is counted whole
        if not cols[i % w]:
            if run == 0:
                start = i
            run += 1
            if run > best:
                best, best_start = min(run, w), start
        else:
            run = 0
    return (best_start + best // 2) % w


def plan_crops(active: np.ndarray, *, margin: int = CROP_MARGIN, min_side: int = MIN_OCTAVE_SIDE,
               wrap_x: bool = True) -> tuple[int, list[tuple[int, int, int, int]]] | None:
    """Disjoint boxes (y0, x0, y1, x1) covering every active pixel with `margin` of context.

    With `wrap_x` the eye is first rolled left by the returned shift, which puts the seam in the widest
    run of inactive columns, so no box has to wrap. Boxes are at least `min_side` on each side (the
    octave pyramid needs it). None: the boxes would cover more than MAX_CROP_SHARE of the eye (or every
    column is active on a 360° eye), and a masked dream of the whole eye is the better deal.
    """
    h, w = active.shape
    cols = active.any(axis=0)
    if not cols.any():
        return 0, []
    shift = 0
    if wrap_x:
        if cols.all():
            return None
        shift = _widest_gap_centre(cols)
        active = np.roll(active, -shift, axis=1)
    _, _, stats, _ = cv2.connectedComponentsWithStats(active.astype(np.uint8), connectivity=8)
    boxes = []
    for x, y, bw, bh, _ in stats[1:]:
        y0, x0, y1, x1 = y - margin, x - margin, y + bh + margin, x + bw + margin
        y0, y1 = _at_least(y0, y1, min_side, h)
        x0, x1 = _at_least(x0, x1, min_side, w)
        boxes.append((y0, x0, y1, x1))
    merged = True
    while merged:  # union overlapping boxes until none overlap (few boxes: quadratic is fine)
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    if sum((y1 - y0) * (x1 - x0) for y0, x0, y1, x1 in boxes) > MAX_CROP_SHARE * h * w:
        return None
    return shift, boxes


def _at_least(a: int, b: int, side: int, n: int) -> tuple[int, int]:
    """Clip [a, b) to [0, n) and widen it to `side` (or n) around its centre."""
    side = min(side, n)
    if b - a < side:
        c = (a + b) // 2
        a, b = c - side // 2, c - side // 2 + side
    a, b = max(0, a), min(n, b)
    if b - a < side:  # hit an edge: extend on the other side
        a, b = (0, side) if a == 0 else (n - side, n)
    return a, b


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def pack_boxes(sizes: list[tuple[int, int]]) -> tuple[int, int, list[tuple[int, int]]]:
    """Shelf-pack (h, w) boxes into one atlas: (atlas h, atlas w, top-left (y, x) of each box).

    Tallest first, left to right in rows; of a few row widths (from the widest box to about twice the
    square root of the total area) the one with the smallest atlas wins. Waste is the ragged row ends.
    """
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0])
    widest = max(w for _, w in sizes)
    reach = max(widest, math.ceil(2 * math.sqrt(sum(h * w for h, w in sizes))))
    best: tuple[int, int, list[tuple[int, int]]] | None = None
    for width in sorted({widest + (reach - widest) * k // 8 for k in range(9)}):
        pos: list[tuple[int, int]] = [(0, 0)] * len(sizes)
        y = x = shelf = used = 0
        for i in order:
            h, w = sizes[i]
            if x + w > width:
                y, x, shelf = y + shelf, 0, 0
            pos[i] = (y, x)
            x, shelf, used = x + w, max(shelf, h), max(used, x + w)
        if best is None or (y + shelf) * used < best[0] * best[1]:
            best = (y + shelf, used, pos)
    assert best is not None
    return best


def masked_dream(start: np.ndarray, step_mask: np.ndarray, net, obj: Objective, sch: Schedule, seed: int, *,
                 device=None, amp_dtype: torch.dtype | None = None, crops: bool = True, margin: int = CROP_MARGIN,
                 min_side: int = MIN_OCTAVE_SIDE) -> tuple[np.ndarray, float]:
    """Dream `start` (H×W×3, 0..255) only where `step_mask` > 0; returns (dreamed, pixels whose gradient was
    computed as a share of the eye's: the cost relative to a full dream of the eye).

    With `crops` the boxes around the active pixels (`plan_crops`) are packed side by side into one
    atlas image and dreamed as one flat image: one call, so small crops do not each pay the network's
    per-call overhead, and each crop's `margin` keeps its neighbours in the atlas away from its active
    pixels. Small crops get fewer octaves (a strip a few pixels wide has no coarse structure of its
    own; the carried dream around it supplies that). Outside the 360° geometry the atlas cannot know its
    latitude, so the eye's pole weight enters the step mask instead, divided by its mean over the rows:
    the full-eye dream normalises its step by mean |g·cos^k φ|, and this keeps a crop's step per pixel
    on that scale.
    """
    device = device or torch.device("cpu")
    h, w = step_mask.shape
    mask = step_mask.astype(np.float32)
    plan = plan_crops(mask > ACTIVE_MIN, wrap_x=sch.wrap_x, margin=margin, min_side=min_side) if crops else None
    if plan is not None and not plan[1]:
        return np.asarray(start, dtype=np.float32).copy(), 0.0  # nothing is unreliable
    x = to_tensor(start, device)
    m = torch.from_numpy(mask).to(device)[None, None]
    if plan is not None:
        shift, boxes = plan
        ah, aw, pos = pack_boxes([(y1 - y0, x1 - x0) for y0, x0, y1, x1 in boxes])
        if ah * aw > MAX_CROP_SHARE * h * w:
            plan = None  # the packing wasted too much: the whole eye is cheaper
    if plan is None:
        y = dream_octaves(x, net, obj, sch, _generator(seed), amp_dtype=amp_dtype, step_mask=m)
        return to_array(y), 1.0
    if sch.equirect and sch.pole_exponent:
        lat = latitude_weight(h, sch.pole_exponent, device)
        m = m * lat / lat.mean()
    x, m = torch.roll(x, -shift, 3), torch.roll(m, -shift, 3)
    atlas = torch.full((1, 3, ah, aw), 0.5, device=device)  # gaps: neutral grey, never stepped (mask 0)
    atlas_m = torch.zeros((1, 1, ah, aw), device=device)
    for (y0, x0, y1, x1), (py, px) in zip(boxes, pos):
        atlas[..., py:py + y1 - y0, px:px + x1 - x0] = x[..., y0:y1, x0:x1]
        atlas_m[..., py:py + y1 - y0, px:px + x1 - x0] = m[..., y0:y1, x0:x1]
    flat = replace(sch, equirect=False, wrap_x=False, pole_exponent=0.0, sphere=None)
    dreamed = dream_octaves(atlas, net, obj, flat, _generator(seed), amp_dtype=amp_dtype, step_mask=atlas_m)
    out = x.clone()
    for (y0, x0, y1, x1), (py, px) in zip(boxes, pos):
        out[..., y0:y1, x0:x1] = dreamed[..., py:py + y1 - y0, px:px + x1 - x0]
    return to_array(torch.roll(out, shift, 3)), ah * aw / (h * w)


def full_octave_side(sch: Schedule) -> int:
    """Smallest crop side that still gets every octave of the schedule (as the whole eye does)."""
    return math.ceil(MIN_OCTAVE_SIDE * sch.octave_scale ** (sch.octaves - 1))


@dataclass(frozen=True, slots=True)
class StereoDream:
    left: np.ndarray  # H×W×3 float32 0..255, unrounded (its residual is the temporal chain's state)
    right: np.ndarray
    redreamed: float  # share of right-eye pixels whose step mask is active (> ACTIVE_MIN)
    right_cost: float  # right eye's gradient area as a share of one full eye (0 = nothing to re-dream)


def dream_stereo(left_source: np.ndarray, right_source: np.ndarray, disp: Disparity, net, obj: Objective,
                 sch: Schedule, seed: int, *, left_init: np.ndarray | None = None,
                 right_init: np.ndarray | None = None, left_hold: torch.Tensor | None = None, device=None,
                 amp_dtype: torch.dtype | None = None, crops: bool = True, margin: int = CROP_MARGIN,
                 min_side: int = MIN_OCTAVE_SIDE, on_step: Callable[[int, int], None] | None = None) -> StereoDream:
    """One stereo frame: dream the left eye, carry its residual into the right eye, dream the rest.

    Per-frame inputs: the source eyes (H×W×3 uint8) and `disp` = `estimate_disparity(left, right)`, both
    from the source frame only, so the producer thread computes them ahead of the dream; on a frame that
    continues the temporal chain, `left_init` and `right_init` = `stages.temporal.warp.temporal_init` of each eye
    from the previous frame's residual of that eye and that eye's motion flow (without `right_init` the
    right eye's re-dreamed strips restart from the source every frame: weaker under warm iterations, and
    they flicker). `sch` is the frame's schedule (warm or full), `seed` the frame's seed (config seed +
    frame index), used for both eyes. The caller keeps both eyes' residuals (D − S) as the temporal state,
    exactly as for independent eyes: the right one is derived from the left each frame, so both stay
    consistent. `left_hold` is the left eye's temporal term (`dream_octaves`' hold). `on_step` reports the
    left eye's steps (the right eye's crops are a small extra).
    """
    device = device or torch.device("cpu")
    lx = to_tensor(left_init if left_init is not None else left_source, device)
    left = to_array(dream_octaves(lx, net, obj, sch, _generator(seed), amp_dtype=amp_dtype, hold=left_hold,
                                  on_step=on_step))
    left_residual = left - np.asarray(left_source, dtype=np.float32)
    start, mask = right_eye_start(right_source, left_residual, disp, wrap_x=sch.wrap_x, right_init=right_init)
    right, cost = masked_dream(start, mask, net, obj, sch, seed, device=device, amp_dtype=amp_dtype, crops=crops,
                               margin=margin, min_side=min_side)
    return StereoDream(left, right, float((mask > ACTIVE_MIN).mean()), cost)


__all__ = ["Disparity", "StereoDream", "disparity_from_flows", "estimate_disparity", "transfer_residual",
           "right_eye_start", "plan_crops", "masked_dream", "dream_stereo"]
