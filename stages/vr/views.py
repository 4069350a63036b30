"""Look-around views of a 360° frame (as a headset shows it) and contact sheets of labelled tiles.

The six 90° views — front, right, back, left, up, down — are py360convert's `e2p` perspective
projections (yaw + to the right, pitch + up), so a 360° result can be judged without a headset: the
seam sits behind the viewer (between back's left and right halves) and the poles are the centres of
the up and down views.
"""

from __future__ import annotations

import cv2
import numpy as np
import py360convert

LOOK_AROUND = (("front", 0.0, 0.0), ("right", 90.0, 0.0), ("back", 180.0, 0.0), ("left", -90.0, 0.0),
               ("up", 0.0, 90.0), ("down", 0.0, -90.0))
_FONT = cv2.FONT_HERSHEY_SIMPLEX
LABEL_H = 22
ROW_LABEL_W = 120


def look_around(equirect: np.ndarray, size: int = 256, fov: float = 90.0) -> list[tuple[str, np.ndarray]]:
    """The six 90° perspective views of an H×W×3 equirect image, each size×size uint8."""
    img = np.asarray(equirect)
    return [(name, np.clip(py360convert.e2p(img, fov, yaw, pitch, (size, size)), 0, 255).astype(np.uint8))
            for name, yaw, pitch in LOOK_AROUND]


def fit_tile(rgb: np.ndarray, width: int) -> np.ndarray:
    """An image scaled to `width` pixels wide, keeping its aspect."""
    h, w = rgb.shape[:2]
    height = max(1, round(h * width / w))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR)


def _label(width: int, text: str, height: int = LABEL_H) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(bar, text, (6, height - 7), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], gap: int = 4) -> np.ndarray:
    """A contact sheet: one row per (row label, [(tile label, tile)]), tiles labelled above, rows on the left.

    Tiles within a row must share a height; rows may differ in width (shorter ones are padded white).
    """
    built = []
    for row_label, tiles in rows:
        h = max(t.shape[0] for _, t in tiles)
        cells = [np.concatenate([_label(t.shape[1], name), _pad_h(t, h)]) for name, t in tiles]
        spaced = [c for cell in cells for c in (cell, np.full((h + LABEL_H, gap, 3), 255, np.uint8))][:-1]
        body = np.concatenate(spaced, axis=1)
        head = np.full((h + LABEL_H, ROW_LABEL_W, 3), 255, np.uint8)
        for k, word in enumerate(row_label.split("\n")):
            cv2.putText(head, word, (6, LABEL_H + 18 + 18 * k), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        built.append(np.concatenate([head, body], axis=1))
    width = max(r.shape[1] for r in built)
    out = []
    for r in built:
        out.append(np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255))
    return np.concatenate(out)


def _pad_h(t: np.ndarray, h: int) -> np.ndarray:
    return t if t.shape[0] == h else np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0)), constant_values=255)
