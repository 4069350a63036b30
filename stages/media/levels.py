"""H.264 and HEVC level limits, and the largest frame a level decodes at a given frame rate.

Tables: ITU-T H.264 Table A-1 (MaxMBPS, MaxFS in 16×16 macroblocks; MaxBR for High profile, which is
1.25× the Baseline/Main value) and H.265 Table A.8 (MaxLumaPs, MaxLumaSr in luma samples; MaxBR per
tier). A frame also may not be longer on a side than sqrt(8·MaxFS) macroblocks (H.264) or
sqrt(8·MaxLumaPs) samples (HEVC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Level:
    name: str  # "5.1"
    idc: int  # as the bitstream (and PyAV's codec_context.level) carries it: 51 for H.264, 153 for HEVC
    max_frame: int  # H.264: macroblocks per frame; HEVC: luma samples per frame
    max_rate: int  # per second, same unit
    max_kbps: int  # H.264 High profile; HEVC Main tier
    max_kbps_high_tier: int | None = None


def _h264(name: str, mbps: int, fs: int, br_main: int) -> Level:
    return Level(name, int(round(float(name) * 10)), fs, mbps, br_main * 5 // 4)


H264_LEVELS = (
    _h264("3.1", 108000, 3600, 14000), _h264("3.2", 216000, 5120, 20000), _h264("4", 245760, 8192, 20000),
    _h264("4.1", 245760, 8192, 50000), _h264("4.2", 522240, 8704, 50000), _h264("5", 589824, 22080, 135000),
    _h264("5.1", 983040, 36864, 240000), _h264("5.2", 2073600, 36864, 240000),
    _h264("6", 4177920, 139264, 240000), _h264("6.1", 8355840, 139264, 480000),
    _h264("6.2", 16711680, 139264, 800000),
)

HEVC_LEVELS = (
    Level("4", 120, 2228224, 66846720, 12000, 30000), Level("4.1", 123, 2228224, 133693440, 20000, 50000),
    Level("5", 150, 8912896, 267386880, 25000, 100000), Level("5.1", 153, 8912896, 534773760, 40000, 160000),
    Level("5.2", 156, 8912896, 1069547520, 60000, 240000), Level("6", 180, 35651584, 1069547520, 60000, 240000),
    Level("6.1", 183, 35651584, 2139095040, 120000, 480000),
    Level("6.2", 186, 35651584, 4278190080, 240000, 800000),
)


def levels(codec: str) -> tuple[Level, ...]:
    return H264_LEVELS if codec == "h264" else HEVC_LEVELS


def frame_size(codec: str, width: int, height: int) -> int:
    """A frame in the level's unit: macroblocks (H.264) or luma samples (HEVC)."""
    if codec == "h264":
        return math.ceil(width / 16) * math.ceil(height / 16)
    return width * height


def max_side(codec: str, lv: Level) -> int:
    """The longest side in pixels a level allows."""
    if codec == "h264":
        return int(math.sqrt(8 * lv.max_frame)) * 16
    return int(math.sqrt(8 * lv.max_frame))


def fits(codec: str, lv: Level, width: int, height: int, fps: float, kbps: int | None = None) -> bool:
    n = frame_size(codec, width, height)
    return (n <= lv.max_frame and n * fps <= lv.max_rate and max(width, height) <= max_side(codec, lv)
            and (kbps is None or kbps <= lv.max_kbps))


def lowest_level(codec: str, width: int, height: int, fps: float, kbps: int | None = None) -> Level | None:
    """The lowest level that decodes this stream (Main tier for HEVC), or None when none does."""
    return next((lv for lv in levels(codec) if fits(codec, lv, width, height, fps, kbps)), None)


def largest_fit(codec: str, lv: Level, width: int, height: int, fps: float, multiple: int = 16) -> tuple[int, int]:
    """The largest frame of this aspect (sides multiples of `multiple`) that `lv` decodes at `fps`."""
    if fits(codec, lv, width, height, fps):
        return width, height
    scale = 1.0
    while scale > 0.01:
        w = max(multiple, int(width * scale) // multiple * multiple)
        h = max(multiple, int(height * scale) // multiple * multiple)
        if fits(codec, lv, w, h, fps):
            return w, h
        scale *= 0.995
    raise ValueError(f"no {codec} frame of aspect {width}:{height} fits level {lv.name} at {fps:g} fps")


def by_name(codec: str, name: str) -> Level:
    return next(lv for lv in levels(codec) if lv.name == name)
