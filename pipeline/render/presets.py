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

# Tuned for dreamed texture, which is high-frequency everywhere (stages.media.encode.keyframe_zones; README,
# "Rate control"). P- and B-frames smooth the dream along the motion (the encoded frame-to-frame change is
# ~0.6 of the dream's own), a key frame codes it afresh: one frame's jump. Measured on one lossless dream per
# clip, re-encoded as the render does (segments of whole GOPs, joined), H.264, worst pair's warp error ÷ the
# median, file size (bench/pulse_bench.py):
#   demo (pan_cat, 90 frames): flat CRF 18, 1 s GOPs 3.00 (312 KiB); the old 10-frame ramp (×1.1 … ×4.8) at
#   CRF+4 2.24 (291 KiB); its key frame alone carried most of the jump (its coding error 83 against 32 on
#   the frame before it): boosting it ×2/×4/×8 1.83/1.67/1.59 but 317/352/388 KiB. The key frames' cost is
#   paid by 2 s GOPs: 15-frame ramp (×1.05 … ×4.8) + key frame ×4 at CRF+4 1.66 (270 KiB); street stand-in
#   (bench/footage.make_cut_pan, 250 frames) 2.90 → 2.26 (547 → 550 KiB), its worst pair now the whip pan's,
#   which the lossless dream shows too (1.66).
# Not reached at equal size: ≤ 1.5. Below 1.5 on the demo took 1.5-2× the file (ramps of 15-20 frames to ×8,
# key ×8), or a calmer dream (temporal.hold 0.9: 1.46 at 273 KiB) that leaves newly revealed content
# undreamed. Tried without gain: ipratio (mbtree overrides it), mbtree off, pbratio 1, no B-frames, qcomp.
# x264 settings that keep fine texture the same from frame to frame (those of its grain tuning that act on
# the quantiser: deadzones 6, psy-trellis 0.25, AQ strength 0.5, no DCT decimation), paid by CRF + 6, and the
# key frame ×6 (2026-12, same lossless dreams): demo 1.68 → 1.49 (268 → 260 KiB), street stand-in 2.45 → 2.28
# (548 → 544 KiB); each part alone, or qcomp 0.8, or psy-rd 0 (2.15) did worse. x264's CPU per frame the same.
# B-frames without the pyramid (none is a reference, so none gets a QP between P and B): 1.48 (258 KiB) and 2.18
# (537 KiB); `deepdream video` renders 1.53 → 1.50 (306 → 304 KiB), 2.26 → 2.22 (564 → 555 KiB). No B-frames,
# 1 or 2, b-adapt 2, mbtree off, qcomp 0.7/0.8 at CRF + 6/7/8 did not beat it.
RAMP_SHARE = 0.25  # of the GOP: 15 frames of a 2 s GOP at 30 fps
RAMP_FIRST, RAMP_LAST = 1.05, 4.8
# x265 (same lossless dreams, HEVC): CRF + 4 with the ramp 2.22 (217 KiB) / 2.68 (504 KiB); B-frames without the
# pyramid and SAO off (its smoothing filter) 1.69 (238 KiB) / 2.46 (496 KiB), the eyes of a real stereo pair as
# correlated (0.769 → 0.764 at 108 KiB). x265 ignores the key frame's zone (×1 … ×10 and ipratio: the same file,
# cutree decides), so it gets none; AQ strength 0.5, psy-rdoq 10 or CRF + 5 did worse.
# codec: (CRF offset, key frame's bitrate factor, encoder params).
TEXTURE_RATE = {
    "h264": (6, 6.0, "deadzone-inter=6:deadzone-intra=6:psy-rd=1.0,0.25:aq-strength=0.5:no-dct-decimate=1"
                   ":b-pyramid=none"),
    "hevc": (4, 1.0, "no-b-pyramid=1:no-sao=1"),
}
# Stereo with the carry (one dream in both eyes): each eye's P-frames are quantised on their own, so the eyes'
# dream residuals drift apart along a GOP. DIS-measured correlation, 512 px, 2 octaves, over 8 / 24 frames
# (lossless 0.98 / 1.00): the committed clip 0.881 / 0.859 (185 / 283 KiB) with the texture tuning above, falling
# from 0.97 at the key frame to 0.82; a real stereo photo pair panned (scikit-image's motorcycle) 0.880 / 0.844
# (201 / 288 KiB). mbtree is what lets them drift: it coarsens what it sees change every frame, the dream. Without
# it, psy-rd and AQ (they code each eye's texture its own way), steady along the GOP (0.95 … 0.92): at CRF itself
# 0.902 / 0.905 and 0.885 / 0.882 (motorcycle 186 / 331 KiB); at CRF − 2, taken, 0.920 / 0.923 (229 / 507 KiB)
# and 0.902 / 0.903 (227 / 437 KiB). With mbtree, psy and AQ off at CRF − 3 0.904 over 24 frames at +46 %; qcomp
# 0.8/0.9 0.883/0.887 (+14/+22 %); none of deadzones 0, no-fast-pskip, trellis or subme moved it.
STEREO_RATE = {"h264": (-8, "mbtree=0:psy=0:aq-mode=0")}
DEFAULT_GOP_S = 2.0  # encode.gop null with no platform preset


def keyframe_ramp(gop: int) -> tuple[float, ...]:
    """Geometric bitrate factors RAMP_FIRST … RAMP_LAST over the last RAMP_SHARE of a GOP of `gop` frames."""
    n = max(1, min(gop - 1, round(gop * RAMP_SHARE)))
    if n == 1:
        return (RAMP_LAST,)
    return tuple(round(RAMP_FIRST * (RAMP_LAST / RAMP_FIRST) ** (k / (n - 1)), 3) for k in range(n))


def keyframe_keep(index: int, gop: int, ease: float) -> float:
    """The share of frame `index`'s new dream change the render shows (step.dream_frame `keep`; key frames every
    `gop` frames from frame 0): 1 − `ease` over the ramp's frames before a key frame, 1 − 1.5·`ease` on the key
    frame, back to 1 over a quarter of the ramp's length after it.

    The encoder shows about 0.6 of the dream's frame-to-frame change on P- and B-frames (it smooths the texture
    along the motion), but the whole change where it codes finely: on the ramp's frames and the key frame. Those
    frames pulsed against the rest although the dream itself did not. Measured with `deepdream video` and
    `deepdream metrics` (worst pair's warp error ÷ the median), keyframe_ease 0 → 0.4: the demo 1.50 → 1.35
    (311 → 297 KB, dream strength 170.5 → 169.7); the street stand-in's key-frame pair 2.22 → 2.13, its worst pair
    of the dream's own change (warp error less the source's) 2.43 → 2.15 (569 → 540 KB); its reading stays 2.23,
    now the whip pan's (the flow failing there, as in the lossless dream). 0.6 did no better (2.14 / 2.21). Tried
    offline along the measurement's own flow it looked better (street key pair 1.74): that flow is the metric's."""
    if ease <= 0 or index <= 0 or gop < 2:
        return 1.0
    n = len(keyframe_ramp(gop))
    after, j = round(n / 4), index % gop
    if j == 0:
        return 1.0 - min(0.9, 1.5 * ease)
    if j >= gop - n:
        return 1.0 - ease
    if j <= after:
        return 1.0 - ease + ease * j / (after + 1)
    return 1.0


@dataclass(frozen=True, slots=True)
class EncodePlan:
    encoding: Encoding
    box: tuple[int, int] | None  # the platform's largest frame (width, height), both eyes included
    level: L.Level | None  # the level the frame must fit at the render's frame rate
    ease: float = 0.0  # encode.keyframe_ease where the encoder ramps into key frames (lossy), else 0 (keyframe_keep)

    def keep(self, index: int) -> float:
        return keyframe_keep(index, self.encoding.gop or 1, self.ease)

    def fits(self, width: int, height: int, fps: float) -> bool:
        if self.box and (width > self.box[0] or height > self.box[1]):
            return False
        return self.level is None or L.fits(self.encoding.codec, self.level, width, height, fps)


def gop_frames(seconds: float, rate: Fraction) -> int:
    return max(1, round(seconds * float(rate)))


def encode_plan(cfg: Config, rate: Fraction, stereo: str) -> EncodePlan:
    ep = _encode_plan(cfg, rate, stereo)
    return replace(ep, ease=cfg.encode.keyframe_ease) if ep.encoding.keyframe_ramp else ep


def _encode_plan(cfg: Config, rate: Fraction, stereo: str) -> EncodePlan:
    e = cfg.encode
    fps = float(rate) if rate else 30.0
    carried = stereo != "mono" and cfg.spherical.stereo == "carry"  # both eyes show one dream
    high_fps = fps > 30.5

    def encoding(codec: str, crf: int, gop_s: float, **kw) -> Encoding:
        gop = gop_frames(e.gop or gop_s, rate)
        if crf == 0:  # stays lossless: no ramp, no offset
            return Encoding(codec=codec, crf=0, speed=e.speed, gop=gop, **kw)
        offset, boost, texture = TEXTURE_RATE[codec]
        if carried and codec in STEREO_RATE:
            offset, texture = offset + STEREO_RATE[codec][0], f"{texture}:{STEREO_RATE[codec][1]}"
        params = ":".join(p for p in (texture, kw.pop("params", "")) if p)
        return Encoding(codec=codec, crf=max(1, min(51, crf + offset)), speed=e.speed, gop=gop,
                        keyframe_ramp=keyframe_ramp(gop), keyframe_boost=boost, params=params, **kw)

    if e.preset == "none":
        # crf 0 is lossless, which only x264's High 4:4:4 Predictive profile allows: let x264 pick it.
        profile = "high" if e.codec == "h264" and e.crf > 0 else None
        return EncodePlan(encoding(e.codec, e.crf, DEFAULT_GOP_S, profile=profile), None, None)
    if e.preset == "quest":
        if high_fps:
            box = {"mono": (4096, 2048), "top-bottom": (2880, 2880), "left-right": (4096, 2048)}[stereo]
            enc = encoding("hevc", min(e.crf, 22), 1.0, profile="main", level="5.2", maxrate_kbps=60000)
        elif stereo == "top-bottom":
            box = (4096, 4096)
            enc = encoding("hevc", min(e.crf, 22), 1.0, profile="main", level="6", maxrate_kbps=60000)
        else:  # the guidance lists 5760×2880 for H.264 only
            box = (5760, 2880)
            enc = encoding("h264", min(e.crf, 22), 1.0, profile="high", level="6", maxrate_kbps=60000,
                           params="mvrange=511")
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
