"""`deepdream preview`: the look-around sheet's layout and orientation, and its error contract."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from pipeline.review.preview import STRIP_FRAMES, TILE
from stages.vr.spherical_meta import inject_spherical
from stages.vr.views import LABEL_H, ROW_LABEL_W, look_around
from tests.conftest import run_inprocess
from tests.synth import make_clip, write_clip

GAP = 4


def quadrants(h: int = 128, w: int = 256) -> np.ndarray:
    """An equirect whose yaw quadrants, zenith and nadir each have their own colour."""
    e = np.zeros((h, w, 3), np.uint8)
    for k, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        e[:, k * w // 4:(k + 1) * w // 4] = colour
    e[:h // 8], e[-h // 8:] = (255, 255, 255), (255, 0, 255)
    return e


def test_views_look_where_a_headset_looks():
    mean = {name: v[24:40, 24:40].reshape(-1, 3).mean(0) for name, v in look_around(quadrants(), 64)}
    assert np.allclose(mean["front"], (0, 128, 128), atol=8)  # the centre column: green | blue
    assert np.allclose(mean["right"], (128, 128, 128), atol=8)  # three quarters: blue | yellow
    assert np.allclose(mean["back"], (255, 128, 0), atol=8)  # the seam behind: yellow | red
    assert np.allclose(mean["left"], (128, 128, 0), atol=8)
    assert np.allclose(mean["up"], (255, 255, 255), atol=2) and np.allclose(mean["down"], (255, 0, 255), atol=2)


def sheet_size(rows: int, tiles: int, tile_h: int, tile_w: int = TILE) -> tuple[int, int]:
    return ROW_LABEL_W + tiles * tile_w + (tiles - 1) * GAP, rows * (tile_h + LABEL_H + GAP)


def test_stereo_360_sheet_has_a_row_per_eye_and_source_rows(tmp_path, capfd):
    eye = quadrants()
    plain = write_clip(tmp_path / "plain.mp4", [np.concatenate([eye, eye])] * 3, rate=10, crf=0)
    src = tmp_path / "tb.mp4"
    inject_spherical(plain, src, stereo="top-bottom")
    out = tmp_path / "sheet.png"
    rc, _, err = run_inprocess(["preview", src, out, "--source", src], capfd)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == sheet_size(4, 6, TILE)  # dream L, dream R, source L, source R; six views each


def test_flat_video_sheet_is_a_strip_with_the_source_below(tmp_path, capfd):
    src = make_clip(tmp_path / "in.mp4", width=128, height=72, frames=20, rate=Fraction(10), audio=False)
    out = tmp_path / "sheet.png"
    rc, _, err = run_inprocess(["preview", src, out, "--source", src, "--at", "1.0"], capfd)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == sheet_size(2, STRIP_FRAMES, TILE * 72 // 128)


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_a_clip_of_a_few_frames_previews_to_its_last_frame(tmp_path, capfd, frames):
    """The strip's last time falls after the last frame starts (0.44 s in a 0.5 s clip of 10 fps): the tile shows
    the frame on screen then, the last one, instead of failing for want of a frame after it."""
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=frames, rate=Fraction(10), audio=False)
    out = tmp_path / "sheet.png"
    rc, _, err = run_inprocess(["preview", src, out], capfd)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == sheet_size(1, STRIP_FRAMES, TILE * 48 // 64)


def test_360_still_sheet(tmp_path, capfd):
    still = tmp_path / "pano.png"
    Image.fromarray(quadrants()).save(still)
    out = tmp_path / "sheet.jpg"
    rc, _, err = run_inprocess(["preview", still, out, "--set", "projection=equirect"], capfd)
    assert rc == 0, err
    with Image.open(out) as im:
        assert im.size == sheet_size(1, 6, TILE)


@pytest.mark.parametrize("case", ["missing", "bad_ext", "at_past_end", "source_missing", "onto_input"])
def test_bad_preview_requests_are_one_line_errors(tmp_path, capfd, case):
    src = make_clip(tmp_path / "in.mp4", width=64, height=48, frames=5, rate=Fraction(10), audio=False)
    args = {"missing": [tmp_path / "nope.mp4", tmp_path / "o.png"], "bad_ext": [src, tmp_path / "o.gif"],
            "at_past_end": [src, tmp_path / "o.png", "--at", "9"],
            "source_missing": [src, tmp_path / "o.png", "--source", tmp_path / "nope.mp4"],
            "onto_input": [src, src]}[case]
    before = set(tmp_path.iterdir())
    rc, out, err = run_inprocess(["preview", *args], capfd)
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert set(tmp_path.iterdir()) == before
