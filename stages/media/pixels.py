"""How a player shows a decoded frame, which is how a render reads it: display rotation, square pixels, and the
YUV matrix the file names or, untagged, the one players assume.

A dream's features must come out as the viewer will see the source: round on round pixels, in the source's
colours. The encoder's side (the same size convention, tagged) is in stages.media.encode.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from stages.media import hdr

# Sample aspect ratios outside this are header garbage, not a camera's or a broadcast format's (DV 8:9 … 32:27,
# HDV 4:3, anamorphic 2:1): such files play with square pixels, and so are they read.
SAR_RANGE = (Fraction(1, 4), Fraction(4))


def declared_aspect(stream) -> Fraction | None:
    """The pixels' width ÷ height as the file states it, where not square; None for square or unstated."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return Fraction(sar) if sar and Fraction(sar) != 1 else None


def sample_aspect(stream) -> Fraction | None:
    """The declared aspect a render honours (DV, HDV, broadcast, anamorphic); None for square pixels or a ratio
    outside SAR_RANGE."""
    sar = declared_aspect(stream)
    return sar if sar is not None and SAR_RANGE[0] <= sar <= SAR_RANGE[1] else None


# AVColorSpace UNSPECIFIED; AVColorTransferCharacteristic SMPTE2084 (PQ) and ARIB_STD_B67 (HLG); AVColorPrimaries
_UNTAGGED, _HDR_TRC, _BT2020 = 2, {16: "PQ", 18: "HLG"}, 9


def conventional_matrix(width: int, height: int) -> int:
    """The YUV matrix players assume for a frame of this size when the file names none (mpv, VLC, browsers):
    swscale's BT.709 (1) from HD sizes up, BT.601 (5) below."""
    return 1 if width >= 1280 or height > 576 else 5


def untagged_matrix(frame) -> int | None:
    """The matrix for YUV frames that do not name theirs: the conventional one. None: the frame's own tag, which
    PyAV follows."""
    if frame.colorspace != _UNTAGGED or not frame.format.name.startswith(("yuv", "nv", "p0", "p2")):
        return None
    return conventional_matrix(frame.width, frame.height)


def display_size(w: int, h: int, rotation: int, sar: Fraction | None = None) -> tuple[int, int]:
    """The size a player shows: non-square pixels stretched to square ones (the wider side grows, so no source
    detail is lost and a dream's features come out round on screen), then the display rotation."""
    if sar is not None:
        even = lambda n: max(2, 2 * round(n / 2))  # noqa: E731
        w, h = (even(w * sar), h) if sar > 1 else (w, even(h / sar))
    return (h, w) if rotation % 180 else (w, h)


@dataclass(frozen=True, slots=True)
class Look:
    """How the frames of one stream are shown: `rotation` (CCW degrees), `sample_aspect` (None: square pixels),
    `matrix` (swscale's colorspace for untagged YUV; None: the frame's tag), `hdr` ("PQ"/"HLG" or None)."""

    rotation: int
    sample_aspect: Fraction | None
    matrix: int | None
    hdr: str | None

    @classmethod
    def of(cls, stream, first: av.VideoFrame) -> Look:
        # FFmpeg reports a half turn as -180 or 180 depending on matrix rounding; pick one.
        rotation = 180 if int(first.rotation) == -180 else int(first.rotation)
        return cls(rotation, sample_aspect(stream), untagged_matrix(first), _HDR_TRC.get(first.color_trc))

    def size(self, first: av.VideoFrame) -> tuple[int, int]:
        return display_size(first.width, first.height, self.rotation, self.sample_aspect)


def player_rgb(frame: av.VideoFrame, look: Look, width: int, height: int) -> np.ndarray:
    """`frame` as 8-bit RGB, shown the way `look` says, at width × height (HDR tone-mapped to SDR BT.709)."""
    rgb = frame.to_ndarray(format="rgb48le" if look.hdr else "rgb24", src_colorspace=look.matrix)
    k = round(frame.rotation / 90) % 4
    if k:
        # frame.rotation is the CCW angle the display applies; np.rot90 also turns CCW.
        rgb = np.rot90(rgb, k)
    h, w = rgb.shape[:2]
    if (w, h) != (width, height):
        # area averaging to shrink; a side that grows (square pixels from anamorphic ones) is interpolated
        shrink = width <= w and height <= h
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if look.hdr:  # after the resize: tone mapping costs per pixel
        rgb = hdr.to_sdr(rgb, look.hdr, bt2020=frame.color_primaries == _BT2020)
    return np.ascontiguousarray(rgb)
