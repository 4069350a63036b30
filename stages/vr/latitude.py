"""Latitude evening for sphere-true dreaming: per-row scales that keep the poles dreamed like the horizon.

A spherical frame's rows are rings of the sphere; content decides how strongly each ring reacts to the dream, so
the push (`balance_latitudes`, per ascent step) and the result (`even_detail`, per octave) are evened per row
against the sphere's solid-angle mean. Used by `stages.vr.sphere` (the gradient) and `stages.dream.ascent` (the
octave loop); the strengths are `stages.vr.sphere.SphereSpec.balance` and `.even`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from stages.vr.spherical import latitude_weight

EPS = 1e-8
MAX_BALANCE = 4.0  # the most balance_latitudes lifts (or lowers) a row's gradient against the sphere's mean
MAX_EVEN = 1.5  # the most even_detail lifts (or lowers) a row's detail against the sphere's mean
BALANCE_SIGMA_DEG = 10.0  # the latitude reach over which row means are smoothed


def row_scale(a: torch.Tensor, power: float, limit: float) -> torch.Tensor:
    """N×1×H×1 factors that bring each row's mean |a| (N×C×H×W) to the sphere's: (sphere ÷ row)^power.

    The mean |a| per row (a ring of the sphere; near a pole a small cap) is smoothed over BALANCE_SIGMA_DEG
    of latitude, reflected at the poles as the sphere continues there, so the scale varies smoothly and no
    band shows; the sphere's mean weighs rows by solid angle; factors stay within ×/÷ `limit`. A per-row
    scale commutes with any yaw, so the seam stays where it was not.
    """
    h = a.shape[-2]
    row = a.abs().mean(dim=(1, 3)).double()  # N×H
    sigma = BALANCE_SIGMA_DEG / 180 * h
    r = int(math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64, device=a.device) / sigma) ** 2)
    pad = F.pad(row[:, None], (min(r, h - 1),) * 2, mode="reflect")
    if r > h - 1:  # frames too short for the reach: smooth what there is
        k = k[r - (h - 1):r + h]
    smooth = F.conv1d(pad, (k / k.sum())[None, None])[:, 0]
    area = latitude_weight(h, 1.0, a.device).view(1, h).double()
    ref = (smooth * area).sum(dim=1, keepdim=True) / area.sum()
    scale = (ref / smooth.clamp_min(EPS)).clamp(1 / limit, limit) ** power
    return scale.to(a.dtype)[:, None, :, None]


def balance_latitudes(g: torch.Tensor, balance: float) -> torch.Tensor:
    """N×C×H×W equirect gradient, each row divided by (its smoothed mean |g| ÷ the sphere's)^balance.

    One scale for the whole sphere lets the content decide how hard each latitude is pushed: a busy
    floor has a larger gradient than the walls, and the pole it holds is dreamed harder than the
    horizon (testRoom1 at 1024×512: up 1.18, down 0.86 of the horizon). Rows are lifted (or lowered) at
    most ×MAX_BALANCE, so an empty sky is not dreamed from noise (`row_scale`).
    """
    if balance <= 0:
        return g
    return g * row_scale(g, balance, MAX_BALANCE)


def even_detail(detail: torch.Tensor, even: float) -> torch.Tensor:
    """An octave's new detail (N×C×H×W, dreamed − its start) with each row scaled towards the sphere's mean
    |detail| (`row_scale` at power `even`, within ×/÷ MAX_EVEN).

    The same push does not make the same dream everywhere: texture the network reads readily (a ceiling's
    lines, gravel) follows each step, calm content (a starry sky, plain walls) takes part of it back the
    next step, so even with `balance_latitudes` the pole holding the busier content came out 15–20 %
    stronger than the horizon, and which pole depended on the photo (bench/sphere_bench.py). Evening out
    the result per latitude, octave by octave, fixes that whatever the content; the octave's texture,
    and so the radial anisotropy, is only scaled.
    """
    if even <= 0:
        return detail
    return detail * row_scale(detail, even, MAX_EVEN)
