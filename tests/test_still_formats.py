"""`deepdream image` on the kinds of still people bring: every output format, EXIF rotation, alpha, 16-bit grey,
an embedded colour profile. In-process runs of the real CLI (`tests.test_cli_image` has the subprocess ones)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from tests.conftest import CHELSEA, resized, run_inprocess

FAST = ["--set", "input.max_side=64", "--set", "dream.octaves=2", "--set", "dream.iterations=2"]


def dream(capfd, src: Path, out: Path, *args) -> tuple[str, str]:
    """`deepdream image SRC OUT ARGS` in-process, which must succeed: (stdout, stderr)."""
    rc, stdout, err = run_inprocess(["image", src, out, *args], capfd)
    assert rc == 0, err
    return stdout, err


@pytest.fixture(scope="module")
def media(tmp_path_factory, chelsea_rgb) -> dict[str, Path]:
    """A 64×43 RGBA PNG with an alpha ramp and an EXIF-rotated JPEG, both from the chelsea photo."""
    d, rgb, paths = tmp_path_factory.mktemp("stills"), chelsea_rgb, {}
    small = resized(rgb, 64, 43)

    rgba = np.dstack([small, np.tile(np.linspace(0, 255, 64).astype(np.uint8), (43, 1))])
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    paths["rgba"] = d / "rgba.png"

    # Stored 64 wide × 40 tall with a red block top-left; EXIF orientation 6 = display rotated 90° CW,
    # so it shows 40 wide × 64 tall with the red block top-right.
    stored = resized(rgb, 64, 40).copy()
    stored[:12, :12] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(d / "exif6.jpg", quality=95, exif=exif.tobytes())
    with Image.open(d / "exif6.jpg") as im:
        assert im.getexif()[0x0112] == 6 and im.size == (64, 40)
    paths["exif6"] = d / "exif6.jpg"
    return paths


@pytest.mark.parametrize("ext, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".JPEG", "JPEG"),
                                      (".webp", "WEBP")])
@pytest.mark.slow
def test_output_formats(tmp_path, capfd, ext, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP support")
    out = tmp_path / f"o{ext}"
    stdout, err = dream(capfd, CHELSEA, out, *FAST)
    assert stdout.strip() == str(out)
    with Image.open(out) as im:
        assert im.format == fmt and im.size == (64, 43) and im.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.name + ".yaml"])


@pytest.mark.slow
def test_exif_orientation_is_applied(media, tmp_path, capfd):
    out = tmp_path / "o.png"
    dream(capfd, media["exif6"], out, *FAST)
    with Image.open(out) as im:
        assert im.size == (40, 64)  # stored 64×40, displayed (and dreamed) 40×64
        a = np.asarray(im.convert("RGB"), dtype=int)
    top_right, top_left = a[1:9, -9:-1].mean(axis=(0, 1)), a[1:9, 1:9].mean(axis=(0, 1))
    assert top_right[0] > top_right[1] + 60 and top_right[0] > top_right[2] + 60, top_right
    assert not (top_left[0] > top_left[1] + 60 and top_left[0] > top_left[2] + 60), top_left


@pytest.mark.slow
def test_rgba_png_keeps_alpha(media, tmp_path, capfd):
    out = tmp_path / "o.png"
    dream(capfd, media["rgba"], out, *FAST)
    with Image.open(media["rgba"]) as src, Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == src.size
        assert np.array_equal(np.asarray(im)[..., 3], np.asarray(src)[..., 3])


@pytest.mark.slow
def test_rgba_alpha_follows_a_downscale(media, tmp_path, capfd):
    out = tmp_path / "o.png"
    dream(capfd, media["rgba"], out, *FAST, "--set", "input.max_side=32")
    with Image.open(media["rgba"]) as src, Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (32, 22)
        want = np.asarray(src.getchannel("A").resize(im.size, Image.Resampling.BILINEAR), dtype=int)
        assert np.abs(np.asarray(im.getchannel("A"), dtype=int) - want).max() <= 2


@pytest.mark.slow
def test_16bit_grayscale_png_keeps_its_tones(tmp_path, capfd):
    ramp = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    src = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(src)
    with Image.open(src) as im:
        assert im.mode == "I;16"
    out = tmp_path / "o.png"
    dream(capfd, src, out, "--set", "dream.iterations=0")  # no dream: a copy
    got = np.asarray(Image.open(out).convert("L"), dtype=np.float32)
    want = ramp.astype(np.float32) / 257.0
    assert np.abs(got - want).mean() < 2.0, f"mean output {got.mean():.1f}, expected {want.mean():.1f}"


@pytest.mark.slow
def test_rgba_to_jpeg_drops_alpha_with_a_note(media, tmp_path, capfd):
    out = tmp_path / "o.jpg"
    _, err = dream(capfd, media["rgba"], out, *FAST)
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 43)
    notes = [line for line in err.splitlines() if "JPEG has no alpha" in line]
    assert len(notes) == 1 and notes[0].startswith("warning: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
def test_the_source_colour_profile_goes_into_the_dreamed_still(tmp_path, capfd, chelsea_rgb, ext):
    """A phone photo's Display P3 must reach the output, or viewers show its colours as sRGB; a profile that does
    not describe the RGB values written (a grey image's) must not."""
    from tests.synth import matrix_icc

    icc, rgb = matrix_icc(), resized(chelsea_rgb, 48, 32)
    src, grey = tmp_path / "p3.png", tmp_path / "grey.png"
    Image.fromarray(rgb).save(src, icc_profile=icc)
    Image.fromarray(rgb).convert("L").save(grey, icc_profile=icc)
    for path, want in ((src, icc), (grey, None)):
        out = tmp_path / f"o_{path.stem}{ext}"
        dream(capfd, path, out, *FAST)
        with Image.open(out) as im:
            assert im.info.get("icc_profile") == want


def _patches() -> np.ndarray:
    """48×32: six flat 16×16 colour patches (saturated, skin, grey, green, blue, dark): what chroma subsampling
    keeps at their centres."""
    colours = [(200, 60, 50), (225, 170, 140), (128, 128, 128), (40, 180, 90), (50, 70, 190), (30, 30, 30)]
    img = np.zeros((32, 48, 3), np.uint8)
    for k, c in enumerate(colours):
        img[16 * (k // 3):16 * (k // 3 + 1), 16 * (k % 3):16 * (k % 3 + 1)] = c
    return img


def _centres(img: np.ndarray) -> np.ndarray:
    return np.array([img[16 * r + 5:16 * r + 11, 16 * c + 5:16 * c + 11].reshape(-1, 3).mean(0)
                     for r in range(2) for c in range(3)])


@pytest.mark.slow
def test_a_wide_gamut_photo_animates_in_its_own_colours(tmp_path, capfd):
    """Video has no colour profile: a Display P3 photo's values must become sRGB values, or the animation plays
    paler than the photo looks. Paired: the same pixels with a P3 profile, with none, with a broken one."""
    import av
    from PIL import ImageCms

    from tests.synth import matrix_icc

    img, icc = _patches(), matrix_icc()
    want = np.asarray(ImageCms.profileToProfile(Image.fromarray(img), ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                                ImageCms.createProfile("sRGB"), outputMode="RGB"))
    assert np.abs(_centres(want) - _centres(img)).max() > 15  # the profile matters for these colours
    got = {}
    for name, profile in (("p3", icc), ("none", None), ("broken", icc[:200])):
        src, out = tmp_path / f"{name}.png", tmp_path / f"{name}.mp4"
        Image.fromarray(img).save(src, **({"icc_profile": profile} if profile else {}))
        rc, _, err = run_inprocess(["animate", src, out, "--set", "dream.iterations=0", "--set", "animate.fps=10",
                                    "--set", "animate.seconds=0.2", "--set", "motion.zoom=1"], capfd)
        assert rc == 0, err
        assert ("cannot be read" in err) == (name == "broken"), err
        with av.open(str(out)) as c:
            got[name] = _centres(next(c.decode(video=0)).to_ndarray(format="rgb24").astype(np.float64))
    assert np.abs(got["p3"] - _centres(want)).max() <= 4, (got["p3"], _centres(want))
    for name in ("none", "broken"):
        assert np.abs(got[name] - _centres(img)).max() <= 4, (name, got[name])
