"""Decides a source's projection and stereo layout: forced by config, else metadata, else heuristics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config
from pipeline.errors import InputError
from stages import spherical as S

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Layout:
    projection: str  # flat | equirect
    stereo: str  # mono | top-bottom | left-right
    how: str  # forced | metadata | heuristic | default

    @property
    def wrap_x(self) -> bool:
        return self.projection == "equirect"


def eye_shape(h: int, w: int, stereo: str) -> tuple[int, int]:
    return (h // 2, w) if stereo == "top-bottom" else (h, w // 2) if stereo == "left-right" else (h, w)


def resolve_layout(cfg: Config, frame: np.ndarray, *, side_projection: str | None = None,
                   side_stereo: str | None = None) -> Layout:
    h, w = frame.shape[:2]
    stereo, how = cfg.stereo, "forced"
    if stereo == "auto":
        if side_stereo:
            stereo, how = side_stereo, "metadata"
        elif cfg.projection != "flat":
            stereo, reason = S.detect_stereo(frame, "equirect")
            how = "heuristic"
            if stereo != "mono":
                log.warning("warning: no stereo metadata; guessed %s (%s)", stereo, reason)
        else:
            stereo, how = "mono", "default"
    if stereo != "mono":
        S.split_stereo(frame, stereo)  # an odd split dimension raises InputError here
    eh, ew = eye_shape(h, w, stereo)

    projection = cfg.projection
    if projection == "equirect":
        if abs(ew / eh - 2.0) > 0.02:
            raise InputError(f"projection=equirect needs a 2:1 frame per eye, got {ew}x{eh}"
                             f"{' per eye' if stereo != 'mono' else ''}; use projection=flat")
    elif projection == "auto":
        if side_projection == "equirect":
            projection = "equirect"
        else:
            eye = S.split_stereo(frame, stereo)[0] if stereo != "mono" else frame
            ok, reason = S.detect_equirect(eye)
            projection = "equirect" if ok else "flat"
            if ok:
                log.warning("warning: no spherical metadata; treating as 360° equirect (%s). "
                            "Use --set projection=flat if it is not.", reason)
    if projection == "flat" and stereo != "mono" and how == "heuristic":
        stereo = "mono"
    return Layout(projection, stereo, how)
