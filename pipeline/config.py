"""Strict, typed, frozen configuration.

A config is the built-in defaults, then a YAML preset or file (`-c`), then `--set key=value` overrides
(values parsed as YAML). Every key is checked (unknown key, type, range, choice) before any model loads
or any file is written; a `ConfigError` names the dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import typing
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.music.timeline import validate_react, validate_timeline
from pipeline.schema import (
    MIN_TILE,
    SEED_MAX,
    AnimateCfg,
    CheckpointCfg,
    Config,
    DreamCfg,
    EncodeCfg,
    InputCfg,
    ModelCfg,
    MotionCfg,
    ReactCfg,
    ScaleCfg,
    SphericalCfg,
    TemporalCfg,
    VideoCfg,
    build,
    key_name,
)
from stages.common import write_atomic

# The shape lives in pipeline.schema; these names are re-exported so callers import configs from one place.
__all__ = ["MIN_TILE", "SEED_MAX", "AnimateCfg", "CheckpointCfg", "Config", "DreamCfg", "EncodeCfg", "InputCfg",
           "ModelCfg", "MotionCfg", "ReactCfg", "ScaleCfg", "SphericalCfg", "TemporalCfg", "VideoCfg", "build",
           "config_hash", "dump_yaml", "from_dict", "load_config", "parse_override", "preset_names", "preset_path",
           "render_hash", "to_dict"]

PRESETS = importlib.resources.files("configs")  # the YAML presets ship as package data


# ------------------------------------------------------------------------------------------- loading

def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in PRESETS.iterdir() if p.name.endswith(".yaml"))


def preset_path(name_or_path: str):
    """A YAML file given by path, else the packaged preset of that name (a Traversable)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    named = PRESETS / f"{name_or_path}.yaml"
    if "/" in name_or_path or not named.is_file():
        raise ConfigError(f"no preset or config file {name_or_path!r}; presets: {', '.join(preset_names())}")
    return named


def _read_yaml(p) -> dict:
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not readable YAML ({type(e).__name__})") from e
    except RecursionError as e:  # PyYAML parses by recursion: a few thousand nested brackets end it
        raise ConfigError(f"{p}: not readable YAML (nested too deeply)") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys")
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "layers" \
            else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. dream.octaves=3")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"--set {key}: value {raw[:40]!r} is not valid YAML") from e
    return key.strip().split("."), value


def load_config(config: str | None = "default", overrides: typing.Sequence[str] = ()) -> Config:
    raw: dict = _read_yaml(preset_path(config)) if config else {}
    for item in overrides:
        keys, value = parse_override(item)
        patch: dict = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            patch = {k: patch}
        raw = _merge(raw, patch)
    return from_dict(raw)


def from_dict(raw: dict) -> Config:
    """A config from its mapping form (a preset, a file, `to_dict`), every key checked."""
    raw = dict(raw)
    timeline = raw.pop("timeline", None)
    cfg = build(Config, raw, "")
    if 0 < cfg.dream.tile < MIN_TILE:
        raise ConfigError(f"dream.tile: must be 0 (never tile) or >= {MIN_TILE}, got {cfg.dream.tile}")
    validate_react(cfg.react, cfg)
    return dataclasses.replace(cfg, timeline=validate_timeline(timeline, cfg))


# ------------------------------------------------------------------------------------------- output

def sidecar(output: Path) -> Path:
    """Where a render writes its resolved config: beside OUTPUT, as OUTPUT.yaml (`-c` takes it back)."""
    return output.with_name(output.name + ".yaml")


def write_sidecar(output: Path, cfg: Config, notes: dict[str, object], *, tmp_dir: Path | None = None) -> Path:
    """OUTPUT.yaml: the resolved config, then `notes` (where it came from) as comments. A file name that is not
    UTF-8 (Linux names are bytes) goes in as its own bytes, as the shell shows it."""
    text = dump_yaml(cfg) + "".join(f"# {key}: {value}\n" for key, value in notes.items())
    path = sidecar(output)
    write_atomic(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")), tmp_dir=tmp_dir)
    return path


def to_dict(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        return {key_name(f): to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(x) for x in cfg]
    if isinstance(cfg, typing.Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# Where a render runs, not what it makes: changing these never invalidates a resume.
RESOURCE_KEYS = ("scale.workers", "scale.address", "scale.gpus_per_worker", "scale.cpus_per_worker")


# What only `deepdream animate` reads: a video's frames do not depend on it (and a video run started before
# these sections existed keeps its hash).
ANIMATION_KEYS = ("animate", "motion")


def render_hash(cfg: Config, *, animation: bool = False) -> str:
    """The hash a run directory is keyed by: everything that changes the output's bytes."""
    exclude = RESOURCE_KEYS if cfg.scale.backend != "none" else ("scale",)
    return config_hash(cfg, exclude=exclude if animation else (*exclude, *ANIMATION_KEYS))


def config_hash(cfg: Config, *, exclude: typing.Sequence[str] = ()) -> str:
    d = to_dict(cfg)
    for dotted in exclude:
        parts = dotted.split(".")
        node = d
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1], None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
