"""Tiny synthetic media for tests: clips with known motion, audio-only files, broken files.

Everything is made with PyAV so tests run offline and fast. Clips are deliberately small (160×96,
a second or less) so a test file can write dozens of them in a few seconds.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

AUDIO_RATE = 48000


def scene_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """The H×W×3 uint8 scene that `make_clip` moves: smooth colour noise plus a few hard-edged shapes.

    Smooth noise gives optical flow gradients everywhere; the shapes give sharp edges and corners
    so misaligned warps are visible, not averaged away.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(max(2, h // 12), max(2, w // 12), 3)).astype(np.float32)
    tex = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=2.0)
    for _ in range(4):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(max(3, min(h, w) // 10), max(4, min(h, w) // 4)))
        if rng.random() < 0.5:
            cv2.circle(tex, (cx, cy), size, colour, thickness=-1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(tex, (cx - size, cy - size // 2), (cx + size, cy + size // 2), colour, -1)
    return np.clip(tex, 0, 255).astype(np.uint8)


def blurred_texture(h: int, w: int, seed: int = 0, sigma: float = 3.0, periodic: bool = False,
                    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Smooth random RGB texture (blurred noise); `periodic` makes it seamless horizontally (a 360° row),
    `tint` scales the channels (for colour-histogram tests)."""
    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    if periodic:
        pad = int(4 * sigma) + 1
        noise = np.pad(noise, ((0, 0), (pad, pad), (0, 0)), mode="wrap")
        tex = cv2.GaussianBlur(noise, (0, 0), sigma)[:, pad:-pad]
    else:
        tex = cv2.GaussianBlur(noise, (0, 0), sigma)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    return np.clip(tex * 255 * np.float32(tint), 0, 255).astype(np.uint8)


def scene_frame(tex: np.ndarray, i: int, motion: tuple[float, float]) -> np.ndarray:
    """Frame `i` of the clip: the texture translated by i·motion pixels (x, y), reflected at borders.

    So frame_i(x, y) = tex(x - i·mx, y - i·my): content moves by +motion per frame.
    """
    if i == 0 or motion == (0.0, 0.0):
        return tex.copy()
    m = np.float32([[1, 0, motion[0] * i], [0, 1, motion[1] * i]])
    h, w = tex.shape[:2]
    return cv2.warpAffine(tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _vfr_pts(frames: int, rate: Fraction, seed: int) -> tuple[list[int], Fraction]:
    # A 1/90000 clock (the MPEG one) with durations jittered ±40 % around the nominal frame time.
    tb = Fraction(1, 90000)
    nominal = 90000 / float(rate)
    rng = np.random.default_rng(seed + 1)
    pts, t = [], 0
    for _ in range(frames):
        pts.append(t)
        t += max(1, int(round(nominal * rng.uniform(0.6, 1.4))))
    return pts, tb


def _add_tone(container: av.container.OutputContainer, seconds: float, freq: float = 440.0):
    stream = container.add_stream("aac", rate=AUDIO_RATE)
    stream.layout = "mono"
    total = int(round(seconds * AUDIO_RATE))
    t = np.arange(total, dtype=np.float64) / AUDIO_RATE
    pcm = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return stream, pcm


def _mux_tone(container, stream, pcm: np.ndarray) -> None:
    chunk = 1024
    for start in range(0, len(pcm), chunk):
        frame = av.AudioFrame.from_ndarray(pcm[None, start:start + chunk], format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def make_clip(path, *, width: int = 160, height: int = 96, frames: int = 24, rate: Fraction = Fraction(30, 1),
              motion: tuple[float, float] = (2.0, 1.0), audio: bool = True, codec: str = "libx264",
              pix_fmt: str = "yuv420p", rotation: int = 0, vfr: bool = False, seed: int = 0,
              faststart: bool = True, speed: str = "ultrafast") -> Path:
    """Write an MP4 whose frame i is `scene_frame(scene_texture(height, width, seed), i, motion)`.

    `speed` is x264's preset: `ultrafast` has no B-frames, `medium` has them, as phones' and web exports do.
    `rotation` is stored as a display matrix (CCW degrees), the frames themselves stay unrotated.
    `faststart` puts moov first, as phones and web exports do; `truncate` relies on that to leave
    a file that still opens.
    """
    path = Path(path)
    rate = Fraction(rate)
    if vfr:
        pts_list, tb = _vfr_pts(frames, rate, seed)
    else:
        tb = 1 / rate
        pts_list = list(range(frames))
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.time_base = tb
        vs.time_base = tb
        vs.options = {"crf": "18", "preset": speed}
        if rotation:
            vs.set_display_rotation(rotation)
        astream = pcm = None
        if audio:
            end = Fraction(pts_list[-1]) * tb + (tb if vfr else 0) + (0 if vfr else 1 / rate)
            astream, pcm = _add_tone(out, float(end))
        tex = scene_texture(height, width, seed)
        for i, pts in enumerate(pts_list):
            frame = av.VideoFrame.from_ndarray(scene_frame(tex, i, motion), format="rgb24")
            frame.pts = pts
            frame.time_base = tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if astream is not None:
            _mux_tone(out, astream, pcm)
    return path


def make_audio_only(path, seconds: float = 0.5) -> Path:
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        stream, pcm = _add_tone(out, seconds)
        _mux_tone(out, stream, pcm)
    return path


def make_text_file(path) -> Path:
    path = Path(path)
    path.write_text("this is not a video\n" * 20)
    return path


def truncate(path, keep_fraction: float) -> Path:
    """Cut the file to the first `keep_fraction` of its bytes, as an interrupted download would."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


# ------------------------------------------------------------------------------------- music for react

def kick_times(seconds: float, bpm: float = 120.0, offset: float = 0.2) -> np.ndarray:
    """Onset times (s) of a kick on every beat: offset, offset + 60/bpm, ... before `seconds`."""
    return np.arange(offset, seconds - 1e-9, 60.0 / bpm)


def kick_track(seconds: float, bpm: float = 120.0, *, rate: int = AUDIO_RATE, offset: float = 0.2,
               level: float = 0.8, bed: float = 0.02, seed: int = 0) -> np.ndarray:
    """Mono float32 PCM: a kick drum on every beat over a quiet noise bed (so between-beat audio is not
    digital silence). Each kick is a sine swept 150 → 50 Hz with a 60 ms decay, like an 808 kick."""
    n = int(round(seconds * rate))
    pcm = np.random.default_rng(seed).normal(0.0, bed, n) if bed else np.zeros(n)
    t = np.arange(int(0.3 * rate)) / rate
    freq = 50.0 + 100.0 * np.exp(-t / 0.03)
    kick = level * np.exp(-t / 0.06) * np.sin(2 * np.pi * np.cumsum(freq) / rate)
    for at in kick_times(seconds, bpm, offset):
        i = int(round(at * rate))
        m = min(len(kick), n - i)
        pcm[i:i + m] += kick[:m]
    return np.clip(pcm, -1.0, 1.0).astype(np.float32)


def make_audio_file(path, pcm: np.ndarray, *, rate: int = AUDIO_RATE, start: float = 0.0) -> Path:
    """Write mono float PCM as audio only: `.wav` as 16-bit PCM, anything else as AAC in MP4/M4A.
    `start` (seconds) delays the first sample's timestamp, as an edit list does (WAV has no timestamps)."""
    path = Path(path)
    wav = path.suffix.lower() == ".wav"
    with av.open(str(path), "w", format="wav" if wav else "mp4") as out:
        stream = out.add_stream("pcm_s16le" if wav else "aac", rate=rate)
        stream.layout = "mono"
        chunk, first = 1024, int(round(start * rate))
        for start_sample in range(0, len(pcm), chunk):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[None, start_sample:start_sample + chunk],
                                                                    np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = first + start_sample
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_kick_clip(path, *, seconds: float = 4.0, bpm: float = 120.0, offset: float = 0.2,
                   rate: Fraction = Fraction(30, 1), width: int = 160, height: int = 96,
                   motion: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> Path:
    """An MP4 (H.264 + AAC) of `make_clip`'s scene with `kick_track` as its soundtrack.

    For the end-to-end reactive test: with the default 30 fps and 120 BPM, kicks land exactly on frames
    offset·30 + 15k (`kick_times`), so beat frames and between-beat frames are known. The scene is still
    by default, so the dream's strength changes only with the parameters.
    """
    path = Path(path)
    rate = Fraction(rate)
    frames = int(round(seconds * rate))
    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.time_base = vs.time_base = 1 / rate
        vs.options = {"crf": "18", "preset": "ultrafast"}
        astream = out.add_stream("aac", rate=AUDIO_RATE)
        astream.layout = "mono"
        tex = scene_texture(height, width, seed)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(scene_frame(tex, i, motion), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        _mux_tone(out, astream, kick_track(float(frames / rate), bpm, offset=offset, seed=seed))
    return path


def write_clip(path: Path, frames: list[np.ndarray], rate: int = 30, crf: int = 12) -> Path:
    """`frames` (RGB uint8) as an H.264 clip, pts 0, 1, 2 …; crf 0: lossless 4:4:4 (odd sizes allowed)."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt, vs.options = ("yuv444p", {"qp": "0"}) if crf == 0 else ("yuv420p", {"crf": str(crf)})
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
    return path


def whip_pan_frames(h: int = 144, w: int = 256, *, frames: int = 48, whip: tuple[int, int] = (14, 26),
                    peak: float = 0.35, cut: int | None = 36, seed: int = 0) -> list[np.ndarray]:
    """A shot that pans slowly, whips fast (`whip` frames, up to `peak` frame widths per frame, with the
    motion blur a shutter open for the whole frame gives), slows down again, then a hard cut (frame `cut`)
    to another scene that pans slowly: one continuous shot around an unreliable-flow stretch, and one
    real cut."""
    speed = np.full(frames, 1.5, np.float32)
    a, b = whip
    t = np.linspace(0, np.pi, b - a)
    speed[a:b] = 1.5 + (peak * w - 1.5) * np.sin(t) ** 2
    wide = scene_texture(h, int(w + speed.sum() + 8), seed)
    other = scene_texture(h, w + 2 * frames, seed + 101)
    out, x = [], 0.0
    for i in range(frames):
        if cut is not None and i >= cut:
            out.append(np.ascontiguousarray(other[:, 2 * (i - cut):2 * (i - cut) + w]))
            continue
        subs = [x + speed[i] * k / 8 for k in range(8)]  # shutter open over the frame's motion
        acc = np.zeros((h, w, 3), np.float32)
        for s in subs:
            m = np.float32([[1, 0, -s], [0, 1, 0]])
            acc += cv2.warpAffine(wide, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        out.append(np.clip(acc / len(subs) + 0.5, 0, 255).astype(np.uint8))
        x += float(speed[i])
    return out


# Display P3: its primaries and D65 white (xy). Pillow's ImageCms builds only sRGB, LAB and XYZ profiles.
P3_PRIMARIES = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
D65 = (0.3127, 0.3290)


def matrix_icc(primaries=P3_PRIMARIES, white=D65, gamma: float = 2.2) -> bytes:
    """An ICC v2 RGB display profile (matrix + gamma curves), as a camera or phone embeds one: a real profile that
    LittleCMS reads, for colours that are not sRGB's. Colorants are Bradford-adapted to the D50 PCS."""
    import struct

    def xyz(x, y):
        return np.array([x / y, 1.0, (1 - x - y) / y])

    prim = np.stack([xyz(*p) for p in primaries], axis=1)
    m = prim * np.linalg.solve(prim, xyz(*white))  # RGB -> XYZ under the profile's white
    brad = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
    d50 = np.array([0.9642, 1.0, 0.8249])
    adapt = np.linalg.inv(brad) @ np.diag((brad @ d50) / (brad @ xyz(*white))) @ brad
    m = adapt @ m

    def s15(v):
        return struct.pack(">3i", *(round(c * 65536) for c in v))

    ascii_desc = b"test wide-gamut RGB\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(ascii_desc)) + ascii_desc + b"\0" * 79),
        (b"cprt", b"text\0\0\0\0public domain\0"),
        (b"wtpt", b"XYZ \0\0\0\0" + s15(d50)),
        (b"rXYZ", b"XYZ \0\0\0\0" + s15(m[:, 0])),
        (b"gXYZ", b"XYZ \0\0\0\0" + s15(m[:, 1])),
        (b"bXYZ", b"XYZ \0\0\0\0" + s15(m[:, 2])),
    ]
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table, data = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = struct.pack(">II", size, 0) + b"\x02\x10\0\0" + b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 \
        + struct.pack(">I", 0) + s15(d50) + b"\0" * 48
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data
