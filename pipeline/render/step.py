"""The frame step: one source frame in, one dreamed frame out. `deepdream image` and every frame of
`deepdream video` go through `dream_frame`; only the video's frames bring a temporal chain with them."""

from __future__ import annotations

import numpy as np

from pipeline.music.table import apply_row, drive
from pipeline.render.plan import DreamPlan
from stages.temporal.flow import FlowEstimator
from stages.temporal.warp import temporal_init
from stages.vr import spherical as S
from stages.vr.stereo import Disparity, estimate_disparity

Motion = list[tuple[np.ndarray, np.ndarray]]  # per eye: (backward flow to t−1, reliability mask)


def eyes(img: np.ndarray, stereo: str) -> list[np.ndarray]:
    return list(S.split_stereo(img, stereo)) if stereo != "mono" else [img]


def dream_frame(engine, plan: DreamPlan, source: np.ndarray, *, index: int,
                prev_residual: np.ndarray | None = None, motion: Motion | None = None,
                ref_strength: float | None = None, disparity: Disparity | None = None,
                params: dict | None = None, on_step=None) -> tuple[np.ndarray, float]:
    """Dream `source` (H×W×3 uint8) as frame `index` → (float32 0..255 unrounded, reference strength).

    With `motion` and the previous frame's residual (dreamed − source) the frame continues the temporal
    chain: it starts from S + blend·M·warp(R), takes the plan's warm iterations, and its new detail is
    held back where the flow is reliable (temporal.hold). Otherwise it starts fresh from the source with
    the full schedule, and its residual strength becomes the shot's reference, which later frames are
    scaled to (temporal.steady): without it a carried dream swells (or fades) over a long shot.
    Stereo frames are dreamed once, in the left eye, and carried to the right by `disparity` (computed
    here when the caller has none), or, with spherical.stereo = independent, as a batch of two.
    `params`: the frame's row of the render's parameter table (timeline, react). The reference strength
    is kept per unit of `drive`, so an animated step size still moves the strength of a held dream.
    """
    plan, base, weights = apply_row(plan, engine.schedule, params)
    warm = plan.temporal and motion is not None and prev_residual is not None
    src_eyes = eyes(source, plan.stereo)
    inits, hold = list(src_eyes), None
    if warm:
        inits = [temporal_init(s.astype(np.float32), r, b, m, blend=plan.blend, wrap_x=plan.wrap_x)
                 for s, r, (b, m) in zip(src_eyes, eyes(prev_residual, plan.stereo), motion)]
        if plan.hold > 0:
            hold = np.stack([np.float32(plan.hold) * m for _, m in motion])
    reliable = min(float(m.mean()) for _, m in motion) if warm else 1.0
    sch = plan.schedule(base, warm=warm, reliable=reliable)
    if plan.stereo_carry:
        if disparity is None:
            disparity = estimate_disparity(FlowEstimator(plan.flow), *src_eyes, wrap_x=plan.wrap_x)
        pair = engine.dream_stereo(*src_eyes, disparity, frame_index=index, schedule=sch, left_init=inits[0],
                                   right_init=inits[1] if warm else None,
                                   hold=hold[0] if hold is not None else None, weights=weights,
                                   on_step=on_step)
        out = S.join_stereo(pair.left, pair.right, plan.stereo)
    else:
        x = np.stack(inits) if plan.stereo != "mono" else inits[0]
        out = engine.dream(x, frame_index=index, schedule=sch, hold=hold, weights=weights, on_step=on_step)
        if plan.stereo != "mono":
            out = S.join_stereo(out[0], out[1], plan.stereo)
    residual = out - source.astype(np.float32)
    strength = float(np.mean(np.square(residual, dtype=np.float64)))
    unit = drive(base) ** 2  # the cold schedule's drive, warm or not: the same for every frame of a static render
    if not warm or ref_strength is None or not plan.steady:
        return out, strength / unit
    if strength > 0:
        out = np.clip(source + residual * np.float32(np.sqrt(ref_strength * unit / strength)), 0.0, 255.0)
    return out, ref_strength
