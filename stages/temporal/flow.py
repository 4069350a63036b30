"""Dense optical flow between two source frames: backward (cur -> prev) and forward (prev -> cur).

Conventions used throughout the temporal stages:

* Flow arrays are H x W x 2 float32, channel 0 = dx, channel 1 = dy, in pixels of the input frames.
* Backward flow ``b`` is defined on the CURRENT frame: ``cur[y, x] ~= prev[y + b_y, x + b_x]``; it is
  the map that `stages.temporal.warp.warp` needs to pull the previous frame (or residual) into the current one.
* Forward flow ``f`` is defined on the PREVIOUS frame: ``prev[y, x] ~= cur[y + f_y, x + f_x]``. It is
  only used for the forward/backward consistency check, never negated into a backward map.

Both flows are estimated explicitly (two solver runs, or one batched RAFT call) because ``-f`` is not
the backward flow wherever something moves over a background.

Threading: a `FlowEstimator` holds reusable solver objects (an OpenCV DIS instance keeps internal
buffers between calls, a RAFT model is a torch module), so an instance must be used by one thread at a
time. The runner gives its background flow thread its own estimator.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stages.common import InputError
from stages.temporal.warp import upscale_flow
from stages.vr.spherical import crop_x, wrap_pad_x

log = logging.getLogger(__name__)

FLOW_METHODS = ("dis", "farneback", "raft")

# DIS search settings, (patch size, patch stride, gradient-descent iterations, variational refinement
# iterations), all computed down to the working copy itself (finest scale 0): the working size is the flow's
# resolution. `medium` is OpenCV's MEDIUM search, whose own finest scale is half the image: MEDIUM on a
# 1920-wide frame is `medium` at 960, bit for bit. Measured at 960 on a real 1920×960 clip (README, Flow at a
# working resolution): `fast` costs half of `medium`'s CPU for a warp error 9–15 % higher, and carries less
# through fast motion; `ultrafast` 0.43× for 2–16 %.
# Patch sizes and strides are for a 960-px copy; a smaller one (a small frame) gets them scaled down with it, never
# below MEDIUM's, so a patch covers as much of the picture at any size (a 32-px patch is a quarter of a 128-px
# frame, and its flow fails the small renders' own tests).
DIS_PRESETS = {"medium": (8, 3, 25, 5), "fast": (32, 20, 6, 1), "ultrafast": (16, 10, 6, 0)}
DEFAULT_MAX_SIDE = 960  # OpenCV MEDIUM's own flow resolution on a 1080p frame
# The forward flow only checks the backward one (the Ruder mask), and the check tolerates a coarser flow: on a
# working copy this long or longer a render computes it at half the size, a quarter of its cost (flow CPU per pair
# 0.53 -> 0.33 s at 1080p). Measured against the mask of full-size flows (1920×960 room turning, a 1080p pan):
# the source warp error on the pixels it trusts -0.2 % / +4.9 %, trusted share 0.918 / 0.563 against 0.938 /
# 0.564 (README, Flow at a working resolution, has the renders). DIS's fast search for it did far worse in
# the fast pan (8 % trusted).
CHECK_HALF_FROM = 960


def dis_search(preset: str, side: int) -> tuple[int, int, int, int]:
    """The DIS search of `preset` for a working copy whose longer side is `side` px."""
    patch, stride, descent, refine = DIS_PRESETS[preset]
    scale = min(1.0, side / DEFAULT_MAX_SIDE)
    return max(8, round(patch * scale)), max(3, round(stride * scale)), descent, refine

# Farneback parameters tuned for video-sized frames: 5 levels reach ~30 px motions at 640 wide, the
# Gaussian window (flag) is more robust than the box filter on low-texture regions.
_FARNEBACK = dict(pyr_scale=0.5, levels=5, winsize=21, iterations=5, poly_n=7, poly_sigma=1.5,
                  flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN)

_RAFT_UPDATES = 12


def wrap_pad_width(width: int) -> int:
    """Columns borrowed from the opposite side when estimating flow on 360 frames.

    Enough context for the solver's coarse pyramid levels and for motions across the seam of up to
    about a tenth of the panorama, without doubling the cost.
    """
    return int(min(width, max(16, round(width * 0.1))))


def _check_frame(name: str, img: np.ndarray) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{name} must be H x W x 3 uint8, got {img.shape} {img.dtype}")


def _check_pair(prev_rgb: np.ndarray, cur_rgb: np.ndarray) -> None:
    for name, img in (("prev_rgb", prev_rgb), ("cur_rgb", cur_rgb)):
        _check_frame(name, img)
    if prev_rgb.shape != cur_rgb.shape:
        raise ValueError(f"frame sizes differ: {prev_rgb.shape} vs {cur_rgb.shape}")


def _raft_candidates() -> list[tuple[str, Path]]:
    """Known torchvision RAFT checkpoints in the torch hub cache, best first."""
    import torch
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    found: list[tuple[str, Path]] = []
    for size, enum in (("large", Raft_Large_Weights), ("small", Raft_Small_Weights)):
        members = [enum.DEFAULT] + [m for m in enum if m is not enum.DEFAULT]
        for member in members:
            path = ckpt_dir / os.path.basename(member.url)
            if path.is_file():
                found.append((size, path))
    return found


def _load_raft(weights: str | os.PathLike | None):
    """Build a RAFT model from a local checkpoint only; the tool must work offline and never fetch."""
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"temporal.flow=raft needs RAFT weights: {path} does not exist; or use dis")
        candidates = [("large", path), ("small", path)]
    else:
        candidates = _raft_candidates()
        if not candidates:
            ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
            raise InputError(
                f"temporal.flow=raft needs RAFT weights: put raft_large_C_T_SKHT_V2-ff5fadd5.pth or "
                f"raft_small_C_T_V2-01064c6d.pth in {ckpt_dir} (or pass a weights path), or use dis"
            )
    states: dict[Path, dict] = {}
    last_error: Exception | None = None
    for size, path in candidates:
        if path not in states:
            try:
                states[path] = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # a corrupt file is a user problem, report it in one line
                raise InputError(f"temporal.flow=raft: cannot read RAFT weights {path}: {exc}") from exc
        model = (raft_large if size == "large" else raft_small)(weights=None, progress=False)
        try:
            model.load_state_dict(states[path])
        except RuntimeError as exc:  # wrong architecture for this checkpoint: try the other size
            last_error = exc
            continue
        log.info("RAFT %s loaded from %s", size, path)
        return model.eval()
    raise InputError(f"temporal.flow=raft: {candidates[0][1]} is not a torchvision RAFT checkpoint "
                     f"({str(last_error).splitlines()[0]})")


def working_size(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) at which flow is computed: the frame's, or scaled so the longer side is `max_side`."""
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _solver_copy(img: np.ndarray, size: tuple[int, int], wrap_x: bool) -> tuple[np.ndarray, int]:
    """`img` at `size` (h, w) and, for a 360° frame, wrap-padded: the copy a solver sees, and its pad."""
    h, w = size
    if img.shape[:2] != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    pad = wrap_pad_width(w) if wrap_x else 0
    # Solvers see a continuous image across the seam; cropping keeps the frame's own pixels.
    return np.ascontiguousarray(wrap_pad_x(img, pad) if pad else img), pad


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame as the solver sees it (grey, or RGB for RAFT; at the working size; wrap-padded), made once per
    frame: the producer keeps the previous frame's, so each frame is converted once, not once per pair."""

    image: np.ndarray
    size: tuple[int, int]  # (h, w) of the frame itself
    pad: int  # columns borrowed from the other side (360° wrap), cropped off the flow again


class FlowEstimator:
    """Reusable flow solver for one method. Not shared between threads (see module docstring).

    `preset`: the DIS search (DIS_PRESETS); `max_side`: the working resolution, the longer side of the copy the
    solver sees (None = the frame's); `half_check`: the forward flow at half that size (CHECK_HALF_FROM).
    Flows come back at the working size, in its pixels (`flow`), or scaled up to the frame (`pair`).
    """

    def __init__(self, method: str = "dis", device: str = "cpu", *,
                 weights: str | os.PathLike | None = None, preset: str = "medium",
                 max_side: int | None = DEFAULT_MAX_SIDE, half_check: bool = False) -> None:
        if method not in FLOW_METHODS:
            raise InputError(f"temporal.flow must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
        if preset not in DIS_PRESETS:
            raise InputError(f"temporal.flow_preset must be one of {', '.join(DIS_PRESETS)}, got {preset!r}")
        self.method = method
        self.device = device
        self.max_side = max_side
        self.half_check = half_check  # the render's: see CHECK_HALF_FROM; measurements keep full-size checks
        self._dis = None
        self._raft = None
        self.preset = preset
        self._side = 0  # the working size the DIS search is set up for
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
            self._dis.setFinestScale(0)
        elif method == "raft":
            self._raft = _load_raft(weights).to(device)

    def prepare(self, rgb: np.ndarray, *, wrap_x: bool = False) -> Prepared:
        """`rgb` (H×W×3 uint8) ready for `flow`: grey (RGB for RAFT), at the working size, wrap-padded."""
        _check_frame("frame", rgb)
        h, w = rgb.shape[:2]
        img = rgb if self.method == "raft" else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        img, pad = _solver_copy(img, working_size(h, w, self.max_side), wrap_x)
        return Prepared(img, (h, w), pad)

    def flow(self, prev: Prepared, cur: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """(backward cur->prev, forward prev->cur), each h×w×2 float32 at the working size, in its pixels."""
        if prev.image.shape != cur.image.shape or prev.size != cur.size:
            raise ValueError(f"frame sizes differ: {prev.size} vs {cur.size}")
        if self.method == "raft":
            backward, forward = (crop_x(f, prev.pad) for f in self._raft_pair(prev.image, cur.image))
        else:
            h, w = prev.image.shape[:2]
            side = max(h, w - 2 * prev.pad)  # the copy's own size, without the wrap's borrowed columns
            self._search(side)
            backward = crop_x(self._gray_flow(cur.image, prev.image), prev.pad)
            if self.half_check and side >= CHECK_HALF_FROM:
                forward = self._half_forward(prev, cur, backward.shape[:2])
            else:
                forward = crop_x(self._gray_flow(prev.image, cur.image), prev.pad)
        return (np.ascontiguousarray(backward, dtype=np.float32),
                np.ascontiguousarray(forward, dtype=np.float32))

    def _half_forward(self, prev: Prepared, cur: Prepared, size: tuple[int, int]) -> np.ndarray:
        """prev -> cur on half-size copies (CHECK_HALF_FROM), at `size` (the working size, unpadded), in its pixels."""
        half = (max(1, size[0] // 2), max(1, size[1] // 2))
        (a, pad), (b, _) = (_solver_copy(crop_x(p.image, p.pad), half, p.pad > 0) for p in (prev, cur))
        self._search(max(half))
        return upscale_flow(crop_x(self._gray_flow(a, b), pad), size)

    def pair(self, prev_rgb: np.ndarray, cur_rgb: np.ndarray, *,
             wrap_x: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return (backward cur->prev, forward prev->cur), each H x W x 2 float32 pixels of the frames."""
        _check_pair(prev_rgb, cur_rgb)
        backward, forward = self.flow(self.prepare(prev_rgb, wrap_x=wrap_x), self.prepare(cur_rgb, wrap_x=wrap_x))
        size = prev_rgb.shape[:2]
        return upscale_flow(backward, size), upscale_flow(forward, size)

    def _search(self, side: int) -> None:
        if self._dis is not None and side != self._side:
            patch, stride, descent, refine = dis_search(self.preset, side)
            self._dis.setPatchSize(patch)
            self._dis.setPatchStride(stride)
            self._dis.setGradientDescentIterations(descent)
            self._dis.setVariationalRefinementIterations(refine)
            self._side = side

    def _gray_flow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow defined on `src` pointing into `dst` (OpenCV's convention: src(x) ~ dst(x + flow))."""
        h, w = src.shape
        # DIS rejects images under 12 px, and with its patch size p any side under about 1.4·p (measured: 10, 22
        # and 44 px fail for p = 8, 16, 32); thumbnails get replicated borders that are cropped again.
        least = max(16, -(-3 * self._dis.getPatchSize() // 2)) if self._dis is not None else 16
        ph, pw = max(0, least - h), max(0, least - w)
        if ph or pw:
            src = cv2.copyMakeBorder(src, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            dst = cv2.copyMakeBorder(dst, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
        if self.method == "dis":
            flow = self._dis.calc(src, dst, None)
        else:
            flow = cv2.calcOpticalFlowFarneback(src, dst, None, **_FARNEBACK)
        return flow[:h, :w]

    def _raft_pair(self, prev_rgb: np.ndarray, cur_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        h, w = prev_rgb.shape[:2]
        # RAFT needs sizes divisible by 8 and at least 128 (its correlation pyramid); replicate
        # padding keeps the extra rows/columns neutral and they are cropped off again.
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w

        def to_tensor(img: np.ndarray) -> torch.Tensor:
            if ph or pw:
                img = cv2.copyMakeBorder(img, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
            return t / 127.5 - 1.0

        prev_t, cur_t = to_tensor(prev_rgb), to_tensor(cur_rgb)
        # One batch of two: (cur -> prev) is the backward flow, (prev -> cur) the forward one.
        first = torch.stack([cur_t, prev_t]).to(self.device)
        second = torch.stack([prev_t, cur_t]).to(self.device)
        with torch.inference_mode():
            flows = self._raft(first, second, num_flow_updates=_RAFT_UPDATES)[-1]
        flows = flows[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()
        return flows[0], flows[1]
