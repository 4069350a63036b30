"""DeepDream maths: objective, (tiled) input gradient, normalised ascent step, octaves with detail transfer.

Images are float tensors N×3×H×W in [0, 1]. All randomness (jitter, tile offsets) comes from the
`torch.Generator` the caller passes, so a frame's dream depends only on its input and its seed.
On a 360° equirect frame (`Schedule.equirect`) jitter is a pure yaw roll and the step is weighted by
latitude; with `Schedule.wrap_x` resizing and tiles wrap across the 0/360° meridian and the network pads
its convolutions with columns from the other side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from stages.dream.objective import Objective, objective_loss
from stages.vr.spherical import latitude_weight

if TYPE_CHECKING:
    from stages.vr.sphere import SphereSpec

EPS = 1e-8
MIN_OCTAVE_SIDE = 32
WRAP_MULTIPLE = 32  # the deepest stride of the bundled networks


@dataclass(frozen=True, slots=True)
class Schedule:
    octaves: int = 4
    octave_scale: float = 1.4
    iterations: int = 10
    step_size: float = 1.5  # in 0..255 pixel units per step, as google/deepdream
    jitter: int = 32
    tile: int = 512  # max tile side; 0 = never tile
    equirect: bool = False  # a 360° frame: jitter only yaws (a vertical roll would glue the poles together)
    wrap_x: bool = False  # convolutions, tiles and resizing wrap across the 0/360° meridian
    pole_exponent: float = 0.0  # equirect only: step × cos(latitude)^k; 0 = off
    tile_batch_px: int = 0  # tiles stacked per forward, in pixels; 0 = one tile at a time
    sphere: SphereSpec | None = None  # equirect only: dream through perspective views (stages/vr/sphere.py)


def _grad_once(x: torch.Tensor, net, obj: Objective, *, wrap_x: bool, area_scale: float,
               amp_dtype: torch.dtype | None) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        feats = net.features(x, obj.names, wrap_x=wrap_x)
        loss = objective_loss(feats, obj, area_scale)
    (g,) = torch.autograd.grad(loss, x)
    return g


def tile_starts(n: int, tile: int, overlap: int, offset: int, wrap: bool) -> list[int]:
    """Start offsets of equal-size tiles covering n pixels, the grid shifted by `offset`."""
    if n <= tile:
        return [0]
    if tile <= overlap:
        raise ValueError(f"tile {tile} must be larger than its overlap {overlap}")
    stride = tile - overlap
    if wrap:
        return [(k * stride - offset) % n for k in range(math.ceil(n / stride))]
    starts: list[int] = []
    s = -offset
    while True:
        c = min(max(s, 0), n - tile)
        if not starts or c != starts[-1]:
            starts.append(c)
        if s + tile >= n:
            return starts
        s += stride


def _ramp(length: int, overlap: int, left: bool, right: bool, device) -> torch.Tensor:
    w = torch.ones(length, device=device)
    r = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap
    if left:
        w[:overlap] = r
    if right:
        w[length - overlap:] = r.flip(0)
    return w


def _runs(x0: int, length: int, w: int) -> list[tuple[int, int, int]]:
    """Columns x0 .. x0+length (mod w) as contiguous (start, stop, offset-in-tile) runs."""
    x0 %= w
    first = min(length, w - x0)
    runs = [(x0, x0 + first, 0)]
    if first < length:
        runs.append((0, length - first, first))
    return runs


def input_gradient(x: torch.Tensor, net, obj: Objective, *, tile: int, wrap_x: bool, gen: torch.Generator,
                   amp_dtype: torch.dtype | None = None, tile_batch_px: int = 0) -> torch.Tensor:
    """d objective / d x, on feathered overlapping tiles when the image is larger than `tile`."""
    n, c, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return _grad_once(x, net, obj, wrap_x=wrap_x, area_scale=1.0, amp_dtype=amp_dtype)
    th, tw = min(tile, h), min(tile, w)
    ov = max(8, tile // 4)
    oy = int(torch.randint(0, max(1, th - ov), (1,), generator=gen))
    ox = int(torch.randint(0, max(1, tw - ov), (1,), generator=gen))
    tiled_x = w > tile
    ys = tile_starts(h, th, ov, oy, wrap=False)
    xs = tile_starts(w, tw, ov, ox, wrap=wrap_x)
    acc = torch.zeros_like(x)
    wsum = torch.zeros(1, 1, h, w, device=x.device)
    cols = torch.arange(tw, device=x.device)
    jobs = [(y0, x0) for y0 in ys for x0 in xs]
    per_batch = max(1, tile_batch_px // (th * tw)) if tile_batch_px else 1
    for i in range(0, len(jobs), per_batch):
        chunk = jobs[i:i + per_batch]
        idx = [(cols + x0) % w for _, x0 in chunk]
        crops = [x[:, :, y0:y0 + th].index_select(3, ix) for (y0, _), ix in zip(chunk, idx)]
        g = _grad_once(torch.cat(crops), net, obj, wrap_x=wrap_x and not tiled_x,
                       area_scale=(th * tw) / (h * w), amp_dtype=amp_dtype)
        for k, (y0, x0) in enumerate(chunk):
            wy = _ramp(th, ov, y0 > 0, y0 + th < h, x.device)
            wx = _ramp(tw, ov, wrap_x or x0 > 0, wrap_x or x0 + tw < w, x.device) if tiled_x \
                else torch.ones(tw, device=x.device)
            wt = (wy[:, None] * wx[None, :])[None, None]
            # Plain slice adds (a wrapped tile is at most two runs of columns): unlike index_add_,
            # they are deterministic on CUDA, which bit-identical resumes rely on.
            gt = g[k * n:(k + 1) * n] * wt
            for a, b, off in _runs(x0, tw, w):
                acc[:, :, y0:y0 + th, a:b] += gt[..., off:off + b - a]
                wsum[:, :, y0:y0 + th, a:b] += wt[..., off:off + b - a]
    return acc / wsum.clamp_min(EPS)


def resize(x: torch.Tensor, size: tuple[int, int], *, wrap_x: bool = False) -> torch.Tensor:
    """Separable bilinear resize (pixel centres aligned); columns wrap around on equirect frames."""
    h, w = x.shape[-2:]
    oh, ow = size
    if (oh, ow) == (h, w):
        return x

    def taps(n_in: int, n_out: int, wrap: bool):
        src = (torch.arange(n_out, device=x.device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5
        i0 = src.floor()
        f = src - i0
        i0 = i0.long()
        i1 = i0 + 1
        if wrap:
            i0, i1 = i0 % n_in, i1 % n_in
        else:
            i0, i1 = i0.clamp(0, n_in - 1), i1.clamp(0, n_in - 1)
        return i0, i1, f

    r0, r1, fr = taps(h, oh, False)
    x = x.index_select(2, r0) * (1 - fr)[:, None] + x.index_select(2, r1) * fr[:, None]
    c0, c1, fc = taps(w, ow, wrap_x)
    return x.index_select(3, c0) * (1 - fc) + x.index_select(3, c1) * fc


def ascent_step(x: torch.Tensor, net, obj: Objective, sch: Schedule, gen: torch.Generator,
                amp_dtype: torch.dtype | None = None, step_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One jittered, normalised gradient-ascent step, clamped to the valid range.

    `step_mask` (N or 1 × 1 × H × W, 0..1) gates the step per pixel; see `masked_step`.
    """
    if sch.sphere is not None:
        # A random rotation of the whole sphere replaces the jitter; the direction comes normalised
        # by solid angle, so neither the roll, the latitude weight nor the plain mean applies.
        from stages.vr.sphere import sphere_direction  # lazy: only sphere-true 360° renders need it

        g = sphere_direction(x, net, obj, sch.sphere, gen, amp_dtype=amp_dtype,
                             batch_px=max(sch.tile_batch_px, sch.tile ** 2) if sch.tile > 0 else 0)
        return (x + (sch.step_size / 255.0) * masked_step(g, step_mask)).clamp_(0.0, 1.0)
    j = sch.jitter
    ox = int(torch.randint(-j, j + 1, (1,), generator=gen)) if j else 0
    oy = int(torch.randint(-j, j + 1, (1,), generator=gen)) if j and not sch.equirect else 0
    xs = torch.roll(x, (oy, ox), (2, 3)) if (ox or oy) else x
    g = input_gradient(xs, net, obj, tile=sch.tile, wrap_x=sch.wrap_x, gen=gen, amp_dtype=amp_dtype,
                       tile_batch_px=sch.tile_batch_px)
    g = torch.roll(g, (-oy, -ox), (2, 3)) if (ox or oy) else g
    if sch.equirect and sch.pole_exponent:
        g = g * latitude_weight(x.shape[2], sch.pole_exponent, x.device)
    g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + EPS)
    g = masked_step(g, step_mask)
    return (x + (sch.step_size / 255.0) * g).clamp_(0.0, 1.0)


def masked_step(g: torch.Tensor, step_mask: torch.Tensor | None) -> torch.Tensor:
    """Gate an already normalised step per pixel (stereo carry dreams only where a warp is unreliable).

    The mask multiplies *after* the mean-|g| normalisation over the whole image: a pixel with mask 1
    steps exactly as in an unmasked dream, whatever share of the image is masked off. Normalising by the
    masked gradient instead (mean |g·m|) would blow the step up as the mask's support shrinks.
    """
    return g if step_mask is None else g * step_mask


def octave_sizes(h: int, w: int, octaves: int, scale: float, multiple: int = 1) -> list[tuple[int, int]]:
    """Pyramid sizes, finest first. `multiple` rounds widths so strided convs tile a wrapped row evenly."""
    def fit(n: float) -> int:
        return max(multiple, round(n / multiple) * multiple)

    sizes = [(h, fit(w))]
    for i in range(1, octaves):
        nh, nw = round(h / scale ** i), fit(w / scale ** i)
        if min(nh, nw) < MIN_OCTAVE_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def dream_octaves(img: torch.Tensor, net, obj: Objective, sch: Schedule, gen: torch.Generator, *,
                  amp_dtype: torch.dtype | None = None, hold: torch.Tensor | None = None,
                  step_mask: torch.Tensor | None = None,
                  on_step: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """google/deepdream's octave loop: dream the coarse scale, carry only the *detail* upward.

    `hold` (N×1×H×W in 0..1) is the temporal term of a frame that continues a dream (Ruder et al.'s, in
    ascent form): after every step the new detail shrinks by that share where the carried dream in
    `img` is reliable, so it moves with the scene instead of being re-dreamed, while disoccluded pixels
    (hold 0) dream freely.

    `step_mask` (N or 1 × 1 × H × W at the image's size, 0..1) is resized to each octave and gates every
    step per pixel (`masked_step`): where it is 0 the input passes through unchanged.

    On equirect frames every octave's width is a multiple of WRAP_MULTIPLE: a stride-2 conv over an
    odd-width wrapped row would put its sampling grid out of step at the seam, and the seam shows.
    """
    h, w = img.shape[2], img.shape[3]
    sizes = octave_sizes(h, w, sch.octaves, sch.octave_scale, WRAP_MULTIPLE if sch.wrap_x else 1)
    bases = [resize(img, s, wrap_x=sch.wrap_x) for s in sizes]
    holds = [resize(hold, s, wrap_x=sch.wrap_x) for s in sizes] if hold is not None else [None] * len(sizes)
    detail = torch.zeros_like(bases[-1])
    total, done = len(bases) * sch.iterations, 0
    for base, keep in zip(reversed(bases), reversed(holds)):
        detail = resize(detail, tuple(base.shape[-2:]), wrap_x=sch.wrap_x)
        x = (base + detail).clamp(0.0, 1.0)
        # Area averaging, not the bilinear `resize`: two bilinear taps per output pixel would skip a
        # strip a few pixels wide at the coarse octaves; the average keeps its weight.
        mask = None if step_mask is None else \
            torch.nn.functional.interpolate(step_mask.float(), size=tuple(base.shape[-2:]), mode="area")
        for _ in range(sch.iterations):
            x = ascent_step(x, net, obj, sch, gen, amp_dtype, step_mask=mask)
            if keep is not None:
                x = x - keep * (x - base)
            done += 1
            if on_step:
                on_step(done, total)
        detail = x - base
        if sch.sphere is not None and sch.sphere.even > 0:
            from stages.vr.latitude import even_detail  # lazy: only sphere-true 360° renders need it

            detail = even_detail(detail, sch.sphere.even)
    return (img + resize(detail, (h, w), wrap_x=sch.wrap_x)).clamp(0.0, 1.0)


def guide_features(guide: torch.Tensor, net, layers: list[str]) -> dict[str, torch.Tensor]:
    """C×K feature matrices of a guide image (1×3×h×w in [0, 1]) for the guide objective."""
    with torch.no_grad():
        feats = net.features(guide, layers)
    return {n: feats[n][0].flatten(1).float() for n in layers}


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_tensor(rgb, device) -> torch.Tensor:
    """H×W×3 uint8 (or float 0..255) array → 1×3×H×W float in [0, 1]: the one host→device helper."""
    t = torch.from_numpy(np.array(rgb, dtype=np.float32))  # a copy: decoded frames may be read-only
    t = t.to(device)
    t = t.permute(2, 0, 1)[None] / 255.0
    return t.contiguous(memory_format=torch.channels_last)


def to_array(t: torch.Tensor) -> np.ndarray:
    """1×3×H×W in [0, 1] → H×W×3 float32 array in 0..255 (unrounded: the residual stays exact)."""
    return (t[0].permute(1, 2, 0).float() * 255.0).cpu().numpy()


def quantize(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


__all__ = ["Objective", "Schedule", "dream_octaves", "input_gradient", "resize", "objective_loss",
           "guide_features", "amp_dtype_for", "to_tensor", "to_array", "quantize"]
