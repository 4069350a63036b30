"""The per-frame parameter table of a render (timeline + audio reactivity) and how a frame applies its row.

Built once before the render from the frames' timestamps (a packet scan; an animation's i / fps) and, with
`react.amount` > 0, the soundtrack's envelope; stored in the run directory so a resume reads back exactly the
values it started with (an FFT may differ by an ulp on another machine). The definitions: `pipeline/music/timeline.py`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import ConfigError
from pipeline.music.timeline import (
    MOTION_PREFIX,
    FrameTable,
    animated_keys,
    frame_values,
    require_soundtrack,
    row_parts,
)
from stages.media import audio
from stages.media.decode import scan_times

log = logging.getLogger(__name__)
TABLE_FILE = "params.json"


def animates(cfg: Config) -> bool:
    return bool(cfg.timeline) or cfg.react.amount > 0


def envelope_at(src: Path, cfg: Config, pts: list[int], tb: Fraction, origin: int, rate: Fraction) -> np.ndarray:
    """The react envelope at each frame, the peak over the time the frame is on screen. The input's own
    soundtrack shares the video's clock (absolute pts); a separate file starts with the video's first frame."""
    r = cfg.react
    own = r.audio is None
    times = audio.frame_times(pts, tb, 0 if own else origin)
    spans = np.diff(times, append=times[-1] + float(1 / rate)) if len(times) else times
    env = audio.envelope(Path(r.audio) if r.audio else src, r.feature, attack=r.attack, release=r.release)
    return env.at(times, spans)


def plan_table(src: Path, cfg: Config, *, has_audio: bool, rate: Fraction,
               layers: dict[str, float]) -> FrameTable | None:
    """The render's table, or None when nothing animates. Every fault is a one-line user error."""
    if not animates(cfg):
        return None
    camera = [k for k in animated_keys(cfg.timeline, cfg.react) if k.startswith(MOTION_PREFIX)]
    if camera:
        raise ConfigError(f"{'react.param' if cfg.react.param in camera else 'timeline'}: {camera[0]} moves the "
                          "camera of `deepdream animate`; a video brings its own motion")
    require_soundtrack(cfg.react, has_audio, src.name)
    pts, tb, origin = scan_times(src, start=cfg.video.start, max_frames=cfg.video.max_frames)
    env = envelope_at(src, cfg, pts, tb, origin, rate) if cfg.react.amount > 0 else None
    table = frame_values(cfg.timeline, cfg.react, env, list(audio.frame_times(pts, tb, origin)), cfg=cfg,
                         layers=layers)
    log.info("parameters animated per frame: %s", ", ".join(table.keys))
    return table


def animation_table(cfg: Config, *, frames: int, rate: Fraction, soundtrack: Path | None,
                    layers: dict[str, float]) -> FrameTable | None:
    """The table of a render with no source clock (`deepdream animate`): frame i shows at i / rate seconds,
    and the envelope comes from `react.audio`, else the soundtrack (`animate.audio`), which starts with
    the first frame. None when nothing animates."""
    if not animates(cfg):
        return None
    if cfg.react.amount > 0 and cfg.react.audio is None and soundtrack is None:
        raise ConfigError(f"react.amount: {cfg.react.amount:g} needs a soundtrack; set animate.audio (or "
                          "react.audio) to an audio file, or react.amount to 0")
    pts, tb = list(range(frames)), 1 / Fraction(rate)
    env = envelope_at(soundtrack, cfg, pts, tb, 0, rate) if cfg.react.amount > 0 else None
    table = frame_values(cfg.timeline, cfg.react, env, list(audio.frame_times(pts, tb)), cfg=cfg, layers=layers)
    log.info("parameters animated per frame: %s", ", ".join(table.keys))
    return table


def stored_table(run_path: Path, manifest: dict, table: FrameTable | None) -> FrameTable | None:
    """The table a resumed render started with (verified by its digest), else `table`, recorded now."""
    path = run_path / TABLE_FILE
    want = manifest.get("params")
    if table is None:
        return None
    if want and path.is_file():
        try:
            stored = FrameTable.from_json(path.read_text())
            if stored.digest() == want:
                return stored
        except (OSError, ValueError):
            pass
        log.warning("the stored parameter table is damaged; it is computed again")
    return table


def row_for(table: FrameTable | None, origin_time: float) -> dict | None:
    """The row of the frame at `origin_time` seconds (from the stream's start): exact, else the nearest."""
    if table is None:
        return None
    try:
        return table.row_at(origin_time)
    except KeyError:
        i = int(np.argmin(np.abs(np.asarray(table.times) - origin_time)))
        return table.row(i)


def apply_row(plan, base_schedule, row: dict | None):
    """(the frame's DreamPlan, its base Schedule, its layer weights or None) with the row's values."""
    if not row:
        return plan, base_schedule, None
    dream, temporal, layers = row_parts(row)
    if temporal:
        renamed = {"warm_iterations" if k == "iterations" else k: v for k, v in temporal.items()}
        plan = replace(plan, **renamed)
    return plan, replace(base_schedule, **dream), layers or None


def drive(schedule) -> float:
    """How hard a frame is dreamed, for holding the dream's strength across animated parameters: the
    residual's RMS grows about linearly with the total step (step size × iterations)."""
    return float(schedule.step_size * max(1, schedule.iterations))


def table_json(table: FrameTable) -> bytes:
    return table.to_json().encode()


__all__ = ["TABLE_FILE", "animates", "plan_table", "animation_table", "stored_table", "row_for", "apply_row", "drive",
           "table_json"]
