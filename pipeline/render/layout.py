"""Decides a source's projection and stereo layout: forced by config, else metadata, else heuristics."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pipeline.config import Config
from pipeline.errors import InputError
from stages.vr import spherical as S

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Layout:
    projection: str  # flat | equirect
    stereo: str  # mono | top-bottom | left-right
    how: str  # where the projection decision came from: forced | metadata | heuristic
    stereo_how: str = "default"  # forced | metadata | heuristic | default


def eye_shape(h: int, w: int, stereo: str) -> tuple[int, int]:
    return (h // 2, w) if stereo == "top-bottom" else (h, w // 2) if stereo == "left-right" else (h, w)


def _stereo(cfg: Config, frame: np.ndarray, side_stereo: str | None) -> tuple[str, str]:
    if cfg.stereo != "auto":
        return cfg.stereo, "forced"
    if side_stereo:
        return side_stereo, "metadata"
    if cfg.projection == "flat":
        return "mono", "default"
    # Only a 1:1 or 4:1 frame can be a stereo 360° pair; detect_stereo checks that and the halves.
    stereo, reason = S.detect_stereo(frame, "equirect")
    if stereo == "mono":
        return "mono", "default"
    log.warning("no stereo metadata; guessed %s (%s)", stereo, reason)
    return stereo, "heuristic"


def resolve_layout(cfg: Config, frame: np.ndarray, *, side_projection: str | None = None,
                   side_stereo: str | None = None) -> Layout:
    h, w = frame.shape[:2]
    stereo, stereo_how = _stereo(cfg, frame, side_stereo)
    if stereo != "mono":
        S.split_stereo(frame, stereo)  # an odd split dimension raises InputError here
    eh, ew = eye_shape(h, w, stereo)

    if cfg.projection == "equirect":
        if abs(ew / eh - 2.0) > 0.02:
            raise InputError(f"projection=equirect needs a 2:1 frame per eye, got {ew}x{eh}"
                             f"{' per eye' if stereo != 'mono' else ''}; use projection=flat")
        projection, how = "equirect", "forced"
    elif cfg.projection == "flat":
        projection, how = "flat", "forced"
    elif side_projection == "equirect":
        projection, how = "equirect", "metadata"
    else:
        eye = S.split_stereo(frame, stereo)[0] if stereo != "mono" else frame
        ok, reason = S.detect_equirect(eye)
        projection, how = ("equirect" if ok else "flat"), "heuristic"
        if ok:
            log.warning("no spherical metadata; treating as 360° equirect (%s). "
                        "Use --set projection=flat if it is not.", reason)
    if projection == "flat" and stereo_how == "heuristic":
        stereo, stereo_how = "mono", "default"
    return Layout(projection, stereo, how, stereo_how)
