"""The dream engine's lifecycle: resolves device and layers, loads the model once, dreams frames.

Per-frame state (seed, schedule) is passed in; the engine holds only the model, the device, the prepared
objective and the config's base schedule, which the render's plan specialises per frame.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config, to_dict
from pipeline.errors import ConfigError, InputError
from pipeline.music.timeline import animated_layers, validate_react, validate_timeline
from stages.dream import ascent as D
from stages.dream import zoo
from stages.media.still import read_still, resize_max_side
from stages.vr.stereo import dream_stereo

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("dream.device: cuda was asked for but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_layers(cfg: Config) -> dict[str, float]:
    layers = cfg.dream.layers
    if layers is None:
        return {name: 1.0 for name in zoo.DEFAULT_LAYERS[cfg.model.name]}
    if isinstance(layers, tuple):
        return {name: 1.0 for name in layers}
    return dict(layers)


def check_config(cfg: Config) -> None:
    """Everything about the model that can be checked without loading weights."""
    try:
        zoo.check_model_name(cfg.model.name)
    except InputError as e:
        raise ConfigError(f"model.name: {e}") from e
    layers = resolve_layers(cfg)
    table = {li.name: li for li in zoo.layer_table(cfg.model.name)}
    for name in list(layers) + list(cfg.dream.channels or {}):
        if name not in table:
            raise ConfigError(f"dream.layers: unknown layer {name!r} for {cfg.model.name}; "
                              f"valid layers: {', '.join(table)}")
    for name, chans in (cfg.dream.channels or {}).items():
        bad = [c for c in chans if not 0 <= c < table[name].channels]
        if bad:
            raise ConfigError(f"dream.channels.{name}: channel {bad[0]} out of range 0..{table[name].channels - 1}")
    names = list(table)
    validate_timeline(to_dict(list(cfg.timeline)), cfg, layer_names=names)  # layer keys, now the model is known
    validate_react(cfg.react, cfg, layer_names=names)
    if cfg.model.weights and not Path(cfg.model.weights).is_file():
        raise ConfigError(f"model.weights: no such file: {cfg.model.weights}")
    if cfg.dream.guide and not Path(cfg.dream.guide).is_file():
        raise ConfigError(f"dream.guide: no such file: {cfg.dream.guide}")
    resolve_device(cfg.dream.device)


class DreamEngine:
    def __init__(self, cfg: Config) -> None:
        check_config(cfg)  # cheap (the layer table is cached); the engine may be built without the CLI
        self.cfg = cfg
        self.device = resolve_device(cfg.dream.device)
        if self.device.type == "cuda":
            # Resumed renders must be bit-identical: no autotuned or atomic-add kernels.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        t0 = time.perf_counter()
        net = zoo.build_model(cfg.model.name, cfg.model.weights)
        # channels_last on the CPU too: oneDNN's depthwise and pointwise kernels prefer it.
        self.net = net.to(self.device, memory_format=torch.channels_last)
        self.amp = D.amp_dtype_for(self.device)
        layers = resolve_layers(cfg)
        guide = {}
        if cfg.dream.guide:
            try:
                still = read_still(Path(cfg.dream.guide))
            except InputError as e:
                raise ConfigError(f"dream.guide: {e}") from e
            g = D.to_tensor(resize_max_side(still.rgb, 224), self.device)
            guide = D.guide_features(g, self.net, list(layers))
        channels = {k: tuple(v) for k, v in (cfg.dream.channels or {}).items()}
        # Layers a timeline or the react param animates are in the objective from the start (weight 0 until
        # animated): the network then runs as deep as the deepest of them on every frame.
        animated = {name: 0.0 for name in animated_layers(cfg.timeline, cfg.react) if name not in layers}
        self.objective = D.Objective({**layers, **animated}, channels, guide)
        d = cfg.dream
        self.schedule = D.Schedule(octaves=d.octaves, octave_scale=d.octave_scale, iterations=d.iterations,
                                   step_size=d.step_size, jitter=d.jitter, tile=d.tile,
                                   tile_batch_px=self._tile_batch_px(d.tile))
        log.info("model %s on %s, layers %s (%.1f s)", cfg.model.name, self.device,
                 ", ".join(f"{k}:{v:g}" for k, v in layers.items()), time.perf_counter() - t0)

    def _tile_batch_px(self, tile: int) -> int:
        """Pixels of tiles stacked into one forward pass on CUDA (0 = one tile at a time, on the CPU).

        A small network is latency-bound on a big GPU: measured on an H200, one 512² tile per forward made
        a 1080p step 14x slower than untiled, four per forward 4.6x. Stack as many as half the free memory
        holds (about 1.5 KB per pixel under bf16 autocast, measured peak x2), at most 32.
        """
        if self.device.type != "cuda" or tile <= 0:
            return 0
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(tile * tile, min(free * 0.5 / 1500, 32 * tile * tile)))

    def seed_for(self, frame_index: int) -> int:
        # Every frame's randomness comes from seed + index: a resumed render repeats it exactly.
        return self.cfg.dream.seed + frame_index

    def generator(self, frame_index: int) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed_for(frame_index))

    def objective_for(self, weights: dict[str, float] | None) -> D.Objective:
        """The objective with a frame's animated layer weights."""
        if not weights:
            return self.objective
        return replace(self.objective, layers={**self.objective.layers, **weights})

    def _hold(self, hold, n: int, shape) -> torch.Tensor | None:
        if hold is None:
            return None
        if not isinstance(hold, torch.Tensor):
            hold = torch.from_numpy(np.ascontiguousarray(hold, dtype=np.float32))
        return hold.to(self.device, torch.float32).reshape(n, 1, *shape)

    def dream_stereo(self, left: np.ndarray, right: np.ndarray, disparity, *, frame_index: int,
                     schedule: D.Schedule, left_init: np.ndarray | None = None, right_init: np.ndarray | None = None,
                     hold: np.ndarray | None = None, weights: dict[str, float] | None = None, on_step=None):
        """One dream for both eyes, carried from the left eye by disparity (`stages.vr.stereo.dream_stereo`)."""
        return dream_stereo(left, right, disparity, self.net, self.objective_for(weights), schedule,
                            self.seed_for(frame_index),
                            left_init=left_init, right_init=right_init,
                            left_hold=self._hold(hold, 1, left.shape[:2]), device=self.device, amp_dtype=self.amp,
                            on_step=on_step)

    def dream(self, rgb: np.ndarray, *, frame_index: int = 0, schedule: D.Schedule | None = None,
              hold: np.ndarray | None = None, weights: dict[str, float] | None = None, on_step=None) -> np.ndarray:
        """rgb: H×W×3 (uint8, or float32 0..255) or N×H×W×3 (a stereo pair) → float32 0..255, same shape.

        `schedule` defaults to the config's (flat frame); the render's plan passes the frame's own.
        `hold`: H×W (or N×H×W) in 0..1, the temporal term of a continued frame (see `dream_octaves`).
        `weights`: this frame's animated layer weights (a timeline or the react param).
        """
        batch = rgb.ndim == 4
        frames = rgb if batch else rgb[None]
        x = torch.cat([D.to_tensor(f, self.device) for f in frames])
        y = self._dream(x, frame_index, schedule, hold, weights, on_step)
        out = np.stack([D.to_array(y[i:i + 1]) for i in range(y.shape[0])])
        return out if batch else out[0]

    def dream_tensor(self, x: torch.Tensor, *, frame_index: int = 0, schedule: D.Schedule | None = None,
                     hold=None, weights: dict[str, float] | None = None, on_step=None) -> torch.Tensor:
        """`dream` for N×3×H×W float32 0..255 tensors already on the device (the render's frame step keeps its
        frames there); returns the same shape and scale, channels_last."""
        x = x.to(self.device).div(255.0).contiguous(memory_format=torch.channels_last)
        y = self._dream(x, frame_index, schedule, hold, weights, on_step)
        return y.float().mul_(255.0).contiguous(memory_format=torch.channels_last)

    def _dream(self, x: torch.Tensor, frame_index: int, schedule, hold, weights, on_step) -> torch.Tensor:
        """N×3×H×W in [0, 1] on the device → the same, dreamed."""
        return D.dream_octaves(x, self.net, self.objective_for(weights), schedule or self.schedule,
                               self.generator(frame_index), amp_dtype=self.amp,
                               hold=self._hold(hold, x.shape[0], x.shape[2:]), on_step=on_step)
