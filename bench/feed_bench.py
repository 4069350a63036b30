"""Section `feed`: everything around the dream, i.e. what a GPU can never be faster than.

The real `deepdream video` (`pipeline.render.runner.run_video`: decode → flow + reliability mask + scene-cut test →
temporal init, hold and steady scaling → encode + checkpoint segments → join) with the dream step replaced
by a fixed synthetic texture added to each frame's start image, so warp and encode see dream-like detail.
Two sizes: 1920×1080 flat (a pan through the committed 360° room) and 3840×1920 equirect (the room upscaled
and turning, so motion crosses the 0/360° seam; sphere mode, wrap on).

Each side runs in its own fresh process (this file as a script, PYTHONPATH set to that side's tree): this
tree, and as `*_before` the code path on main before the feed work (FEED_BASE, or `--base COMMIT`), checked
out beside the tree as the `base` section does. `cpu_s_per_frame` is the process's user + system CPU time
(all threads; the render starts no processes) over the render, per frame.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# main's head before issue 17's work: the `*_before` figures. `--base` overrides it.
FEED_BASE = "2bd18d0539babc7cb1fabfc56b40362587fa9589"
# projection, frames, --quick frames: enough for the threads to reach their steady rate (the first frames fill
# the queues and the flow threads' lookahead)
SIZES = {"1920x1080": ("flat", 30, 10), "3840x1920": ("equirect", 12, 6)}
TEXTURE_AMPLITUDE = 24.0
# This tree's side runs as beside a GPU dream (the section's premise): flow on every core of this machine.
NOW = (f"temporal.flow_threads={max(1, os.cpu_count() or 1)}",)


class SyntheticDream:
    """Stands in for `DreamEngine` in the child process: `dream` adds one fixed texture to the start image."""

    def __init__(self, cfg) -> None:
        import numpy as np
        try:  # this tree's layout, or the flat one of commits before the sub-packages
            from stages.dream import ascent as D
        except ImportError:
            from stages import dream as D

        d = cfg.dream
        self.schedule = D.Schedule(octaves=d.octaves, octave_scale=d.octave_scale, iterations=d.iterations,
                                   step_size=d.step_size, jitter=d.jitter, tile=d.tile)
        self._np = np
        self._tex: dict[tuple, object] = {}

    def _texture(self, shape):
        np = self._np
        if shape not in self._tex:
            rng = np.random.default_rng(0)
            self._tex[shape] = (rng.standard_normal(shape).astype(np.float32) * np.float32(TEXTURE_AMPLITUDE))
        return self._tex[shape]

    def dream(self, rgb, *, frame_index=0, schedule=None, hold=None, weights=None, on_step=None):
        np = self._np
        x = rgb.astype(np.float32)
        return np.clip(x + self._texture(x.shape), 0.0, 255.0)

    # The frame step of trees with the temporal maths on the device hands over tensors (N×3×H×W, 0..255).
    device = "cpu"

    def dream_tensor(self, x, *, frame_index=0, schedule=None, hold=None, weights=None, on_step=None):
        import torch

        key = ("t",) + tuple(x.shape)
        if key not in self._tex:
            tex = self._texture((x.shape[2], x.shape[3], x.shape[1]))
            self._tex[key] = torch.from_numpy(tex).permute(2, 0, 1)[None]
        return (x + self._tex[key]).clamp_(0.0, 255.0)


def _child(src: str, dst: str, frames: int, projection: str, out_json: str, extra: list[str]) -> None:
    try:
        import pipeline.render.runner as R
    except ImportError:
        import pipeline.runner as R
    from pipeline.config import load_config

    R.DreamEngine = SyntheticDream  # the one part left out: the dream itself
    cfg = load_config("default", [f"video.max_frames={frames}", f"projection={projection}", *extra])
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    stats = R.run_video(Path(src), Path(dst), cfg, restart=True)
    wall, ru1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = max(1, stats.frames)
    st = stats.stages
    threads = {"decode": getattr(st, "decode_cpu", None), "flow": getattr(st, "flow_cpu", None),
               "temporal": getattr(stats, "dream_cpu", None), "encode": getattr(st, "encode_cpu", None)}
    split = None
    if None not in threads.values():  # trees before the CPU split report wall time only
        split = {k: v / n for k, v in threads.items()}
        # x264's and libavcodec's worker threads, torch's intra-op pool, start-up and the join
        split["other threads"] = max(0.0, cpu - sum(threads.values())) / n
    Path(out_json).write_text(json.dumps({
        "frames": stats.frames, "wall_s": wall, "fps": stats.frames / wall, "cpu_s_per_frame": cpu / n,
        "stages_s_per_frame": {"decode": st.decode_s / n, "flow": st.flow_s / n,
                               "temporal": stats.dream_s / n, "encode": st.encode_s / n,
                               "finalize": stats.finalize_s / n},
        "cpu_s_per_frame_by_thread": split,
        "wait_input_s_per_frame": stats.wait_input_s / n}))


def _make_clips(tmp: Path, frames: int) -> dict[str, Path]:
    """1920×1080: the room seen through a panning virtual camera; 3840×1920: the room itself, upscaled, turning
    by 24 px a frame (the seam moves through the picture)."""
    import av
    import cv2
    import numpy as np

    from bench.footage import ROOM, make_room_pan

    flat = make_room_pan(tmp / "room_1080.mp4", width=1920, height=1080, frames=frames)
    eq = tmp / "room_3840x1920.mp4"
    with av.open(str(ROOM)) as inp, av.open(str(eq), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 3840, 1920, "yuv420p"
        vs.options = {"crf": "18", "preset": "veryfast"}
        for i, f in enumerate(inp.decode(video=0)):
            if i >= frames:
                break
            big = cv2.resize(f.to_ndarray(format="rgb24"), (3840, 1920), interpolation=cv2.INTER_CUBIC)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(big, 24 * i, axis=1)), format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
    return {"1920x1080": flat, "3840x1920": eq}


def _worktree(repo: Path, commit: str, into: Path) -> Path:
    path = into / "base"
    r = subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-f", str(path), commit],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cannot check out {commit}: {r.stderr.strip()}")
    return path


def _side(tree: Path, src: Path, dst: Path, frames: int, projection: str, extra: tuple[str, ...] = ()) -> dict:
    out = dst.with_suffix(".json")
    # As `deepdream` itself runs (pipeline.cli.main): OpenMP's spin-waiting would burn the cores the threads share.
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    r = subprocess.run([sys.executable, __file__, "--child", str(src), str(dst), str(frames), projection, str(out),
                        *extra],
                       cwd=tree, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{tree.name}: feed render failed: {r.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.read_text())


def run(ctx) -> dict:
    import shutil
    import tempfile

    from bench.common import REPO, banner, table

    banner("feed: decode → flow + mask → warp → encode + checkpoint, the dream replaced by a fixed texture")
    commit = getattr(ctx.args, "base", None) or FEED_BASE
    res: dict = {"base": commit, "sizes": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_feed_") as td:
        tmp = Path(td)
        most = max(v[2 if ctx.quick else 1] for v in SIZES.values())
        clips = _make_clips(tmp, most)
        base = _worktree(REPO, commit, tmp)
        try:
            for size, (projection, frames, quick_frames) in SIZES.items():
                n = quick_frames if ctx.quick else frames
                # before, then after: the same machine state for both within a size
                before = _side(base, clips[size], tmp / f"before_{size}.mp4", n, projection)
                after = _side(REPO, clips[size], tmp / f"after_{size}.mp4", n, projection, NOW)
                entry = dict(after) | {f"{k}_before": v for k, v in before.items()}
                entry["speedup"] = after["fps"] / before["fps"]
                res["sizes"][size] = entry
                for side, m in (("before", before), ("now", after)):
                    s = m["stages_s_per_frame"]
                    rows.append([size, projection, side, str(m["frames"]), f"{m['fps']:.2f}",
                                 f"{m['cpu_s_per_frame']:.2f}"] + [f"{s[k]:.3f}" for k in
                                                                   ("decode", "flow", "temporal", "encode")])
                print(f"  [{ctx.budget.elapsed():6.1f} s] {size}: {before['fps']:.2f} → {after['fps']:.2f} fps",
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(table(["size", "projection", "code", "frames", "fps", "cpu s/frame", "decode s", "flow s", "temporal s",
                 "encode s"], rows, right=[False, False, False] + [True] * 7))
    print(f"  before = {commit[:10]} (main before the feed work); stage columns: busy seconds per frame of each "
          "thread (decode and flow share one, so do temporal maths and the synthetic dream)")
    return res


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7:])
