"""What `deepdream animate` decides before its first frame, all of it checked before a model loads or a file
is written: the starting picture and its layout, the clip's frames and clock, the soundtrack, the per-frame
parameter table (timeline, react, the camera's `motion.*` keys among them), the camera step of every frame,
and the encoder. The frame step, the checkpoint and the encoder see an ordinary `VideoPlan`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from fractions import Fraction
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import Config, MotionCfg
from pipeline.errors import ConfigError, InputError
from pipeline.music.table import animation_table
from pipeline.music.timeline import MOTION_PREFIX, animated_keys, motion_row
from pipeline.render.engine import resolve_layers
from pipeline.render.layout import resolve_layout
from pipeline.render.plan import HEVC_MIN_SIDE, DreamPlan, VideoPlan, segment_frames
from pipeline.render.presets import encode_plan, fit_max_side
from stages.media.audio import audio_duration
from stages.media.decode import VideoReader, fit_size
from stages.media.encode import encoder_available
from stages.media.still import FORMATS, read_still, to_srgb
from stages.temporal.motion import MIN_COVER, FlatStep, coverage, flat_step
from stages.vr.orbit import MAX_FRAME_ZOOM, SphereStep, sphere_step

log = logging.getLogger(__name__)

DEFAULT_SECONDS = 10.0  # animate.seconds null and no soundtrack
LAST_FRAME_LOOKBACK_S = 2.0  # a video INPUT's last frame: decode only its last seconds
FLAT_ONLY = {"rotate": "turn a 360° picture with motion.roll", "translate_x": "pan a 360° picture with motion.yaw",
             "translate_y": "tilt a 360° picture with motion.pitch",
             "center_x": "a 360° zoom goes toward the front; turn the sphere (motion.yaw/pitch) to choose it",
             "center_y": "a 360° zoom goes toward the front; turn the sphere (motion.yaw/pitch) to choose it"}
SPHERE_ONLY = ("yaw", "pitch", "roll")

Step = FlatStep | SphereStep


@dataclass(frozen=True)
class AnimationPlan:
    video: VideoPlan  # sizes, clock (time base 1/fps, pts = frame index), segments, layout, dream plan, table
    start: np.ndarray  # H×W×3 uint8 at dream size: frame 0's source
    frames: int
    soundtrack: Path | None  # muxed into the output (animate.audio)
    resample: str
    motion: MotionCfg  # the camera's config values; a table row overrides the animated ones per frame
    input_kind: str  # still | video

    @property
    def fps(self) -> float:
        return float(self.video.rate)

    @property
    def equirect(self) -> bool:
        return self.video.layout.projection == "equirect"

    def stream_info(self) -> dict:
        return {**self.video.stream_info(), "frames": self.frames, "input": self.input_kind}

    def step(self, index: int) -> Step:
        """The camera's move from frame index − 1 to frame index."""
        row = self.video.params.row(index) if self.video.params is not None else None
        return camera_step(self.motion, motion_row(row), self.fps, self.equirect)

    @cached_property
    def constant(self) -> bool:
        """No motion key is animated: every frame moves alike."""
        return self.video.params is None or not any(k.startswith(MOTION_PREFIX) for k in self.video.params.keys)


def camera_step(motion: MotionCfg, row: dict[str, float], fps: float, equirect: bool) -> Step:
    m = {f.name: float(row.get(f.name, getattr(motion, f.name))) for f in fields(MotionCfg)}
    if equirect:
        return sphere_step(yaw=m["yaw"], pitch=m["pitch"], roll=m["roll"], zoom=m["zoom"], fps=fps)
    return flat_step(zoom=m["zoom"], rotate=m["rotate"], translate_x=m["translate_x"],
                     translate_y=m["translate_y"], center_x=m["center_x"], center_y=m["center_y"], fps=fps)


# ------------------------------------------------------------------------------------------- input

def _read_input(src: Path, cfg: Config) -> tuple[np.ndarray, str, tuple[str | None, str | None]]:
    """(RGB at full size, still | video, the video's (projection, stereo) side data)."""
    if src.suffix.lower() in FORMATS:
        if cfg.animate.from_ is not None:
            raise ConfigError(f"animate.from: {src.name} is a still; the key picks a video INPUT's frame")
        return to_srgb(read_still(src), src.name), "still", (None, None)
    if cfg.animate.from_ is not None:
        with VideoReader(src, start=cfg.animate.from_, max_frames=1) as r:
            frame = next(iter(r)).rgb
            side = (r.side_projection, r.side_stereo)
    else:
        with VideoReader(src, max_frames=1) as r:  # probes: the stream's length and its side data
            side, duration = (r.side_projection, r.side_stereo), r.duration
        start = max(0.0, duration - LAST_FRAME_LOOKBACK_S) if duration else 0.0
        frame = _last(src, start)
        if frame is None and start > 0:
            frame = _last(src, 0.0)
    if frame is None:
        raise InputError(f"{src.name}: no video frame could be decoded")
    return frame, "video", side


def _last(src: Path, start: float) -> np.ndarray | None:
    try:
        with VideoReader(src, start=start) as r:
            last = None
            for fr in r:
                last = fr.rgb
            return last
    except InputError:  # a duration in the header longer than the frames: look from the start
        return None


def _soundtrack(cfg: Config) -> tuple[Path | None, float | None]:
    if cfg.animate.audio is None:
        return None, None
    try:
        return Path(cfg.animate.audio), audio_duration(cfg.animate.audio)
    except InputError as e:
        raise ConfigError(f"animate.audio: {e}") from e


def frame_count(cfg: Config, rate: Fraction, audio_s: float | None) -> int:
    seconds = cfg.animate.seconds if cfg.animate.seconds is not None else audio_s or DEFAULT_SECONDS
    return max(1, round(seconds * rate))


# ------------------------------------------------------------------------------------------- checks

def _check_motion_keys(cfg: Config, equirect: bool, name: str) -> None:
    """A flat key on a 360° picture (or a sphere key on a flat one) would do nothing: say what does."""
    animated = {k[len(MOTION_PREFIX):] for k in animated_keys(cfg.timeline, cfg.react) if k.startswith(MOTION_PREFIX)}
    default = MotionCfg()
    for f in fields(MotionCfg):
        used = getattr(cfg.motion, f.name) != getattr(default, f.name) or f.name in animated
        if used and equirect and f.name in FLAT_ONLY:
            raise ConfigError(f"motion.{f.name}: {name} is a 360° picture; {FLAT_ONLY[f.name]}")
        if used and not equirect and f.name in SPHERE_ONLY:
            raise ConfigError(f"motion.{f.name}: turns the sphere of a 360° picture, and {name} is flat (force "
                              "projection=equirect for a 360° one); a flat picture turns with motion.rotate")


def check_steps(plan: AnimationPlan) -> None:
    """Every frame's camera step, against what the loop can carry: a flat frame must take at least
    MIN_COVER of its pixels from the previous frame, a 360° zoom at most ×MAX_FRAME_ZOOM per frame."""
    aspect = plan.video.width / plan.video.height
    seen: set = set()
    for i in range(1, plan.frames if not plan.constant else min(2, plan.frames)):
        step = plan.step(i)
        if step in seen:
            continue
        seen.add(step)
        if isinstance(step, SphereStep):
            if not 1 / MAX_FRAME_ZOOM <= step.zoom <= MAX_FRAME_ZOOM:
                raise ConfigError(f"motion.zoom: ×{step.zoom:.3g} per frame at frame {i} ({plan.fps:g} fps) tears "
                                  f"the sphere apart (at most ×{MAX_FRAME_ZOOM:g} or ÷{MAX_FRAME_ZOOM:g} per frame); "
                                  "zoom more slowly or raise animate.fps")
            continue
        share = coverage(step, aspect)
        if share < MIN_COVER:
            raise ConfigError(
                f"motion: at frame {i} the picture moves past the frame: only {share:.0%} of it comes from the "
                f"previous frame (at least {MIN_COVER:.0%}): zoom ×{step.zoom:.3g}, "
                f"turn {math.degrees(step.angle):.3g}°, slide ({step.shift_x:.3g}, {step.shift_y:.3g}) frame widths "
                f"per frame at {plan.fps:g} fps; "
                "move more slowly or raise animate.fps")


# ------------------------------------------------------------------------------------------- the plan

def plan_animation(src: Path, cfg: Config) -> AnimationPlan:
    if cfg.scale.backend != "none":
        raise ConfigError("scale.backend: an animation is one feedback chain (every frame needs the one before), "
                          "so it renders in this process; set scale.backend=none")
    soundtrack, audio_s = _soundtrack(cfg)
    rgb, kind, side = _read_input(src, cfg)
    rate = Fraction(cfg.animate.fps).limit_denominator(1001)
    layout = resolve_layout(cfg, rgb, side_projection=side[0], side_stereo=side[1])
    enc = encode_plan(cfg, rate, layout.stereo)
    if not encoder_available(enc.encoding.codec):
        raise InputError(f"encode.codec: this PyAV build has no {enc.encoding.codec} encoder")
    src_h, src_w = rgb.shape[:2]
    max_side = fit_max_side(src_w, src_h, float(rate), cfg.input.max_side, enc,
                            lambda side_px: fit_size(src_w, src_h, side_px))
    w, h = fit_size(src_w, src_h, max_side)
    if (w, h) != (src_w, src_h):
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    if enc.encoding.codec == "hevc" and min(w, h) < HEVC_MIN_SIDE:
        raise InputError(f"HEVC output needs frames of at least {HEVC_MIN_SIDE}x{HEVC_MIN_SIDE}, got {w}x{h}; "
                         "use encode.codec=h264 (and encode.preset=none)")
    equirect = layout.projection == "equirect"
    _check_motion_keys(cfg, equirect, src.name)
    frames = frame_count(cfg, rate, audio_s)
    table = animation_table(cfg, frames=frames, rate=rate, soundtrack=soundtrack, layers=resolve_layers(cfg))
    video = VideoPlan(layout, DreamPlan.resolve(cfg, layout), max_side, w, h, 1 / rate, rate,
                      soundtrack is not None, frames, enc, segment_frames(cfg.checkpoint.segment_frames,
                                                                          enc.encoding.gop), 0, table)
    plan = AnimationPlan(video, np.ascontiguousarray(rgb), frames, soundtrack, cfg.animate.resample, cfg.motion, kind)
    check_steps(plan)
    log.info("animate %s (%s, %s %s): %d frames at %s fps, %dx%d%s", src.name, kind, layout.projection, layout.stereo,
             frames, rate, w, h, f", soundtrack {soundtrack.name}" if soundtrack else "")
    return plan
