"""Deinterlacing with FFmpeg's bwdif through PyAV's filter graph: 1080i broadcast, AVCHD camcorders and DV.

A frame woven from two fields taken 1/50 s apart shows combs on every moving edge; dreamed as it is, the
network amplifies the combs and the flow, which sees two images at once, fails on them. bwdif makes each
frame from its first field, interpolated (Bob Weaver: motion-adaptive, w3fdif's filter within a field),
one frame per frame so the pts and frame count stay the source's. Only frames flagged interlaced are
touched: a progressive frame in a mixed stream passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction

import av

BWDIF = "mode=send_frame:parity=auto:deint=interlaced"


def is_interlaced(frame: av.VideoFrame) -> bool:
    return bool(frame.interlaced_frame)


class _Graph:
    """buffer → bwdif → buffersink for one frame size and pixel format."""

    def __init__(self, frame: av.VideoFrame, time_base) -> None:
        self.key = (frame.width, frame.height, frame.format.name)
        self.time_base = Fraction(time_base)
        self.graph = av.filter.Graph()
        src = self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                    time_base=time_base)
        bwdif = self.graph.add("bwdif", BWDIF)
        sink = self.graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        self.graph.configure()

    def push(self, frame: av.VideoFrame | None) -> Iterator[av.VideoFrame]:
        self.graph.push(frame)
        while True:
            try:
                out = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            # bwdif counts in half the input's time base (it could make two frames per frame): back to the source's
            if out.pts is not None and out.time_base and Fraction(out.time_base) != self.time_base:
                out.pts = round(out.pts * Fraction(out.time_base) / self.time_base)
            out.time_base = self.time_base
            yield out


def deinterlaced(frames: Iterable[av.VideoFrame], time_base) -> Iterator[av.VideoFrame]:
    """`frames` with every interlaced one made progressive, in order, none added or dropped. bwdif looks one
    frame ahead, so each frame comes out after the next one went in; a change of size or pixel format (a
    stream that switches mid-way) drains the graph and starts a new one."""
    graph: _Graph | None = None
    for frame in frames:
        key = (frame.width, frame.height, frame.format.name)
        if graph is not None and graph.key != key:
            yield from graph.push(None)
            graph = None
        if graph is None:
            graph = _Graph(frame, time_base)
        yield from graph.push(frame)
    if graph is not None:
        yield from graph.push(None)
