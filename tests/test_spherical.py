"""Equirect helpers: wrap padding, pole weights, 360° / stereo detection on real media."""

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import skimage.data
import torch

from stages.common import InputError
from stages.vr.spherical import (
    crop_x,
    detect_equirect,
    detect_stereo,
    join_stereo,
    latitude_weight,
    split_stereo,
    wrap_pad_x,
)

MEDIA = Path(__file__).resolve().parent.parent / "sample_media"


@pytest.fixture(scope="module")
def room_jpg() -> np.ndarray:
    img = cv2.imread(str(MEDIA / "testRoom1_2kMono.jpg"))
    assert img is not None
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def room_frames() -> list[np.ndarray]:
    frames = []
    with av.open(str(MEDIA / "testRoom1_1920Mono.mp4")) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in (0, 45):
                frames.append(f.to_ndarray(format="rgb24"))
            if i >= 45:
                break
    return frames


def _crop_2to1(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    ch = min(h, w // 2)
    y0, x0 = (h - ch) // 2, (w - 2 * ch) // 2
    return img[y0:y0 + ch, x0:x0 + 2 * ch]


def test_wrap_pad_takes_columns_from_the_other_side():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    p = wrap_pad_x(t, 2)
    assert p.shape == (2, 3, 4, 9)
    assert torch.equal(p[..., :2], t[..., -2:])
    assert torch.equal(p[..., -2:], t[..., :2])
    assert torch.equal(crop_x(p, 2), t)
    # The padded strip across each edge is a contiguous piece of the periodic image.
    assert torch.equal(p[..., 1:4], torch.roll(t, 1, dims=-1)[..., :3])


def test_wrap_pad_larger_than_width_repeats():
    t = torch.tensor([[[[0.0, 1.0, 2.0]]]])
    p = wrap_pad_x(t, 7)
    assert p.shape[-1] == 3 + 14
    expected = torch.tensor([(i - 7) % 3 for i in range(17)], dtype=torch.float32)
    assert torch.equal(p[0, 0, 0], expected)
    assert torch.equal(crop_x(p, 7), t)
    assert wrap_pad_x(t, 0) is t


def test_wrap_pad_seam_is_continuous_on_real_equirect(room_jpg):
    small = cv2.resize(room_jpg, (512, 256), interpolation=cv2.INTER_AREA)
    t = torch.from_numpy(small.astype(np.float32)).permute(2, 0, 1)[None]
    p = wrap_pad_x(t, 16)
    w = t.shape[-1]
    # Across the original seam (now at columns 16/17 of the pad) steps are as small as elsewhere.
    seam_step = (p[..., 16] - p[..., 15]).abs().mean()
    typical = (t[..., 1:] - t[..., :-1]).abs().mean()
    assert seam_step < 2 * typical
    assert torch.equal(p[..., 16:16 + w], t)


def test_numpy_pads_and_crops_columns_of_hwc_images():
    a = np.arange(2 * 10 * 3).reshape(2, 10, 3)
    p = wrap_pad_x(a, 3, 2)
    assert p.shape == (2, 15, 3)
    assert np.array_equal(p[:, :3], a[:, -3:]) and np.array_equal(p[:, -2:], a[:, :2])
    assert np.array_equal(crop_x(p, 3, 2), a)
    assert np.array_equal(wrap_pad_x(a, 0, 12)[:, 10:], np.concatenate([a, a[:, :2]], axis=1)[:, :12])
    with pytest.raises(ValueError):
        wrap_pad_x(torch.zeros(1, 1, 2, 2), -1)


def test_latitude_weights():
    w = latitude_weight(180).flatten().numpy()
    assert w.shape == (180,)
    assert np.allclose(w, w[::-1])
    assert w[0] < 0.01 and w[-1] < 0.01
    assert w[89] > 0.999 and w[90] > 0.999
    assert np.all(np.diff(w[:90]) > 0)
    # Rows weighted by cos(lat) integrate to the sphere's area fraction: mean -> 2/pi.
    assert abs(w.mean() - 2 / np.pi) < 1e-3
    with pytest.raises(ValueError):
        latitude_weight(0)
    assert torch.allclose(latitude_weight(180, 2.0).flatten(), torch.from_numpy(w) ** 2)


def test_detects_real_equirect_still(room_jpg):
    ok, reason = detect_equirect(room_jpg)
    assert ok, reason
    assert "seam/adjacent" in reason


def test_detects_real_equirect_video_frames(room_frames):
    assert len(room_frames) == 2
    for frame in room_frames:
        assert frame.shape == (960, 1920, 3)
        ok, reason = detect_equirect(frame)
        assert ok, reason


def test_detects_equirect_after_yaw_and_in_float(room_jpg):
    ok, reason = detect_equirect(np.roll(room_jpg, 500, axis=1).astype(np.float32) / 255.0)
    assert ok, reason


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field"])
def test_rejects_ordinary_photos_cropped_or_stretched_to_2to1(name):
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    crop = _crop_2to1(img)
    ok, reason = detect_equirect(crop)
    assert not ok, reason
    stretched = cv2.resize(img, (2 * img.shape[0], img.shape[0]))
    ok, reason = detect_equirect(stretched)
    assert not ok, reason


def test_rejects_blank_borders_and_flat_frames():
    logo = skimage.data.logo()[..., :3]
    ok, reason = detect_equirect(cv2.resize(logo, (800, 400)))
    assert not ok and "blank edge" in reason
    ok, reason = detect_equirect(np.full((100, 200, 3), 7, np.uint8))
    assert not ok and "flat" in reason


def test_rejects_16_9(room_jpg, room_frames):
    frame = cv2.resize(room_frames[0], (1920, 1080))
    ok, reason = detect_equirect(frame)
    assert not ok and "not 2:1" in reason
    ok, _ = detect_equirect(cv2.resize(room_jpg, (1280, 720)))
    assert not ok


def test_detect_stereo_layouts(room_jpg):
    small = cv2.resize(room_jpg, (1024, 512))
    # A synthetic pair: the right eye sees the room slightly rotated, like a horizontal disparity.
    right = np.roll(small, 6, axis=1)
    tb = join_stereo(small, right, "top-bottom")
    lr = join_stereo(small, right, "left-right")
    assert detect_stereo(tb, "equirect")[0] == "top-bottom"
    assert detect_stereo(lr, "equirect")[0] == "left-right"
    assert detect_stereo(small, "equirect")[0] == "mono"
    assert detect_stereo(tb, "flat")[0] == "mono"
    # Square and 4:1 frames whose halves are unrelated stay mono.
    assert detect_stereo(cv2.resize(small, (512, 512)), "equirect")[0] == "mono"
    layout, reason = detect_stereo(skimage.data.astronaut(), "equirect")
    assert layout == "mono", reason
    assert detect_stereo(cv2.resize(skimage.data.coffee(), (1600, 400)), "equirect")[0] == "mono"


@pytest.mark.parametrize("layout", ["top-bottom", "left-right"])
def test_split_join_round_trip_numpy(layout):
    img = np.random.default_rng(1).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    left, right = split_stereo(img, layout)
    if layout == "top-bottom":
        assert left.shape == (4, 12, 3) and np.array_equal(left, img[:4])
    else:
        assert left.shape == (8, 6, 3) and np.array_equal(left, img[:, :6])
    assert np.array_equal(join_stereo(left, right, layout), img)


@pytest.mark.parametrize("layout", ["top-bottom", "left-right"])
def test_split_join_round_trip_torch(layout):
    t = torch.rand(2, 3, 6, 10)
    left, right = split_stereo(t, layout)
    if layout == "top-bottom":
        assert left.shape == (2, 3, 3, 10) and torch.equal(left, t[:, :, :3])
    else:
        assert left.shape == (2, 3, 6, 5) and torch.equal(right, t[..., 5:])
    assert torch.equal(join_stereo(left, right, layout), t)


def test_split_odd_size_is_input_error():
    with pytest.raises(InputError, match="stereo top-bottom needs an even height, got 201"):
        split_stereo(np.zeros((201, 400, 3), np.uint8), "top-bottom")
    with pytest.raises(InputError, match="even width, got 7"):
        split_stereo(torch.zeros(1, 3, 4, 7), "left-right")
    with pytest.raises(ValueError):
        split_stereo(np.zeros((4, 4, 3)), "mono")
    with pytest.raises(ValueError):
        join_stereo(np.zeros((2, 4, 3)), np.zeros((2, 5, 3)), "left-right")
