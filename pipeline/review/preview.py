"""`deepdream preview`: a look-around sheet of a result, to judge it without a headset.

360° input: the six 90° views (front, right, back, left, up, down) of one frame, a row per eye for
stereo, and the source's rows below when `--source` is given. Flat input: a strip of frames across the
clip, with the source's strip below. Inputs are videos or stills; the frame is the middle one unless
`--at SECONDS` says otherwise (a render's time 0 is its source's first rendered frame, which the
resolved config beside it tells, as `deepdream metrics` reads it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import InputError
from pipeline.render.layout import resolve_layout
from pipeline.review.measure import render_offset
from stages.media.decode import VideoReader
from stages.media.still import FORMATS, check_output_path, output_format, read_still, write_still
from stages.vr import spherical as S
from stages.vr.views import fit_tile, look_around, sheet

log = logging.getLogger(__name__)
TILE = 256
STRIP_FRAMES = 4


def _is_still(path: Path) -> bool:
    return path.suffix.lower() in FORMATS


# How far before a time the reader starts, to find the frame on screen then: longer than any frame's display.
LOOKBACK_S = 2.0


def _frame_at(path: Path, t: float) -> tuple[np.ndarray, float, VideoReader]:
    """The frame on screen at `t` seconds from the stream's start (the last one that starts at or before it; the
    first frame for an earlier `t`), its time, and the (closed) reader for the stream's metadata. The first frame
    at or after `t` would not exist near the end of a clip: the last frame of a 0.5 s clip starts at 0.4 s."""
    shown = None
    with VideoReader(path, start=max(0.0, t - LOOKBACK_S)) as r:
        for fr in r:
            when = float((fr.pts - r.origin) * fr.time_base) if fr.pts is not None else t
            if shown is not None and when > t + 1e-9:
                break
            shown = (fr.rgb, when)
        if shown is None:
            raise InputError(f"{path.name}: no frame decodes at {t:.3f} s")
        return shown[0], shown[1], r


def _times(path: Path, at: float | None, count: int) -> list[float]:
    with VideoReader(path) as r:
        duration = r.duration or (r.frames_estimate or 1) / float(r.rate or 30)
    if at is not None:
        if not 0 <= at < duration:
            raise InputError(f"--at {at:g}: {path.name} lasts {duration:.3f} s")
        return [at] if count == 1 else [min(duration, max(0.0, at + k / 2 - count / 4)) for k in range(count)]
    if count == 1:
        return [duration / 2]
    return [duration * (k + 0.5) / count for k in range(count)]


def _read(path: Path, t: float | None) -> tuple[np.ndarray, float | None, tuple[str | None, str | None]]:
    if _is_still(path):
        return read_still(path).rgb, None, (None, None)
    rgb, when, r = _frame_at(path, t or 0.0)
    return rgb, when, (r.side_projection, r.side_stereo)


def run_preview(dreamed: Path, output: Path, cfg: Config, *, source: Path | None = None,
                at: float | None = None) -> dict:
    output_format(output)
    check_output_path(output, dreamed, source)
    if source is not None and not source.is_file():
        raise InputError(f"--source not found: {source}")
    offset = float(render_offset(source, dreamed)) if source is not None and not _is_still(dreamed) else 0.0
    times = [None] if _is_still(dreamed) else _times(dreamed, at, 1)
    rgb, when, side = _read(dreamed, times[0])
    layout = resolve_layout(cfg, rgb, side_projection=side[0], side_stereo=side[1])
    what = "dream" if source is not None else dreamed.name
    if layout.projection == "equirect":
        rows = _sphere_rows(what, rgb, layout.stereo, when)
        if source is not None:
            src, _, _ = _read(source, None if when is None else when + offset)
            rows += _sphere_rows("source", src, layout.stereo, when)
    else:
        rows = _strip_rows(what, dreamed, source, at, offset, rgb)
    write_still(output, sheet(rows))
    log.info("wrote %s: %s %s, %d rows", output, layout.projection, layout.stereo, len(rows))
    return {"output": str(output), "projection": layout.projection, "stereo": layout.stereo, "rows": len(rows),
            "at": when}


def _sphere_rows(what: str, rgb: np.ndarray, stereo: str, when: float | None) -> list:
    eyes = S.split_stereo(rgb, stereo) if stereo != "mono" else [rgb]
    names = ["left eye", "right eye"] if stereo != "mono" else [""]
    stamp = "" if when is None else f"\n{when:.2f} s"
    return [(f"{what}\n{name}{stamp}".replace("\n\n", "\n"), look_around(eye, TILE)) for eye, name in zip(eyes, names)]


def _strip_rows(what: str, dreamed: Path, source: Path | None, at: float | None, offset: float,
                first: np.ndarray) -> list:
    if _is_still(dreamed):
        rows = [(what, [(what, fit_tile(first, 2 * TILE))])]
        if source is not None:
            rows.append(("source", [("source", fit_tile(_read(source, None)[0], 2 * TILE))]))
        return rows
    times = _times(dreamed, at, STRIP_FRAMES)
    dream_tiles, source_tiles = [], []
    for t in times:
        rgb, when, _ = _read(dreamed, t)
        dream_tiles.append((f"{when:.2f} s", fit_tile(rgb, TILE)))
        if source is not None:
            src, _, _ = _read(source, when + offset)
            source_tiles.append((f"{when + offset:.2f} s", fit_tile(src, TILE)))
    rows = [(what, dream_tiles)]
    if source_tiles:
        h = min(t.shape[0] for _, t in dream_tiles)
        rows.append(("source", [(n, t[:h]) if t.shape[0] >= h else (n, t) for n, t in source_tiles]))
    return rows


__all__ = ["run_preview"]
