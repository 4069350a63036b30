"""HDR sources (HLG, PQ; 10-bit BT.2020, as phones record) are tone-mapped to the SDR BT.709 picture they show.

The clips are made backwards from known SDR colours (below the roll-off's knee, where the mapping is exact):
SDR light × 203 cd/m² (BT.2408's HDR reference white), BT.709 → BT.2020 primaries, then HLG's or PQ's
encoding, 10-bit, tagged. Read back, the render's frames must be those colours again.
"""

from __future__ import annotations

import av
import numpy as np
import pytest

from stages.media import hdr
from stages.media.decode import VideoReader

SDR = np.array([[200, 60, 50], [60, 170, 80], [70, 90, 210], [180, 180, 180], [120, 100, 80], [30, 30, 30]],
               np.uint8)
W, H = 384, 64


def _signal(transfer: str) -> np.ndarray:
    """Per colour, the HDR signal (0…1, BT.2020 RGB) that shows it."""
    light = (SDR.astype(np.float64) / 255) ** 2.4 * hdr.REFERENCE_WHITE  # cd/m², BT.709
    light = light @ np.linalg.inv(hdr._BT2020_TO_709.astype(np.float64)).T
    if transfer == "PQ":
        m1, m2 = 2610 / 16384, 2523 / 4096 * 128
        c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        y = (light / 10000) ** m1
        return ((c1 + c2 * y) / (1 + c3 * y)) ** m2
    yd = light @ hdr._LUMA_2020.astype(np.float64)
    ys = (yd / hdr.HLG_PEAK) ** (1 / 1.2)
    scene = light / (hdr.HLG_PEAK * ys[:, None] ** 0.2)
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), a * np.log(np.maximum(12 * scene - b, 1e-9)) + c)


def _clip(path, transfer: str):
    rgb = np.zeros((H, W, 3), np.uint16)
    n = len(SDR)
    for i, s in enumerate(_signal(transfer)):
        rgb[:, i * W // n:(i + 1) * W // n] = np.round(s * 65535)
    with av.open(str(path), "w", format="mp4") as c:
        st = c.add_stream("libx264", rate=25)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p10le"
        st.options = {"crf": "4", "preset": "ultrafast"}
        ctx = st.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_range = 9, 9, 1  # BT.2020 non-constant, limited range
        ctx.color_trc = 16 if transfer == "PQ" else 18
        f = av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(format="yuv420p10le", dst_colorspace=9,
                                                                       dst_color_range=1)
        for i in range(2):
            f.pts = i
            c.mux(st.encode(f))
        c.mux(st.encode(None))
    return path


def _bars(rgb: np.ndarray) -> np.ndarray:
    n = len(SDR)
    return np.array([rgb[H // 2, int((i + 0.5) * W / n)] for i in range(n)], np.int32)


@pytest.mark.parametrize("transfer", ["HLG", "PQ"])
def test_hdr_is_shown_as_its_sdr_picture(tmp_path, transfer):
    clip = _clip(tmp_path / "hdr.mp4", transfer)
    with VideoReader(clip) as r:
        assert r.look.hdr == transfer
        got = _bars(next(iter(r)).rgb)
    assert np.abs(got - SDR).max() <= 6
    with av.open(str(clip)) as c:  # read as if SDR: dim, pale, hues off
        as_is = _bars(next(c.decode(video=0)).to_ndarray(format="rgb24"))
    assert np.abs(as_is - SDR).max() > 30


def test_highlights_roll_off_into_white():
    y = np.array([0.5, 0.8, 1.0, 2.0, 5.0, 50.0])
    out = hdr.roll_off(y)
    assert out[0] == 0.5 and out[1] == pytest.approx(0.8)
    assert np.all(np.diff(out) > 0) and out[-1] <= 1.0  # monotonic, never clipped flat, never above white
