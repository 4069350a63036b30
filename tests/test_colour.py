"""Colour: renders are tagged with the matrix players assume for their size, and untagged sources are read with it.

Players read an untagged file with BT.709 from HD sizes up and BT.601 below (mpv, VLC, browsers), while
swscale's default is BT.601 at every size: so untagged HD output showed shifted colours, and untagged HD
footage from a camera (which encodes BT.709) was dreamed in shifted colours.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from stages.media.decode import VideoReader
from stages.media.encode import Encoding, VideoWriter, join_segments

# saturated red, green, blue, yellow; grey, near black, near white: where matrices differ most and not at all
COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 40, 220], [230, 200, 40], [128, 128, 128], [5, 5, 5],
                    [250, 250, 250]], np.uint8)
HD, SD = (1280, 720), (640, 360)


def _bars(w: int, h: int) -> np.ndarray:
    rgb = np.zeros((h, w, 3), np.uint8)
    n = len(COLOURS)
    for i, c in enumerate(COLOURS):
        rgb[:, i * w // n:(i + 1) * w // n] = c
    return rgb


def _error(rgb: np.ndarray) -> int:
    """The largest channel error over the bars' centres (8-bit levels)."""
    h, w = rgb.shape[:2]
    n = len(COLOURS)
    got = np.array([rgb[h // 2, int((i + 0.5) * w / n)] for i in range(n)], np.int32)
    return int(np.abs(got - COLOURS).max())


def _first(path, **reformat) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24", **reformat)


@pytest.mark.parametrize("codec", ["h264", "hevc"])
@pytest.mark.parametrize("size,tags,wrong", [(HD, (1, 1, 1), "ITU601"), (SD, (6, 6, 6), "ITU709")])
def test_renders_are_tagged_with_the_matrix_of_their_size_and_read_back_right(tmp_path, codec, size, tags, wrong):
    """HD: BT.709; below: BT.601 (SMPTE 170M); both tagged, so players that follow tags and those that guess by
    size agree."""
    seg = tmp_path / "seg.mp4"
    with VideoWriter(seg, width=size[0], height=size[1], time_base=Fraction(1, 25), rate=Fraction(25),
                     encoding=Encoding(codec=codec, crf=8)) as wr:
        for i in range(2):
            wr.write(_bars(*size), i)
    out = tmp_path / "out.mp4"
    join_segments([seg], out, audio_source=None, start_s=0.0, end_s=1e9)
    with av.open(str(out)) as c:
        f = next(c.decode(video=0))
        assert (f.colorspace, f.color_primaries, f.color_trc, f.color_range) == (*tags, 1)
    assert _error(_first(out)) <= 4  # a player that follows the tag
    assert _error(_first(out, src_colorspace=wrong)) > 12  # the matrix matters: the other one is far off


def _untagged(path, size, matrix: str) -> None:
    """An untagged file whose writer used `matrix`, as cameras (BT.709 in HD) and SD tools (BT.601) write."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = *size, "yuv420p"
        s.options = {"crf": "0"}
        f = av.VideoFrame.from_ndarray(_bars(*size), format="rgb24").reformat(format="yuv420p",
                                                                               dst_colorspace=matrix)
        f.colorspace = 2  # unspecified: the file says nothing
        for i in range(2):
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))


@pytest.mark.parametrize("size,matrix", [(HD, "ITU709"), (SD, "ITU601")])
def test_untagged_sources_are_read_as_players_read_them(tmp_path, size, matrix):
    clip = tmp_path / "c.mp4"
    _untagged(clip, size, matrix)
    with VideoReader(clip) as r:
        assert _error(next(iter(r)).rgb) <= 4
    if matrix == "ITU709":  # swscale's default, BT.601 at every size, misreads HD footage
        assert _error(_first(clip)) > 12
