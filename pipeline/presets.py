"""Encoder presets (`encode.preset`): codec, profile, GOP, bitrate cap and the largest frame a target decodes.

Limits from Meta's and YouTube's published guidance (see README's table): Quest-class headsets decode
HEVC up to 5760×2880 at 30 fps (4096×2048 above 30 fps); H.264 is safe up to 4096×2048; YouTube 360
takes up to 8192×4096. Frames over a cap are scaled down (with a log line), never refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from pipeline.config import Config


@dataclass(frozen=True, slots=True)
class EncodeSettings:
    codec: str
    crf: int
    speed: str
    profile: str | None
    level: str | None
    gop: int
    maxrate_kbps: int | None
    max_size: tuple[int, int] | None  # (width, height) cap of the whole frame, both eyes included


def encode_settings(cfg: Config, rate: Fraction, stereo: str) -> EncodeSettings:
    e = cfg.encode
    fps = float(rate) if rate else 30.0
    gop = max(1, round(fps))  # closed GOP of about one second
    if e.preset == "none":
        # crf 0 is lossless, which only x264's High 4:4:4 Predictive profile allows: let x264 pick it.
        profile = "high" if e.codec == "h264" and e.crf > 0 else None
        return EncodeSettings(e.codec, e.crf, e.speed, profile, None, gop, None, None)
    if e.preset == "quest":
        mono = (5760, 2880) if fps <= 30.5 else (4096, 2048)
        cap = {"mono": mono, "top-bottom": (4096, 4096) if fps <= 30.5 else (2880, 2880),
               "left-right": (5760, 2880) if fps <= 30.5 else (4096, 2048)}[stereo]
        return EncodeSettings("hevc", min(e.crf, 22), e.speed, "main", None, gop, 60000, cap)
    if e.preset == "youtube360":
        cap = {"mono": (8192, 4096), "top-bottom": (8192, 8192), "left-right": (8192, 4096)}[stereo]
        # YouTube's upload guidance asks for a closed GOP of half the frame rate.
        return EncodeSettings("h264", min(e.crf, 18), e.speed, "high", None, max(1, round(fps / 2)), 80000, cap)
    # h264_compat: H.264 High level 5.1, what every phone, browser and older headset plays.
    cap = {"mono": (4096, 2048), "top-bottom": (3840, 3840) if fps <= 30.5 else (2048, 2048),
           "left-right": (4096, 2048)}[stereo]
    return EncodeSettings("h264", e.crf, e.speed, "high", "5.1", gop, 40000, cap)


def capped_max_side(width: int, height: int, user_max_side: int | None, cap: tuple[int, int] | None) -> int | None:
    """The `max_side` that satisfies both input.max_side and the preset's frame cap."""
    limits = [user_max_side] if user_max_side else []
    if cap is not None:
        s = min(1.0, cap[0] / width, cap[1] / height)
        if s < 1.0:
            limits.append(int(max(width, height) * s))
    return min(limits) if limits else None
