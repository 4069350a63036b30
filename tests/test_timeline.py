"""Keyframed parameters and the react factor: validation (one line naming the entry), interpolation
(linear, smooth, step, holds, integer rounding, clamping), the per-frame table, its JSON and its hash."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from pipeline.config import Config, ConfigError, DreamCfg, ReactCfg, build, to_dict
from pipeline.music import timeline as T
from stages.media.audio import frame_times

CFG = Config(dream=DreamCfg(step_size=1.5, iterations=10))
OFF = ReactCfg()


def kfs(*entries) -> tuple[T.Keyframe, ...]:
    return T.validate_timeline(list(entries), CFG)


def column(keyframes, key, times, react=OFF, envelope=None, **kw) -> list:
    return list(T.frame_values(keyframes, react, envelope, times, cfg=CFG, **kw).values[key])


def err(raw, **kw) -> str:
    with pytest.raises(ConfigError) as ei:
        T.validate_timeline(raw, CFG, **kw)
    assert "\n" not in str(ei.value)
    return str(ei.value)


# ------------------------------------------------------------------------------------------- interpolation


def test_linear_smooth_and_step_between_two_keyframes():
    t = [0.0, 0.25, 0.5, 0.75, 1.0]
    for ease, mid in (("linear", [1.0, 1.5, 2.0, 2.5, 3.0]),
                      ("smooth", [1.0, 1.3125, 2.0, 2.6875, 3.0]),
                      ("step", [1.0, 1.0, 1.0, 1.0, 3.0])):
        got = column(kfs({"at": 0, "set": {"dream.step_size": 1.0}, "ease": ease},
                         {"at": 1, "set": {"dream.step_size": 3.0}}), "dream.step_size", t)
        assert got == pytest.approx(mid), ease


def test_base_value_before_the_first_keyframe_and_last_value_held_after():
    tl = kfs({"at": 1.0, "set": {"dream.step_size": 4.0}}, {"at": 2.0, "set": {"dream.step_size": 2.0}})
    assert column(tl, "dream.step_size", [0.0, 0.99, 1.0, 1.5, 2.0, 9.0]) == [1.5, 1.5, 4.0, 3.0, 2.0, 2.0]


def test_each_key_follows_only_the_keyframes_that_set_it():
    tl = kfs({"at": 0, "set": {"dream.step_size": 1.0}},
             {"at": 1, "set": {"temporal.blend": 0.2}},
             {"at": 2, "set": {"dream.step_size": 3.0, "temporal.blend": 0.6}})
    table = T.frame_values(tl, OFF, None, [0.0, 1.0, 1.5, 2.0], cfg=CFG)
    assert table.keys == ("dream.step_size", "temporal.blend")
    assert list(table.values["dream.step_size"]) == [1.0, 2.0, 2.5, 3.0]  # keyframe 1 does not pin it
    assert list(table.values["temporal.blend"]) == pytest.approx([0.9, 0.2, 0.4, 0.6])  # config's 0.9 first


def test_integer_keys_round_half_up_after_interpolation():
    tl = kfs({"at": 0, "set": {"dream.iterations": 0}}, {"at": 1, "set": {"dream.iterations": 10}})
    got = column(tl, "dream.iterations", [0.0, 0.05, 0.15, 0.25, 0.35, 0.44, 1.0])
    assert got == [0, 1, 2, 3, 4, 4, 10] and all(type(v) is int for v in got)


def test_ramp_over_three_seconds_is_rank_correlated_with_time():
    times = frame_times(range(120), Fraction(1001, 30000))  # 4 s at 29.97 fps
    tl = kfs({"at": 0, "set": {"dream.step_size": 0.3}}, {"at": 3, "set": {"dream.step_size": 3.0}})
    v = np.array(column(tl, "dream.step_size", times))
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    assert np.corrcoef(rank(times[times <= 3]), rank(v[times <= 3]))[0, 1] >= 0.99
    assert v[0] == 0.3 and v[-1] == 3.0 and np.all(np.diff(v) >= 0)


# ------------------------------------------------------------------------------------------- reactivity


def test_react_multiplies_the_timeline_value():
    tl = kfs({"at": 0, "set": {"dream.step_size": 1.0}}, {"at": 1, "set": {"dream.step_size": 2.0}})
    env = np.array([0.0, 1.0, 0.5])
    react = ReactCfg(amount=1.5)
    assert column(tl, "dream.step_size", [0.0, 0.5, 1.0], react, env) == pytest.approx([1.0, 1.5 * 2.5, 2.0 * 1.75])
    assert column(tl, "dream.step_size", [0.0, 0.5, 1.0], ReactCfg(amount=0.0), env) == [1.0, 1.5, 2.0]


def test_react_without_a_timeline_uses_the_config_value_and_clamps_to_the_range():
    env = np.array([0.0, 0.5, 1.0])
    got = column((), "dream.step_size", [0, 1, 2], ReactCfg(amount=1.0), env)
    assert got == [1.5, 2.25, 3.0]
    it = column((), "dream.iterations", [0, 1, 2], ReactCfg(param="dream.iterations", amount=0.25), env)
    assert it == [10, 11, 13]  # 11.25 → 11, 12.5 → 13: rounded half up after the factor
    big = kfs({"at": 0, "set": {"dream.step_size": 40.0}})
    assert column(big, "dream.step_size", [0, 1, 2], ReactCfg(amount=1.0), env) == [40.0, 60.0, 64.0]  # hi = 64


def test_react_needs_an_envelope_per_frame_in_range():
    for env in (None, np.array([0.5]), np.array([0.5, 1.5])):
        with pytest.raises(ValueError):
            T.frame_values((), ReactCfg(amount=1.0), env, [0.0, 1.0], cfg=CFG)


def test_layer_weights_animate_from_the_resolved_base():
    tl = kfs({"at": 0, "set": {"dream.layers.block8": 0.0}}, {"at": 2, "set": {"dream.layers.block8": 1.0}})
    layers = {"block9": 1.0}
    table = T.frame_values(tl, ReactCfg(param="dream.layers.block9", amount=1.0), np.array([1.0, 0.0]), [1.0, 2.0],
                           cfg=CFG, layers=layers)
    assert table.row(0) == {"dream.layers.block8": 0.5, "dream.layers.block9": 2.0}
    assert T.animated_layers(tl, ReactCfg(param="dream.layers.block9", amount=1.0)) == ("block8", "block9")
    assert T.row_parts({"dream.step_size": 2.0, "temporal.blend": 0.5, "dream.layers.block8": 0.5}) == \
        ({"step_size": 2.0}, {"blend": 0.5}, {"block8": 0.5})


# ------------------------------------------------------------------------------------------- table


def test_table_json_round_trips_and_the_hash_sees_every_value():
    tl = kfs({"at": 0, "set": {"dream.step_size": 0.3, "dream.iterations": 4}},
             {"at": 3, "set": {"dream.step_size": 3.0, "dream.iterations": 12}, "ease": "smooth"})
    times = frame_times(range(100), Fraction(1001, 30000))
    env = np.linspace(0, 1, 100)
    table = T.frame_values(tl, ReactCfg(amount=0.5), env, times, cfg=CFG)
    back = T.FrameTable.from_json(table.to_json())
    assert back == table and back.digest() == table.digest() and len(back) == 100
    assert back.row_at(times[42]) == table.row(42)
    with pytest.raises(KeyError):
        back.row_at(times[42] + 1e-6)
    assert T.frame_values(tl, ReactCfg(amount=0.5), env, times, cfg=CFG).digest() == table.digest()
    bumped = env.copy()
    bumped[57] -= 1e-9  # one frame's envelope, a little
    assert T.frame_values(tl, ReactCfg(amount=0.5), bumped, times, cfg=CFG).digest() != table.digest()
    col = list(table.values["dream.step_size"])
    col[99] = float(np.nextafter(col[99], 0))  # one ulp of one stored value
    ulp = T.FrameTable(table.keys, table.times, {**table.values, "dream.step_size": tuple(col)})
    assert ulp.digest() != table.digest() and T.FrameTable.from_json(ulp.to_json()) == ulp
    shifted = kfs({"at": 0, "set": {"dream.step_size": 0.3, "dream.iterations": 4}},
                  {"at": 3, "set": {"dream.step_size": 3.0, "dream.iterations": 13}, "ease": "smooth"})
    assert T.frame_values(shifted, ReactCfg(amount=0.5), env, times, cfg=CFG).digest() != table.digest()
    assert T.frame_values(tl, ReactCfg(amount=0.5), env, times[:-1].tolist() + [times[-1] + 1e-9],
                          cfg=CFG).digest() != table.digest()


def test_damaged_table_is_refused():
    good = T.frame_values(kfs({"at": 0, "set": {"dream.step_size": 1.0}}), OFF, None, [0.0, 1.0], cfg=CFG)
    for text in ("", "[]", good.to_json().replace('"version":1', '"version":2'),
                 good.to_json().replace("[0.0,1.0]", "[0.0]")):
        with pytest.raises(ValueError):
            T.FrameTable.from_json(text)


def test_keyframes_dump_as_the_yaml_they_came_from():
    raw = [{"at": 0.0, "set": {"dream.step_size": 0.3}, "ease": "smooth"},
           {"at": 2.5, "set": {"dream.layers.block8": 0.5, "dream.iterations": 3}, "ease": "linear"}]
    assert to_dict(list(T.validate_timeline(raw, CFG))) == raw


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("raw, message", [
    ({"at": 0}, "timeline: must be a list of keyframes {at, set, ease}, got dict"),
    ([{"at": 0, "set": {"dream.step_size": 1}}, {"at": 1, "set": {"dream.stepsize": 2}}],
     "timeline[1].set.dream.stepsize: unknown key (animatable: "),
    ([{"at": -1, "set": {"dream.step_size": 1}}], "timeline[0].at: must be a finite number >= 0, got -1"),
    ([{"at": float("nan"), "set": {"dream.step_size": 1}}], "timeline[0].at: must be a finite number >= 0, got nan"),
    ([{"at": True, "set": {"dream.step_size": 1}}], "timeline[0].at: must be a finite number >= 0, got True"),
    ([{"set": {"dream.step_size": 1}}], "timeline[0].at: missing"),
    ([{"at": 0, "set": {"dream.step_size": 1}}, {"at": 3.5, "set": {"dream.step_size": 1}},
      {"at": 2, "set": {"dream.step_size": 1}}], "timeline[2].at: times must increase (2.0 after 3.5)"),
    ([{"at": 1, "set": {"dream.step_size": 1}}, {"at": 1, "set": {"dream.step_size": 2}}],
     "timeline[1].at: times must increase (1.0 after 1.0)"),
    ([{"at": 0, "set": {"dream.step_size": 1}, "ease": "cubic"}],
     "timeline[0].ease: must be one of linear, smooth, step, got 'cubic'"),
    ([{"at": 0, "set": {"dream.step_size": "big"}}], "timeline[0].set.dream.step_size: must be a number, got 'big'"),
    ([{"at": 0, "set": {"dream.step_size": None}}], "timeline[0].set.dream.step_size: must be a number, got None"),
    ([{"at": 0, "set": {"dream.step_size": 0}}], "timeline[0].set.dream.step_size: must be >= 0.001, got 0"),
    ([{"at": 0, "set": {"dream.step_size": float("inf")}}],
     "timeline[0].set.dream.step_size: must be a finite number, got inf"),
    ([{"at": 0, "set": {"temporal.blend": 1.5}}], "timeline[0].set.temporal.blend: must be <= 1.0, got 1.5"),
    ([{"at": 0, "set": {"dream.iterations": 2.5}}], "timeline[0].set.dream.iterations: must be an integer, got 2.5"),
    ([{"at": 0, "set": {"dream.seed": 3}}], "timeline[0].set.dream.seed: cannot be animated"),
    ([{"at": 0, "set": {"dream.device": "cpu"}}], "timeline[0].set.dream.device: unknown key"),
    ([{"at": 0, "set": {"dream.layers.block8": "x"}}], "timeline[0].set.dream.layers.block8: must be a number"),
    ([{"at": 0, "set": {}}], "timeline[0].set: must be a non-empty mapping of dotted keys to numbers, got dict"),
    ([{"at": 0}], "timeline[0].set: must be a non-empty mapping of dotted keys to numbers, got null"),
    ([{"at": 0, "set": {"dream.step_size": 1}, "sett": 1}], "timeline[0].sett: unknown key (valid: at, set, ease)"),
    ([{"at": 0, "set": {"dream": {"step_size": 1}, "dream.step_size": 2}}],
     "timeline[0].set.dream.step_size: given twice"),
    (["at 0"], "timeline[0]: must be a mapping with at, set and optional ease, got str"),
])
def test_validation_errors_name_the_entry(raw, message):
    assert err(raw).startswith(message)


def test_unknown_key_suggests_the_close_one():
    assert err([{"at": 0, "set": {"dream.stepsize": 2}}]).endswith("did you mean dream.step_size?")


def test_nested_set_and_empty_timeline_are_accepted():
    assert T.validate_timeline([{"at": 0, "set": {"dream": {"step_size": 2}}}], CFG)[0].set == {"dream.step_size": 2.0}
    assert T.validate_timeline(None, CFG) == () == T.validate_timeline([], CFG)


def test_layer_keys_are_checked_against_the_model_when_its_layers_are_given():
    raw = [{"at": 0, "set": {"dream.layers.block99": 1.0}}]
    assert T.validate_timeline(raw, CFG)  # without the layer table, left to the caller (animated_layers)
    assert err(raw, layer_names=["block8", "block9"]) == (
        "timeline[0].set.dream.layers.block99: unknown layer 'block99' for efficientnet_lite0; "
        "valid layers: block8, block9")


def test_react_validation(tmp_path):
    assert build(ReactCfg, {}, "react.") == ReactCfg()  # the proposed config section builds strictly
    with pytest.raises(ConfigError, match=r"^react\.amount: must be >= 0\.0, got -1.0$"):
        build(ReactCfg, {"amount": -1}, "react.")
    with pytest.raises(ConfigError, match=r"^react\.feature: must be one of onset, rms, beat, got 'kick'$"):
        build(ReactCfg, {"feature": "kick"}, "react.")
    with pytest.raises(ConfigError, match=r"^react\.param: unknown key .*did you mean dream\.step_size\?$"):
        T.validate_react(ReactCfg(param="dream.stepsize"), CFG)
    with pytest.raises(ConfigError, match=r"^react\.param: cannot be animated"):
        T.validate_react(ReactCfg(param="dream.seed"), CFG)
    with pytest.raises(ConfigError, match=r"^react\.param: unknown layer 'block99'"):
        T.validate_react(ReactCfg(param="dream.layers.block99"), CFG, layer_names=["block9"])
    with pytest.raises(ConfigError, match=r"^react\.audio: no such file: .*song\.mp3$"):
        T.validate_react(ReactCfg(audio=str(tmp_path / "song.mp3")), CFG)
    T.validate_react(ReactCfg(param="temporal.iterations", amount=1.0), CFG)


def test_reacting_needs_a_soundtrack():
    with pytest.raises(ConfigError) as ei:
        T.require_soundtrack(ReactCfg(amount=1.5), has_audio=False, input_name="mute.mp4")
    assert str(ei.value) == ("react.amount: 1.5 needs a soundtrack, but mute.mp4 has none; "
                             "set react.audio to an audio file or react.amount to 0")
    T.require_soundtrack(ReactCfg(amount=0.0), has_audio=False, input_name="mute.mp4")
    T.require_soundtrack(ReactCfg(amount=1.5, audio="song.wav"), has_audio=False, input_name="mute.mp4")
    T.require_soundtrack(ReactCfg(amount=1.5), has_audio=True, input_name="clip.mp4")


def test_config_fields_are_the_ranges_the_timeline_enforces():
    """Ranges come from the dataclass metadata, so a changed range in config.py changes the timeline's."""
    meta = {f.name: f.metadata for f in dataclasses.fields(DreamCfg)}
    assert T.ANIMATABLE["dream.step_size"] == T.KeySpec(float, meta["step_size"]["lo"], meta["step_size"]["hi"], False)
    assert "dream.seed" not in T.ANIMATABLE and "dream.tile" not in T.ANIMATABLE
    assert replace(CFG, dream=replace(CFG.dream, step_size=2.0)).dream.step_size == 2.0
