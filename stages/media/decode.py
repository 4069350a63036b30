"""Streaming video decode with PyAV: frames as RGB arrays with their exact source timestamps.

Frames are never written to disk; a long 8K clip would not fit. Timestamps stay as (pts, time_base)
integers because float seconds drift for 30000/1001 and VFR sources, and the encoder reuses them.
"""

from __future__ import annotations

import itertools
import logging
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stages.common import InputError
from stages.media.deinterlace import deinterlaced, is_interlaced
from stages.media.packets import Damaged, DecodeLog, decode_stream, held_warnings, short_error
from stages.media.pixels import SAR_RANGE, Look, declared_aspect, player_rgb

log = logging.getLogger(__name__)
_TOLD: dict[str, set[str]] = {}  # per input file, what the reader has logged of it in this process

# Values of FFmpeg's AVSphericalProjection / AVStereo3DType enums (libavutil/spherical.h, stereo3d.h);
# the side data payload starts with that enum as a native int, which is all we need from it.
_EQUIRECT_PROJECTIONS = {0, 2}  # EQUIRECTANGULAR, EQUIRECTANGULAR_TILE
_STEREO_NAMES = {0: "mono", 1: "left-right", 2: "top-bottom"}


@dataclass(slots=True)
class DecodedFrame:
    index: int
    pts: int | None
    time_base: Fraction
    rgb: np.ndarray


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"input file not found: {p}")
    if p.is_dir():
        raise InputError(f"input is a directory, not a video file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"input file is empty: {p}")
    return p


def open_media(p: Path, kind: str = "video"):
    """An open container with at least one `kind` ("video" or "audio") stream, or one InputError line."""
    try:
        container = av.open(str(p), "r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {p.name} as {'media' if kind == 'video' else kind} ({short_error(e)})") \
            from e
    if not getattr(container.streams, kind):
        container.close()
        raise InputError(f"{p.name} has no {kind} stream")
    if kind == "video" and picture_stream(container) is None:
        container.close()
        raise InputError(f"{p.name} has no video stream, only cover art")
    return container


def picture_stream(container):
    """The video stream to read: the first that is not cover art. An MP3's or M4A's attached picture, or a
    video file's thumbnail track, is a one-frame "video" stream that may come first. None: only cover art."""
    return next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic),
                None)


def _side_info(frame) -> tuple[str | None, str | None]:
    projection = stereo = None
    for sd in frame.side_data:
        if sd.type == av.sidedata.sidedata.Type.SPHERICAL and sd.buffer_size >= 4:
            (kind,) = struct.unpack("=i", bytes(sd)[:4])
            projection = "equirect" if kind in _EQUIRECT_PROJECTIONS else None
        elif sd.type == av.sidedata.sidedata.Type.STEREO3D and sd.buffer_size >= 4:
            (kind,) = struct.unpack("=i", bytes(sd)[:4])
            stereo = _STEREO_NAMES.get(kind)
    return projection, stereo


def _rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def fit_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """Downscale (never up) so the longer side is at most max_side. A size we choose is even, as yuv420p
    and a stereo split need; a source's own odd size is kept (the encoder pads it)."""
    if not max_side or max(w, h) <= max_side:
        return w, h
    long_side = max(2, max_side - max_side % 2)
    s = long_side / max(w, h)
    even = lambda n: max(2, 2 * round(n * s / 2))  # noqa: E731
    return (long_side, even(h)) if w >= h else (even(w), long_side)


class VideoReader:
    """Iterate a video file as `DecodedFrame`s, display-rotated, optionally cut and downscaled.

    The first frame is decoded at open time because rotation, spherical and stereo metadata reach
    PyAV only as frame side data; the caller needs them (and the output size) before iterating.
    """

    def __init__(self, path, *, start: float = 0.0, max_frames: int | None = None,
                 max_side: int | None = None, threads: int | None = None):
        if start < 0:
            raise InputError(f"start must be >= 0 seconds, got {start}")
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        if max_side is not None and max_side < 2:
            raise InputError(f"max_side must be >= 2, got {max_side}")
        self._container = None
        self.path = _check_path(path)
        self._container = open_media(self.path)
        self._stream = stream = picture_stream(self._container)
        stream.thread_type = "AUTO"
        if threads:  # decoder threads; None: FFmpeg's choice (one per core)
            stream.codec_context.thread_count = threads
        self.time_base: Fraction = Fraction(stream.time_base)
        self.rate: Fraction | None = _rate(stream)
        self.has_audio = bool(self._container.streams.audio)
        self._start = start
        self._max_frames = max_frames
        self._log = DecodeLog(told=_TOLD.setdefault(str(self.path.resolve()), set()))
        self._seek_pts: int | None = None  # where `start` sent the demuxer
        self._recovery = None  # the container of the second, frame-thread-free decode after damage
        self._frames = self._decode_frames()
        try:
            with held_warnings(log) as held:
                first = next(self._frames, None)
        except Exception:
            self.close()
            raise
        if first is None:
            self.close()
            raise InputError(f"{self.path.name}: no video frame could be decoded")
        held.release()  # damage before the first frame matters only to a file that decodes at all
        self._first = first
        self.look = look = Look.of(stream, first)
        self.rotation, self.sample_aspect = look.rotation, look.sample_aspect
        self.side_projection, self.side_stereo = _side_info(first)
        self.interlaced = is_interlaced(first)
        self._tell_once()
        self.source_width, self.source_height = look.size(first)
        self.width, self.height = fit_size(self.source_width, self.source_height, max_side)
        self.pix_fmt = first.format.name
        self.origin = stream.start_time if stream.start_time is not None else (first.pts or 0)
        self.duration = _duration(self._container, stream)
        if start > 0:
            if self.duration is not None and start >= self.duration:
                self.close()
                raise InputError(f"start {start:g} s is past the end of {self.path.name} "
                                 f"({self.duration:.3f} s)")
            self._first = None
            self._seek_pts = self.origin + int(Fraction(start) / self.time_base)
            self._container.seek(self._seek_pts, stream=stream, backward=True, any_frame=False)
            self._frames = self._decode_frames()
        self.frames_estimate = self._estimate(stream)

    def _estimate(self, stream) -> int | None:
        total = stream.frames or None
        if total is None and self.duration and self.rate:
            total = round(self.duration * self.rate)
        if total is not None and self._start > 0 and self.rate:
            total = max(0, total - math.ceil(self._start * self.rate - 1e-6))
        if self._max_frames is not None:
            total = self._max_frames if total is None else min(total, self._max_frames)
        return total

    @property
    def recovered(self) -> bool:
        """Frame threads met damage and the rest was decoded without them."""
        return self._log.recovered

    @property
    def skipped_packets(self) -> int:
        """Undecodable packets passed over: each one's frame is missing."""
        return self._log.skipped_packets

    def _decode_frames(self):
        """Yield av.VideoFrames: on frame threads while the stream is healthy; from the first sign of damage on,
        decoded again without them from the key frame before the last frame handed on, so the frames
        frame threads drop at damage come out too (stages.media.packets)."""
        info, name = self._log, self.path.name
        try:
            for frame in decode_stream(self._container, self._stream, info, strict=True, name=name):
                info.recent.append(frame.pts)
                info.handed_on += 1
                yield frame
            return
        except Damaged as d:
            if info.once("damaged"):
                log.warning("%s: damaged stream (%s); decoding again from the key frame before it without frame "
                            "threads, so every frame that decodes is kept", name, d.why)
        info.recovered = True
        self._recovery = container = open_media(self.path)
        stream = container.streams[self._stream.index]
        stream.thread_type = "SLICE"
        recent = [p for p in info.recent if p is not None]
        seen, oldest = set(recent), min(recent, default=None)
        skip = 0 if recent else info.handed_on  # no pts to go by: skip by count from the start
        target = max(recent) if recent else self._seek_pts if not info.handed_on else None
        if target is not None:
            container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in decode_stream(container, stream, info, strict=False, name=name):
            if skip:
                skip -= 1
                continue
            if frame.pts is not None and (frame.pts in seen or (oldest is not None and frame.pts < oldest)):
                continue  # handed on before the damage
            yield frame

    def _tell_once(self) -> None:
        """What the reader does to this file's frames, logged the first time a process opens it (a render opens
        its input several times: layout, timestamps, frames)."""
        declared = declared_aspect(self._stream)
        news = [("fields", self.interlaced, logging.INFO,
                 "%s is interlaced: deinterlacing (bwdif, one frame per frame)", ()),
                ("hdr", bool(self.look.hdr), logging.INFO,
                 "%s is HDR (%s): tone-mapped to SDR BT.709, which the render dreams and encodes", (self.look.hdr,)),
                ("sar", declared is not None and self.sample_aspect is None, logging.WARNING,
                 "%s: ignoring sample aspect ratio %s (outside %s … %s): square pixels assumed",
                 (declared, *SAR_RANGE))]
        for key, due, level, msg, args in news:
            if due:
                self._say_once(key, level, msg, *args)

    def _say_once(self, key: str, level: int, msg: str, *args) -> None:
        """Log `msg` (its first argument: the file's name) the first time this process says `key` of this file."""
        if self._log.once(key):
            log.log(level, msg, self.path.name, *args)

    def __iter__(self):
        start_t = Fraction(self._start)
        index = 0
        frames = itertools.chain([self._first] if self._first is not None else [], self._frames)
        self._first = None
        if self.interlaced:
            frames = deinterlaced(frames, self.time_base)
        exhausted = False
        last_pts, stale = None, 0
        while self._max_frames is None or index < self._max_frames:
            frame = next(frames, None)
            if frame is None:
                exhausted = True
                break
            if frame.pts is not None and last_pts is not None and frame.pts <= last_pts:
                # Stamped at or before a frame already handed on (a duplicate or a backward pts in a broken mux): a
                # player never shows it, and an encoder cannot take a time that does not move forward.
                stale += 1
                continue
            if start_t > 0 and frame.pts is not None:
                t = (frame.pts - self.origin) * self.time_base
                if t < start_t - Fraction(1, 1_000_000):
                    continue
            yield DecodedFrame(index, frame.pts, self.time_base, player_rgb(frame, self.look, self.width, self.height))
            index += 1
            if frame.pts is not None:
                last_pts = frame.pts if last_pts is None else max(last_pts, frame.pts)
        if stale:
            self._say_once("stale", logging.WARNING, "%s: %d frames stamped at or before the frame before them dropped "
                           "(a player never shows them)", stale)
        if exhausted:
            # The demuxer treats a cut-off mdat as a clean EOF, so a short count is the only symptom.
            missing = self._missing(index, last_pts, start_t)
            if missing:
                why = "; ".join(w for w in (
                    f"{self.skipped_packets} damaged packets skipped" if self.skipped_packets else "",
                    "the file looks truncated" if self._log.truncated or not self.skipped_packets else "") if w)
                log.warning("%s: decoded %d of %d frames (%d missing): %s", self.path.name, index, index + missing,
                            missing, why)
        if index == 0 and start_t > 0:
            raise InputError(f"start {self._start:g} s is past the last frame of {self.path.name}")

    def _missing(self, decoded: int, last_pts: int | None, start_t: Fraction) -> int:
        """Frames the file promised but did not give. With the container's own count (MP4's sample table) that
        count; without one (Matroska, WebM) the time the last frame leaves uncovered, so the gaps of a
        variable-rate file are not counted as frames."""
        expected = self.frames_estimate
        if self._stream.frames or last_pts is None or not (self.duration and self.rate):
            slack = 0 if self._stream.frames and start_t == 0 else 1
            return expected - decoded if expected and decoded < expected - slack else 0
        frame_s = 1 / float(self.rate)
        uncovered = self.duration - (float((last_pts - self.origin) * self.time_base) + frame_s)
        return max(1, round(uncovered / frame_s)) if uncovered > 1.5 * frame_s else 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if getattr(self, "_recovery", None) is not None:
            self._recovery.close()
            self._recovery = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_container", None) is not None:
            self.close()


def scan_times(path, *, start: float = 0.0, max_frames: int | None = None) -> tuple[list[int], Fraction, int]:
    """(pts, time_base, origin) of the frames `VideoReader(path, start=, max_frames=)` yields, read from the
    packets alone (no decoding): what a per-frame parameter table needs before the render. A stream
    whose packets carry no pts is decoded instead."""
    with VideoReader(path) as r:
        origin, tb = r.origin, r.time_base  # as the reader counts them
    container = open_media(_check_path(path))
    try:
        pts = [p.pts for p in container.demux(picture_stream(container)) if p.size]
    except av.FFmpegError:
        pts = [None]  # a damaged file: decode it as the render will
    finally:
        container.close()
    if not pts or any(p is None for p in pts):
        with VideoReader(path) as r:
            pts = [f.pts for f in r]
    pts = sorted(set(pts))  # as the reader hands them on: a duplicate time is one frame
    keep = [p for p in pts if (p - origin) * tb >= Fraction(start) - Fraction(1, 1_000_000)]
    return (keep if max_frames is None else keep[:max_frames]), tb, origin


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def key_frame_pts(path) -> set[int]:
    """The pts of the video stream's key frames (from the packets' flags, nothing decoded)."""
    keys: set[int] = set()
    with open_media(_check_path(path)) as c:
        try:
            keys.update(p.pts for p in c.demux(picture_stream(c)) if p.pts is not None and p.is_keyframe)
        except av.FFmpegError:
            pass  # a damaged file: the key frames before the damage
    return keys


def probe(path) -> dict:
    """Describe a video file; decodes one frame, since rotation and 360° metadata live in side data."""
    with VideoReader(path) as reader:
        stream = reader._stream
        ctx = stream.codec_context
        audio = reader._container.streams.audio
        return {
            "width": reader.source_width,
            "height": reader.source_height,
            "fps": f"{reader.rate.numerator}/{reader.rate.denominator}" if reader.rate else None,
            "frames": stream.frames or None,
            "duration": reader.duration,
            "video_codec": ctx.name,
            "pix_fmt": reader.pix_fmt,
            "rotation": reader.rotation,
            "sample_aspect_ratio": str(reader.sample_aspect) if reader.sample_aspect else None,
            "audio": audio[0].codec_context.name if audio else None,
            "side_projection": reader.side_projection,
            "side_stereo": reader.side_stereo,
        }


__all__ = ["DecodedFrame", "VideoReader", "fit_size", "probe", "scan_times"]
