"""Still images in and out (PNG, JPEG, WebP) with Pillow: EXIF orientation, alpha, atomic writes."""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from stages.common import InputError, write_atomic

log = logging.getLogger(__name__)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


@dataclass(slots=True)
class Still:
    rgb: np.ndarray  # H×W×3 uint8, EXIF orientation applied
    alpha: np.ndarray | None  # H×W uint8 or None
    # The embedded colour profile when it describes these RGB values (a phone's Display P3, Adobe RGB): written into
    # the dreamed still, so viewers show its colours as they show the source's. A CMYK or grey profile is dropped
    # with the conversion to RGB.
    icc: bytes | None = None


def check_input_file(path: Path, what: str = "input") -> None:
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} is a directory, not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{what} is an empty file: {path}")


def output_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"output {path}: unsupported image type {path.suffix or '(none)'}; "
                         f"use one of {', '.join(sorted(FORMATS))}")
    return fmt


def check_output_path(path: Path, *inputs: Path | str | None, what: str = "output") -> None:
    """Fails early (before any model loads) when the output cannot be written, or would be one of the command's
    input files (the same file by any path: a link, `./`, a hard link), which is never written over."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} directory does not exist: {parent}")
    check_name_length(path, what)  # first: stat() of a name that is too long raises
    if path.is_dir():
        raise InputError(f"{what} is a directory: {path}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} directory is not writable: {parent}")
    if path.exists():
        for src in inputs:
            if src is not None and os.path.exists(src) and os.path.samefile(path, src):
                raise InputError(f"{what} {path} is the input file {src}, which is never written over; "
                                 "choose another output")


def check_name_length(path: Path, what: str = "output") -> None:
    """The file system takes a name of at most NAME_MAX bytes (255 on ext4, XFS, APFS) in a path of at most
    PATH_MAX: longer fails at the first write, after the render, so it is refused before."""
    parent = path.parent if str(path.parent) else Path(".")
    try:
        name_max, path_max = os.pathconf(parent, "PC_NAME_MAX"), os.pathconf(parent, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    if len(os.fsencode(path.name)) > name_max:
        raise InputError(f"{what}: its name is {len(os.fsencode(path.name))} bytes, over this file system's "
                         f"{name_max}; choose a shorter output name ({path.name[:40]}…)")
    if len(os.fsencode(os.path.abspath(path))) >= path_max:
        raise InputError(f"{what}: its path is over this file system's {path_max} bytes; choose a shorter output "
                         f"path ({str(path)[:40]}…)")


def read_still(path: Path) -> Still:
    check_input_file(path)
    try:
        with Image.open(path) as im:
            im.load()  # a truncated file fails here, not later in the dream
            im = ImageOps.exif_transpose(im)
            icc = im.info.get("icc_profile") or None
            if icc is not None and (im.mode not in ("RGB", "RGBA", "P") or icc[16:20] != b"RGB "):
                icc = None  # ICC header bytes 16-19: the data colour space
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                im = _to_8bit(im)
            has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            rgba = im.convert("RGBA") if has_alpha else None
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError as e:
        raise InputError(f"not an image Pillow can read: {path}") from e
    except Image.DecompressionBombError as e:
        raise InputError(f"image {path} is too large to decode safely ({e}); downscale it first") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"cannot decode image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from e
    alpha = np.asarray(rgba)[..., 3].copy() if rgba is not None else None
    return Still(rgb, alpha, icc)


def to_srgb(still: Still, name: str = "input") -> np.ndarray:
    """The still's RGB as sRGB values: what a video holds, since video has no colour profile and players show its
    values as BT.709 (sRGB's primaries). A phone's Display P3 photo put into a video unconverted plays paler than
    it looks in a photo viewer. A still without a profile is taken as sRGB already; a profile LittleCMS cannot
    use is ignored with a warning, as browsers do."""
    if not still.icc:
        return still.rgb
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(still.icc))
        out = ImageCms.profileToProfile(Image.fromarray(still.rgb), src, ImageCms.createProfile("sRGB"),
                                        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as e:
        log.warning("%s: its colour profile cannot be read (%s); its colours are taken as sRGB", name,
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return still.rgb
    log.info("%s: colours converted from its profile (%s) to sRGB for the video", name,
             ImageCms.getProfileDescription(src).strip() or "unnamed")
    return np.asarray(out, dtype=np.uint8).copy()


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit grey to 8-bit by scaling, not clipping (Pillow's convert clips at 255)."""
    a = np.asarray(im, dtype=np.float64)
    top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
    if im.mode in ("I", "F") and a.max() > 65535:
        top = float(a.max())
    return Image.fromarray(np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (never up) so the longer side is at most max_side."""
    h, w = rgb.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def write_still(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None, *, quality: int = 95,
                icc: bytes | None = None) -> None:
    """Writes via a temp file in the same directory and an atomic rename: never a half-written output. `icc`: the
    colour profile to embed (the source's)."""
    fmt = output_format(path)
    im = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        if fmt == "JPEG":
            log.warning("JPEG has no alpha channel; the input's transparency is dropped")
        else:
            a = Image.fromarray(alpha, "L")
            if a.size != im.size:
                a = a.resize(im.size, Image.Resampling.BILINEAR)
            im.putalpha(a)
    opts = {"quality": quality} if fmt != "PNG" else {}
    if icc:
        opts["icc_profile"] = icc
    write_atomic(path, lambda f: im.save(f, format=fmt, **opts))
