"""How a dreamed 360° frame looks in a headset: pole streaks, pole strength, the 0/360° seam.

Pure functions of (source, dreamed) equirect frames, H×W×3 (or H×W) uint8 or float on the 0..255 scale;
everything is measured on the dream residual r = dreamed − source, because the source's own structure
(a room's radial ceiling lines, a stitching seam) is not the dream's fault.

* Pole views: 90° perspective views of r as a headset shows them (py360convert `e2p`, bilinear), looking
  straight up, straight down, and at the horizon (yaw 0/90/180/270°). A view is n×n with n = 2W/π, so the
  frame is magnified ×2 at the view centre, as in a headset (`view_size`). Only the inscribed disc is used.
* radial anisotropy: Σ (∇r·t̂)² ÷ Σ (∇r·ρ̂)² over the disc, ρ̂ pointing away from the view centre, t̂
  across it (Scharr gradients, channels summed, a small centre disc left out where ρ̂ is undefined),
  per solid angle on the sphere (`radial_energies`). Streaks converging on the pole vary across the
  radius, not along it: > 1; rings < 1. Isotropic texture on the sphere reads 0.95–1.1 (1.27 at the
  poles for detail at the frame's own Nyquist, which bilinear viewing blurs radially there); a
  texture round in equirect pixels (what dreaming the map makes) reads 3–5. `_plane` variants measure
  on the view's pixels instead, where the perspective alone makes isotropic texture read ≈ 1.4.
* pole strength: mean |r| in the up (down) view ÷ mean |r| in the horizon views: 1 = as strong as the
  horizon; cos(latitude) weighting hides pinching by muting the poles (< 1).
* structure-matched seam: see `seam_jump`.

All of them are noisy on one frame (a few hundred rows, one seam): average over frames or yaw
rotations of the input (np.roll of the source before dreaming).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

HORIZON_YAWS = (0.0, 90.0, 180.0, 270.0)
SUPERSAMPLE = 1  # views finer than the frame do not alias (see `view_size`); > 1 renders s× finer and averages
INNER = 0.1  # share of the disc radius left out at the centre of a view for the anisotropy


def residual(source: np.ndarray, dreamed: np.ndarray) -> np.ndarray:
    """dreamed − source as float32 (H×W×C), on the 0..255 scale of the inputs."""
    s, d = np.asarray(source, dtype=np.float32), np.asarray(dreamed, dtype=np.float32)
    if s.shape != d.shape:
        raise ValueError(f"source {s.shape} and dreamed {d.shape} differ in shape")
    return d - s if d.ndim == 3 else (d - s)[..., None]


def view_size(w: int) -> int:
    """Side of a 90° view whose centre pixel spans half an equirect column (π/W rad).

    A headset shows the frame magnified (a 4K equirect on a 2K-per-eye display, or a dream made smaller
    than its source and scaled up), interpolating bilinearly between rows and columns. Views at the
    frame's own scale hide what that reveals: measured on a sphere-mode dream at 192×96, radial
    anisotropy 1.12 at n = W/π but 1.61 at 4W/π and 1.65 at 8W/π. On isotropic texture 2W/π and 3W/π
    read alike (and ≈ 1 except for detail at the frame's Nyquist).
    """
    return max(16, round(2 * w / math.pi))


def perspective(eq: np.ndarray, yaw: float, pitch: float, n: int, fov: float = 90.0,
                supersample: int = 1) -> np.ndarray:
    """py360convert.e2p of an H×W×C float array: yaw + right, pitch + up (degrees).

    supersample s: rendered s× finer and area-averaged, so detail finer than a view pixel (near a pole
    an equirect row holds many columns per view pixel) is averaged instead of aliased into noise.
    """
    import py360convert

    v = py360convert.e2p(np.ascontiguousarray(eq, dtype=np.float32), fov, yaw, pitch, (n * supersample,) * 2,
                         mode="bilinear")
    if supersample > 1:
        v = cv2.resize(v, (n, n), interpolation=cv2.INTER_AREA)
    return v if v.ndim == 3 or np.ndim(eq) == 2 else v[..., None]


def _disc(n: int, inner: float = 0.0, fov: float = 90.0):
    """Mask of the inscribed disc (minus an inner share), the radial unit vector (x right, y down) and
    cos θ, θ the angle of each pixel's ray from the view axis."""
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - c
    rho = np.hypot(xx, yy)
    outer = c - 1.5  # Scharr's 3×3 taps stay inside the view
    mask = (rho <= outer) & (rho >= inner * outer)
    cos = 1 / np.sqrt(1 + (rho * math.tan(math.radians(fov) / 2) / c) ** 2)
    rho = np.maximum(rho, 1e-6)
    return mask, xx / rho, yy / rho, cos


def radial_energies(view: np.ndarray, inner: float = INNER, sphere: bool = True) -> tuple[float, float]:
    """(energy across the radius, energy along it) of an n×n(×C) 90° view about its centre.

    sphere=True measures on the sphere, not on the view plane: a gnomonic view stretches the sphere
    radially by 1/cos²θ and tangentially by 1/cosθ, so a plane gradient g is g_r/cos²θ, g_t/cosθ per
    radian, and a pixel covers cos³θ of the centre pixel's solid angle. Energies per solid angle are then
    Σ g_t²·cosθ and Σ g_r²/cosθ. On the plane (sphere=False) an isotropic sphere texture reads ≈ 1.4 in
    a 90° view, streaks or not.
    """
    v = view if view.ndim == 3 else view[..., None]
    mask, rx, ry, cos = _disc(v.shape[0], inner)
    w_across, w_along = (cos[mask], 1 / cos[mask]) if sphere else (1.0, 1.0)
    across = along = 0.0
    for ch in range(v.shape[2]):
        a = np.ascontiguousarray(v[..., ch], dtype=np.float32)
        gx, gy = cv2.Scharr(a, cv2.CV_32F, 1, 0), cv2.Scharr(a, cv2.CV_32F, 0, 1)
        along += float(((gx * rx + gy * ry)[mask] ** 2 * w_along).sum(dtype=np.float64))
        across += float(((gy * rx - gx * ry)[mask] ** 2 * w_across).sum(dtype=np.float64))
    return across, along


def radial_anisotropy(view: np.ndarray, inner: float = INNER, sphere: bool = True) -> float:
    """Across-the-radius ÷ along-the-radius gradient energy of a view about its centre (≈ 1 isotropic)."""
    across, along = radial_energies(view, inner, sphere)
    return across / max(along, 1e-12)


def disc_mean_abs(view: np.ndarray) -> float:
    """Mean |view| over the inscribed disc, weighted by solid angle (cos³θ per pixel)."""
    mask, _, _, cos = _disc(view.shape[0])
    a = np.abs(view[mask]).reshape(int(mask.sum()), -1).mean(axis=1)
    w = cos[mask] ** 3
    return float((a * w).sum() / w.sum())


def pole_report(source: np.ndarray, dreamed: np.ndarray, n: int | None = None,
                supersample: int = SUPERSAMPLE) -> dict:
    """Radial anisotropy (up, down, horizon) and pole strength (up, down ÷ horizon) of one dreamed frame.

    `aniso_*`: `radial_anisotropy` per solid angle on the sphere (≈ 1 for isotropic texture);
    `aniso_*_plane`: the same on the view's pixels as a headset shows them (an isotropic sphere texture
    reads ≈ 1.4 there: the perspective stretches the view's rim radially). `strength_*`: mean |r| in the
    up / down view ÷ in the horizon views; `horizon_abs`: mean |r| in the horizon views (0..255 scale).
    """
    r = residual(source, dreamed)
    n = n or view_size(r.shape[1])
    views = {"up": [perspective(r, 0.0, 90.0, n, supersample=supersample)],
             "down": [perspective(r, 0.0, -90.0, n, supersample=supersample)],
             "horizon": [perspective(r, yaw, 0.0, n, supersample=supersample) for yaw in HORIZON_YAWS]}
    out: dict = {}
    for name, vs in views.items():
        for suffix, sphere in (("", True), ("_plane", False)):
            e = np.array([radial_energies(v, sphere=sphere) for v in vs]).sum(axis=0)
            out[f"aniso_{name}{suffix}"] = float(e[0] / max(e[1], 1e-12))
    h_abs = float(np.mean([disc_mean_abs(v) for v in views["horizon"]]))
    out["strength_up"] = disc_mean_abs(views["up"][0]) / max(h_abs, 1e-12)
    out["strength_down"] = disc_mean_abs(views["down"][0]) / max(h_abs, 1e-12)
    out["horizon_abs"] = h_abs
    return out


def _jumps(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, |a(col k+1) − a(col k)| for k = 0..W−2 (H×(W−1)) and across the seam |a(0) − a(W−1)| (H),
    channels averaged."""
    a = a if a.ndim == 3 else a[..., None]
    inner = np.abs(np.diff(a, axis=1)).mean(axis=2)
    seam = np.abs(a[:, 0] - a[:, -1]).mean(axis=1)
    return inner, seam


def _nearest_mean(s_sorted: np.ndarray, r_sorted: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Per query value, the mean r of the k pairs whose s (sorted ascending) is nearest it."""
    k = min(k, s_sorted.size)
    # The k nearest lie within k ranks either side of the insertion point: take those 2k candidates
    # and keep the k closest in value.
    lo = np.clip(np.searchsorted(s_sorted, query) - k, 0, max(s_sorted.size - 2 * k, 0))
    cand = np.minimum(lo[:, None] + np.arange(min(2 * k, s_sorted.size)), s_sorted.size - 1)
    near = np.argpartition(np.abs(s_sorted[cand] - query[:, None]), k - 1, axis=1)[:, :k]
    return r_sorted[np.take_along_axis(cand, near, axis=1)].mean(axis=1)


def _seam_value(s_in: np.ndarray, s_seam: np.ndarray, r_in: np.ndarray, r_seam: np.ndarray, bands: int,
                match: int) -> float:
    h = r_in.shape[0]
    band_of_row = np.minimum(np.arange(h) * bands // h, bands - 1)
    expected = np.empty(h)
    for b in range(bands):
        rows = band_of_row == b
        s_b, r_b = s_in[rows].ravel(), r_in[rows].ravel()
        order = np.argsort(s_b, kind="stable")
        expected[rows] = _nearest_mean(s_b[order], r_b[order], s_seam[rows], match)
    return float(r_seam.sum() / max(expected.sum(), 1e-12))


def seam_jump(source: np.ndarray, dreamed: np.ndarray, *, bands: int = 8, match: int = 16,
              nulls: int = 32) -> dict:
    """Structure-matched seam: the residual's jump across 0/360° ÷ what alike structure gets inside.

    The dream follows the source's edges, so the residual jumps more where the source jumps; a plain
    seam ÷ interior ratio (`plain`) blames the dream for whatever edge happens to cross the seam. Here:
    1. every adjacent column pair (k, k+1) inside the frame has a source jump s = |ΔS| and a residual
       jump j = |Δr| (channels averaged); rows are grouped into `bands` latitude bands, because the
       dream's strength changes with latitude (the cos-latitude step of the equirect mode);
    2. for each row, the seam pair (W−1, 0) has its own source jump s_seam; its expected residual
       jump is the mean j of the `match` interior pairs of the same band whose s is nearest s_seam;
    3. seam = Σ_rows j_seam ÷ Σ_rows expected.
    ≈ 1 when the seam is dreamed like any other column; a cut in the dream shows as > 1, a seam the
    dream smooths over (or an un-dreamed band) as < 1.
    The null: the same measure at `nulls` interior column pairs, spread evenly (frame and dream rolled
    together so that pair becomes the seam). `null_mean` is what an ordinary column reads (1.0–1.07 on
    the test room: nearest-neighbour matching is not exactly unbiased), `null_std` the one-column noise
    (0.08–0.13 at 256 rows: one seam needs averaging over frames or yaw rolls), and `seam_rel` =
    seam ÷ null_mean, the seam against ordinary columns of the same frame.
    """
    src, res = np.asarray(source, dtype=np.float32), residual(source, dreamed)
    w = res.shape[1]

    def at(shift: int) -> float:
        s_in, s_seam = _jumps(np.roll(src, shift, axis=1) if shift else src)
        r_in, r_seam = _jumps(np.roll(res, shift, axis=1) if shift else res)
        return _seam_value(s_in, s_seam, r_in, r_seam, bands, match)

    seam = at(0)
    null = np.array([at(int(k)) for k in (np.arange(nulls) * w) // nulls + w // (2 * nulls)]) if nulls else \
        np.array([np.nan])
    s_in, s_seam = _jumps(src)
    r_in, r_seam = _jumps(res)
    return {"seam": seam, "null_mean": float(null.mean()), "null_std": float(null.std()),
            "seam_rel": seam / float(null.mean()), "plain": float(r_seam.mean() / max(r_in.mean(), 1e-12))}


def vr_report(source: np.ndarray, dreamed: np.ndarray) -> dict:
    """pole_report and seam_jump of one frame in one dict (seam_jump's keys prefixed `seam_`)."""
    seam = seam_jump(source, dreamed)
    return pole_report(source, dreamed) | {"seam": seam["seam"], "seam_rel": seam["seam_rel"],
                                           "seam_null_mean": seam["null_mean"], "seam_null_std": seam["null_std"],
                                           "seam_plain": seam["plain"]}


__all__ = ["residual", "view_size", "perspective", "radial_energies", "radial_anisotropy", "pole_report",
           "seam_jump", "vr_report"]
