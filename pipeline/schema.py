"""The config's shape: every section and key with its type, default and range, and the checks that hold a
value to them. `pipeline.config` loads, merges and hashes configs of this shape; `pipeline.music.timeline`
checks animated values with the same rules. Both build on this module, which builds on neither.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pipeline.errors import ConfigError
from stages.temporal.cuts import SCENE_CUT_MIN_RELIABLE

MIN_TILE = 64  # tiles overlap by a quarter (>= 8 px); smaller ones cannot cover a frame
SEED_MAX = 2**32 - 1  # frame i seeds its generator with seed + i, which must stay a 64-bit seed


def _f(default, *, lo=None, hi=None, lo_open=False, doc="", key=None):
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc}
    if key is not None:  # the YAML name, where it is a Python keyword (animate.from)
        meta["key"] = key
    return field(default=default, metadata=meta)


def key_name(f: dataclasses.Field) -> str:
    """A field's name in YAML and in dotted keys."""
    return f.metadata.get("key", f.name)


@dataclass(frozen=True)
class ModelCfg:
    name: str = _f("efficientnet_lite0")
    weights: str | None = _f(None)


@dataclass(frozen=True)
class DreamCfg:
    layers: Union[list[str], dict[str, float], None] = _f(None)  # None: the model's default layers
    channels: dict[str, list[int]] | None = _f(None)
    guide: str | None = _f(None)
    octaves: int = _f(4, lo=1, hi=12)
    octave_scale: float = _f(1.4, lo=1.0, hi=4.0, lo_open=True)
    iterations: int = _f(10, lo=0, hi=1000)
    # From 0.001: a smaller step moves no 8-bit pixel, and its square (the strength's unit) underflows near 1e-160.
    step_size: float = _f(1.65, lo=0.001, hi=64.0)
    jitter: int = _f(32, lo=0, hi=512)
    tile: int = _f(512, lo=0, hi=8192)
    seed: int = _f(0, lo=0, hi=SEED_MAX)
    device: Literal["auto", "cpu", "cuda"] = _f("auto")


@dataclass(frozen=True)
class InputCfg:
    max_side: int | None = _f(None, lo=16, hi=16384)


@dataclass(frozen=True)
class SphericalCfg:
    mode: Literal["sphere", "equirect"] = _f("sphere")  # sphere: views of the sphere; equirect: the frame itself
    stereo: Literal["carry", "independent"] = _f("carry")  # one dream carried to the other eye by disparity
    wrap: bool = _f(True)
    pole_exponent: float = _f(1.0, lo=0.0, hi=8.0)


@dataclass(frozen=True)
class VideoCfg:
    start: float = _f(0.0, lo=0.0)
    max_frames: int | None = _f(None, lo=1)


@dataclass(frozen=True)
class TemporalCfg:
    enabled: bool = _f(True)
    flow: Literal["dis", "farneback", "raft"] = _f("dis")
    flow_preset: Literal["ultrafast", "fast", "medium"] = _f("medium")  # DIS search (stages.temporal.flow.DIS_PRESETS)
    flow_max_side: int | None = _f(960, lo=16)  # flow computed with the longer side at most this; None: full size
    blend: float = _f(0.9, lo=0.0, hi=1.0)
    iterations: int = _f(2, lo=0, hi=1000)
    hold: float = _f(0.3, lo=0.0, hi=1.0)  # per step, pull new detail back to the carried dream where flow is reliable
    steady: bool = _f(True)  # keep the dream's strength at its shot's first frame
    scene_cut: float = _f(SCENE_CUT_MIN_RELIABLE, lo=0.0, hi=1.0)
    # frames whose flow is computed at once; None: 1 beside a CPU dream, the free cores (≤ 8) beside a GPU one
    flow_threads: int | None = _f(None, lo=1, hi=64)


@dataclass(frozen=True)
class CheckpointCfg:
    segment_frames: int = _f(60, lo=1, hi=100000)


@dataclass(frozen=True)
class EncodeCfg:
    codec: Literal["h264", "hevc"] = _f("h264")
    crf: int = _f(18, lo=0, hi=51)
    speed: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"] = _f("medium")
    preset: Literal["none", "quest", "youtube360", "h264_compat"] = _f("none")
    gop: float | None = _f(None, lo=0.0, hi=60.0, lo_open=True)  # seconds between key frames; None: the preset's
    # share of a frame's new dream change held back around each key frame (pipeline/render/presets.keyframe_keep)
    keyframe_ease: float = _f(0.4, lo=0.0, hi=0.6)


@dataclass(frozen=True)
class ReactCfg:
    param: str = _f("dream.step_size")  # a numeric dream/temporal key or dream.layers.NAME
    amount: float = _f(0.0, lo=0.0, hi=10.0)  # value × (1 + amount × envelope); 0 = off
    feature: Literal["onset", "rms", "beat"] = _f("onset")
    attack: float = _f(0.01, lo=0.0, hi=5.0)  # seconds
    release: float = _f(0.2, lo=0.0, hi=10.0)  # seconds
    audio: str | None = _f(None)  # an audio file; None: the input's own soundtrack


@dataclass(frozen=True)
class AnimateCfg:
    """`deepdream animate`: a still (or a video's frame) dreamed in a feedback loop under camera motion."""

    seconds: float | None = _f(None, lo=0.0, hi=86400.0, lo_open=True)  # None: the soundtrack's length, else 10 s
    fps: float = _f(30.0, lo=1.0, hi=240.0)
    audio: str | None = _f(None)  # a soundtrack to mux, and to react to (react.audio overrides the latter)
    from_: float | None = _f(None, lo=0.0, key="from")  # a video INPUT: the frame at this second; None: its last
    resample: Literal["lanczos", "bicubic", "bilinear"] = _f("bicubic")  # kernel carrying a frame into the next


@dataclass(frozen=True)
class MotionCfg:
    """Camera motion of `deepdream animate`, per second (stages/temporal/motion.py, stages/vr/orbit.py)."""

    zoom: float = _f(1.25, lo=0.0, hi=1000.0, lo_open=True)  # factor per second (> 1 in, < 1 out)
    rotate: float = _f(0.0, lo=-3600.0, hi=3600.0)  # flat: degrees per second, counter-clockwise
    translate_x: float = _f(0.0, lo=-100.0, hi=100.0)  # flat: frame widths per second, right
    translate_y: float = _f(0.0, lo=-100.0, hi=100.0)  # flat: frame widths per second, down
    center_x: float = _f(0.5, lo=0.0, hi=1.0)  # flat: zoom and rotation centre, share of the width
    center_y: float = _f(0.5, lo=0.0, hi=1.0)  # flat: share of the height
    yaw: float = _f(0.0, lo=-3600.0, hi=3600.0)  # 360°: degrees per second, the picture moves right
    pitch: float = _f(0.0, lo=-3600.0, hi=3600.0)  # 360°: degrees per second, the front moves up
    roll: float = _f(0.0, lo=-3600.0, hi=3600.0)  # 360°: degrees per second, counter-clockwise


@dataclass(frozen=True)
class ScaleCfg:
    backend: Literal["none", "ray"] = _f("none")
    workers: int | None = _f(None, lo=1, hi=4096)  # None: one per GPU in the cluster, else 1
    address: str | None = _f(None)  # None: a local Ray for this render; "auto" or "ray://head:10001": a cluster
    gpus_per_worker: float | None = _f(None, lo=0.0, hi=64.0)  # None: 1 where the cluster has GPUs, else 0
    cpus_per_worker: int = _f(1, lo=1, hi=1024)  # also each worker's torch threads
    chunk_seconds: float = _f(10.0, lo=0.0, hi=86400.0, lo_open=True)
    warmup_frames: int = _f(30, lo=0, hi=100000)  # a chunk inside a shot starts this early; rounded up to segments


@dataclass(frozen=True)
class Config:
    model: ModelCfg = field(default_factory=ModelCfg)
    dream: DreamCfg = field(default_factory=DreamCfg)
    input: InputCfg = field(default_factory=InputCfg)
    projection: Literal["auto", "flat", "equirect"] = _f("auto")
    stereo: Literal["auto", "mono", "top-bottom", "left-right"] = _f("auto")
    spherical: SphericalCfg = field(default_factory=SphericalCfg)
    video: VideoCfg = field(default_factory=VideoCfg)
    temporal: TemporalCfg = field(default_factory=TemporalCfg)
    checkpoint: CheckpointCfg = field(default_factory=CheckpointCfg)
    encode: EncodeCfg = field(default_factory=EncodeCfg)
    scale: ScaleCfg = field(default_factory=ScaleCfg)
    timeline: tuple = field(default=(), metadata={"doc": "keyframes {at, set, ease}: pipeline/music/timeline.py"})
    react: ReactCfg = field(default_factory=ReactCfg)
    animate: AnimateCfg = field(default_factory=AnimateCfg)
    motion: MotionCfg = field(default_factory=MotionCfg)


# ------------------------------------------------------------------------------------------- checking

def build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: must be a mapping, got {_tname(data)}")
    hints = typing.get_type_hints(cls)
    fields = {key_name(f): f for f in dataclasses.fields(cls)}
    for k in data:
        if k not in fields:
            raise ConfigError(f"{prefix}{k}: unknown key (valid: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        key, tp, v = prefix + name, hints[f.name], data[name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build(tp, v, key + ".")
        else:
            kwargs[f.name] = _check(key, tp, v, f.metadata)
    return cls(**kwargs)


def finite(v: Any) -> float | None:
    """`v` as a finite float, or None: not a number (a bool is not one), NaN, ±inf, or an integer too large for a
    float (YAML reads 1 followed by 400 zeros as an int, and float() of it raises)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _short(v: Any) -> str:
    """A value for an error line: a 400-digit number is shown by its size, not in full."""
    s = repr(v)
    return s if len(s) <= 40 else f"{s[:12]}…({len(s)} characters)"


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check(key: str, tp: Any, v: Any, meta: typing.Mapping) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        # A mapping or a list is judged by the branch of its own shape, so the message names the real fault.
        shaped = [a for a in args if typing.get_origin(a) is (dict if isinstance(v, dict) else list)]
        for a in shaped if isinstance(v, (dict, list)) and shaped else (a for a in args if a is not type(None)):
            try:
                return _check(key, a, v, meta)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: unexpected value {v!r}")
    if origin is Literal:
        if v not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(str, args))}, got {_short(v)}")
        return v
    if origin is list:
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{key}: must be a non-empty list, got {_tname(v)}")
        return tuple(_check(f"{key}[{i}]", args[0], x, {}) for i, x in enumerate(v))
    if origin is dict:
        if not isinstance(v, dict) or not v:
            raise ConfigError(f"{key}: must be a non-empty mapping, got {_tname(v)}")
        return types.MappingProxyType({_check(f"{key} key", args[0], k, {}): _check(f"{key}.{k}", args[1], x, {})
                                       for k, x in v.items()})
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: must be true or false, got {_short(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: must be an integer, got {_short(v)}")
    elif tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {_short(v)}")
        if finite(v) is None:
            raise ConfigError(f"{key}: must be a finite number, got {_short(v)}")
        v = float(v)
    elif tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: must be a string, got {_tname(v)}")
        return v
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (v <= lo if meta.get("lo_open") else v < lo):
        raise ConfigError(f"{key}: must be {'>' if meta.get('lo_open') else '>='} {lo}, got {_short(v)}")
    if hi is not None and v > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {_short(v)}")
    return v
