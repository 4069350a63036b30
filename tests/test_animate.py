"""`deepdream animate` without a render: the camera maths (per second, flat and on the sphere), the config
keys, the starting picture, and bad input refused in one line with nothing written. The renders (motion,
360°, react, kill -9 and resume): tests/test_animate_render.py."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from pipeline.config import ConfigError, load_config, to_dict
from stages.temporal import motion as M
from stages.vr import orbit as O
from tests.conftest import CHELSEA, REPO, run_inprocess
from tests.synth import make_audio_only, make_clip, make_text_file, truncate

ROOM = REPO / "sample_media" / "testRoom1_2kMono.jpg"


# ------------------------------------------------------------------------------------- motion maths

@pytest.mark.parametrize("fps", [24, 60])
def test_rates_are_per_second_at_any_fps(fps):
    """One second of frames moves as far at 24 as at 60 fps (pytorch-deepdream scales its zoom by fps)."""
    s = M.flat_step(zoom=1.5, rotate=30, translate_x=0.2, translate_y=-0.1, center_x=0.5, center_y=0.5, fps=fps)
    assert s.zoom ** fps == pytest.approx(1.5, rel=1e-12)
    assert s.angle * fps == pytest.approx(math.radians(30)) and s.shift_x * fps == pytest.approx(0.2)
    # On the sphere a constant angular velocity: fps frame turns compose to the one-second turn, in any order
    # the three rates are given (the turn is integrated, not applied axis by axis).
    one = O.rotation(O.sphere_step(yaw=40, pitch=25, roll=-60, zoom=1, fps=1))
    many = np.linalg.matrix_power(O.rotation(O.sphere_step(yaw=40, pitch=25, roll=-60, zoom=1, fps=fps)), fps)
    assert np.allclose(many, one, atol=1e-9)
    z = O.sphere_step(yaw=0, pitch=0, roll=0, zoom=1.5, fps=fps).zoom
    front = np.array([[0.3, 0.2, math.sqrt(1 - 0.13)]])
    d = front
    for _ in range(fps):
        d = O.stereographic_zoom(d, z)
    assert np.allclose(d, O.stereographic_zoom(front, 1.5), atol=1e-9)  # Möbius zooms compose


def test_flat_map_inverts_the_forward_motion():
    """Checked against OpenCV's own affine warp built from the definition (zoom about the centre, a
    counter-clockwise turn as seen, a slide in frame widths)."""
    h, w = 60, 90
    step = M.FlatStep(zoom=1.1, angle=math.radians(7), shift_x=0.05, shift_y=-0.03, center_x=0.4, center_y=0.6)
    img = np.random.default_rng(0).uniform(0, 255, (h, w, 3)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    mx, my = M.flat_map(h, w, step)
    ours = M.resample(img, mx, my, "bilinear")
    c = np.array([0.4 * w - 0.5, 0.6 * h - 0.5])
    a = math.radians(7)
    rot = 1.1 * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # y down: CCW as seen
    fwd = np.hstack([rot, (c - rot @ c + np.array([0.05 * w, -0.03 * w]))[:, None]])
    ref = cv2.warpAffine(img, fwd, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(ours[inner] - ref[inner]).mean() < 0.05 * np.abs(np.diff(img, axis=1)).mean()


def test_reveal_mask_and_coverage():
    h, w = 40, 60
    zoom_in = M.flat_map(h, w, M.FlatStep(zoom=1.2))
    assert M.reveal_mask(*zoom_in, h, w).min() == 1.0 and M.coverage(M.FlatStep(zoom=1.2), 1.5) == 1.0
    mask = M.reveal_mask(*M.flat_map(h, w, M.FlatStep(zoom=0.8)), h, w)
    assert mask[h // 2, w // 2] == 1.0 and mask[0, 0] == 0.0 and mask[h // 2, 0] == 0.0  # the edges are new
    assert M.coverage(M.FlatStep(zoom=0.5), 1.5) == pytest.approx(0.25, abs=0.03)
    assert M.coverage(M.FlatStep(shift_x=0.25), 1.5) == pytest.approx(0.75, abs=0.03)


def test_sphere_yaw_is_a_column_shift_and_the_zoom_magnifies_the_front():
    h, w = 64, 128
    mx, my = O.sphere_map(h, w, O.sphere_step(yaw=90, pitch=0, roll=0, zoom=1, fps=6))  # 15° to the right
    shift = (np.arange(w)[None, :] - mx) % w
    assert np.allclose(shift, 15 / 360 * w, atol=1e-3) and np.allclose(my, np.arange(h)[:, None], atol=1e-3)
    mx, my = O.sphere_map(h, w, O.SphereStep(zoom=2.0))
    # Next to the front (column w/2 − 0.5, row h/2 − 0.5) distances halve going back; the back point stays.
    assert mx[h // 2, w // 2 + 2] - (w / 2 - 0.5) == pytest.approx((2.5) / 2, rel=0.02)
    back = np.array([[0.0, 0.0, -1.0]])
    assert np.allclose(O.stereographic_zoom(back, 2.0), back)


def test_equirect_resampling_reads_across_the_seam_and_the_poles():
    h, w = 32, 64
    img = np.random.default_rng(1).uniform(0, 255, (h, w, 3)).astype(np.float32)
    pad = O.pad_equirect(img, 3)
    assert np.array_equal(pad[3:-3, :3], img[:, -3:]) and np.array_equal(pad[3:-3, -3:], img[:, :3])
    assert np.array_equal(pad[2, 3:-3], np.roll(img[0], w // 2, axis=0))  # the row beyond the north pole
    # A whole turn of yaw in 8 steps gives back the picture, seam and all, to the kernel's blur.
    step = O.sphere_step(yaw=45, pitch=0, roll=0, zoom=1, fps=1)
    x = cv2.GaussianBlur(img, (0, 0), 1.5)
    y = x
    for _ in range(8):
        y = O.resample_equirect(y, *O.sphere_map(h, w, step), "bicubic")
    assert np.abs(y - x).mean() < 0.02 * x.std()


# ------------------------------------------------------------------------------------- config

def test_animate_keys_load_and_round_trip():
    cfg = load_config("default", ["animate.from=1.5", "animate.fps=12", "motion.zoom=2", "motion.yaw=-30"])
    assert cfg.animate.from_ == 1.5 and cfg.animate.fps == 12.0 and cfg.motion.zoom == 2.0
    assert to_dict(cfg)["animate"]["from"] == 1.5 and "from_" not in to_dict(cfg)["animate"]
    cfg = load_config("infinite_zoom")
    assert cfg.motion.zoom > 1
    with pytest.raises(ConfigError, match=r"^timeline\[0\]\.set\.motion\.zoom: must be > 0"):
        load_config("default", ["timeline=[{at: 0, set: {motion.zoom: 0}}]"])
    with pytest.raises(ConfigError, match="did you mean motion.zoom"):
        load_config("default", ["react.param=motion.zom", "react.amount=1"])


def test_camera_keys_key_an_animation_run_not_a_video_run():
    from pipeline.config import render_hash

    a, b = load_config(), load_config("default", ["motion.zoom=3", "animate.fps=12"])
    assert render_hash(a) == render_hash(b)  # a video's frames do not depend on them: its resume is not refused
    assert render_hash(a, animation=True) != render_hash(b, animation=True)


def test_a_video_refuses_a_camera_key(tmp_path):
    from pipeline.music.table import plan_table

    cfg = load_config("default", ["timeline=[{at: 0, set: {motion.zoom: 2}}]"])
    with pytest.raises(ConfigError, match="motion.zoom moves the camera of `deepdream animate`"):
        plan_table(tmp_path / "any.mp4", cfg, has_audio=False, rate=30, layers={"block9": 1.0})


def test_a_video_input_starts_from_its_last_frame_or_animate_from(tmp_path):
    from pipeline.render.animate_plan import plan_animation
    from stages.media.decode import VideoReader

    clip = make_clip(tmp_path / "c.mp4", width=64, height=48, frames=20, audio=False)
    with VideoReader(clip) as r:
        frames = [f.rgb for f in r]
    assert np.array_equal(plan_animation(clip, load_config()).start, frames[-1])
    at = plan_animation(clip, load_config("default", ["animate.from=0.5"]))
    assert np.array_equal(at.start, frames[15]) and at.input_kind == "video"


# ------------------------------------------------------------------------------------- bad input

def _bad_cases(tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=6, audio=False)
    return {
        "zoom out past the frame": (CHELSEA, ["motion.zoom=0.01", "animate.fps=2"], "moves past the frame"),
        "slide past the frame": (CHELSEA, ["motion.translate_x=20"], "moves past the frame"),
        "NaN zoom": (CHELSEA, ["motion.zoom=.nan"], "motion.zoom: must be a finite number"),
        "inf rotate": (CHELSEA, ["motion.rotate=.inf"], "motion.rotate: must be a finite number"),
        "timeline NaN": (CHELSEA, ["timeline=[{at: 1, set: {motion.zoom: .nan}}]"], "must be a finite number"),
        "timeline zooms out past the frame": (CHELSEA, ["timeline=[{at: 1, set: {motion.zoom: 0.001}}]",
                                                        "animate.fps=2"], "at frame 2 the picture moves past"),
        "video without frames": (make_audio_only(tmp_path / "sound.mp4"), [], "has no video stream"),
        "truncated video": (truncate(make_clip(tmp_path / "t.mp4", frames=3, audio=False), 0.05), [], ""),
        "audio that is no audio": (CHELSEA, [f"animate.audio={make_text_file(tmp_path / 'a.mp3')}"],
                                   "animate.audio: cannot read a.mp3 as audio"),
        "audio file of a video without sound": (CHELSEA, [f"animate.audio={clip}"], "has no audio stream"),
        "missing audio": (CHELSEA, [f"animate.audio={tmp_path / 'none.wav'}"], "animate.audio: audio file not found"),
        "a sphere key on a flat picture": (CHELSEA, ["motion.yaw=10"], "motion.yaw: turns the sphere"),
        "a flat key on a 360° picture": (ROOM, ["motion.rotate=10"], "turn a 360° picture with motion.roll"),
        "animate.from on a still": (CHELSEA, ["animate.from=1"], "animate.from: chelsea.png is a still"),
        "animate.from past the end": (clip, ["animate.from=9"], "past the end"),
        "react without a soundtrack": (CHELSEA, ["react.param=motion.zoom", "react.amount=1"],
                                       "needs a soundtrack; set animate.audio"),
        "fps out of range": (CHELSEA, ["animate.fps=0"], "animate.fps: must be >= 1"),
        "ray": (CHELSEA, ["scale.backend=ray"], "an animation is one feedback chain"),
        "output over its input": (None, [], "is the input file"),
        "output over its soundtrack": (CHELSEA, [f"animate.audio={clip}"], "is the input file"),
    }


def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path, capfd):
    cases = _bad_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, (src, sets, expect) in cases.items():
        out = tmp_path / "out.mp4"
        if src is None or name == "output over its soundtrack":  # the output named as an input
            out = tmp_path / "clip.mp4"
            src = src or out
        args = ["animate", src, out, "--set", "input.max_side=64"] + [a for s in sets for a in ("--set", s)]
        rc, _, err = run_inprocess(args, capfd)
        lines = err.strip().splitlines()
        assert rc == 2, (name, err)
        assert lines and lines[-1].startswith("error: ") and expect in lines[-1], (name, err)
        assert "Traceback" not in err and "model efficientnet" not in err, (name, "checked before the model")
        assert sorted(p.name for p in tmp_path.iterdir()) == before, (name, "nothing written")
