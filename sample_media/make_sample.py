"""Render sample_media/pan_cat.mp4: a real photo under a smooth camera move, with a short soundtrack.

The photo is `chelsea.png`, a committed copy of scikit-image's `skimage.data.chelsea()` (CC0), written
once with:

    cv2.imwrite("sample_media/chelsea.png", cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))

so re-running this script needs only numpy, opencv and PyAV:

    python sample_media/make_sample.py

The move is sub-pixel (pan plus a slight zoom through cv2.warpAffine), which is what real handheld or
gimbal footage gives an optical-flow stage, and the frame rate is NTSC 30000/1001 so timestamp code
is exercised on the awkward rate rather than a round one.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
W, H = 320, 180
RATE = Fraction(30000, 1001)
SECONDS = 3.0
AUDIO_RATE = 44100


def camera(t: float) -> tuple[float, float, float]:
    """Centre (x, y) in photo pixels and zoom at normalised time t in [0, 1], eased at both ends."""
    s = 0.5 - 0.5 * np.cos(np.pi * t)
    return 150.0 + 160.0 * s, 140.0 + 18.0 * s, 1.45 + 0.25 * s


def render(photo: np.ndarray, t: float) -> np.ndarray:
    cx, cy, zoom = camera(t)
    # Output pixel (u, v) samples photo at centre + (u - W/2, v - H/2) / zoom.
    m = np.float32([[1 / zoom, 0, cx - W / 2 / zoom], [0, 1 / zoom, cy - H / 2 / zoom]])
    return cv2.warpAffine(photo, m, (W, H), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def soundtrack(seconds: float) -> np.ndarray:
    """Four soft sine chords (C, Am, F, G) with short fades, stereo float32 in [-1, 1]."""
    chords = [(261.63, 329.63, 392.00), (220.00, 261.63, 329.63), (174.61, 220.00, 261.63),
              (196.00, 246.94, 293.66)]
    n = int(round(seconds * AUDIO_RATE))
    out = np.zeros(n, np.float32)
    seg = n // len(chords)
    fade = int(0.03 * AUDIO_RATE)
    for k, chord in enumerate(chords):
        a, b = k * seg, n if k == len(chords) - 1 else (k + 1) * seg
        t = np.arange(b - a) / AUDIO_RATE
        tone = sum(np.sin(2 * np.pi * f * t) for f in chord) / len(chord)
        env = np.minimum(1.0, np.minimum(np.arange(b - a), np.arange(b - a)[::-1]) / fade)
        out[a:b] = 0.25 * tone * env * np.exp(-0.6 * t)
    return np.stack([out, out * 0.9]).astype(np.float32)


def main(out_path: Path = HERE / "pan_cat.mp4") -> Path:
    photo = cv2.cvtColor(cv2.imread(str(HERE / "chelsea.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    n_frames = int(round(SECONDS * RATE))
    with av.open(str(out_path), "w", format="mp4", options={"movflags": "faststart"}) as out:
        vs = out.add_stream("libx264", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.options = {"crf": "23", "preset": "slow", "profile": "high"}
        audio = out.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        audio.bit_rate = 96_000
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(render(photo, i / (n_frames - 1)), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        pcm = soundtrack(float(n_frames / RATE))
        for s in range(0, pcm.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, s:s + 1024]), format="fltp",
                                            layout="stereo")
            af.sample_rate, af.pts = AUDIO_RATE, s
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))
    return out_path


if __name__ == "__main__":
    p = main()
    print(f"wrote {p} ({p.stat().st_size / 1024:.0f} KiB)")
