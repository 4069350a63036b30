"""One resolved plan per render: every rule derived from the config and the input, decided once.

`DreamPlan` says how each frame is dreamed (the same for `deepdream image` and `deepdream video`):
stereo split, equirect treatment, effective seam wrap, pole weighting, the temporal chain. `VideoPlan`
adds what the video loop needs before its first frame: sizes, stream identity, encoder settings.
Nothing downstream re-derives these from the raw `Config`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from pipeline.config import Config, sidecar
from pipeline.errors import InputError
from pipeline.music.table import plan_table
from pipeline.music.timeline import FrameTable
from pipeline.render.engine import resolve_device, resolve_layers
from pipeline.render.layout import Layout, resolve_layout
from pipeline.render.presets import EncodePlan, encode_plan, fit_max_side
from stages.dream.ascent import Schedule
from stages.media.decode import VideoReader, fit_size
from stages.media.encode import encoder_available
from stages.temporal.flow import FlowEstimator
from stages.vr import spherical as S
from stages.vr.sphere import SphereSpec

log = logging.getLogger(__name__)
HEVC_MIN_SIDE = 64


def flow_threads(cfg: Config) -> int:
    """`temporal.flow_threads`, or: beside a CPU dream 1 (the dream already uses every core), beside a GPU
    dream the cores the render may use but one (for the decode, encode and dream threads), at most 8."""
    if cfg.temporal.flow_threads is not None:
        return cfg.temporal.flow_threads
    if resolve_device(cfg.dream.device).type == "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores - 1))


@dataclass(frozen=True, slots=True)
class DreamPlan:
    """How every frame of one render is dreamed."""

    stereo: str  # mono | top-bottom | left-right: eyes are split, dreamed, rejoined
    stereo_carry: bool  # the left eye's dream is carried to the right one by disparity (else: one batch)
    equirect: bool  # 360° frame: yaw-only jitter, pole weighting
    sphere: bool  # dreamed through perspective views of the sphere (spherical.mode = sphere)
    wrap_x: bool  # equirect and spherical.wrap: convs, tiles, resize, flow, warp wrap across 0/360°
    pole_exponent: float  # step × cos(latitude)^k on equirect frames (0 on flat ones)
    temporal: bool  # start each frame from the flow-warped previous dream
    blend: float
    warm_iterations: int  # per octave, for a frame that continues the temporal chain
    hold: float  # per-step pull back to the carried dream where flow is reliable
    steady: bool  # residual strength held at the shot's first frame
    scene_cut: float
    flow: str
    flow_preset: str = "medium"  # DIS search (stages.temporal.flow.DIS_PRESETS)
    flow_max_side: int | None = 960  # flow's working resolution (longer side); None: the frame's
    flow_threads: int = 1  # frames whose flow is computed at once (pipeline.render.workers)

    @classmethod
    def resolve(cls, cfg: Config, layout: Layout) -> DreamPlan:
        equirect = layout.projection == "equirect"
        t = cfg.temporal
        return cls(stereo=layout.stereo, stereo_carry=layout.stereo != "mono" and cfg.spherical.stereo == "carry",
                   equirect=equirect, sphere=equirect and cfg.spherical.mode == "sphere",
                   wrap_x=equirect and cfg.spherical.wrap,
                   pole_exponent=cfg.spherical.pole_exponent if equirect else 0.0, temporal=t.enabled,
                   blend=t.blend, warm_iterations=t.iterations, hold=t.hold, steady=t.steady,
                   scene_cut=t.scene_cut, flow=t.flow, flow_preset=t.flow_preset, flow_max_side=t.flow_max_side,
                   flow_threads=flow_threads(cfg))

    def flow_estimator(self) -> FlowEstimator:
        """A flow solver with this render's settings (one per thread: it keeps buffers between calls)."""
        return FlowEstimator(self.flow, preset=self.flow_preset, max_side=self.flow_max_side, half_check=True)

    def disparity_estimator(self) -> FlowEstimator:
        """The stereo carry's solver: MEDIUM's fine search whatever `flow_preset` says, since the right eye takes
        the left eye's dream pixel for pixel from it (a coarse field halves the eyes' agreement)."""
        return FlowEstimator(self.flow, preset="medium", max_side=self.flow_max_side)

    def schedule(self, base: Schedule, *, warm: bool, reliable: float = 1.0) -> Schedule:
        """The engine's base schedule specialised for this render's geometry and the frame's place.

        A carried frame takes the warm iterations; one whose flow holds on less than the scene-cut share
        of its pixels (`reliable`: fast motion inside a shot, stages.temporal.cuts) takes more, up to the full
        schedule as that share goes to 0: the carried few pixels stay held, the rest is dreamed nearly
        afresh, instead of a restart of the whole frame or a weak few steps that steady would inflate.
        """
        sch = replace(base, equirect=self.equirect, wrap_x=self.wrap_x, pole_exponent=self.pole_exponent,
                      sphere=SphereSpec() if self.sphere else None)
        if not warm:
            return sch
        lost = 1.0 - reliable / self.scene_cut if self.scene_cut > 0 else 0.0
        extra = max(0, round((base.iterations - self.warm_iterations) * min(1.0, lost)))
        return replace(sch, iterations=self.warm_iterations + extra)


@dataclass(frozen=True)
class VideoPlan:
    """Everything `deepdream video` decides before the first frame."""

    layout: Layout
    dream: DreamPlan
    max_side: int | None
    width: int
    height: int
    time_base: Fraction
    rate: Fraction
    has_audio: bool
    frames_estimate: int | None
    enc: EncodePlan
    segment_frames: int  # frames per checkpoint segment: a whole number of GOPs
    origin: int = 0  # the stream's start pts: a frame's time is (pts − origin) × time_base
    params: FrameTable | None = None  # per-frame values of animated parameters (timeline, react)

    def stream_info(self) -> dict:
        return {"width": self.width, "height": self.height, "time_base": str(self.time_base),
                "rate": str(self.rate), "projection": self.layout.projection, "stereo": self.layout.stereo,
                "segment_frames": self.segment_frames}


def check_render_output(src: Path, dst: Path, cfg: Config, config_file=None) -> None:
    """OUTPUT and the config written beside it (`sidecar`) can be written and are none of the render's input files:
    the source, the `-c` file, a guide image, weights, a soundtrack."""
    from stages.media.still import check_output_path

    inputs = (src, config_file, cfg.dream.guide, cfg.model.weights, cfg.react.audio, cfg.animate.audio)
    check_output_path(dst, *inputs)
    check_output_path(sidecar(dst), *inputs, what="config written beside the output")


def check_video_output(src: Path, dst: Path, cfg: Config) -> None:
    from pipeline.render.checkpoint import check_run_dir

    if dst.suffix.lower() not in (".mp4", ".m4v"):
        raise InputError(f"output {dst}: must be an .mp4 file")
    check_render_output(src, dst, cfg)
    check_run_dir(dst, src)


def plan_video(src: Path, cfg: Config) -> VideoPlan:
    with VideoReader(src, start=cfg.video.start, max_frames=1, max_side=cfg.input.max_side) as r:
        first = next(iter(r)).rgb
        side = (r.side_projection, r.side_stereo)
        src_w, src_h, rate, tb, has_audio = r.source_width, r.source_height, r.rate, r.time_base, r.has_audio
        origin = r.origin
    layout = resolve_layout(cfg, first, side_projection=side[0], side_stereo=side[1])
    rate = rate or Fraction(30)
    enc = encode_plan(cfg, rate, layout.stereo)
    if not encoder_available(enc.encoding.codec):
        raise InputError(f"encode.codec: this PyAV build has no {enc.encoding.codec} encoder")
    max_side = fit_max_side(src_w, src_h, float(rate), cfg.input.max_side, enc,
                            lambda side: fit_size(src_w, src_h, side))
    if max_side != cfg.input.max_side:
        w, h = fit_size(src_w, src_h, max_side)
        log.info("encode.preset %s: frames scaled to %dx%d to fit %s", cfg.encode.preset, w, h,
                 f"level {enc.level.name}" if enc.level else "its cap")
    with VideoReader(src, start=cfg.video.start, max_frames=cfg.video.max_frames, max_side=max_side) as r:
        w, h, est = r.width, r.height, r.frames_estimate
    if layout.stereo != "mono":
        S.split_stereo(np.zeros((h, w, 1), np.uint8), layout.stereo)  # scaled size still splits evenly
    if enc.encoding.codec == "hevc" and min(w, h) < HEVC_MIN_SIDE:
        # libx265 in PyAV's wheel corrupts the heap on some frames smaller than its 64-pixel blocks.
        raise InputError(f"HEVC output needs frames of at least {HEVC_MIN_SIDE}x{HEVC_MIN_SIDE}, got {w}x{h}; "
                         "use encode.codec=h264 (and encode.preset=none)")
    table = plan_table(src, cfg, has_audio=has_audio, rate=rate, layers=resolve_layers(cfg))
    return VideoPlan(layout, DreamPlan.resolve(cfg, layout), max_side, w, h, tb, rate, has_audio, est, enc,
                     segment_frames(cfg.checkpoint.segment_frames, enc.encoding.gop), origin, table)


def segment_frames(wanted: int, gop: int) -> int:
    """Segments close on GOP boundaries, so key frames fall every `gop` frames across the whole render."""
    n = max(gop, round(wanted / gop) * gop)
    if n != wanted:
        log.info("checkpoint.segment_frames %d -> %d: a whole number of %d-frame GOPs", wanted, n, gop)
    return n
