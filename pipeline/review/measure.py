"""`deepdream metrics`: temporal warp error and dream strength of a dreamed video against its source.

Both files are decoded as a stream (nothing is held beyond the current pair) and fed to
`stages.measure.metrics.warp_error_series`. Frames are paired by time, not by index: a render with
``video.start`` keeps the source's pts, so its first frame belongs to a source frame in the middle of
the clip. Only the overlap of the two videos is measured.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.config import load_config, sidecar
from pipeline.errors import InputError
from stages.measure import metrics
from stages.media.decode import DecodedFrame, VideoReader, key_frame_pts
from stages.media.still import check_output_path

log = logging.getLogger(__name__)

PROJECTIONS = ("auto", "flat", "equirect")
_DECIMALS = 4


def _time(frame: DecodedFrame) -> Fraction | None:
    return None if frame.pts is None else frame.pts * frame.time_base


def _tolerance(reader: VideoReader) -> Fraction:
    """Half a nominal source frame: two frames closer than this in time are the same frame."""
    return 1 / (2 * reader.rate) if reader.rate else Fraction(1, 1000)


def _pairs(source: VideoReader, src_iter: Iterator[DecodedFrame], dreamed: VideoReader,
           stats: dict, offset: Fraction = Fraction(0)) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(source, dreamed) RGB pairs of the same instant; source frames without a dreamed twin are skipped.

    Timestamps are compared in seconds because the two files may use different time bases. Without
    pts on either side the frames are paired by index.
    """
    tol = _tolerance(source)
    size = None
    for d in dreamed:
        if size is None:
            size = d.rgb.shape
        elif d.rgb.shape != size:
            raise InputError(f"{dreamed.path.name}: frame size changes from {size[1]}x{size[0]} to "
                             f"{d.rgb.shape[1]}x{d.rgb.shape[0]} at frame {d.index}")
        d_time = _time(d)
        if d_time is not None:
            d_time += offset
        for s in src_iter:
            s_time = _time(s)
            if d_time is None or s_time is None or s_time > d_time - tol:
                break
            stats["skipped_source"] += 1
        else:
            return  # source exhausted: the rest of the dreamed video has nothing to compare with
        if d_time is not None and s_time is not None and s_time > d_time + tol:
            # The dreamed frame falls between source frames (another frame rate): stop rather than
            # compare frames of different instants.
            raise InputError(f"{dreamed.path.name} frame {d.index} at {float(d_time):.3f} s has no source "
                             f"frame at that time in {source.path.name}; metrics need the source's "
                             "timestamps (the file the render wrote, not a re-encode)")
        stats.setdefault("dream_pts", []).append(d.pts)
        yield s.rgb, d.rgb


Frames = Iterator[np.ndarray]


def _split(pairs: Iterator[tuple[np.ndarray, np.ndarray]]) -> tuple[Frames, Frames]:
    """Two iterators over one pair stream, for `warp_error_series`, which zips them in lockstep."""
    pending: deque[np.ndarray] = deque()

    def sources() -> Frames:
        for s, d in pairs:
            pending.append(d)
            yield s

    def dreams() -> Frames:
        while pending:
            yield pending.popleft()

    return sources(), dreams()


def _wrap_x(projection: str, reader: VideoReader, first_rgb: np.ndarray) -> bool:
    if projection != "auto":
        return projection == "equirect"
    if reader.side_projection == "equirect":
        log.info("metrics: %s is tagged 360° equirect; flow wraps across the seam", reader.path.name)
        return True
    from stages.vr import spherical  # imports torch; only the seam heuristic needs it

    ok, reason = spherical.detect_equirect(first_rgb)
    if ok:
        log.warning("no spherical metadata; measuring %s as 360° equirect (%s). "
                    "Use --projection flat if it is not.", reader.path.name, reason)
    return ok


def _render_config(dreamed: Path):
    """The resolved config beside a render (OUTPUT.yaml), or None."""
    path = sidecar(dreamed)
    if not path.is_file():
        return None
    try:
        return load_config(str(path))
    except InputError:
        log.warning("metrics: %s is not a readable config", path.name)
        return None


def react_envelope(source: Path, dreamed: Path) -> list[float] | None:
    """The audio envelope a reactive render used, one value per rendered frame, or None."""
    cfg = _render_config(dreamed)
    if cfg is None or cfg.react.amount <= 0:
        return None
    from pipeline.music.table import envelope_at
    from stages.media.decode import scan_times

    pts, tb, origin = scan_times(source, start=cfg.video.start, max_frames=cfg.video.max_frames)
    with VideoReader(source) as r:
        rate = r.rate or Fraction(30)
    return [round(float(v), _DECIMALS) for v in envelope_at(source, cfg, pts, tb, origin, rate)]


def render_offset(source: Path, dreamed: Path) -> Fraction:
    """Source time of a render's first frame: renders start at 0, the source's first rendered frame may
    not (a `video.start`, or a stream that starts late). Read from the resolved config beside the render
    (OUTPUT.yaml); a file without one is taken to carry the source's own timestamps."""
    cfg = _render_config(dreamed)
    if cfg is None:
        return Fraction(0)
    with VideoReader(source, start=cfg.video.start, max_frames=1) as r:
        first = next(iter(r))
    return first.pts * first.time_base if first.pts is not None else Fraction(0)


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, _DECIMALS) for v in values]


def pulse(warp_errors: list[float | None], key_frames: list[int], worst: int = 3) -> dict:
    """Where the flicker peaks: the worst pair's warp error ÷ the median (1 = even), and the worst pairs, each
    marked when its later frame is a key frame of the dreamed file (an encoder's key-frame pulse) or the first
    after one. `key_frames`: indices of the compared frames that are key frames."""
    kept = [v for v in warp_errors if v is not None]
    median = float(np.median(kept)) if kept else 0.0
    if not kept or median <= 0:
        return {"worst_over_median": None, "worst_pairs": [], "key_frames": key_frames}
    keys = set(key_frames)
    order = sorted((i for i, v in enumerate(warp_errors) if v is not None), key=lambda i: -warp_errors[i])
    return {
        "worst_over_median": round(max(kept) / median, _DECIMALS),
        "worst_pairs": [{"frames": [i, i + 1], "over_median": round(warp_errors[i] / median, _DECIMALS),
                         "key_frame": i + 1 in keys} for i in order[:worst]],
        "key_frames": key_frames,
    }


def run_metrics(source: Path, dreamed: Path, *, plot: Path | None, flow: str = "dis",
                projection: str = "auto") -> dict:
    """Metrics of `dreamed` against `source` as a JSON-ready dict (see `stages.measure.metrics`).

    Keys: warp_error, source_warp_error, dream_strength, frames (compared frames), per_frame (lists,
    rounded to 4 decimals), pulse (`pulse`: the worst pairs against the median, the key frames),
    skipped_source_frames (source frames with no dreamed frame at their time, normally those before a
    render's ``video.start``), source, dreamed and, with `plot`, the PNG path.
    """
    source, dreamed = Path(source), Path(dreamed)
    if plot is not None:
        plot = Path(plot)
        check_output_path(plot, source, dreamed, sidecar(dreamed), what="--plot")  # the render's config is read too
    if projection not in PROJECTIONS:
        raise InputError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    stats = {"skipped_source": 0}
    with VideoReader(source) as src_reader, VideoReader(dreamed) as dream_reader:
        src_iter = iter(src_reader)
        first = next(src_iter, None)
        if first is None:
            raise InputError(f"{source.name}: no video frame could be decoded")
        wrap_x = _wrap_x(projection, src_reader, first.rgb)
        offset = render_offset(source, dreamed)
        pairs = _pairs(src_reader, itertools.chain([first], src_iter), dream_reader, stats, offset)
        src_frames, dream_frames = _split(pairs)
        result = metrics.warp_error_series(src_frames, dream_frames, method=flow, wrap_x=wrap_x)
    if result["frames"] == 0:
        raise InputError(f"{dreamed.name} and {source.name} have no frames at the same time; "
                         "is the first file the source of the second?")
    if stats["skipped_source"]:
        log.info("metrics: %d source frames have no frame in %s (a later start), skipped",
                 stats["skipped_source"], dreamed.name)
    per_frame = {key: _rounded(values) for key, values in result["per_frame"].items()}
    keys = key_frame_pts(dreamed)
    key_frames = [i for i, pts in enumerate(stats.get("dream_pts", [])) if pts in keys]
    out = {
        "source": str(source),
        "dreamed": str(dreamed),
        "warp_error": round(result["warp_error"], _DECIMALS),
        "source_warp_error": round(result["source_warp_error"], _DECIMALS),
        "dream_strength": round(result["dream_strength"], _DECIMALS),
        "frames": result["frames"],
        "skipped_source_frames": stats["skipped_source"],
        "wrap_x": wrap_x,
        "flow": flow,
        "pulse": pulse(result["per_frame"]["warp_error"], key_frames),
    }
    envelope = react_envelope(source, dreamed)
    if envelope is not None:
        out["react_envelope"] = envelope
    if plot is not None:
        metrics.plot_metrics(result["per_frame"], plot, envelope, key_frames=key_frames)
        out["plot"] = str(plot)
    out["per_frame"] = per_frame
    return out
