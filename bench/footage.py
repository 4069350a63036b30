"""Real footage with camera motion for the temporal benchmarks, made from the committed 360° clip.

`sample_media/testRoom1_1920Mono.mp4` (Google, CC-BY 4.0) is a real room with moving people, shot from a
fixed point. A virtual camera looking out of it with py360convert's e2p (a perspective view, as a
headset shows one) that pans, tilts and zooms gives a flat clip with real camera motion: parallax-free,
but with real texture, real moving objects and occlusions, and as long as the source (360 frames).
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from bench.common import REPO

ROOM = REPO / "sample_media" / "testRoom1_1920Mono.mp4"


def _write(dst: Path, views, *, width: int, height: int, rate) -> Path:
    """Encode RGB views (H×W×3) as an H.264 MP4 at CRF 16, frame n at pts n: the source clips of the benches."""
    import av
    import numpy as np

    with av.open(str(dst), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"crf": "16", "preset": "veryfast"}
        for n, view in enumerate(views):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(view), format="rgb24")
            vf.pts = n
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
    return dst


def camera(i: int, n: int) -> tuple[float, float, float]:
    """(yaw, pitch, fov) in degrees for frame i of n: a slow pan with a tilt and a zoom breathing on top."""
    t = i / max(1, n - 1)
    return (-60 + 150 * t + 8 * math.sin(6 * math.pi * t), 6 * math.sin(2 * math.pi * t),
            75 + 10 * math.sin(3 * math.pi * t))


def make_room_pan(dst: Path, *, width: int = 256, height: int = 144, frames: int = 240) -> Path:
    import av
    import numpy as np
    import py360convert

    with av.open(str(ROOM)) as inp:
        vin = inp.streams.video[0]

        def views():
            for n, f in zip(range(frames), inp.decode(vin)):
                yaw, pitch, fov = camera(n, frames)
                view = py360convert.e2p(f.to_ndarray(format="rgb24"), (fov, fov * height / width), yaw, pitch,
                                        (height, width))
                yield np.clip(view, 0, 255).astype(np.uint8)

        return _write(dst, views(), width=width, height=height, rate=Fraction(vin.average_rate or 30))


def make_photo_pan(dst: Path, *, width: int = 256, height: int = 144, frames: int = 240,
                   rate: Fraction = Fraction(30)) -> Path:
    """A camera that pans, zooms and rolls over a real photograph (scikit-image's astronaut, public domain,
    a dev dependency): real texture, smooth camera motion, one long shot."""
    import cv2
    import skimage.data

    photo = skimage.data.astronaut()
    ph, pw = photo.shape[:2]

    def views():
        for i in range(frames):
            t = i / max(1, frames - 1)
            zoom = 1.6 + 0.5 * math.sin(2 * math.pi * t)  # photo pixels per output pixel, inverted below
            cx = pw * (0.3 + 0.4 * t)
            cy = ph * (0.45 + 0.15 * math.sin(3 * math.pi * t))
            angle = 10 * math.sin(2 * math.pi * t)
            m = cv2.getRotationMatrix2D((cx, cy), angle, zoom / 2.2)
            m[:, 2] += (width / 2 - cx, height / 2 - cy)
            yield cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    return _write(dst, views(), width=width, height=height, rate=rate)


def photo_strip(height: int = 288):
    """Real photographs side by side at one height (scikit-image's rocket, motorcycle, coffee and astronaut:
    outdoor, street, still life, portrait), a long scene for a pan to cross."""
    import cv2
    import numpy as np
    import skimage.data

    photos = [skimage.data.rocket(), skimage.data.stereo_motorcycle()[0], skimage.data.coffee(),
              skimage.data.astronaut()]
    return np.concatenate([cv2.resize(p[..., :3], (round(p.shape[1] * height / p.shape[0]), height),
                                      interpolation=cv2.INTER_AREA) for p in photos], axis=1)


def strip_x(i: int, whip: tuple[int, int], speed: float = 1.25, fast: float = 12.0) -> float:
    """Left edge (strip pixels) of `make_cut_pan`'s first shot at frame i: a steady pan that whips to
    `fast` px/frame over frames `whip` (eased in and out), then steadies again."""
    x, (a, b) = 0.0, whip
    for k in range(1, i + 1):
        s = 0.0 if k < a or k >= b else math.sin(math.pi * (k - a) / (b - a)) ** 2
        x += speed + (fast - speed) * s
    return x


def make_cut_pan(dst: Path, *, width: int = 256, height: int = 144, frames: int = 250, cut_at: int = 140,
                 whip: tuple[int, int] = (84, 104)) -> Path:
    """A street-clip stand-in: a pan along real photographs (`photo_strip`) with a fast-motion stretch over
    frames `whip`, then a hard cut at `cut_at` to a slow pan, zoom and roll over another real photograph
    (scikit-image's chelsea). Two shots, camera motion throughout, as a phone clip with an edit has."""
    import cv2
    import numpy as np
    import skimage.data

    strip = photo_strip(height)
    photo = skimage.data.chelsea()
    ph, pw = photo.shape[:2]

    def views():
        for n in range(frames):
            if n < cut_at:
                m = np.float32([[1, 0, -strip_x(n, whip)], [0, 1, 0]])
                yield cv2.warpAffine(strip, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
                continue
            t = (n - cut_at) / max(1, frames - cut_at - 1)
            cx, cy = pw * (0.35 + 0.3 * t), ph * (0.45 + 0.1 * math.sin(2 * math.pi * t))
            m = cv2.getRotationMatrix2D((cx, cy), 6 * math.sin(math.pi * t), 0.9 + 0.3 * t)
            m[:, 2] += (width / 2 - cx, height / 2 - cy)
            yield cv2.warpAffine(photo, m, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)

    return _write(dst, views(), width=width, height=height, rate=30)
