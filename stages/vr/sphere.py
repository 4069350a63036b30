"""Sphere-true dreaming: the network sees an equirect frame through overlapping perspective views.

Dreaming the equirect image itself shows the network a map, not the sphere: near the poles a texture
that is round in pixels is a radial streak on the sphere, and the cos(latitude) step weight that hides
it mutes the poles. Here every ascent step
1. draws a random rotation R of the whole sphere (`random_rotation`: yaw uniform, pitch and roll
   uniform in ±tilt_deg), which replaces the yaw-roll jitter,
2. samples K perspective views (default: the 6 cube faces at 92°, one view pixel per equirect pixel
   at the view centre) from the frame under R with `grid_sample` (columns wrapped with
   `stages.vr.spherical.wrap_pad_x`, rows padded across the pole as py360convert does),
3. runs the views as one batch through `net.features` with the engine's `objective_loss`,
4. brings the views' gradient back to the equirect pixels, feathered at the view borders, and
5. normalises it per solid angle (cos latitude weights), so a step moves the poles as far as the
   horizon: neither pinched (over-driven) nor muted (under-driven).

What the poles need besides (bench/sphere_bench.py on its isotropic test texture, 512×256, default
preset, 2 yaws; radial anisotropy per `stages.measure.vr_metrics`, 1 = isotropic, up / down; the equirect
mode reads 2.00 / 1.78, this module's defaults 0.90 / 1.03):
* The equirect grid keeps one row per view pixel along a meridian but many columns across it near a
  pole, so bilinear reading and writing blur the radial direction more than the tangential one and
  the dream drifts into radial streaks. Two row blurs of latitude-dependent width (`row_widths`: none at
  the equator) even that out: of the frame before sampling (`spread`; without it 1.16 / 1.08; on its
  own, 10 rounds of sampling and pulling back isotropic noise read 1.40 at the caps, 0.94 with spread
  0.5, 0.66 with 1) and of the gradient before it is written (`grad_spread`: 0 → 1.55 / 1.70,
  0.5 → 1.12 / 1.23, 0.7 → 0.90 / 1.03). Supersampling the views ×2 instead changed nothing
  (0.88 / 0.98 with the blurs, at the same cost as without).
* A network knows where its image's centre is (zero padding): flat dreams of a 73–194 px view read
  1.1–1.4 radially about the centre. With the U/D faces always near a pole and random yaw around it,
  every other orientation preference averages out and that one piles up at the pole: tilt 0° reads
  1.18 / 1.16, tilt 30° 1.05 / 1.25, tilt 45° 0.90 / 1.03.
* Which pole is dreamed harder follows the content: one scale for the whole sphere gives the busy
  latitudes more push. testRoom1 at 1024×512, default preset, 4 yaws (2 for the balanced ones): pole
  strength up/down 1.18/0.86 of the horizon, radial anisotropy up/down/horizon 0.93/1.06/0.97;
  `balance_latitudes` at balance 1 (default) 1.09/0.95, 0.90/1.00/0.96; at 1.5 0.99/1.03,
  0.89/0.93/0.94. It costs stereo agreement after the encode (bench/stereo_bench.py: the carry's
  residual is weaker where it is lifted, and the codec's noise weighs more), hence 1 and not 1.5.
  The same push still does not make the same dream: at 512×256 (2 yaws) the room read 1.22/0.95, upside
  down 0.91/1.16, and six real photos on a cube (starry sky, gravel ground; bench/sphere_bench.py
  `photos`) 0.91/1.08. `even_detail` (even 1, default) scales each octave's new detail per latitude
  towards the sphere's mean: 1.04/1.03, 1.02/1.02 and 1.04/1.03, radial anisotropy up/down 0.85/0.90,
  0.88/0.83 and 1.00/0.93 (off: 0.87/0.88, 0.85/0.82, 1.04/0.96).
* Other variants: 14 views (cube faces and corners) at 80°: 0.93 / 1.16 at 2.4× the cost; view
  pixels 1/0.85 of an equirect pixel (res 0.85): 0.95 / 0.97 at 1.14× the cost, but patterns 18%
  larger than the equirect mode's.

Cost and overlap: views hold 12·tan²(fov/2)/π² times the frame's pixels (1.22 at 90°, 1.31 at 92°,
1.72 at 100°), and at 1024×512 the equirect mode pays 1.5× for its overlapping 512² tiles. Measured
(CPU seconds per dream, interleaved, one thread): the default 92° faces 1.22× the equirect dream at
1024×512 and 1.6× at 512×256; 100° faces with a feathered 5° border, the design's suggestion, 1.5–1.6×
and 1.9–2.0×, for the same pole and seam readings. The rotation moves the face borders every step, so
their padding artefacts do not pile up anywhere; the 1° margin and its feather keep the blend weights
continuous (at exactly 90° a pixel on a cube edge flips between faces with rounding).

Two ways back (step 4):
* "pull" (default): each equirect pixel reads the view gradients where it appears in the views
  (bilinear `grid_sample` of the gradient, the blend c2e would do), weighted by a border feather and
  divided by the summed weights. Every pixel gets a value, the pole rows too, and only grid_sample's
  forward runs: deterministic on CUDA, which bit-identical resumes rely on.
* "push": autograd through the sampling (the exact adjoint), divided by the pushed feather weights
  (normalised convolution); the frame blur's adjoint spreads it over the columns a view pixel covers
  near the poles. Measured 1.26 / 1.31, and grid_sample's backward adds atomically on CUDA.

Conventions follow py360convert 1.0.x (e2p, xyzpers, xyz2uv, uv2coor), so views match `e2p` exactly:
* direction (x, y, z): x right, y up, z forward; longitude u = atan2(x, z), latitude v = atan2(y, hypot(x, z));
* equirect pixel centres: column c ↔ u = ((c + 0.5)/W − 0.5)·2π, row r ↔ v = (0.5 − (r + 0.5)/H)·π;
* a view of FOV f, n×n pixels: camera-plane points linspace(−tan(f/2), tan(f/2), n) (edge pixel centres
  on the FOV edge), top row up, turned as row vectors p·Rx(pitch)·Ry(−yaw) (xyzpers with in_rot 0);
  the sphere rotation acts after that: p·Rx·Ry·R.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from stages.dream.objective import objective_loss
from stages.vr.latitude import balance_latitudes
from stages.vr.spherical import crop_x, latitude_weight, wrap_pad_x

EPS = 1e-8

# View directions (yaw, pitch) in degrees. "cube": the six faces F R B L U D of py360convert's e2c.
# "cube14": the faces plus the eight corner directions, for narrower views with the same coverage.
_CORNER_PITCH = math.degrees(math.atan(1 / math.sqrt(2)))
LAYOUTS: dict[str, tuple[tuple[float, float], ...]] = {
    "cube": ((0, 0), (90, 0), (180, 0), (-90, 0), (0, 90), (0, -90)),
    "cube14": ((0, 0), (90, 0), (180, 0), (-90, 0), (0, 90), (0, -90))
    + tuple((45 + 90 * k, s * _CORNER_PITCH) for s in (1, -1) for k in range(4)),
}


@dataclass(frozen=True, slots=True)
class SphereSpec:
    """How the sphere is viewed; the defaults are the measured best (bench/sphere_bench.py)."""

    fov_deg: float = 92.0  # per view: a 1° margin past the cube edges, over which neighbours blend
    layout: str = "cube"
    res: float = 1.0  # view pixels per equirect pixel at a view's centre (1: the equator's scale)
    supersample: int = 1  # views rendered s× finer and box-averaged: anti-aliased views, denser push
    tilt_deg: float = 45.0  # pitch and roll jitter of the rotation; yaw is always uniform in 0..360°
    feather: float = 0.04  # share of a view's half-width over which its weight ramps from 1 to 0
    gather: str = "pull"  # "pull" | "push": how view gradients reach equirect pixels (module doc)
    spread: float = 0.5  # row blur of the frame before sampling (row_widths); 0 = off
    grad_spread: float = 0.7  # row blur of the gradient before it is written (row_widths); 0 = off
    # Each latitude's gradient ÷ (its own mean |g|)^balance (`balance_latitudes`): 0 = one scale for the
    # whole sphere (the old behaviour), 1 = every latitude, the poles too, pushed alike.
    balance: float = 1.0
    # Each latitude's new detail (dreamed − start, per octave) ÷ (its own mean |detail| ÷ the sphere's)^even
    # (`even_detail`), at most ×/÷ MAX_EVEN: what the push does not even out (content that takes the same
    # push more readily) is evened out in what it made. 0 = off.
    even: float = 1.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"sphere layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if not 30.0 <= self.fov_deg <= 150.0:
            raise ValueError(f"sphere fov_deg must be in 30..150, got {self.fov_deg}")
        if self.gather not in ("pull", "push"):
            raise ValueError(f"sphere gather must be 'pull' or 'push', got {self.gather!r}")
        if self.res <= 0 or self.supersample < 1 or not 0 <= self.feather <= 1 \
                or min(self.spread, self.grad_spread) < 0 or not 0 <= self.balance <= 2 \
                or not 0 <= self.even <= 1:
            raise ValueError(f"bad sphere spec {self}")


def face_size(w: int, spec: SphereSpec) -> int:
    """View side so that one view pixel at the view centre spans `res`⁻¹ equirect pixels (2π/W rad)."""
    return max(8, round(spec.res * w * math.tan(math.radians(spec.fov_deg) / 2) / math.pi))


def axis_rotation(axis: int, angle: float) -> torch.Tensor:
    """py360convert's rotation_matrix(angle, axis) (Rodrigues about x=0 / y=1 / z=2), float64 3×3."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = torch.eye(3, dtype=torch.float64)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def yaw_rotation(radians: float) -> torch.Tensor:
    """The rotation (row-vector form, p·M) that adds `radians` to every direction's longitude."""
    return axis_rotation(1, radians).T


def random_rotation(gen: torch.Generator, tilt_deg: float) -> torch.Tensor:
    """R = Rz(roll)·Rx(pitch)·Ry(yaw) from `gen`: yaw uniform, pitch and roll uniform in ±tilt_deg."""
    r = torch.rand(3, generator=gen, dtype=torch.float64)
    tilt = math.radians(tilt_deg)
    yaw, pitch, roll = 2 * math.pi * float(r[0]), tilt * (2 * float(r[1]) - 1), tilt * (2 * float(r[2]) - 1)
    return axis_rotation(2, roll) @ axis_rotation(0, pitch) @ yaw_rotation(yaw)


@lru_cache(maxsize=16)
def view_bases(layout: str | tuple[tuple[float, float], ...]) -> torch.Tensor:
    """K×3×3 camera→sphere matrices (row vectors): xyzpers's Rx(pitch)·Ry(−yaw), as e2p(u_deg=yaw, v_deg=pitch).

    `layout`: a name in LAYOUTS or the (yaw, pitch) degrees themselves.
    """
    dirs = LAYOUTS[layout] if isinstance(layout, str) else layout
    return torch.stack([axis_rotation(0, math.radians(v)) @ axis_rotation(1, -math.radians(u)) for u, v in dirs])


@lru_cache(maxsize=16)
def view_rays(fov_deg: float, n: int, layout, supersample: int = 1, device=None) -> torch.Tensor:
    """K×(n·s)×(n·s)×3 float32 view rays before the random rotation (depends only on size: cached).

    Pixel i of n sits at −t + i·2t/(n−1), t = tan(fov/2) (py360convert's linspace); with supersample s
    its s sub-samples sit evenly inside that pixel's cell, so their box average is the pixel.
    """
    t = math.tan(math.radians(fov_deg) / 2)
    step = 2 * t / (n - 1)
    sub = ((torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5) * step
    pos = (-t + torch.arange(n, dtype=torch.float64) * step)[:, None] + sub[None, :]
    pos = pos.reshape(-1)
    yy, xx = torch.meshgrid(-pos, pos, indexing="ij")  # row 0 is the top of the view (y up)
    cam = torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)
    return torch.einsum("hwi,kij->khwj", cam, view_bases(layout)).float().to(device)


def directions_to_pixels(xyz: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """py360convert's xyz2uv + uv2coor: (…×3) directions → equirect (column, row), pixel centres at +0.5."""
    x, y, z = xyz.unbind(-1)
    u = torch.atan2(x, z)
    v = torch.atan2(y, torch.hypot(x, z))
    return (u / (2 * math.pi) + 0.5) * w - 0.5, (-v / math.pi + 0.5) * h - 0.5


@lru_cache(maxsize=16)
def equirect_directions(h: int, w: int, device=None) -> torch.Tensor:
    """H×W×3 unit directions of the equirect pixel centres (py360convert's coor2uv + uv2unitxyz)."""
    u = ((torch.arange(w, dtype=torch.float64) + 0.5) / w - 0.5) * 2 * math.pi
    v = (0.5 - (torch.arange(h, dtype=torch.float64) + 0.5) / h) * math.pi
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([vv.cos() * uu.sin(), vv.sin(), vv.cos() * uu.cos()], dim=-1).float().to(device)


def pad_sphere(x: torch.Tensor) -> torch.Tensor:
    """One pixel around an N×C×H×W equirect frame: columns wrap (wrap_pad_x); the row beyond a pole is
    the pole row half a turn away (py360convert's EquirecSampler._pad), so bilinear taps cross the pole."""
    x = wrap_pad_x(x, 1)
    w = x.shape[-1] - 2
    top, bottom = x[..., :1, :], x[..., -1:, :]
    across = lambda row: wrap_pad_x(torch.roll(crop_x(row, 1), w // 2, dims=-1), 1)  # noqa: E731
    return torch.cat([across(top), x, across(bottom)], dim=-2)


def sample_views(x: torch.Tensor, rays: torch.Tensor, rot: torch.Tensor, supersample: int = 1) -> torch.Tensor:
    """Perspective views of N×C×H×W equirect frames under rotation `rot` → (N·K)×C×n×n, differentiable.

    The K views are stacked into one tall grid, so grid_sample reads each frame once (no K copies).
    """
    n_, c, h, w = x.shape
    k, hs, ws, _ = rays.shape
    cx, cy = directions_to_pixels(rays.reshape(-1, 3) @ rot.to(rays), h, w)
    # +1: the padding of pad_sphere; align_corners=True maps −1..1 onto the padded pixel centres.
    grid = torch.stack([(cx + 1) / (w + 1) * 2 - 1, (cy + 1) / (h + 1) * 2 - 1], dim=-1)
    grid = grid.view(1, k * hs, ws, 2).to(x).expand(n_, -1, -1, -1)
    v = F.grid_sample(pad_sphere(x), grid, mode="bilinear", padding_mode="border", align_corners=True)
    v = v.view(n_, c, k, hs, ws).transpose(1, 2).reshape(n_ * k, c, hs, ws)
    return F.avg_pool2d(v, supersample) if supersample > 1 else v


def feather_weight(px: torch.Tensor, py: torch.Tensor, t: float, feather: float) -> torch.Tensor:
    """Blend weight of a view at camera-plane point (px, py): 1 inside, a smoothstep to 0 at the border.

    Conv padding makes a view's border gradients unreliable; the feather gives them to the neighbour.
    """
    edge = 1 - torch.maximum(px.abs(), py.abs()) / t  # 0 at the border, 1 at the centre
    if feather <= 0:
        return (edge >= 0).to(px)
    s = (edge / feather).clamp(0, 1)
    return s * s * (3 - 2 * s)


@lru_cache(maxsize=16)
def view_feather(fov_deg: float, n: int, feather: float, device=None) -> torch.Tensor:
    """n×n feather of a view's pixels (the same weight pull_to_equirect gives them)."""
    t = math.tan(math.radians(fov_deg) / 2)
    pos = torch.linspace(-t, t, n, dtype=torch.float64)
    return feather_weight(pos[None, :], pos[:, None], t, feather).float().to(device)


def pull_to_equirect(gv: torch.Tensor, rot: torch.Tensor, spec: SphereSpec, h: int, w: int) -> torch.Tensor:
    """N×K×C×n×n view gradients → N×C×H×W: each equirect pixel reads every view it appears in.

    Each view is sampled only at the pixels it covers (with cube faces, most pixels lie in one face),
    not over the whole frame: a sixth of the samples.
    """
    n_, k, c, n, _ = gv.shape
    t = math.tan(math.radians(spec.fov_deg) / 2)
    d = equirect_directions(h, w, gv.device).reshape(-1, 3)
    acc = gv.new_zeros(n_, c, h * w)
    wsum = gv.new_zeros(h * w)
    # Sphere → each view's camera frame (orthonormal: the inverse is the transpose), all views in one
    # product: a 3-wide matmul per view costs more than the sampling itself.
    cams = (d @ torch.cat([(b @ rot).T for b in view_bases(spec.layout)], dim=1).to(d)).view(-1, k, 3)
    for i in range(k):
        cam = cams[:, i]
        z = cam[:, 2]
        px, py = cam[:, 0] / z.clamp_min(EPS), cam[:, 1] / z.clamp_min(EPS)
        wt = feather_weight(px, py, t, spec.feather) * (z > 0)
        idx = torch.nonzero(wt > 0).squeeze(1)
        grid = torch.stack([px[idx] / t, -py[idx] / t], dim=-1).view(1, 1, -1, 2).expand(n_, -1, -1, -1)
        got = F.grid_sample(gv[:, i].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        # Indices are unique within a view: plain indexed adds, deterministic on CUDA too.
        acc[..., idx] += wt[idx] * got[:, :, 0]
        wsum[idx] += wt[idx]
    return (acc / wsum.clamp_min(EPS)).view(n_, c, h, w)


def spread_rows(g: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Box-average each row y of N×C×H×W over `widths[y]` columns (fractional, ≥ 1; wrapped around).

    Exact integral of the piecewise-constant row: width 1 is the identity, width W the row mean.
    """
    h, w = g.shape[-2:]
    a = (widths.to(torch.float64).clamp(1, w) / 2)[:, None]  # half widths, H×1
    p = int(math.ceil(float(a.max()))) + 1
    gp = wrap_pad_x(g.to(torch.float64), p)
    csum = F.pad(gp.cumsum(-1), (1, 0))  # csum[j] = integral from the padded left edge to edge j

    def integral(t: torch.Tensor) -> torch.Tensor:  # ∫ row up to column coordinate t (pixel i spans i±0.5)
        k = torch.floor(t + 0.5)
        idx = (k + p).long().expand(*g.shape[:-2], h, w)
        return csum.gather(-1, idx) + (t + 0.5 - k) * gp.gather(-1, idx)

    cols = torch.arange(w, dtype=torch.float64, device=g.device)[None, :]
    return ((integral(cols + a) - integral(cols - a)) / (2 * a)).to(g.dtype)


def row_widths(h: int, w: int, spread: float, device=None) -> torch.Tensor:
    """Per row, a box width in columns that evens out the blur across and along the meridians.

    Bilinear sampling reads along a meridian between rows one arc apart, across it between columns only
    cos(lat) of an arc apart, so near a pole it blurs radial detail more than tangential detail
    (variance 1/6 vs cos²/6 arc²); repeated every step, the dream drifts into radial streaks. A box of
    L columns has variance ≈ (L² − 1)/12 column², so L = √(1 + 2·(spread·tan(lat))²) adds
    spread²·tan²/6 column² (= spread²·sin²/6 arc²): 1 (no blur) at the equator, ≈ √2·spread·tan(lat)
    near the poles. spread = 1 is the variance argument; measured, it over-corrects (the view pixels'
    own footprint counts too) and 0.5–0.7 even things out (module doc).
    """
    lat = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) / h * math.pi - math.pi / 2
    t = spread * (w / (2 * h)) * lat.abs().tan()
    return (1 + 2 * t * t).sqrt().clamp(1, w)


def prefilter(x: torch.Tensor, spec: SphereSpec) -> torch.Tensor:
    """x blurred along its rows by `row_widths(spec.spread)` (identity where the width is 1: the equator)."""
    if spec.spread <= 0:
        return x
    h, w = x.shape[-2:]
    return spread_rows(x, row_widths(h, w, spec.spread, x.device))


def push_to_equirect(x: torch.Tensor, gv: torch.Tensor, rot: torch.Tensor, spec: SphereSpec) -> torch.Tensor:
    """The adjoint of prefilter∘sample_views (autograd), feathered and divided by the pushed feather.

    Near the poles a view pixel spans 1/cos(lat) columns, so bilinear push alone leaves columns without
    gradient; the prefilter's adjoint spreads it over √2·tan(lat) columns, which covers them.
    """
    n_, k, c, n, _ = gv.shape
    h, w = x.shape[-2:]
    rays = view_rays(spec.fov_deg, n, spec.layout, spec.supersample, x.device)
    m = view_feather(spec.fov_deg, n, spec.feather, x.device)
    xs = x.detach().float().requires_grad_(True)
    ones = torch.ones(1, 1, h, w, device=x.device, requires_grad=True)
    with torch.enable_grad():
        views = sample_views(prefilter(xs, spec), rays, rot, spec.supersample)
        (g,) = torch.autograd.grad(views, xs, grad_outputs=(gv.float() * m).reshape_as(views))
        dens = sample_views(prefilter(ones, spec), rays, rot, spec.supersample)
        (d,) = torch.autograd.grad(dens, ones, grad_outputs=m.expand_as(dens).contiguous())
    return g / (d + EPS * float(d.mean()))


def view_gradients(x: torch.Tensor, net, obj, spec: SphereSpec, rot: torch.Tensor, *,
                   amp_dtype: torch.dtype | None = None, batch_px: int = 0) -> torch.Tensor:
    """d objective / d view for the K views of each frame: N×K×C×n×n (views in chunks of ≤ batch_px)."""

    n_, _, h, w = x.shape
    n = face_size(w, spec)
    rays = view_rays(spec.fov_deg, n, spec.layout, spec.supersample, x.device)
    per_chunk = max(1, batch_px // (n * n * n_)) if batch_px else rays.shape[0]
    xf = prefilter(x.float(), spec)
    out = []
    for i in range(0, rays.shape[0], per_chunk):
        with torch.no_grad():
            views = sample_views(xf, rays[i:i + per_chunk], rot, spec.supersample).to(x.dtype)
        views.requires_grad_(True)
        with torch.enable_grad(), torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = objective_loss(net.features(views, obj.names, wrap_x=False), obj)
            (g,) = torch.autograd.grad(loss, views)
        out.append(g.view(n_, -1, *g.shape[1:]))
    return torch.cat(out, dim=1)


def sphere_gradient(x: torch.Tensor, net, obj, spec: SphereSpec, rot: torch.Tensor, *,
                    amp_dtype: torch.dtype | None = None, batch_px: int = 0) -> torch.Tensor:
    """The ascent direction for N×3×H×W equirect frames under sphere rotation `rot` (3×3, p·rot).

    Scaled per frame so its solid-angle-weighted mean |g| is 1: summed over the sphere, each unit of
    area gets the same push whatever its latitude (a plain mean would count the poles' many columns).
    """
    gv = view_gradients(x, net, obj, spec, rot, amp_dtype=amp_dtype, batch_px=batch_px)
    h, w = x.shape[-2:]
    g = pull_to_equirect(gv, rot, spec, h, w) if spec.gather == "pull" else push_to_equirect(x, gv, rot, spec)
    if spec.grad_spread > 0:
        g = spread_rows(g, row_widths(h, w, spec.grad_spread, x.device))
    g = balance_latitudes(g, spec.balance)
    area = latitude_weight(h, 1.0, x.device)
    mean = (g.abs() * area).sum(dim=(1, 2, 3), keepdim=True) / (area.sum() * w * g.shape[1])
    return (g / (mean + EPS)).to(x.dtype)


def sphere_direction(x: torch.Tensor, net, obj, spec: SphereSpec, gen: torch.Generator, *,
                     amp_dtype: torch.dtype | None = None, batch_px: int = 0) -> torch.Tensor:
    """One step's direction: a random rotation from `gen` (shared by the stereo eyes), then sphere_gradient."""
    rot = random_rotation(gen, spec.tilt_deg)
    return sphere_gradient(x, net, obj, spec, rot, amp_dtype=amp_dtype, batch_px=batch_px)


__all__ = ["SphereSpec", "LAYOUTS", "face_size", "random_rotation", "yaw_rotation", "view_rays", "sample_views",
           "pull_to_equirect", "push_to_equirect", "spread_rows",
           "view_gradients", "sphere_gradient", "sphere_direction", "pad_sphere", "directions_to_pixels",
           "equirect_directions"]
