"""Shared fixtures: the embedded EfficientNet-Lite0 built once per session, the chelsea photo, CLI helpers.

Torch is imported lazily so test files that never touch a model do not pay for it.

CPU threads: this machine has 2 cores and is often shared with other jobs. With the CPU oversubscribed,
OpenMP's spinning worker threads make small convolutions ~100x slower (measured: a 32x64 gradient
through block3 took 0.66 s with 2 threads, 3 ms with 1). So the test session runs torch with one
thread (override with DEEPDREAM_TEST_THREADS=N), and `cli_env()` gives subprocesses OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
CHELSEA = REPO / "sample_media" / "chelsea.png"
TEST_THREADS = int(os.environ.get("DEEPDREAM_TEST_THREADS", "1"))


def _limit_torch_threads() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and TEST_THREADS > 0 and torch.get_num_threads() != TEST_THREADS:
        torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Applies the thread limit once collection has imported torch (if any test module did)."""
    _limit_torch_threads()
    yield


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m pipeline` subprocesses: one BLAS/OpenMP thread, no colour, no tty."""
    env = dict(os.environ)
    if TEST_THREADS > 0:
        env["OMP_NUM_THREADS"] = str(TEST_THREADS)
        env["MKL_NUM_THREADS"] = str(TEST_THREADS)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def lite0():
    """The embedded EfficientNet-Lite0 `FeatureNet`, frozen, on CPU (built once; do not modify it)."""
    from stages.dream import zoo

    _limit_torch_threads()
    return zoo.build_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def chelsea_rgb() -> np.ndarray:
    """sample_media/chelsea.png as an H×W×3 uint8 array (300×451, scikit-image's chelsea the cat)."""
    from PIL import Image

    with Image.open(CHELSEA) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    rgb.setflags(write=False)
    return rgb


def resized(rgb: np.ndarray, w: int, h: int) -> np.ndarray:
    """An RGB uint8 array resized to w×h (bilinear) with Pillow."""
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))


@pytest.fixture(scope="session")
def chelsea_tensor(chelsea_rgb):
    """Returns a function (w, h) -> 1×3×h×w float tensor in [0, 1] of the chelsea photo."""
    import torch

    from stages.dream.ascent import to_tensor

    def make(w: int, h: int):
        return to_tensor(resized(chelsea_rgb, w, h), torch.device("cpu"))

    return make


def run_inprocess(argv: list, capfd) -> tuple[int, str, str]:
    """Runs the CLI's main() here; returns (exit code, stdout, stderr). main() points logging at the
    current sys.stderr, so log lines land in the captured stderr exactly as in a real process."""
    import logging

    from pipeline.cli import main as cli_main

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    capfd.readouterr()
    try:
        rc = cli_main([str(a) for a in argv])
    finally:  # main() replaces the root handlers (pytest's own among them): put them back
        root.handlers[:] = handlers
        root.setLevel(level)
    out, err = capfd.readouterr()
    return rc, out, err


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the group marks
def pytest_collection_modifyitems(config, items) -> None:
    """`make test` runs on two xdist workers (`--dist loadgroup`). The Ray renders share one worker and one
    local cluster (two clusters would fight over two cores), and they go first: they are the longest chain,
    so the other worker takes the rest meanwhile instead of waiting on them at the end."""
    def ray_render(item) -> bool:
        return item.nodeid.startswith("tests/test_scale.py") and item.get_closest_marker("slow") is not None

    for item in items:
        if ray_render(item):
            item.add_marker(pytest.mark.xdist_group("ray"))
    items.sort(key=lambda item: 0 if ray_render(item) else 1)  # stable: every other order is kept
