"""The messages that flow through the video loop, and the temporal state a checkpoint saves.

    decode+flow ──FrameRecord──▶ dream ──DreamedFrame / SegmentEnd──▶ encode+checkpoint
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from stages.temporal.carry import to_host
from stages.temporal.cuts import PairStats


@dataclass(slots=True)
class FrameRecord:
    index: int  # 0-based within the rendered range; seeds the frame's randomness
    pts: int | None
    time_base: Fraction
    source: np.ndarray  # H×W×3 uint8 at dream size
    motion: list[tuple[np.ndarray, np.ndarray]] | None  # per eye: (backward flow to t−1, reliability mask)
    cut: str = ""  # why the temporal chain resets here ("" = no scene cut)
    disparity: object = None  # stages.vr.stereo.Disparity from the right eye to the left (stereo carry)
    pair: PairStats | None = None  # the cut test's numbers for the pair (t−1, t); None without one


@dataclass(slots=True)
class DreamedFrame:
    index: int
    pts: int | None
    rgb: np.ndarray  # H×W×3 uint8, what the encoder gets
    end_time: float  # seconds at which the frame stops showing (its pts + one nominal frame)


@dataclass(slots=True)
class SegmentEnd:
    """Close the open segment and commit it together with the state after its last frame."""

    state: TemporalState


END = object()  # no more messages on this queue


@dataclass(slots=True)
class TemporalState:
    """Everything the next frame needs from the past: exactly what a checkpoint stores."""

    next_index: int = 0
    prev_source: np.ndarray | None = None  # H×W×3 uint8
    # dreamed − source, unrounded: on the dream's device between frames (1×3×H×W tensor), an H×W×3 float32 array
    # once loaded from a checkpoint
    prev_residual: object = None
    ref_strength: float | None = None  # mean squared residual of the shot's first frame (temporal.steady)
    prev_pair: PairStats | None = None  # the last frame's pair: the next frame's cut test looks back at it

    def residual_array(self) -> np.ndarray:
        """The residual as an H×W×3 float32 array (host memory)."""
        r = self.prev_residual
        return r if isinstance(r, np.ndarray) else to_host(r)

    def save(self, f) -> None:
        arrays = {"next_index": np.array(self.next_index, dtype=np.int64)}
        if self.prev_source is not None:
            arrays["prev_source"] = self.prev_source
            arrays["prev_residual"] = np.ascontiguousarray(self.residual_array())
        if self.ref_strength is not None:
            arrays["ref_strength"] = np.array(self.ref_strength, dtype=np.float64)
        if self.prev_pair is not None:
            arrays["prev_pair"] = np.array([self.prev_pair.reliable, self.prev_pair.colour], dtype=np.float64)
        np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> TemporalState:
        with np.load(path) as z:
            src = z["prev_source"] if "prev_source" in z else None
            res = z["prev_residual"] if "prev_residual" in z else None
            ref = float(z["ref_strength"]) if "ref_strength" in z else None
            pair = PairStats(*map(float, z["prev_pair"])) if "prev_pair" in z else None
            return cls(int(z["next_index"]), src, res, ref, pair)
