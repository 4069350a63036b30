"""Scene cuts: where the temporal chain must restart, told apart from fast motion inside one shot.

A render carries the previous frame's dream into the next one; at a real cut (a new shot) that would
smear the old shot's dream over the new picture, so the chain restarts there. Two things make a pair of
frames look like a cut: optical flow that is reliable on too few pixels, and a colour histogram that
jumps. Both also happen inside one continuous shot: a whip pan or a shaky stretch with motion blur drops
the reliable share to 0–20 % for several frames, and a fast pan reveals new colours. Restarting there
(as this project once did, five times in one street shot) is a visible jump mid-shot each time.

What tells them apart is time. A cut is an instant: the pair before it and the pair after it are
ordinary (flow reliable), only the pair across it is not. Fast motion is a stretch: the neighbouring
pairs are unsettled too. So a pair is a cut when its flow fails *and* both neighbours' flow holds, or
when the colours jump so far (STRONG_COLOUR_JUMP) that no motion explains it. Inside a stretch of fast
motion the render keeps carrying what the flow can carry (little: its mask is low) and dreams the rest
with more steps (pipeline/render/plan.py, `DreamPlan.schedule`): a gentle degrade instead of a restart. A cut
into (or out of) fast motion reads as motion; the low mask then carries little of the old shot, and
that little fades within a few frames.

`PairStats` is what one pair tells; `is_scene_cut(prev, cur, next)` decides with one pair of context
either side (None where there is none: the clip's ends, a render's first frame). The render, the
scale-out survey and the metrics all decide with this one function.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# A frame whose flow is reliable on less than this share of pixels is unsettled: the one default
# behind `temporal.scene_cut`.
SCENE_CUT_MIN_RELIABLE = 0.4
# A colour histogram distance this far is a cut whatever the flow and the neighbours say (a flash frame, a
# cut between two fast shots, smooth shots where flow finds false matches). Lower jumps happen inside one
# shot: a fast pan of a street reveals new colours (0.54 measured on a whip pan), so they decide nothing.
STRONG_COLOUR_JUMP = 0.7
_HIST_BINS = 8
_HIST_MAX_SIDE = 160


@dataclass(frozen=True, slots=True)
class PairStats:
    """What the cut test needs from one pair of consecutive frames."""

    reliable: float  # share of pixels whose flow passes the consistency test, 0..1
    colour: float  # colour histogram distance, 0 (same colours) .. 1 (no overlap)

    def settled(self, min_reliable: float) -> bool:
        return self.reliable >= min_reliable


def colour_hist(rgb: np.ndarray) -> np.ndarray:
    """A frame's normalised 8×8×8 RGB histogram, from a copy at most _HIST_MAX_SIDE px on its longer side
    (the histogram only needs colour statistics, not detail)."""
    h, w = rgb.shape[:2]
    scale = _HIST_MAX_SIDE / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([np.ascontiguousarray(rgb)], [0, 1, 2], None, [_HIST_BINS] * 3, [0, 256] * 3)
    return hist / max(float(hist.sum()), 1.0)


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two `colour_hist`s: 0 = same colours, 1 = no overlap."""
    return float(np.clip(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA), 0.0, 1.0))


def histogram_distance(a_rgb: np.ndarray, b_rgb: np.ndarray) -> float:
    """`hist_distance` of two frames."""
    return hist_distance(colour_hist(a_rgb), colour_hist(b_rgb))


def pair_stats(mask: np.ndarray, prev_rgb: np.ndarray, cur_rgb: np.ndarray) -> PairStats:
    """`mask`: the pair's reliability mask (stages.temporal.warp.consistency_mask), H×W in 0..1."""
    return stats_from(mask, colour_hist(prev_rgb), colour_hist(cur_rgb))


def stats_from(mask: np.ndarray, prev_hist: np.ndarray, cur_hist: np.ndarray) -> PairStats:
    """`pair_stats` from the frames' `colour_hist`s, which a video's flow thread makes once per frame."""
    return PairStats(float(mask.mean()) if mask.size else 0.0, hist_distance(prev_hist, cur_hist))


def is_scene_cut(prev: PairStats | None, cur: PairStats, nxt: PairStats | None, *,
                 min_reliable: float = SCENE_CUT_MIN_RELIABLE) -> tuple[bool, str]:
    """Whether the pair `cur` (frames t−1, t) starts a new shot at t, given the pairs (t−2, t−1) and
    (t, t+1) where they exist. Returns (cut, reason); the reason is a short log line ("" when none)."""
    if cur.colour > STRONG_COLOUR_JUMP:
        return True, f"colour histogram distance {cur.colour:.2f} > {STRONG_COLOUR_JUMP:.2f}"
    if cur.settled(min_reliable):
        return False, ""  # consistent flow over that share is one scene, whatever new colours a pan shows
    if any(p is not None and not p.settled(min_reliable) for p in (prev, nxt)):
        return False, ""  # fast motion: the frames around it are unsettled too
    return True, f"only {cur.reliable:.0%} of pixels have reliable flow (< {min_reliable:.0%}), the frames " \
                 "either side steady"


def cut_flags(stats: list[PairStats | None], *, min_reliable: float = SCENE_CUT_MIN_RELIABLE) -> list[bool]:
    """`is_scene_cut` over a whole clip: stats[i] is the pair (i−1, i) (None for frame 0, or where the
    chain has no previous frame); returns one flag per frame."""
    flags = []
    for i, cur in enumerate(stats):
        if cur is None:
            flags.append(False)
            continue
        prev = stats[i - 1] if i > 0 else None
        nxt = stats[i + 1] if i + 1 < len(stats) else None
        flags.append(is_scene_cut(prev, cur, nxt, min_reliable=min_reliable)[0])
    return flags
