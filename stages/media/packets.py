"""Packets to frames, without losing a frame that decodes.

FFmpeg's frame threads (several frames decoded at once, each on its own thread) are fast but drop the
frames in flight when the stream is damaged, silently: measured on x264 clips with B-frames, a faststart
file cut at 80 % of its bytes gave 19 frames on frame threads and 21 without (the last two, held for
reordering, vanish), and 400 zeroed bytes mid-file gave 15 of 30 on 16 frame threads against 28 without,
with no error raised. So a video is decoded on frame threads while it is healthy (`strict`), and the first
sign of damage (a packet the demuxer cut short, a decode error, or a packet whose frame never comes out)
raises `Damaged` before any frame after it is handed on; the reader then decodes again from the key frame
before it without frame threads (`tolerant`), where a damaged packet costs only its own frame.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

import av

log = logging.getLogger(__name__)


class held_warnings(logging.Filter):
    """Hold this thread's records of the packet logger and of `more` loggers until `release` logs them: a file
    whose first frame never decodes is refused with one error line, not that line after a warning per damaged
    packet."""

    def __init__(self, *more: logging.Logger):
        super().__init__()
        self._loggers = (log, *more)
        self._thread, self._held = threading.get_ident(), []

    def __enter__(self):
        for logger in self._loggers:
            logger.addFilter(self)
        return self

    def __exit__(self, *exc):
        for logger in self._loggers:
            logger.removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._thread:
            return True
        self._held.append(record)
        return False

    def release(self) -> None:
        for record in self._held:
            logging.getLogger(record.name).handle(record)
        self._held = []


class Damaged(Exception):
    """Frame-threaded decoding met damage near `pts` (None: unknown): frames in flight may be gone."""

    def __init__(self, pts: int | None, why: str):
        super().__init__(why)
        self.pts = pts
        self.why = why


@dataclass(slots=True)
class DecodeLog:
    """What a decode met, for the reader's one line about missing frames."""

    skipped_packets: int = 0  # packets with data the decoder refused: each one's frame is missing
    truncated: bool = False  # the demuxer hit the end of the file inside the stream
    recovered: bool = False  # frame threads met damage and the rest was decoded without them
    recent: deque = field(default_factory=lambda: deque(maxlen=512))  # pts of the last frames handed on
    handed_on: int = 0  # frames handed on
    told: set = field(default_factory=set)  # what has been logged of this file (a process opens it several times)

    def once(self, key: str) -> bool:
        """True the first time `key` is asked of this file: log it then, not at every open."""
        fresh = key not in self.told
        self.told.add(key)
        return fresh


class _Order:
    """The packets sent whose frames have not come out yet (by pts), checked as frames leave the decoder.

    Frames leave in presentation order, so when a frame with pts P comes out, every packet with a pts
    below P has come out before it, or never will. Frames before the decoder's first output do not count
    (the leading pictures of an open GOP after a seek are dropped by design)."""

    def __init__(self):
        self.pending: list[int] = []
        self.started = False

    def sent(self, pts: int) -> None:
        heapq.heappush(self.pending, pts)

    def out(self, frames) -> None:
        for f in frames:
            while self.pending and self.pending[0] < f.pts:
                missing = heapq.heappop(self.pending)
                if self.started:
                    raise Damaged(missing, f"the frame at pts {missing} never left the decoder")
            if self.pending and self.pending[0] == f.pts:
                heapq.heappop(self.pending)
            self.started = True

    def end(self) -> None:
        if self.pending and self.started:
            raise Damaged(self.pending[0], f"the frame at pts {self.pending[0]} never left the decoder")


def decode_stream(container, stream, info: DecodeLog, *, strict: bool, name: str):
    """Yield `stream`'s av.VideoFrames. `strict` (frame threads on): raise Damaged at the first sign of damage,
    before a frame past it is yielded. Not strict: a damaged packet is skipped (counted in `info`), a
    damaged tail ends the stream, and the frames the decoder still holds are drained either way."""
    packets = container.demux(stream)
    order = _Order() if strict else None  # None: not checked (not strict, or no pts to check by)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as e:
            if not info.truncated and info.once("truncated"):
                log.warning("%s: stream ends early, file looks truncated or damaged (%s)", name, short_error(e))
            info.truncated = True
            break
        if packet.size and packet.is_corrupt:
            info.truncated = True  # the demuxer cut it short at the end of the file
            if strict:
                raise Damaged(packet.pts, "a packet cut short by the end of the file")
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            if strict:
                raise Damaged(packet.pts, f"a packet the decoder refused ({short_error(e)})") from e
            if packet.size and not packet.is_corrupt:  # a cut-short packet is the truncation, counted there
                info.skipped_packets += 1
                if info.once("skipped"):  # a badly damaged file has thousands: the reader's last line counts them
                    log.warning("%s: skipping undecodable packets (the first: %s)", name, short_error(e))
            continue
        if order is not None:
            if (packet.size and packet.pts is None) or any(f.pts is None for f in frames):
                order = None  # nothing to check frames against
            else:
                if packet.size and not packet.is_discard:
                    order.sent(packet.pts)
                order.out(frames)
        yield from frames
    try:
        # Usually empty: the demuxer's flush packet drained it. No decoder at all (a file cut before its codec
        # parameters) has nothing to drain; the reader then finds no frame and says so.
        ctx = stream.codec_context
        frames = ctx.decode(None) if ctx is not None else []
    except av.FFmpegError:
        frames = []
    if order is not None and all(f.pts is not None for f in frames):
        order.out(frames)
        order.end()
    yield from frames


def short_error(e: Exception) -> str:
    """An exception as one short line (FFmpeg's messages can span lines)."""
    return " ".join(str(e).split())[:160]
