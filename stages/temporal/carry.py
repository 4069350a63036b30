"""A carried frame's temporal maths on the dream's device: the flow brought up to the frame, the start image,
the hold term, the steady scaling.

Let S be the source frame, R the previous frame's dream residual (dream − source), b the backward flow and
M its reliability. A carried frame starts from S + blend·M·warp(R, b); while it is dreamed, new detail is
held back by hold·M; afterwards its residual is scaled to the shot's reference strength (temporal.steady). Near a
key frame the frame shown eases from the previous dream to this one (`ease`).

Everything here takes and returns tensors on one device, the dream's: the source goes up once, the flow and
mask go up at their working size and are resized there, the residual stays there from frame to frame, and
only the 8-bit dreamed frame comes back for the encoder. Frames are 1×3×H×W float32 in 0..255,
channels_last, which on the CPU is the memory of an H×W×3 array: `to_device`/`to_host` are views there.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stages.temporal.warp import sample


def to_device(rgb: np.ndarray, device) -> torch.Tensor:
    """H×W×3 array (uint8, or float 0..255) → 1×3×H×W float32 channels_last tensor on `device`.
    The host→device half of the frame helper pair (`to_host`); a float32 array on the CPU is shared, not copied."""
    # A decoded frame may be read-only; torch warns on those although nothing here writes to it.
    t = torch.from_numpy(np.require(rgb, requirements=("C", "W"))).to(device)
    return t.to(torch.float32).permute(2, 0, 1)[None]


def to_host(t: torch.Tensor) -> np.ndarray:
    """1×3×H×W → H×W×3 float32 array (a view of a channels_last CPU tensor)."""
    return t[0].permute(1, 2, 0).float().cpu().numpy()


def to_host_u8(t: torch.Tensor) -> np.ndarray:
    """1×3×H×W 0..255 → H×W×3 uint8, rounded half to even (as numpy's rint) and clipped: what the encoder gets."""
    q = t[0].permute(1, 2, 0).round().clamp_(0, 255).to(torch.uint8)
    return q.cpu().numpy()


def frame_motion(backward: np.ndarray, mask: np.ndarray, size: tuple[int, int],
                 device) -> tuple[torch.Tensor, torch.Tensor]:
    """A pair's backward flow (h×w×2, working pixels) and reliability (h×w) from the flow thread → on `device`:
    the flow as it is (1×h×w×2: `sample` scales it to the frame while it warps), the mask at the frame's size
    (H, W) as 1×1×H×W, bilinear with corners aligned, as `sample` places the flow."""
    h, w = size
    b = torch.from_numpy(np.ascontiguousarray(backward, dtype=np.float32)).to(device)[None]
    m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)[None, None]
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=True)
    return b, m


def start_image(source: torch.Tensor, residual: torch.Tensor, backward: torch.Tensor, mask: torch.Tensor, *,
                blend: float, wrap_x: bool = False) -> torch.Tensor:
    """Starting image for dreaming frame t: S_t + blend·M_t·warp(R_{t−1}, b_t), clipped to 0..255.

    Bicubic: the residual is warped again every frame, and bilinear's blur would wash its detail out."""
    if residual.shape != source.shape:
        raise ValueError(f"residual {tuple(residual.shape)} does not match source {tuple(source.shape)}")
    if mask.shape[-2:] != source.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match source {tuple(source.shape)}")
    warped = sample(residual, backward, wrap_x=wrap_x, cubic=True)
    return torch.addcmul(source, warped, mask, value=blend).clamp_(0.0, 255.0)


def ease(source: torch.Tensor, out: torch.Tensor, residual: torch.Tensor, backward: torch.Tensor, mask: torch.Tensor,
         *, keep: float, wrap_x: bool = False) -> torch.Tensor:
    """The frame shown near a key frame: S + R_t + (1 − keep)·M·(warp(R_{t−1}) − R_t), of the frame's new change
    only `keep` (where the flow holds; elsewhere the dream as it is). The encoder codes those frames finely and the
    key frame afresh, so they showed the dream's whole change where every other frame shows the encoder's smoothed
    one (pipeline.render.presets.keyframe_keep). The chain carries R_t on, so nothing is lost for later frames."""
    new = out - source
    warped = sample(residual, backward, wrap_x=wrap_x, cubic=True)
    return (source + new + (1.0 - keep) * mask * (warped - new)).clamp_(0.0, 255.0)


def strength(residual: torch.Tensor) -> torch.Tensor:
    """Mean squared residual over pixels and channels (the dream's strength, 0..255 scale), as a 0-d tensor on the
    residual's device: reading it (`float()`) waits for the device, so only the shot's first frame does."""
    return torch.linalg.vector_norm(residual).square() / max(1, residual.numel())


def steady(source: torch.Tensor, dreamed: torch.Tensor, target: float) -> torch.Tensor:
    """Scale the residual of `dreamed` so its strength is `target` (temporal.steady): without it a carried dream
    swells (or fades) over a long shot. All on the device, without waiting for it."""
    residual = dreamed - source
    s = strength(residual)
    k = torch.where(s > 0, torch.sqrt(target / s.clamp_min(1e-30)), torch.ones_like(s))
    return torch.addcmul(source, residual, k).clamp_(0.0, 255.0)


__all__ = ["to_device", "to_host", "to_host_u8", "frame_motion", "start_image", "ease", "strength", "steady"]
