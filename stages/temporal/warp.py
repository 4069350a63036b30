"""Warping by backward flow and forward/backward consistency masks, in torch on the tensors' own device.

The render keeps a frame's temporal maths on the dream's device (`stages.temporal.carry`): the residual is
warped, masked and scaled where it is dreamed, so a GPU render moves each frame there once. The numpy
functions at the end (`warp`, `consistency_mask`) run the same maths on the CPU for callers that hold
arrays (metrics, the stereo carry, the scale-out survey): one rule, one implementation.

Flow conventions are those of `stages.temporal.flow`: a backward flow ``b`` on frame t points, for each pixel,
to where that content was in frame t-1; a forward flow ``f`` on frame t-1 points to frame t. Tensors are
N×C×H×W images and N×H×W×2 flows (x, y in pixels); values keep the caller's scale (0..255 for frames and
residuals).

Out-of-frame samples use the nearest edge pixel (border replicate), never zero: a zero residual
would leave a dark/neutral band where the mask is only partly off after smoothing. With ``wrap_x``
(equirect 360) samples wrap horizontally and replicate vertically; there is no vertical wrap.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from stages.vr.spherical import wrap_pad_x

# Ruder et al. (artistic-videos, consistencyChecker) thresholds.
_OCC_REL, _OCC_ABS = 0.01, 0.5
_MB_REL, _MB_ABS = 0.01, 0.002
# Columns borrowed from the other side before a wrapped sample: a bicubic tap reaches x−1 … x+2.
_WRAP_PAD = {True: (2, 3), False: (1, 2)}


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """1×H×W×2 pixel coordinates (x, y); cached, since every frame of a render has one size."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    return torch.stack((xs, ys), dim=-1)[None]


@functools.lru_cache(maxsize=16)
def _base(fh: int, fw: int, h: int, w: int, sw: int, normalised: bool,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The sample positions of zero flow at the flow's grid points, and the factor that turns the flow into
    position units: frame pixels, or grid_sample's −1..1 (align_corners=True: −1 and 1 are the centres of the
    first and last pixel, so pixel x is x·2/(sw−1) − 1) over an image `sw` wide. The flow's corners sit on the
    frame's corners, so positions interpolated between grid points are a linear map, reproduced exactly."""
    stretch = torch.tensor([(w - 1) / max(fw - 1, 1), (h - 1) / max(fh - 1, 1)], device=device)
    scale = torch.tensor([w / fw, h / fh], device=device)
    base = _pixel_grid(fh, fw, device) * stretch
    if not normalised:
        return base, scale
    norm = torch.tensor([2.0 / (sw - 1) if sw > 1 else 0.0, 2.0 / (h - 1) if h > 1 else 0.0], device=device)
    return base * norm - (norm > 0).float(), scale * norm


def _check(img: torch.Tensor, flow: torch.Tensor) -> None:
    if img.dim() != 4 or flow.dim() != 4 or flow.shape[-1] != 2 or flow.shape[0] not in (1, img.shape[0]):
        raise ValueError(f"flow must be N×h×w×2 for an image {tuple(img.shape)}, got {tuple(flow.shape)}")


def sample(img: torch.Tensor, flow: torch.Tensor, *, wrap_x: bool = False, cubic: bool = False) -> torch.Tensor:
    """Pull `img` (N×C×H×W float) through a backward map: out[y, x] = img at (x + flow_x, y + flow_y),
    bilinear, or bicubic (Keys, a = −0.75, as OpenCV's) with `cubic`, which blurs less when the same content is
    warped again frame after frame.

    `flow` is N×h×w×2 (or 1×h×w×2 for every image) in pixels of its own size: at the image's size, or at a
    flow working size, which is scaled to the image here. The sample positions are made at the flow's size and
    interpolated (bilinear, corners aligned: a linear map of positions is reproduced exactly), so a small flow
    costs one full-size pass, not several.
    """
    _check(img, flow)
    n, _, h, w = img.shape
    fh, fw = flow.shape[1:3]
    src, sw, left = img, w, 0
    if wrap_x:
        # grid_sample has no wrap mode (pytorch#24089): fold x into [0, W) and borrow the taps' columns.
        left, right = _WRAP_PAD[cubic]
        src, sw = wrap_pad_x(img, left, right), w + left + right
    # Everything is linear except the fold: flat positions are normalised at the flow's size, before the
    # interpolation; folded ones after it.
    base, coef = _base(fh, fw, h, w, sw, not wrap_x, img.device)
    pos = torch.addcmul(base, flow.float(), coef)
    if (fh, fw) != (h, w):
        # Planar (N×2×h×w) first: on the CPU, upsampling a 2-channel channels-last view takes 2-4× as long.
        pos = F.interpolate(pos.permute(0, 3, 1, 2).contiguous(), size=(h, w), mode="bilinear",
                            align_corners=True).permute(0, 2, 3, 1)
    if wrap_x:
        nx, ny = (2.0 / (sw - 1), 2.0 / (h - 1) if h > 1 else 0.0)
        gx = pos[..., 0].remainder(float(w)).mul_(nx).add_(left * nx - 1.0)
        gy = pos[..., 1].mul(ny).sub_(1.0 if h > 1 else 0.0)
        pos = torch.stack((gx, gy), dim=-1)
    if pos.shape[0] != n:
        pos = pos.expand(n, -1, -1, -1)
    return F.grid_sample(src, pos, mode="bicubic" if cubic else "bilinear", padding_mode="border",
                         align_corners=True)


def _gradient(a: torch.Tensor, dim: int, wrap: bool) -> torch.Tensor:
    """np.gradient along `dim` of N×H×W (central inside, one-sided at the ends), or central with wrap."""
    if wrap:
        return (torch.roll(a, -1, dim) - torch.roll(a, 1, dim)) * 0.5
    if a.shape[dim] < 2:  # a 1-pixel-high or -wide frame has no slope along that axis
        return torch.zeros_like(a)
    return torch.gradient(a, dim=dim)[0]


@functools.lru_cache(maxsize=8)
def _gaussian_taps(sigma: float) -> tuple[float, ...]:
    """OpenCV's GaussianBlur kernel for float images: 2·round(4σ)+1 taps."""
    radius = max(1, int(round(sigma * 4)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return tuple((k / k.sum()).tolist())


def smooth(mask: torch.Tensor, sigma: float, wrap_x: bool) -> torch.Tensor:
    """Separable Gaussian blur of N×1×H×W; replicate at the edges, wrapped across 0/360° with `wrap_x`."""
    if sigma <= 0:
        return mask
    taps = torch.tensor(_gaussian_taps(float(sigma)), dtype=mask.dtype, device=mask.device)
    r = (taps.numel() - 1) // 2
    x = wrap_pad_x(mask, r) if wrap_x else F.pad(mask, (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, taps.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, r, r), mode="replicate")
    return F.conv2d(x, taps.view(1, 1, -1, 1))


def reliability(backward: torch.Tensor, forward: torch.Tensor, *, wrap_x: bool = False,
                sigma: float = 0.8) -> torch.Tensor:
    """Reliability of the backward flow, N×1×H×W in [0, 1] (1 = reliable, 0 = do not warp); flows N×H×W×2.

    A pixel is unreliable when the forward flow found where `backward` points does not lead back
    (occlusion/disocclusion), on motion boundaries of the backward flow, or when it points outside the
    frame (vertically only with ``wrap_x``). The binary result is Gaussian-smoothed by `sigma` so the
    dream does not show hard mask edges.
    """
    if backward.shape != forward.shape or backward.dim() != 4 or backward.shape[-1] != 2:
        raise ValueError(f"flows must be N×H×W×2 of one shape, got {tuple(backward.shape)} and "
                         f"{tuple(forward.shape)}")
    _, h, w, _ = backward.shape
    # Planar copies (N×2×H×W): every sum below then adds two contiguous planes.
    b = backward.float().permute(0, 3, 1, 2).contiguous()
    f_at = sample(forward.float().permute(0, 3, 1, 2), backward, wrap_x=wrap_x)
    b_sq = b.square().sum(1)
    occluded = (b + f_at).square_().sum(1) >= (b_sq + f_at.square_().sum(1)).mul_(_OCC_REL).add_(_OCC_ABS)

    u, v = b[:, 0], b[:, 1]
    motion_edge = (_gradient(u, 2, wrap_x).square_() + _gradient(u, 1, False).square_()
                   + _gradient(v, 2, wrap_x).square_() + _gradient(v, 1, False).square_())
    boundary = motion_edge > b_sq.mul_(_MB_REL).add_(_MB_ABS)

    ys = torch.arange(h, dtype=torch.float32, device=b.device).view(1, h, 1)
    ty = v + ys
    outside = (ty < 0) | (ty > h - 1)
    if not wrap_x:
        tx = u + torch.arange(w, dtype=torch.float32, device=b.device).view(1, 1, w)
        outside |= (tx < 0) | (tx > w - 1)

    reliable = (~(occluded | boundary | outside)).to(torch.float32)[:, None]
    return smooth(reliable, sigma, wrap_x).clamp_(0.0, 1.0)


def upscale_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow computed at a working size (h×w×2, its pixels) at the pixels of a frame of `size` (H, W): what
    `sample` makes of it, as an H×W×2 array (for callers that need the flow itself, not a warp)."""
    h, w = size
    if flow.shape[:2] == (h, w):
        return flow
    f = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
    with torch.inference_mode():
        up = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0)
        up = up * torch.tensor([w / flow.shape[1], h / flow.shape[0]])
    return np.ascontiguousarray(up.numpy())


# --- numpy in, numpy out: the same maths for callers holding arrays ---------------------------------

def _image_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W or H×W×C array → 1×C×H×W float32 tensor (a view where the array already is float32)."""
    a = np.ascontiguousarray(img, dtype=np.float32)
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def _flow_tensor(flow: np.ndarray, shape: tuple[int, ...], name: str = "flow") -> torch.Tensor:
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[:2] != tuple(shape[:2]):
        raise ValueError(f"{name} must be {shape[0]} x {shape[1]} x 2, got {flow.shape}")
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))[None]


def warp(img: np.ndarray, flow: np.ndarray, *, wrap_x: bool = False, cubic: bool = False) -> np.ndarray:
    """`sample` for an H×W or H×W×C array (uint8 or float; float32 out unless uint8 in, which is rounded back).
    Zero flow returns an exact copy."""
    t = _flow_tensor(flow, img.shape)
    if not flow.any():
        return img.copy() if img.dtype in (np.uint8, np.float32) else img.astype(np.float32)
    with torch.inference_mode():
        out = sample(_image_tensor(img), t, wrap_x=wrap_x, cubic=cubic)[0].permute(1, 2, 0).numpy()
    out = out[..., 0] if img.ndim == 2 else out
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def consistency_mask(backward: np.ndarray, forward: np.ndarray, *, wrap_x: bool = False,
                     sigma: float = 0.8) -> np.ndarray:
    """`reliability` for H×W×2 arrays: H×W float32 in [0, 1]."""
    b = _flow_tensor(backward, backward.shape, "backward")
    f = _flow_tensor(forward, backward.shape, "forward")
    with torch.inference_mode():
        return reliability(b, f, wrap_x=wrap_x, sigma=sigma)[0, 0].numpy()


__all__ = ["sample", "reliability", "smooth", "upscale_flow", "warp", "consistency_mask"]
