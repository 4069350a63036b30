"""Encoder presets (`encode.preset`): codec, profile, level, GOP, bitrate cap and the largest frame a target
decodes, each checked against its codec level (stages/media/levels.py) and its platform's published guidance.

- quest: Meta/Oculus guidance (Cheng 2019; Carmack): up to 30 fps, H.264 5760×2880 (beyond level 5.2, so
  motion vectors stay within 5.2's range: mvrange 511) and HEVC 4096×4096 (top-bottom); above 30 fps
  4096×2048 and 2880×2880. HEVC Main tier, 60 Mb/s with a VBV buffer of the same size.
- youtube360: YouTube's upload guidance: H.264 High, closed GOP of half the frame rate, 2 consecutive
  B-frames, up to 8192×4096; top-bottom is bounded by H.264 level 6.2 (139 264 macroblocks per frame).
- h264_compat: H.264 High level 5.1, what phones, browsers and older headsets decode.
Frames over a cap are scaled down (with a log line), never refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

from pipeline.config import Config
from stages.media import levels as L
from stages.media.encode import Encoding

# Tuned for dreamed texture, which is high-frequency everywhere: more bits for the 10 frames before each
# key frame, so key frames do not pulse (stages.media.encode.keyframe_zones; README, "Rate control"), paid for
# by a coarser CRF everywhere else. Measured on the demo (one lossless dream, H.264 CRF 18, 1 s GOPs,
# encoded as the render does: 30-frame segments, joined): worst key frame / median warp error 3.00 flat
# (312 KiB); this ramp at CRF+4 2.24 (291 KiB); at CRF+3 2.05 (340 KiB); at CRF+4 without mbtree 2.05
# (332 KiB); the 6-frame ramp (1.3 ... 5) at CRF+0 1.75 (501 KiB). As one continuous stream the same
# dream reads 2.53 flat and 1.74 with this ramp; ipratio 1.0, qcomp 0.8-0.9 and no B-frames did worse.
KEYFRAME_RAMP = (1.1, 1.2, 1.35, 1.5, 1.7, 2.0, 2.4, 3.0, 3.8, 4.8)
RAMP_CRF_OFFSET = 4


@dataclass(frozen=True, slots=True)
class EncodePlan:
    encoding: Encoding
    box: tuple[int, int] | None  # the platform's largest frame (width, height), both eyes included
    level: L.Level | None  # the level the frame must fit at the render's frame rate

    def fits(self, width: int, height: int, fps: float) -> bool:
        if self.box and (width > self.box[0] or height > self.box[1]):
            return False
        return self.level is None or L.fits(self.encoding.codec, self.level, width, height, fps)


def gop_frames(seconds: float, rate: Fraction) -> int:
    return max(1, round(seconds * float(rate)))


def encode_plan(cfg: Config, rate: Fraction, stereo: str) -> EncodePlan:
    e = cfg.encode
    fps = float(rate) if rate else 30.0
    high_fps = fps > 30.5

    def encoding(codec: str, crf: int, gop_s: float, **kw) -> Encoding:
        lossless = crf == 0  # stays lossless: no ramp, no offset
        return Encoding(codec=codec, crf=crf if lossless else min(51, crf + RAMP_CRF_OFFSET), speed=e.speed,
                        gop=gop_frames(e.gop or gop_s, rate), keyframe_ramp=() if lossless else KEYFRAME_RAMP,
                        **kw)

    if e.preset == "none":
        # crf 0 is lossless, which only x264's High 4:4:4 Predictive profile allows: let x264 pick it.
        profile = "high" if e.codec == "h264" and e.crf > 0 else None
        return EncodePlan(encoding(e.codec, e.crf, 1.0, profile=profile), None, None)
    if e.preset == "quest":
        if high_fps:
            box = {"mono": (4096, 2048), "top-bottom": (2880, 2880), "left-right": (4096, 2048)}[stereo]
            enc = encoding("hevc", min(e.crf, 22), 1.0, profile="main", level="5.2", maxrate_kbps=60000)
        elif stereo == "top-bottom":
            box = (4096, 4096)
            enc = encoding("hevc", min(e.crf, 22), 1.0, profile="main", level="6", maxrate_kbps=60000)
        else:  # the guidance lists 5760×2880 for H.264 only
            box = (5760, 2880)
            enc = encoding("h264", min(e.crf, 22), 1.0, profile="high", level="6", maxrate_kbps=60000)
            enc = replace(enc, params="mvrange=511")
        return EncodePlan(enc, box, L.by_name(enc.codec, enc.level))
    if e.preset == "youtube360":
        box = {"mono": (8192, 4096), "top-bottom": (8192, 8192), "left-right": (8192, 4096)}[stereo]
        level = "6.2" if fps > 60.5 else "6.1" if fps > 30.5 else "6"
        enc = encoding("h264", min(e.crf, 18), 0.5, profile="high", level=level, maxrate_kbps=80000, bframes=2)
        return EncodePlan(enc, box, L.by_name("h264", level))
    # h264_compat
    enc = encoding("h264", e.crf, 1.0, profile="high", level="5.1", maxrate_kbps=40000)
    return EncodePlan(enc, (4096, 2048) if stereo != "top-bottom" else (4096, 4096), L.by_name("h264", "5.1"))


def fit_max_side(width: int, height: int, fps: float, user_max_side: int | None, ep: EncodePlan,
                 size_for) -> int | None:
    """The largest `max_side` (≤ input.max_side) whose frame, as `size_for(max_side)` makes it, fits the
    preset's box and level at `fps`; `user_max_side` as it is when that fits (None: the source's size)."""
    if ep.fits(*size_for(user_max_side), fps):
        return user_max_side
    lo, hi = 2, min(user_max_side or max(width, height), max(width, height))  # lo fits, hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ep.fits(*size_for(mid), fps) else (lo, mid)
    return lo
