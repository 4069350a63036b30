"""Keyframed parameters and audio reactivity, resolved into one per-frame parameter table.

A `timeline` is a list of keyframes `{at: seconds, set: {dotted.key: number, ...}, ease: linear|smooth|step}`
with strictly increasing times. Each animated key follows its own keyframes (the ones that set it):
- before its first keyframe it keeps the config's value, and takes the keyframe's value from `at` on
  (a cue: "the drop at 30 s" hits at 30 s instead of creeping in from 0 s);
- between two of its keyframes it moves with the *earlier* keyframe's ease: linear, smooth (smoothstep,
  zero slope at both ends) or step (hold, then jump at the next keyframe);
- after its last keyframe it holds that value.
Times are seconds of the source video, (pts − stream start) × time_base, whatever `video.start` cuts.

`react` makes one key follow the soundtrack's envelope e(t) in 0..1: value = timeline(t) × (1 + amount·e(t)).
The camera of `deepdream animate` (`motion.*`) animates the same way; the animation loop reads those keys
from the row, the dream step ignores them (`row_parts`).
Integer keys are interpolated as reals and rounded half up once, after the react factor; every value is
clamped into its key's range, since the react factor can lift a legal value past the key's maximum.

The table (keys × frames) is computed once before the render, written to the run dir as JSON and hashed
into the manifest, so a resumed render reads back exactly the values it started with.
"""

from __future__ import annotations

import bisect
import dataclasses
import difflib
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np

from pipeline.errors import ConfigError
from pipeline.schema import Config, DreamCfg, MotionCfg, TemporalCfg, _check, _short, _tname, finite

EASES = ("linear", "smooth", "step")
LAYER_PREFIX = "dream.layers."
MOTION_PREFIX = "motion."
NOT_ANIMATED = {"dream.seed": "the seed picks the noise, not the look",
                "dream.tile": "tiling changes memory use, not the look",
                "temporal.scene_cut": "the cut test runs on the source, ahead of the dream"}
TABLE_VERSION = 1


@dataclass(frozen=True)
class KeySpec:
    """What an animated key accepts: its type and its range (the config field's own metadata)."""

    kind: type  # int or float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    @property
    def meta(self) -> dict:
        return {"lo": self.lo, "hi": self.hi, "lo_open": self.lo_open}


def _numeric_fields(prefix: str, cls) -> dict[str, KeySpec]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if hints[f.name] in (int, float) and key not in NOT_ANIMATED:
            out[key] = KeySpec(hints[f.name], f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("lo_open"))
    return out


# Every plain int/float field of the dream, temporal and motion sections, read from the dataclasses so a new
# numeric field becomes animatable with its own range.
ANIMATABLE: Mapping[str, KeySpec] = types.MappingProxyType(
    {**_numeric_fields("dream", DreamCfg), **_numeric_fields("temporal", TemporalCfg),
     **_numeric_fields("motion", MotionCfg)})
LAYER_SPEC = KeySpec(float)  # any finite weight, as `dream.layers` itself (a negative weight suppresses)


def key_spec(key: str) -> KeySpec | None:
    if key.startswith(LAYER_PREFIX) and len(key) > len(LAYER_PREFIX):
        return LAYER_SPEC
    return ANIMATABLE.get(key)


@dataclass(frozen=True)
class Keyframe:
    at: float
    set: Mapping[str, int | float]  # dotted key → value, type- and range-checked; named as in the YAML
    ease: str = "linear"


# ------------------------------------------------------------------------------------------- validation

def _unknown_key(where: str, key: str) -> ConfigError:
    valid = sorted(ANIMATABLE)
    if key in NOT_ANIMATED:
        return ConfigError(f"{where}: cannot be animated ({NOT_ANIMATED[key]})")
    hint = difflib.get_close_matches(key, valid, n=1)
    also = f"; did you mean {hint[0]}?" if hint else ""
    return ConfigError(f"{where}: unknown key (animatable: {', '.join(valid)}, {LAYER_PREFIX}NAME){also}")


def _check_layer(where: str, key: str, cfg: Config, layer_names: Collection[str] | None) -> None:
    name = key[len(LAYER_PREFIX):]
    if layer_names is not None and name not in layer_names:
        raise ConfigError(f"{where}: unknown layer {name!r} for {cfg.model.name}; "
                          f"valid layers: {', '.join(layer_names)}")


def _flatten(where: str, data: Mapping, prefix: str = "") -> dict[str, Any]:
    """`{dream: {step_size: 2}}` and `{dream.step_size: 2}` both mean dream.step_size."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if not isinstance(k, str) or not k:
            raise ConfigError(f"{where}: keys must be dotted names like dream.step_size, got {k!r}")
        key = prefix + k
        items = _flatten(where, v, key + ".") if isinstance(v, dict) else {key: v}
        for dotted, x in items.items():
            if dotted in out:
                raise ConfigError(f"{where}.{dotted}: given twice")
            out[dotted] = x
    return out


def validate_timeline(raw: Any, cfg: Config, *, layer_names: Collection[str] | None = None) -> tuple[Keyframe, ...]:
    """The `timeline` list as YAML gave it → checked keyframes. Every fault is a one-line `ConfigError`
    naming the entry, e.g. `timeline[1].set.dream.stepsize: unknown key`.

    `layer_names`: the model's layer names; None leaves `dream.layers.NAME` keys to the caller
    (`animated_layers` lists them) for when the layer table is not at hand.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"timeline: must be a list of keyframes {{at, set, ease}}, got {_tname(raw)}")
    out: list[Keyframe] = []
    for i, entry in enumerate(raw):
        p = f"timeline[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{p}: must be a mapping with at, set and optional ease, got {_tname(entry)}")
        for k in entry:
            if k not in ("at", "set", "ease"):
                raise ConfigError(f"{p}.{k}: unknown key (valid: at, set, ease)")
        if "at" not in entry:
            raise ConfigError(f"{p}.at: missing (seconds from the start of the input)")
        at = entry["at"]
        if finite(at) is None or at < 0:
            raise ConfigError(f"{p}.at: must be a finite number >= 0, got {_short(at)}")
        at = float(at)
        if out and at <= out[-1].at:
            raise ConfigError(f"{p}.at: times must increase ({at} after {out[-1].at})")
        ease = entry.get("ease", "linear")
        if ease not in EASES:
            raise ConfigError(f"{p}.ease: must be one of {', '.join(EASES)}, got {ease!r}")
        sets = entry.get("set")
        if not isinstance(sets, dict) or not sets:
            raise ConfigError(f"{p}.set: must be a non-empty mapping of dotted keys to numbers, got {_tname(sets)}")
        values = {}
        for key, v in _flatten(f"{p}.set", sets).items():
            where = f"{p}.set.{key}"
            spec = key_spec(key)
            if spec is None:
                raise _unknown_key(where, key)
            if spec is LAYER_SPEC:
                _check_layer(where, key, cfg, layer_names)
            values[key] = _check(where, spec.kind, v, spec.meta)
        out.append(Keyframe(at, types.MappingProxyType(values), ease))
    return tuple(out)


def validate_react(react, cfg: Config, *, layer_names: Collection[str] | None = None) -> None:
    """Cross-checks of a built `ReactCfg` that its field types cannot express."""
    spec = key_spec(react.param)
    if spec is None:
        raise _unknown_key("react.param", react.param)
    if spec is LAYER_SPEC:
        _check_layer("react.param", react.param, cfg, layer_names)
    if react.audio is not None and not Path(react.audio).is_file():
        raise ConfigError(f"react.audio: no such file: {react.audio}")


def require_soundtrack(react, has_audio: bool, input_name: str) -> None:
    """Once the input is probed: reacting needs a soundtrack, its own or `react.audio`."""
    if react.amount > 0 and react.audio is None and not has_audio:
        raise ConfigError(f"react.amount: {react.amount:g} needs a soundtrack, but {input_name} has none; "
                          f"set react.audio to an audio file or react.amount to 0")


def animated_keys(keyframes: Sequence[Keyframe], react=None) -> tuple[str, ...]:
    keys = {k for kf in keyframes for k in kf.set}
    if react is not None and react.amount > 0:
        keys.add(react.param)
    return tuple(sorted(keys))


def animated_layers(keyframes: Sequence[Keyframe], react=None) -> tuple[str, ...]:
    """Layer names the table animates: the objective must include them (weight 0 if not in the config)."""
    return tuple(k[len(LAYER_PREFIX):] for k in animated_keys(keyframes, react) if k.startswith(LAYER_PREFIX))


def base_values(cfg: Config, keys: Sequence[str], layers: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The config's own value of each key; a layer weight comes from `layers` (the resolved base weights,
    `engine.resolve_layers(cfg)`), 0 for a layer the config does not dream."""
    out = {}
    for key in keys:
        if key.startswith(LAYER_PREFIX):
            if layers is None:
                raise ValueError(f"{key}: pass the resolved layer weights to read its base value")
            out[key] = float(layers.get(key[len(LAYER_PREFIX):], 0.0))
        else:
            section, name = key.split(".", 1)
            out[key] = getattr(getattr(cfg, section), name)
    return out


# ------------------------------------------------------------------------------------------- evaluation

def _ease(kind: str, u: float) -> float:
    if kind == "step":
        return 0.0
    if kind == "smooth":
        return u * u * (3.0 - 2.0 * u)
    return u


def track(keyframes: Sequence[Keyframe], key: str) -> list[tuple[float, float, str]]:
    """(at, value, ease) of the keyframes that set `key`, in time order."""
    return [(kf.at, float(kf.set[key]), kf.ease) for kf in keyframes if key in kf.set]


def value_at(points: Sequence[tuple[float, float, str]], t: float, base: float) -> float:
    """One key's timeline value at `t` seconds (unrounded, before reactivity)."""
    if not points or t < points[0][0]:
        return float(base)
    i = bisect.bisect_right([p[0] for p in points], t) - 1
    at, v, ease = points[i]
    if i == len(points) - 1:
        return v
    nxt_at, nxt_v = points[i + 1][0], points[i + 1][1]
    return v + (nxt_v - v) * _ease(ease, (t - at) / (nxt_at - at))


def finalise(key: str, v: float) -> int | float:
    """Clamp into the key's range; integer keys are rounded half up (floor(v + 0.5)): a ramp then steps
    at the midpoints, evenly, where Python's round() would favour even numbers."""
    spec = key_spec(key)
    if spec.hi is not None:
        v = min(v, spec.hi)
    if spec.lo is not None and not spec.lo_open:
        v = max(v, spec.lo)
    return int(math.floor(v + 0.5)) if spec.kind is int else float(v)


@dataclass(frozen=True)
class FrameTable:
    """The value of every animated key at every frame; column `values[key][i]` belongs to `times[i]`."""

    keys: tuple[str, ...]
    times: tuple[float, ...]
    values: Mapping[str, tuple[int | float, ...]]

    def __len__(self) -> int:
        return len(self.times)

    def row(self, i: int) -> dict[str, int | float]:
        return {k: self.values[k][i] for k in self.keys}

    def row_at(self, t: float) -> dict[str, int | float]:
        """The row of the frame at exactly `t` (both from `frame_times`, so equal floats): a frame the
        decoder dropped shifts indices, never times. A time the table lacks raises KeyError."""
        i = self._index.get(float(t))
        if i is None:
            raise KeyError(f"no frame at {t!r} s in the parameter table")
        return self.row(i)

    @functools.cached_property
    def _index(self) -> dict[float, int]:
        return {t: i for i, t in enumerate(self.times)}

    def to_json(self) -> str:
        """Canonical, compact JSON; Python's float repr round-trips exactly, so load(save(x)) == x."""
        doc = {"version": TABLE_VERSION, "keys": list(self.keys), "times": list(self.times),
               "values": {k: list(self.values[k]) for k in self.keys}}
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> FrameTable:
        """Read back a stored table; a damaged or foreign file raises ValueError."""
        try:
            doc = json.loads(text)
            if doc["version"] != TABLE_VERSION:
                raise ValueError(f"table version {doc['version']!r}, expected {TABLE_VERSION}")
            keys, times = tuple(doc["keys"]), tuple(float(t) for t in doc["times"])
            values = {k: tuple(doc["values"][k]) for k in keys}
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"not a parameter table ({type(e).__name__}: {e})") from e
        if any(len(col) != len(times) for col in values.values()) or set(doc["values"]) != set(keys):
            raise ValueError("not a parameter table (columns and times disagree)")
        return cls(keys, times, types.MappingProxyType(values))


def frame_values(keyframes: Sequence[Keyframe], react, envelope: Sequence[float] | np.ndarray | None,
                 times: Sequence[float], *, cfg: Config, layers: Mapping[str, float] | None = None) -> FrameTable:
    """The per-frame table: for each time, every animated key's timeline value, the react param's times
    (1 + amount × envelope). `envelope` is the audio envelope already sampled at `times` (0..1); it is
    needed only when `react.amount` > 0. `layers`: the resolved base layer weights (see `base_values`)."""
    keys = animated_keys(keyframes, react)
    base = base_values(cfg, keys, layers)
    reacting = react is not None and react.amount > 0
    if reacting:
        env = np.asarray(envelope, np.float64) if envelope is not None else None
        if env is None or env.shape != (len(times),) or not np.all((env >= 0) & (env <= 1)):
            raise ValueError("react.amount > 0 needs the envelope in 0..1, one value per frame time")
    columns = {}
    for key in keys:
        points = track(keyframes, key)
        col = [value_at(points, float(t), base[key]) for t in times]
        if reacting and key == react.param:
            col = [v * (1.0 + react.amount * float(e)) for v, e in zip(col, env)]
        columns[key] = tuple(finalise(key, v) for v in col)
    return FrameTable(keys, tuple(float(t) for t in times), types.MappingProxyType(columns))


def row_parts(row: Mapping[str, int | float]) -> tuple[dict, dict, dict]:
    """Split one frame's row into (dream field overrides, temporal field overrides, layer weights), ready
    for `dataclasses.replace` on the schedule / plan and for the objective's weights. `motion.*` keys move
    the camera before the dream (`motion_row`), so they are none of these."""
    dream, temporal, layers = {}, {}, {}
    for key, v in row.items():
        if key.startswith(MOTION_PREFIX):
            continue
        if key.startswith(LAYER_PREFIX):
            layers[key[len(LAYER_PREFIX):]] = v
        elif key.startswith("dream."):
            dream[key[len("dream."):]] = v
        else:
            temporal[key[len("temporal."):]] = v
    return dream, temporal, layers


def motion_row(row: Mapping[str, int | float] | None) -> dict[str, float]:
    """The `motion.*` values of one frame's row, by field name (`{"zoom": 1.3}`)."""
    return {k[len(MOTION_PREFIX):]: float(v) for k, v in (row or {}).items() if k.startswith(MOTION_PREFIX)}


__all__ = ["EASES", "ANIMATABLE", "KeySpec", "Keyframe", "FrameTable", "key_spec", "validate_timeline",
           "validate_react", "require_soundtrack", "animated_keys", "animated_layers", "base_values", "track",
           "value_at", "finalise", "frame_values", "row_parts", "motion_row", "MOTION_PREFIX"]
