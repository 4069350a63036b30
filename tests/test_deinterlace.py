"""Interlaced footage is deinterlaced on decode: one progressive frame per frame, same pts, no combs."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from stages.media.decode import VideoReader
from tests.synth import scene_texture

W, H, N = 192, 128, 8


def _woven(i: int, tex: np.ndarray) -> np.ndarray:
    """Frame i as an interlaced camera records it: the top field at time 2i, the bottom field at 2i + 1, while
    the scene moves 6 px per field, so every vertical edge combs."""
    a, b = np.roll(tex, 12 * i, axis=1), np.roll(tex, 12 * i + 6, axis=1)
    out = a.copy()
    out[1::2] = b[1::2]
    return out


def _interlaced_clip(path, interlaced: bool):
    tex = scene_texture(H, W, 3)
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"crf": "10", "preset": "ultrafast", "x264-params": "interlaced=1:tff=1" if interlaced else ""}
        for i in range(N):
            f = av.VideoFrame.from_ndarray(_woven(i, tex), format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


def _comb(rgb: np.ndarray) -> float:
    """How much each line differs from the mean of its neighbours (combs: large), over the mean of the
    difference two lines apart (the picture's own vertical detail)."""
    g = rgb.astype(np.float64).mean(axis=2)
    mid = np.abs(g[1:-1] - (g[:-2] + g[2:]) / 2).mean()
    two = np.abs(g[2:] - g[:-2]).mean()
    return mid / two


def test_interlaced_frames_come_out_progressive(tmp_path):
    clip = _interlaced_clip(tmp_path / "i.mp4", interlaced=True)
    with av.open(str(clip)) as c:
        raw = [f for f in c.decode(video=0)]
    assert all(f.interlaced_frame for f in raw)
    with VideoReader(clip) as r:
        assert r.interlaced
        frames = list(r)
    assert [f.pts for f in frames] == [f.pts for f in raw]  # one frame per frame, the source's timestamps
    combed = np.mean([_comb(f.to_ndarray(format="rgb24")) for f in raw[1:]])
    clean = np.mean([_comb(f.rgb) for f in frames[1:]])
    assert clean < 0.6 * combed


def test_progressive_frames_pass_untouched(tmp_path):
    clip = _interlaced_clip(tmp_path / "p.mp4", interlaced=False)
    with av.open(str(clip)) as c:
        raw = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with VideoReader(clip) as r:
        assert not r.interlaced
        frames = [f.rgb for f in r]
    assert all(np.array_equal(a, b) for a, b in zip(raw, frames))


def test_it_is_said_once_however_often_the_file_is_opened(tmp_path, caplog):
    clip = _interlaced_clip(tmp_path / "i.mp4", interlaced=True)
    caplog.set_level("INFO")
    for _ in range(3):  # a render opens its input for the layout, the timestamps and the frames
        with VideoReader(clip):
            pass
    assert caplog.text.count("is interlaced: deinterlacing") == 1
