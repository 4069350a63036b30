"""HDR footage (PQ or HLG, as phones record by default) turned into the SDR BT.709 picture a render dreams and
encodes: the transfer undone to light, BT.2020 primaries brought to BT.709, highlights rolled off into white.

Read as if it were SDR, such a frame looks flat and dim with pale colours (a BT.2020 red shown with BT.709
primaries is an orange-pink). Conventions from ITU-R BT.2100 and BT.2408: HDR reference white (paper white,
skin tones' ceiling) is 203 cd/m², and maps to SDR white less a soft highlight roll-off; HLG is shown on a
1000 cd/m² display (system gamma 1.2).
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

REFERENCE_WHITE = 203.0  # cd/m², BT.2408
HLG_PEAK = 1000.0  # cd/m², the nominal HLG display (BT.2100 OOTF, gamma 1.2)
KNEE = 0.8  # SDR linear light up to this stays as it is; above it highlights roll off towards 1
# linear BT.2020 RGB → linear BT.709 RGB (BT.2087)
_BT2020_TO_709 = np.array([[1.6605, -0.5876, -0.0728],
                           [-0.1246, 1.1329, -0.0083],
                           [-0.0182, -0.1006, 1.1187]], np.float32)
_LUMA_2020 = np.array([0.2627, 0.6780, 0.0593], np.float32)
_LUMA_709 = np.array([0.2126, 0.7152, 0.0722], np.float32)


def pq_to_nits(e: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: signal 0…1 → cd/m²."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = np.power(np.clip(e, 0, 1), 1 / m2)
    return 10000 * np.power(np.maximum(p - c1, 0) / (c2 - c3 * p), 1 / m1)


def hlg_scene(e: np.ndarray) -> np.ndarray:
    """ARIB STD-B67 inverse OETF: signal 0…1 → scene light 0…1 (BT.2100's OOTF then makes display light of it)."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    e = np.clip(e, 0, 1)
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12)


def roll_off(y: np.ndarray) -> np.ndarray:
    """Relative luminance (1 = SDR white) → 0…1: identity below KNEE, above it an exponential shoulder with slope 1
    at the knee that approaches 1."""
    span = 1 - KNEE
    return np.where(y <= KNEE, y, KNEE + span * (1 - np.exp(-(y - KNEE) / span)))


@functools.cache
def _signal_lut(transfer: str) -> np.ndarray:
    """Per 16-bit code: PQ → light relative to reference white; HLG → scene light (its OOTF needs the pixel's
    luminance, so it is applied per pixel)."""
    e = np.arange(65536, dtype=np.float64) / 65535
    return (pq_to_nits(e) / REFERENCE_WHITE if transfer == "PQ" else hlg_scene(e)).astype(np.float32)


_GAMMA_STEPS = 4096
_GAMMA_LUT = np.round(np.power(np.arange(_GAMMA_STEPS + 1) / _GAMMA_STEPS, 1 / 2.4) * 255).astype(np.uint8)


def to_sdr(rgb16: np.ndarray, transfer: str, bt2020: bool = True) -> np.ndarray:
    """16-bit RGB of a PQ or HLG frame (BT.2020 primaries unless `bt2020` is False) → 8-bit BT.709 RGB.
    Look-up tables for the transfers and cv2 for the per-pixel matrices: 0.2-0.3 s a 1080p frame on one CPU core."""
    light = _signal_lut(transfer)[rgb16]
    if transfer == "HLG":
        ys = np.maximum(cv2.transform(light, _LUMA_2020[None]), 1e-6)
        light *= ((HLG_PEAK / REFERENCE_WHITE) * np.power(ys, 1.2 - 1))[..., None]
    if bt2020:
        light = cv2.transform(light, _BT2020_TO_709)
    np.maximum(light, 0, out=light)
    y = cv2.transform(light, _LUMA_709[None])
    # shoulder only where needed: most of a picture is below the knee
    scale = np.ones_like(y)
    hi = y > KNEE
    scale[hi] = roll_off(y[hi]) / y[hi]
    light *= scale[..., None]
    # BT.709's encoding as displays decode it (BT.1886, gamma 2.4), through a table
    idx = np.clip(light * _GAMMA_STEPS + 0.5, 0, _GAMMA_STEPS).astype(np.int32)
    return _GAMMA_LUT[idx]
