"""Splitting a render into chunks for scale-out, and the survey that finds where its shots change.

A chunk is a run of whole checkpoint segments (so its output is the usual closed-GOP segments and the
join is unchanged). Boundaries prefer scene cuts: at a cut the temporal chain restarts anyway, so the
next chunk starts rendering at the cut frame itself, both chunks restart there, and the frames where
they meet are the one-process render's. Inside a long shot a chunk starts `warmup` frames early (whole
segments) with a fresh dream; those frames are the overlap, rendered by both chunks and cross-faded in
the residual domain (dreamed − source), so the dream hands over from one chain to the other without a
pop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stages.media.decode import VideoReader
from stages.temporal.cuts import cut_flags, pair_stats
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import consistency_mask

SURVEY_SIDE = 192  # frames are surveyed for cuts at this size: cheap, and cuts are large-scale events


@dataclass(frozen=True, slots=True)
class Survey:
    times: tuple[float, ...]  # each frame's time in seconds from the stream's start (VideoReader.origin)
    cuts: tuple[int, ...]  # frames that start a new shot


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    start: int  # first frame this chunk outputs (a segment boundary)
    end: int  # one past the last (a segment boundary, or the render's end)
    warm_start: int  # where it starts dreaming: start − overlap inside a shot, the cut frame at a cut
    head_overlap: int  # frames [start − head_overlap, start) are cross-faded with the previous chunk
    tail_overlap: int  # frames [end − tail_overlap, end) are cross-faded with the next chunk
    resets: tuple[int, ...] = ()  # frames where the chain restarts whatever the flow says (the cuts at its ends)

    @property
    def encode_until(self) -> int:
        return self.end - self.tail_overlap

    @property
    def capture(self) -> tuple[tuple[int, int], ...]:
        spans = []
        if self.head_overlap:
            spans.append((self.start - self.head_overlap, self.start))
        if self.tail_overlap:
            spans.append((self.end - self.tail_overlap, self.end))
        return tuple(spans)

    @property
    def frames(self) -> int:
        return self.end - self.warm_start


def survey(src, *, start: float, max_frames: int | None, scene_cut: float) -> Survey:
    """Decode the render's frames once, small, for their times and the scene cuts (the render's own test)."""
    est, prev, times, stats = FlowEstimator("dis"), None, [], []
    with VideoReader(src, start=start, max_frames=max_frames, max_side=SURVEY_SIDE) as r:
        for fr in r:
            times.append(float((fr.pts - r.origin) * fr.time_base) if fr.pts is not None else fr.index / 30.0)
            pair = None
            if prev is not None:
                b, f = est.pair(prev, fr.rgb)
                pair = pair_stats(consistency_mask(b, f), prev, fr.rgb)
            stats.append(pair)
            prev = fr.rgb
    cuts = [i for i, cut in enumerate(cut_flags(stats, min_reliable=scene_cut)) if cut]
    return Survey(tuple(times), tuple(cuts))


def plan_chunks(frames: int, cuts: tuple[int, ...] | list[int], *, segment: int, target: int,
                warmup: int) -> list[Chunk]:
    """Chunks of about `target` frames (whole segments of `segment` frames) over `frames` frames.

    A boundary goes to the first segment boundary after a cut when one falls within half a chunk of the
    target; otherwise to the target itself, with an overlap of `warmup` frames rounded up to segments.
    """
    target = max(segment, math.ceil(target / segment) * segment)
    overlap = math.ceil(warmup / segment) * segment if warmup else 0
    bounds: list[tuple[int, int | None]] = [(0, None)]  # (boundary, the cut it follows or None)
    while frames - bounds[-1][0] > 1.5 * target:
        last = bounds[-1][0]
        near = [c for c in cuts if last + target // 2 < c <= last + 3 * target // 2]
        if near:
            c = min(near, key=lambda c: abs(c - last - target))
            b = math.ceil(c / segment) * segment
            if b < frames:
                bounds.append((b, c))
                continue
        bounds.append((last + target, None))
    # The overlap at boundary k (shared by chunk k−1's tail and chunk k's head): none at a cut.
    ov = [0] + [0 if cut is not None else min(overlap, b - bounds[k][0]) for k, (b, cut) in enumerate(bounds[1:])]
    chunks = []
    for k, (b, cut) in enumerate(bounds):
        end, next_cut = bounds[k + 1] if k + 1 < len(bounds) else (frames, None)
        tail = ov[k + 1] if k + 1 < len(bounds) else 0
        warm = cut if cut is not None else b - ov[k]
        resets = tuple(x for x in (cut, next_cut) if x is not None)
        chunks.append(Chunk(k, b, end, warm, ov[k], tail, resets))
    return chunks


def crossfade(tail: np.ndarray, head: np.ndarray, i: int, n: int) -> np.ndarray:
    """Frame i of an n-frame overlap: the earlier chunk's residual fading into the later one's."""
    a = np.float32((i + 0.5) / n)
    return (np.float32(1) - a) * tail.astype(np.float32) + a * head.astype(np.float32)
