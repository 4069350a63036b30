"""GPU path: autocast + channels_last + batched tiles dream correctly and deterministically.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest tests/test_cuda.py`.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.render.engine import DreamEngine
from pipeline.render.runner import run_video
from stages.dream import ascent as D
from tests.synth import make_clip, scene_texture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_dream_amplifies_and_matches_cpu_direction() -> None:
    img = scene_texture(192, 256, seed=4)
    cfg = ["dream.octaves=2", "dream.iterations=4"]
    gpu = DreamEngine(load_config("default", cfg + ["dream.device=cuda"]))
    cpu = DreamEngine(load_config("default", cfg + ["dream.device=cpu"]))
    assert gpu.amp in (torch.bfloat16, torch.float16)
    a, b = gpu.dream(img), cpu.dream(img)
    # bf16 rounding changes the trajectory (DeepDream is chaotic), not what is amplified or how much:
    # both raise the objective, by a similar factor, measured with the same fp32 CPU network.
    def objective(rgb):
        with torch.no_grad():
            feats = cpu.net.features(D.to_tensor(rgb, torch.device("cpu")), ["block9"])
        return float(D.objective_loss(feats, cpu.objective))
    base = objective(img)
    gain_gpu, gain_cpu = objective(a) / base, objective(b) / base
    assert gain_gpu > 1.2 and gain_cpu > 1.2, (gain_gpu, gain_cpu)
    assert 0.5 < gain_gpu / gain_cpu < 2.0, (gain_gpu, gain_cpu)


def test_cuda_dream_is_deterministic_for_resume() -> None:
    img = scene_texture(320, 640, seed=5)
    engine = DreamEngine(load_config("default", ["dream.octaves=2", "dream.iterations=3", "dream.tile=256"]))
    first = engine.dream(img, frame_index=7)
    second = engine.dream(img, frame_index=7)
    assert np.array_equal(first, second)


def test_cuda_batched_tiles_agree_with_untiled() -> None:
    net = DreamEngine(load_config("default", ["dream.device=cuda"])).net
    x = D.to_tensor(scene_texture(256, 256, seed=6), torch.device("cuda"))
    obj = D.Objective({"block9": 1.0})
    gen = torch.Generator().manual_seed(0)
    g0 = D.input_gradient(x, net, obj, tile=0, wrap_x=False, gen=gen, amp_dtype=None)
    g1 = D.input_gradient(x, net, obj, tile=160, wrap_x=False, gen=gen, amp_dtype=None, tile_batch_px=4 * 160 * 160)
    cos = torch.nn.functional.cosine_similarity(g0.flatten(), g1.flatten(), dim=0)
    assert cos > 0.8, float(cos)


def test_cuda_video_end_to_end(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", width=320, height=192, frames=12)
    dst = tmp_path / "out.mp4"
    stats = run_video(src, dst, load_config("default", ["dream.device=cuda", "checkpoint.segment_frames=5"]))
    with av.open(str(dst)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12
    assert stats.frames == 12


def test_cuda_temporal_maths_match_the_cpu() -> None:
    """The carried frame's maths (stages.temporal.carry) on the GPU agree with the CPU within one 8-bit level,
    for a working-size flow and across the 0/360° seam."""
    from stages.temporal import carry as C
    from stages.temporal.warp import consistency_mask

    rng = np.random.default_rng(2)
    src = scene_texture(96, 192, seed=3)
    residual = rng.normal(0, 30, src.shape).astype(np.float32)
    b = rng.normal(0, 1.5, (48, 96, 2)).astype(np.float32)
    f = -b + rng.normal(0, 0.2, b.shape).astype(np.float32)
    m = consistency_mask(b, f, wrap_x=True)
    out = {}
    for dev in ("cpu", "cuda"):
        s = C.to_device(src, dev)
        bt, mt = C.frame_motion(b, m, src.shape[:2], dev)
        x = C.start_image(s, C.to_device(residual, dev), bt, mt, blend=0.9, wrap_x=True)
        y = C.steady(s, x, 200.0)
        out[dev] = C.to_host_u8(y)
    assert np.abs(out["cpu"].astype(int) - out["cuda"].astype(int)).max() <= 1
