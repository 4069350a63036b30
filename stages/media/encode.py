"""H.264/HEVC MP4 writing with source timestamps, and lossless joining of checkpoint segments.

Each render checkpoint is its own MP4 written by `VideoWriter`; `join_segments` glues them by stream
copy and adds the source's audio. That only works if every segment starts with an IDR frame, uses
identical encoder settings, and keeps the source's pts, which is what the writer guarantees.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stages.media.pixels import conventional_matrix

log = logging.getLogger(__name__)

_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
# Audio codecs that MP4 players handle when stream-copied; anything else (pcm_*, vorbis, ...) would
# either be refused by the muxer or produce a file most players cannot play, so it becomes AAC.
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "alac"}
_MAX_REORDER = 16  # frames a B-frame encoder may hold back; a pts − dts beyond this is not a real delay
# Frames are converted to YUV with the matrix players assume for their size (BT.709 from HD up, BT.601 below:
# stages.media.pixels.conventional_matrix), limited range, and tagged so, primaries and transfer too. Untagged
# BT.601, swscale's default, showed every HD render's colours shifted (a green 28 levels off). BT.601 stays below
# HD because it is the convention there, and because it codes the dream's colour texture in less (measured on the
# demo's own frames: BT.709 +10 % file, further from the dream).
# swscale matrix → (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic): BT.709, SMPTE 170M (BT.601)
_TAGS = {1: (1, 1, 1), 5: (6, 6, 6)}
_LIMITED = 1  # AVColorRange MPEG


def encoder_available(codec: str) -> bool:
    name = _ENCODERS.get(codec, codec)
    return name in av.codec.codecs_available


def _mp4_options(faststart: bool, time_base: Fraction | None = None, *, final: bool = False) -> dict[str, str]:
    options = {}
    flags = ["faststart"] if faststart else []
    if final:
        # The delivered file has no edit list (platforms such as YouTube ask for none): B-frames keep the
        # first frame at 0 through negative composition offsets (ctts v1) instead of an edit.
        flags.append("negative_cts_offsets")
        options["use_editlist"] = "0"
    if flags:
        options["movflags"] = "+".join(flags)
    if time_base is not None and time_base.numerator == 1:
        # Without this the mov muxer doubles small timescales (1/30 -> 1/15360), which keeps times
        # exact but changes the integer pts callers compare against the source.
        options["video_track_timescale"] = str(time_base.denominator)
        # The edit list that places a segment's first frame at its source time is written in the
        # movie timescale (default 1000); 15015/30000 s would round to 0.5 s and shift every pts.
        options["movie_timescale"] = str(time_base.denominator)
    return options


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a stream is encoded. Every segment of a render uses the same one, so they join by copy."""

    codec: str = "h264"  # h264 (libx264) | hevc (libx265, tagged hvc1)
    crf: int = 18
    speed: str = "medium"  # the encoder's preset
    profile: str | None = None  # None: High for H.264 (x264's choice when lossless), the encoder's for HEVC
    level: str | None = None  # "5.1"; None: the encoder's choice
    gop: int | None = None  # frames between key frames; None: one second
    maxrate_kbps: int | None = None
    bufsize_kbps: int | None = None  # None: equal to maxrate (a bigger VBV buffer can push HEVC to High tier)
    bframes: int | None = None  # None: the encoder's default
    params: str = ""  # more x264/x265 params (key=value:...)
    keyframe_ramp: tuple[float, ...] = ()  # bitrate factors for the frames before each key frame (see zones)
    keyframe_boost: float = 1.0  # bitrate factor of each key frame itself (with a ramp)

    def __post_init__(self) -> None:
        if self.codec not in _ENCODERS:
            raise ValueError(f"codec must be one of {sorted(_ENCODERS)}, got {self.codec!r}")


def keyframe_zones(gop: int, frames: int, ramp: tuple[float, ...], boost: float = 1.0) -> str:
    """x264/x265 zones that raise the bitrate of the frames before each key frame along `ramp`, and of each
    key frame by `boost`.

    Dreamed texture is high-frequency everywhere: P- and B-frames smooth it along the motion while a key
    frame codes it afresh, so without this the picture jumps once per GOP. The last frames of a GOP
    converge on the dream, and the key frame, coded finely too, meets them there: a coarse key frame's
    own coding error is fresh (nothing predicts it), and it alone was most of the jump (numbers:
    pipeline/render/presets.py).
    """
    zones = {}
    for key in range(0, frames + gop, gop):
        if 0 <= key < frames and boost != 1.0:
            zones[key] = boost
        for k, factor in enumerate(reversed(ramp)):
            f = key - 1 - k
            if 0 < f < frames and f % gop:
                zones[f] = factor
    return "zones=" + "/".join(f"{f},{f},b={zones[f]:g}" for f in sorted(zones)) if zones else ""


class VideoWriter:
    """Encode RGB frames into an MP4, each frame stamped with its source pts.

    B-frames stay on. Checked: segments written with B-frames and joined by stream copy decode to every
    frame with exact pts, for CFR (30000/1001) and jittered VFR, because the encoder's dts delay is the
    same in every segment so dts stays monotonic across boundaries. `join_segments` still nudges a
    boundary dts that would not increase (an extreme VFR gap could do that) instead of letting the muxer
    fail at the end of a long render.
    """

    def __init__(self, path, *, width: int, height: int, time_base: Fraction, rate: Fraction,
                 encoding: Encoding = Encoding(), faststart: bool = True, frames: int | None = None):
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.time_base = Fraction(time_base)
        self.rate = Fraction(rate)
        self._pad = (self.height % 2, self.width % 2)
        if any(self._pad):
            log.warning("odd frame size %dx%d: padding to %dx%d by edge replication for yuv420p",
                        self.width, self.height, self.width + self._pad[1], self.height + self._pad[0])
        self._container = av.open(str(self.path), "w", format="mp4",
                                  options=_mp4_options(faststart, self.time_base))
        self._frames = frames  # how many frames this file will hold, for the key-frame ramp's zones
        try:
            self._stream = self._make_stream(encoding)
        except Exception:
            self._container.close()
            raise
        self._frame_step = max(1, round(1 / (self.rate * self.time_base)))
        self._next_pts = 0
        self._last_dts: int | None = None
        self._closed = False

    def _make_stream(self, e: Encoding):
        stream = self._container.add_stream(_ENCODERS[e.codec], rate=self.rate)
        stream.width = self.width + self._pad[1]
        stream.height = self.height + self._pad[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        self._matrix = conventional_matrix(stream.width, stream.height)
        ctx.colorspace, ctx.color_primaries, ctx.color_trc = _TAGS[self._matrix]
        ctx.color_range = _LIMITED
        if e.codec == "h264":
            # Frame threads, as many as x264 picks for the cores this process may use (PyAV's default would be
            # slices: a frame cut into one slice per thread, worse per bit, and no faster here). x264's output
            # depends on its thread count, which is the machine's: a resume on the same machine is identical.
            stream.thread_type = "FRAME"
            stream.thread_count = 0
        gop = e.gop or max(1, round(self.rate))
        ctx.gop_size = gop
        opts = {"crf": str(e.crf), "preset": e.speed}
        # keyint = min-keyint and no scene cuts: key frames exactly every `gop` frames; open-gop off keeps
        # every GOP decodable on its own, as segment boundaries need.
        params = [f"keyint={gop}", f"min-keyint={gop}", "open-gop=0", "scenecut=0"]
        if e.bframes is not None:
            params.append(f"bframes={e.bframes}")
        if e.codec == "h264":
            # crf 0 is lossless, which only High 4:4:4 Predictive allows: then let x264 choose.
            if e.profile or e.crf:
                opts["profile"] = e.profile or "high"
            if e.level:
                opts["level"] = e.level
            # cpu-independent: without it the same frames encoded to different pictures from process to
            # process (measured), and a resumed render must decode bit-identical to an uninterrupted one.
            params.append("cpu-independent=1")
        else:
            if e.profile:
                opts["profile"] = e.profile
            if e.level:
                # Main tier: the one headsets' decoders promise (High tier needs a bigger VBV buffer).
                params += [f"level-idc={e.level}", "no-high-tier=1"]
            # x265 prints banners to stderr itself (not via av_log), hence log-level here.
            params.append("log-level=error")
            # Apple players and Quest refuse HEVC in MP4 unless the sample entry is hvc1, not hev1.
            stream.codec_tag = "hvc1"
        if (e.keyframe_ramp or e.keyframe_boost != 1.0) and self._frames:
            params.append(keyframe_zones(gop, self._frames, e.keyframe_ramp, e.keyframe_boost))
        if e.params:
            params.append(e.params)
        opts["x264-params" if e.codec == "h264" else "x265-params"] = ":".join(params)
        if e.maxrate_kbps:
            opts["maxrate"] = f"{int(e.maxrate_kbps)}k"
            opts["bufsize"] = f"{int(e.bufsize_kbps or e.maxrate_kbps)}k"
        stream.options = opts
        return stream

    def write(self, rgb: np.ndarray, pts: int | None) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected {self.height}x{self.width}x3 uint8, got {rgb.shape} {rgb.dtype}")
        if any(self._pad):
            rgb = np.pad(rgb, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format="yuv420p", dst_colorspace=self._matrix, dst_color_range=_LIMITED)
        if pts is None:
            pts = self._next_pts
        frame.pts = int(pts)
        frame.time_base = self.time_base
        self._next_pts = int(pts) + self._frame_step
        self._mux(self._stream.encode(frame))

    def _mux(self, packets) -> None:
        """Mux with a sane dts. libx265 leaves dts uninitialised (values like -4.9e18) when a stream ends
        before its lookahead filled, i.e. a segment of 1 or 2 frames; the MP4 muxer then cannot store
        pts − dts and fails. Such a dts is replaced by one that keeps decode order: just after the last
        one, never past the packet's pts."""
        for p in packets:
            if p.pts is not None and (p.dts is None or p.dts > p.pts or p.pts - p.dts > _MAX_REORDER * self._frame_step
                                      or (self._last_dts is not None and p.dts <= self._last_dts)):
                p.dts = p.pts if self._last_dts is None else min(p.pts, self._last_dts + 1)
            self._last_dts = p.dts
            self._container.mux(p)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            # The file is garbage anyway; don't let a flush error mask the real exception.
            try:
                self.close()
            except Exception:
                log.debug("ignoring error while closing failed writer %s", self.path, exc_info=True)


def _video_packets(containers, out_stream):
    """Every segment's packets in order, moved so the first frame is at 0; a boundary dts that would not
    increase (an extreme VFR gap) is nudged instead of failing the end of a long render."""
    last_dts = offset = None
    for container in containers:
        for packet in container.demux(container.streams.video[0]):
            if packet.dts is None and packet.pts is None:
                continue  # demux's trailing flush packet
            if offset is None:
                offset = packet.pts  # a closed GOP's first packet is its IDR frame, the earliest shown
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            if last_dts is not None and packet.dts is not None and packet.dts <= last_dts:
                if packet.pts is None or last_dts + 1 > packet.pts:
                    raise ValueError(f"segment {container.name} overlaps the previous one in time")
                packet.dts = last_dts + 1
            if packet.dts is not None:
                last_dts = packet.dts
            packet.stream = out_stream
            yield packet


def _copied_audio(container, in_stream, out_stream, start_s: float, end_s: float):
    """Audio packets from `start_s` to `end_s`, kept as they are but moved `start_s` earlier.

    The first packet is the first that starts at or after `start_s` (encoder-priming packets before a
    source's 0 included among those dropped), so the audio begins less than one audio frame after the
    first video frame and, written without an edit list at 0, plays less than one frame early. The last
    is the last whose midpoint falls before `end_s`.
    """
    shift = round(Fraction(start_s).limit_denominator(1 << 30) / in_stream.time_base)
    for packet in container.demux(in_stream):
        if packet.pts is None:
            continue
        t0 = float(packet.pts * packet.time_base)
        t1 = t0 + float((packet.duration or 0) * packet.time_base)
        if (t0 + t1) / 2 >= end_s:
            break
        if t0 < start_s - 1e-9:
            continue
        packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = out_stream
        yield packet


def _reencoded_audio(container, in_stream, out_stream, start_s: float, end_s: float):
    """Decode, cut to [start_s, end_s) at sample precision, and encode to AAC."""
    sr = out_stream.codec_context.sample_rate
    resampler = av.AudioResampler(format="fltp", layout=out_stream.codec_context.layout, rate=sr)
    first = round(start_s * sr)
    last = round(end_s * sr)
    for frame in container.decode(in_stream):
        for rf in resampler.resample(frame):
            s0 = round(float(rf.pts * rf.time_base) * sr) if rf.pts is not None else first
            # Float PCM can hold NaN or ±inf (a broken WAV), which the AAC encoder refuses: silence and full scale.
            data = np.nan_to_num(rf.to_ndarray(), nan=0.0, posinf=1.0, neginf=-1.0)
            lo, hi = max(first - s0, 0), min(last - s0, data.shape[1])
            if hi <= lo:
                continue
            cut = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, lo:hi]), format="fltp",
                                             layout=out_stream.codec_context.layout)
            cut.sample_rate = sr
            cut.pts = s0 + lo - first  # the output starts at 0, like the video
            cut.time_base = Fraction(1, sr)
            yield from out_stream.encode(cut)
            if s0 + data.shape[1] >= last:
                yield from out_stream.encode(None)
                return
    yield from out_stream.encode(None)


def join_segments(segments: list[Path], out_path: Path, *, audio_source: Path | None, start_s: float,
                  end_s: float, faststart: bool = True) -> None:
    """Concatenate segment MP4s by stream copy and add `audio_source`'s audio cut to [start_s, end_s).

    Segments carry the source's timestamps; the output moves video and audio alike by the first frame's,
    so it starts at 0 (no empty lead-in after `video.start`) and stays in sync with the source.
    """
    if not segments:
        raise ValueError("join_segments needs at least one segment")
    inputs = [av.open(str(p), "r") for p in segments]
    audio_in = None
    try:
        template = inputs[0].streams.video[0]
        out = av.open(str(out_path), "w", format="mp4",
                      options=_mp4_options(faststart, Fraction(template.time_base), final=True))
        with out:
            out_v = out.add_stream_from_template(template)
            out_v.time_base = template.time_base
            if template.codec_context.codec_tag:
                out_v.codec_tag = template.codec_context.codec_tag
            streams = [_video_packets(inputs, out_v)]
            if audio_source is not None:
                audio_in = av.open(str(audio_source), "r")
                if audio_in.streams.audio:
                    streams.append(_audio_packets(audio_in, out, start_s, end_s))
                else:
                    log.warning("%s has no audio stream; output will be silent", Path(audio_source).name)
            for packet in heapq.merge(*streams, key=_packet_time):
                out.mux(packet)
    finally:
        for c in inputs:
            c.close()
        if audio_in is not None:
            audio_in.close()


def _audio_packets(container, out, start_s: float, end_s: float):
    in_a = container.streams.audio[0]
    # By the codec, not the decoder's name: FFmpeg decodes MP3 with "mp3float", which is still MP3.
    if in_a.codec_context.codec.canonical_name in _MP4_AUDIO:
        out_a = out.add_stream_from_template(in_a)
        return _copied_audio(container, in_a, out_a, start_s, end_s)
    ctx = in_a.codec_context
    out_a = out.add_stream("aac", rate=ctx.sample_rate)
    # By channel count, not ctx.layout: MKV/WAV often carry an unordered "1 channels" layout that
    # the AAC encoder refuses.
    out_a.layout = "mono" if ctx.layout.nb_channels == 1 else "stereo"
    out_a.bit_rate = 96_000 * out_a.layout.nb_channels
    log.info("re-encoding %s audio to AAC for MP4", ctx.name)
    return _reencoded_audio(container, in_a, out_a, start_s, end_s)


def _packet_time(packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base
