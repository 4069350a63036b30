"""The strict config: defaults documented by default.yaml, presets, `--set` YAML overrides, one-line
errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    Config,
    ConfigError,
    DreamCfg,
    config_hash,
    dump_yaml,
    load_config,
    parse_override,
    preset_names,
    to_dict,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = preset_names()


def err(overrides=(), config="default") -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(config, list(overrides))
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------- defaults


def test_default_yaml_is_the_builtin_defaults():
    assert load_config("default") == Config()
    assert load_config(None) == Config()


def test_default_yaml_documents_every_key():
    """Not just equal after loading: the file spells out every key with its default value."""
    raw = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    assert raw == to_dict(Config())


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, Config)
    assert load_config(str(CONFIG_DIR / f"{name}.yaml")) == cfg  # by name or by path


def test_classic_googlenet_preset():
    cfg = load_config("classic_googlenet")
    assert cfg.model.name == "googlenet"
    assert cfg.dream.layers == ("inception4c",)
    assert cfg.dream.octaves == 4 and cfg.dream.iterations == 10
    # keys the preset does not give fall back to the defaults
    assert cfg.dream.tile == Config().dream.tile and cfg.encode == Config().encode


def test_presets_exist():
    assert "default" in PRESETS and "classic_googlenet" in PRESETS


# --------------------------------------------------------------------------------------- overrides


def test_set_parses_values_as_yaml():
    cfg = load_config("default", ["dream.octaves=3", "dream.octave_scale=2", "spherical.wrap=false",
                                  "input.max_side=256", "dream.step_size=0.5", "model.weights=/x/w.pth"])
    assert cfg.dream.octaves == 3
    assert cfg.dream.octave_scale == 2.0 and isinstance(cfg.dream.octave_scale, float)
    assert cfg.spherical.wrap is False
    assert cfg.input.max_side == 256
    assert cfg.dream.step_size == 0.5
    assert cfg.model.weights == "/x/w.pth"
    # everything else untouched
    assert replace(cfg, dream=Config().dream, spherical=Config().spherical, input=Config().input,
                   model=Config().model) == Config()


def test_set_layers_list_becomes_tuple():
    cfg = load_config("default", ["dream.layers=[block6,block9]"])
    assert cfg.dream.layers == ("block6", "block9")
    assert isinstance(cfg.dream.layers, tuple)


def test_set_layers_mapping_form():
    cfg = load_config("default", ["dream.layers={block6: 0.5, block9: 1}"])
    layers = cfg.dream.layers
    assert isinstance(layers, Mapping)
    assert dict(layers) == {"block6": 0.5, "block9": 1.0}
    assert all(isinstance(v, float) for v in layers.values())
    with pytest.raises(TypeError):
        layers["block6"] = 2.0  # frozen all the way down


def test_set_layers_replaces_a_preset_mapping_instead_of_merging(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dream:\n  layers: {block6: 0.5, block9: 1}\n")
    cfg = load_config(str(p), ["dream.layers={block3: 2}"])
    assert dict(cfg.dream.layers) == {"block3": 2.0}


def test_set_channels_mapping():
    cfg = load_config("default", ["dream.channels={block9: [1, 5]}"])
    assert dict(cfg.dream.channels) == {"block9": (1, 5)}


def test_later_set_wins_and_merges_with_the_preset():
    cfg = load_config("classic_googlenet", ["dream.octaves=2", "dream.octaves=5", "dream.seed=9"])
    assert cfg.dream.octaves == 5 and cfg.dream.seed == 9
    assert cfg.model.name == "googlenet" and cfg.dream.layers == ("inception4c",)


def test_parse_override():
    assert parse_override("a.b.c=1") == (["a", "b", "c"], 1)
    assert parse_override("dream.layers=[a, b]") == (["dream", "layers"], ["a", "b"])
    assert parse_override("model.weights=a=b.pth") == (["model", "weights"], "a=b.pth")
    assert parse_override("model.weights=") == (["model", "weights"], None)


def test_user_file_with_only_some_keys(tmp_path):
    p = tmp_path / "mine.yml"
    p.write_text("dream:\n  iterations: 3\nprojection: flat\n")
    cfg = load_config(str(p))
    assert cfg.dream.iterations == 3 and cfg.projection == "flat"
    assert cfg.dream.octaves == 4 and cfg.model.name == "efficientnet_lite0"


def test_empty_file_is_all_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_config(str(p)) == Config()


def test_dumped_config_loads_back_to_the_same_config(tmp_path):
    cfg = load_config("default", ["dream.layers={block6: 0.5, block9: 1}", "dream.channels={block9: [1, 5]}",
                                  "input.max_side=64", "projection=flat"])
    p = tmp_path / "dump.yaml"
    p.write_text(dump_yaml(cfg))
    again = load_config(str(p))
    assert to_dict(again) == to_dict(cfg)
    assert config_hash(again) == config_hash(cfg)


def test_config_hash_exclude():
    a = load_config("default", ["dream.seed=1"])
    b = load_config("default", ["dream.seed=2"])
    assert config_hash(a) != config_hash(b)
    assert config_hash(a, exclude=["dream.seed"]) == config_hash(b, exclude=["dream.seed"])


# ------------------------------------------------------------------------------------------ errors


def test_out_of_range_octaves():
    assert err(["dream.octaves=0"]) == "dream.octaves: must be >= 1, got 0"


@pytest.mark.parametrize("override, expected", [
    ("dream.octaves=13", "dream.octaves: must be <= 12, got 13"),
    ("dream.octave_scale=1", "dream.octave_scale: must be > 1.0, got 1.0"),
    ("dream.step_size=0", "dream.step_size: must be >= 0.001, got 0.0"),
    ("dream.step_size=1.0e-300", "dream.step_size: must be >= 0.001, got 1e-300"),  # its square underflowed
    ("dream.seed=-1", "dream.seed: must be >= 0, got -1"),
    ("temporal.blend=1.5", "temporal.blend: must be <= 1.0, got 1.5"),
    ("input.max_side=8", "input.max_side: must be >= 16, got 8"),
    ("temporal.flow_max_side=4", "temporal.flow_max_side: must be >= 16, got 4"),
    ("dream.seed=18446744073709551615", "dream.seed: must be <= 4294967295, got 18446744073709551615"),
])
def test_out_of_range(override, expected):
    assert err([override]) == expected


@pytest.mark.parametrize("override, key", [
    ("dream.step_size=.nan", "dream.step_size"), ("temporal.blend=.nan", "temporal.blend"),
    ("video.start=.nan", "video.start"), ("dream.octave_scale=.inf", "dream.octave_scale"),
    ("dream.step_size=1.0e+999", "dream.step_size"), ("spherical.pole_exponent=-.inf", "spherical.pole_exponent"),
    ("dream.layers={block8: .nan}", "dream.layers.block8"),
    # YAML reads a 400-digit number as an int, which no float holds: float() of it raises OverflowError
    ("dream.step_size=" + "9" * 400, "dream.step_size"), ("animate.seconds=" + "9" * 400, "animate.seconds"),
    ("timeline=[{at: 1, set: {dream.step_size: " + "9" * 400 + "}}]", "timeline[0].set.dream.step_size"),
])
def test_nan_and_infinity_are_refused(override, key):
    message = err([override])
    assert message.startswith(f"{key}: must be a finite number") and len(message) < 120, message


def test_a_timeline_time_too_large_for_a_float_is_refused():
    assert err(["timeline=[{at: " + "9" * 400 + ", set: {dream.step_size: 2}}]"]).startswith(
        "timeline[0].at: must be a finite number >= 0")


def test_yaml_nested_too_deeply_for_the_parser_is_a_config_error(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("dream: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(str(deep))
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config("default", ["dream.layers=" + "[" * 5000 + "]" * 5000])


@pytest.mark.parametrize("override, expected", [
    ("dream.octaves=abc", "dream.octaves: must be an integer, got 'abc'"),
    ("dream.octaves=2.5", "dream.octaves: must be an integer, got 2.5"),
    ("dream.octaves=true", "dream.octaves: must be an integer, got True"),
    ("dream.octaves=", "dream.octaves: must be an integer, got None"),
    ("dream.step_size=fast", "dream.step_size: must be a number, got 'fast'"),
    ("spherical.wrap=1", "spherical.wrap: must be true or false, got 1"),
    ("model.name=3", "model.name: must be a string, got int"),
    ("dream.channels={block9: []}", "dream.channels.block9: must be a non-empty list, got list"),
    ("dream.channels={block9: [a]}", "dream.channels.block9[0]: must be an integer, got 'a'"),
])
def test_wrong_type(override, expected):
    assert err([override]) == expected


def test_wrong_type_for_layers_names_the_key():
    for value in ("3", "[]", "{}", "[1, 2]"):
        msg = err([f"dream.layers={value}"])
        assert msg.startswith("dream.layers"), msg


@pytest.mark.parametrize("override, key, choices", [
    ("dream.device=tpu", "dream.device", "auto, cpu, cuda"),
    ("projection=cube", "projection", "auto, flat, equirect"),
    ("stereo=sbs", "stereo", "auto, mono, top-bottom, left-right"),
    ("temporal.flow=lk", "temporal.flow", "dis, farneback, raft"),
    ("temporal.flow_preset=slow", "temporal.flow_preset", "ultrafast, fast, medium"),
    ("encode.codec=vp9", "encode.codec", "h264, hevc"),
])
def test_bad_choice(override, key, choices):
    value = override.split("=", 1)[1]
    assert err([override]) == f"{key}: must be one of {choices}, got {value!r}"


@pytest.mark.parametrize("override, expected_start", [
    ("dream.octavez=3", "dream.octavez: unknown key (valid: layers, channels, guide, octaves"),
    ("colour=red", "colour: unknown key (valid: model, dream, input"),
    ("dream=3", "dream: must be a mapping, got int"),
    ("dream.octaves.x=1", "dream.octaves: must be an integer"),
])
def test_unknown_key_or_bad_nesting(override, expected_start):
    msg = err([override])
    assert msg.startswith(expected_start), msg


def test_unknown_key_lists_valid_keys():
    msg = err(["dream.octavez=3"])
    for f in DreamCfg.__dataclass_fields__:
        assert f in msg


def test_set_without_equals():
    assert err(["dream.octaves"]) == "--set 'dream.octaves': expected key=value, e.g. dream.octaves=3"


def test_set_invalid_yaml():
    msg = err(["dream.layers=[block6"])
    assert msg.startswith("--set dream.layers: value '[block6' is not valid YAML"), msg


def test_non_mapping_file(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    assert err(config=str(p)) == f"{p}: the top level must be a mapping of keys"


def test_section_not_a_mapping_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("dream: [1, 2]\n")
    assert err(config=str(p)) == "dream: must be a mapping, got list"


def test_unreadable_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("dream: {octaves: [1,\n")
    msg = err(config=str(p))
    assert msg.startswith(f"{p}: not readable YAML"), msg


def test_missing_config_file(tmp_path):
    p = tmp_path / "nope.yaml"
    assert err(config=str(p)) == f"config file not found: {p}"


def test_missing_preset_lists_presets():
    msg = err(config="no_such_preset")
    assert msg == f"no preset or config file 'no_such_preset'; presets: {', '.join(PRESETS)}"


def test_config_error_is_input_error():
    from stages.common import InputError

    assert issubclass(ConfigError, InputError)
