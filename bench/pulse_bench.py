"""Key-frame pulse: the worst frame pair's warp error ÷ the median, the dream's part and the encoder's.

Each clip is rendered twice (`deepdream video`, default preset), and the frames it hands its encoder are kept:
once with `encode.keyframe_ease=0`, the dream itself (losslessly encoded: the dream's own curve), and once as the
render shows them. Those frames are then encoded as a render encodes them (one file per
segment of whole GOPs, joined by stream copy) with
* `flat`: CRF 18, 1 s GOPs, no rate control (the 0.1 encoder);
* `ramp10`: the previous rate control: CRF 18 + 4 and a 10-frame bitrate ramp (×1.1 … ×4.8) before each key
  frame, 1 s GOPs;
* `now, no ease`: what `encode_plan` gives the default config today (pipeline/render/presets.py), on the dream;
* `now`: the same on the frames the render shows, eased around key frames (presets.keyframe_keep),
and measured with `stages.measure.metrics.warp_error_series` against the source: worst pair ÷ median,
where the worst pairs fall, and the file size. Clips: the demo (`sample_media/pan_cat.mp4`, 90 frames at
320×180) and, without --quick, a street-clip stand-in (`bench.footage.make_cut_pan`: a pan along real
photographs with a whip over frames 84–104, a hard cut at 140, 250 frames at 256×144).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from bench.common import REPO, banner, table

DEMO = REPO / "sample_media" / "pan_cat.mp4"
RAMP10 = (1.1, 1.2, 1.35, 1.5, 1.7, 2.0, 2.4, 3.0, 3.8, 4.8)


def _decode(path: Path) -> tuple[list[tuple[int, np.ndarray]], Fraction, Fraction]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(s)], Fraction(s.time_base), \
            Fraction(s.average_rate)


def encode_as_render(frames, time_base: Fraction, rate: Fraction, enc, out: Path) -> Path:
    """`frames` ((pts, rgb) pairs) in segments of one GOP each, joined without re-encoding, as a render does."""
    from stages.media.encode import VideoWriter, join_segments

    h, w = frames[0][1].shape[:2]
    segs = []
    for k in range(0, len(frames), enc.gop):
        segs.append(out.with_name(f"{out.stem}.{k:06d}.mp4"))
        with VideoWriter(segs[-1], width=w, height=h, time_base=time_base, rate=rate, encoding=enc,
                         faststart=False, frames=enc.gop) as wr:
            for pts, rgb in frames[k:k + enc.gop]:
                wr.write(rgb, pts)
    join_segments(segs, out, audio_source=None, start_s=0.0, end_s=1e9)
    for s in segs:
        s.unlink()
    return out


@contextlib.contextmanager
def _captured():
    """The RGB frames a render hands its encoder, as (pts, rgb): the encodings below start from exactly those, as
    a render's does (decoding the lossless yuv420p file instead is one RGB/YUV round trip away, which moves the
    ratios by about ±0.05)."""
    from stages.media.encode import VideoWriter

    frames: list[tuple[int, np.ndarray]] = []
    write = VideoWriter.write

    def capture(self, rgb, pts):
        frames.append((pts, rgb.copy()))
        return write(self, rgb, pts)

    VideoWriter.write = capture
    try:
        yield frames
    finally:
        VideoWriter.write = write


def pulse(source: list[np.ndarray], path: Path) -> dict:
    from pipeline.review.measure import pulse as summary
    from stages.measure.metrics import warp_error_series

    got, _, _ = _decode(path)
    per = warp_error_series(source, [f for _, f in got])["per_frame"]["warp_error"]
    p = summary(per, [])  # `deepdream metrics`' own reading
    return {"ratio": p["worst_over_median"], "median": float(np.median([v for v in per if v is not None])),
            "kib": path.stat().st_size / 1024,
            "worst": [f"{a}-{b} ({w['over_median']:.2f})" for w in p["worst_pairs"] for a, b in [w["frames"]]]}


def _render_frames(src: Path, dst: Path, sets: list[str]) -> list[tuple[int, np.ndarray]]:
    """The frames a default render (plus `sets`) hands its encoder, in order."""
    from pipeline.config import load_config
    from pipeline.render.runner import run_video

    with _captured() as frames:
        run_video(src, dst, load_config("default", sets))
    return sorted(frames, key=lambda f: f[0])


def measure_clip(name: str, src: Path, tmp: Path) -> list[dict]:
    from pipeline.config import load_config
    from pipeline.render.presets import encode_plan
    from stages.media.encode import Encoding

    t = time.perf_counter()
    dream = _render_frames(src, tmp / f"{name}_dream.mp4", ["encode.keyframe_ease=0"])
    dream_s = time.perf_counter() - t
    shown = _render_frames(src, tmp / f"{name}_render.mp4", [])  # eased around key frames (keyframe_keep)
    _, tb, rate = _decode(tmp / f"{name}_render.mp4")
    source = [f for _, f in _decode(src)[0]][:len(dream)]
    second = max(1, round(rate))
    now = encode_plan(load_config("default"), rate, "mono").encoding
    lossless = encode_as_render(dream, tb, rate, Encoding(crf=0, gop=now.gop), tmp / f"{name}_lossless.mp4")
    rows = [{"clip": name, "encode": "lossless", "gop": "-", **pulse(source, lossless), "dream_s": dream_s}]
    runs = {"flat": (dream, Encoding(crf=18, profile="high", gop=second)),
            "ramp10": (dream, Encoding(crf=22, profile="high", gop=second, keyframe_ramp=RAMP10)),
            "now, no ease": (dream, now), "now": (shown, now)}
    for label, (frames, enc) in runs.items():
        out = encode_as_render(frames, tb, rate, replace(enc, speed="medium"), tmp / f"{name}_{label[:3]}.mp4")
        rows.append({"clip": name, "encode": label, "gop": enc.gop, **pulse(source, out)})
    return rows


def run(ctx) -> dict:
    """`python -m bench --only pulse`: the demo (about 1 min on 2 CPU cores) and, without --quick and with the
    budget for it, the 250-frame street stand-in (about 2 min)."""
    from bench.footage import make_cut_pan

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        rows += measure_clip("demo", DEMO, tmp)
        per_frame_s = (time.perf_counter() - t) / 90
        if not ctx.quick and per_frame_s * 250 * 1.2 < ctx.budget.left():
            rows += measure_clip("street", make_cut_pan(tmp / "street.mp4"), tmp)
    banner("key-frame pulse: worst pair's warp error / median, one lossless dream encoded as a render does")
    print(table(["clip", "encode", "GOP", "worst/median", "median", "worst pairs", "KiB"],
                [[r["clip"], r["encode"], str(r["gop"]), f"{r['ratio']:.2f}", f"{r['median']:.1f}",
                  ", ".join(r["worst"]), f"{r['kib']:.0f}"] for r in rows],
                right=[False, False, True, True, True, False, True]))
    return {"rows": rows}
