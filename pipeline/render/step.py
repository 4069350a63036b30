"""The frame step: one source frame in, one dreamed frame out. `deepdream image` and every frame of
`deepdream video` go through `dream_frame`; only the video's frames bring a temporal chain with them.

The frame goes to the dream's device once (`stages.temporal.carry`): the start image, the hold term, the dream
and the steady scaling happen there, and the residual the next frame carries stays there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.music.table import apply_row, drive
from pipeline.render.plan import DreamPlan
from stages.temporal import carry as C
from stages.vr import spherical as S
from stages.vr.stereo import Disparity, estimate_disparity

Motion = list[tuple[np.ndarray, np.ndarray]]  # per eye: (backward flow to t−1, reliability), at the flow's size


def eyes(img, stereo: str) -> list:
    return list(S.split_stereo(img, stereo)) if stereo != "mono" else [img]


@dataclass(slots=True)
class Dreamed:
    """One dreamed frame, on the dream's device: `out` 1×3×H×W float32 0..255 unrounded, the frame shown;
    `residual` = the dream − source (what the next frame carries: out − source except where `out` is eased near a
    key frame), `ref` the shot's reference strength (temporal.steady)."""

    out: torch.Tensor
    residual: torch.Tensor
    ref: float

    def rgb8(self) -> np.ndarray:
        """H×W×3 uint8: what the encoder and the still writer get."""
        return C.to_host_u8(self.out)

    def array(self) -> np.ndarray:
        """H×W×3 float32 0..255, unrounded."""
        return C.to_host(self.out)


def dream_frame(engine, plan: DreamPlan, source: np.ndarray, *, index: int,
                prev_residual: torch.Tensor | np.ndarray | None = None, motion: Motion | None = None,
                ref_strength: float | None = None, disparity: Disparity | None = None,
                params: dict | None = None, keep: float = 1.0, on_step=None) -> Dreamed:
    """Dream `source` (H×W×3 uint8) as frame `index`.

    With `motion` and the previous frame's residual (dreamed − source, a tensor on the dream's device or an
    array from a checkpoint) the frame continues the temporal chain: it starts from S + blend·M·warp(R), takes
    the plan's warm iterations, and its new detail is held back where the flow is reliable (temporal.hold).
    Otherwise it starts fresh from the source with the full schedule, and its residual strength becomes the
    shot's reference, which later frames are scaled to (temporal.steady): without it a carried dream swells
    (or fades) over a long shot. Stereo frames are dreamed once, in the left eye, and carried to the right by
    `disparity` (computed here when the caller has none), or, with spherical.stereo = independent, as a batch
    of two. `params`: the frame's row of the render's parameter table (timeline, react). The reference
    strength is kept per unit of `drive`, so an animated step size still moves the strength of a held dream.
    `keep` < 1 (a continued frame near a key frame: presets.keyframe_keep): the frame shown (`out`) takes only
    that share of its new change (carry.ease); the chain's residual stays the dream's own.
    """
    plan, base, weights = apply_row(plan, engine.schedule, params)
    device = engine.device
    warm = plan.temporal and motion is not None and prev_residual is not None
    src = C.to_device(source, device)
    src_eyes = eyes(src, plan.stereo)
    inits, hold, reliable = list(src_eyes), None, 1.0
    if warm:
        residual = prev_residual if isinstance(prev_residual, torch.Tensor) else C.to_device(prev_residual, device)
        moved = [C.frame_motion(b, m, tuple(s.shape[-2:]), device) for s, (b, m) in zip(src_eyes, motion)]
        inits = [C.start_image(s, r, b, m, blend=plan.blend, wrap_x=plan.wrap_x)
                 for s, r, (b, m) in zip(src_eyes, eyes(residual, plan.stereo), moved)]
        if plan.hold > 0:
            hold = torch.cat([m for _, m in moved]) * plan.hold
        reliable = min(float(m.mean()) for _, m in motion)
    sch = plan.schedule(base, warm=warm, reliable=reliable)
    if plan.stereo_carry:
        host_eyes = eyes(source, plan.stereo)
        if disparity is None:
            disparity = estimate_disparity(plan.disparity_estimator(), *host_eyes, wrap_x=plan.wrap_x)
        pair = engine.dream_stereo(*host_eyes, disparity, frame_index=index, schedule=sch,
                                   left_init=C.to_host(inits[0]), right_init=C.to_host(inits[1]) if warm else None,
                                   hold=hold[:1] if hold is not None else None, weights=weights, on_step=on_step)
        out = C.to_device(S.join_stereo(pair.left, pair.right, plan.stereo), device)
    else:
        out = engine.dream_tensor(torch.cat(inits), frame_index=index, schedule=sch, hold=hold, weights=weights,
                                  on_step=on_step)
        if plan.stereo != "mono":
            out = S.join_stereo(out[:1], out[1:], plan.stereo)
    unit = drive(base) ** 2  # the cold schedule's drive, warm or not: the same for every frame of a static render
    if warm and ref_strength is not None and plan.steady:
        out = C.steady(src, out, ref_strength * unit)
        d = Dreamed(out, out - src, ref_strength)
    else:
        new = out - src
        d = Dreamed(out, new, float(C.strength(new)) / unit)
    if warm and keep < 1.0:
        shown = [C.ease(s, o, r, b, m, keep=keep, wrap_x=plan.wrap_x) for s, o, r, (b, m)
                 in zip(src_eyes, eyes(d.out, plan.stereo), eyes(residual, plan.stereo), moved)]
        d.out = shown[0] if plan.stereo == "mono" else S.join_stereo(shown[0], shown[1], plan.stereo)
    return d
