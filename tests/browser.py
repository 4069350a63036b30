"""Headless Chromium for the `deepdream view` tests: find or install it, open a page, collect its report.

No DevTools client is needed: the page, opened with `?test=1`, posts what it drew to the server's
POST /report, and the test waits for that. Chromium draws WebGL with SwiftShader (software), so this
runs on machines without a GPU.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import tempfile

import numpy as np
import pytest

_NAMES = ("chromium", "chromium-browser")


def _which() -> str | None:
    return next((p for p in map(shutil.which, _NAMES) if p), None)


def find_or_install_chromium() -> str:
    """The Chromium binary; as root with apt-get (CI, a fresh container) installs Debian's `chromium`
    when it is missing. Skips the test, saying why, only where that is impossible or fails."""
    exe = _which()
    if exe:
        return exe
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("the browser test needs Chromium: not installed, and installing it needs root and apt-get "
                    "(apt-get install chromium)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    why = ""
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                               "chromium"]):
        try:
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            why = f"{' '.join(cmd)}: {e}"
            break
        if r.returncode != 0:
            why = f"{' '.join(cmd)} exited {r.returncode}: {(r.stderr or r.stdout).strip()[-300:]}"
            break
    exe = _which()
    if not exe:
        pytest.skip(f"the browser test needs Chromium, which could not be installed "
                    f"({why or 'not found after install'})")
    return exe


def run_page(exe: str, server, *, query: str = "?test=1", size: tuple[int, int] = (640, 480),
             timeout: float = 25.0) -> dict:
    """Opens the server's page in headless Chromium and returns the first report it posts."""
    with tempfile.TemporaryDirectory(prefix="dd-chromium-") as profile:
        args = [exe, "--headless=new", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                "--force-device-scale-factor=1", server.url + query]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            got = server.report_ready.wait(timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: the browser and its helpers only
            except ProcessLookupError:
                pass
            _, err = proc.communicate(timeout=10)
        if not got:
            tail = err.decode(errors="replace").strip().splitlines()[-8:]
            raise AssertionError(f"no report from the page within {timeout} s; Chromium said: {tail}")
    report = server.reports[0]
    assert "error" not in report, f"the page failed: {report['error']}"
    return report


def shot_pixels(shot: dict) -> np.ndarray:
    """A shot's canvas read-back as H×W×3 uint8, top row first (gl.readPixels starts at the bottom)."""
    rgba = np.frombuffer(base64.b64decode(shot["rgba"]), np.uint8).reshape(shot["height"], shot["width"], 4)
    return rgba[::-1, :, :3]


def match_fraction(a: np.ndarray, b: np.ndarray, tol: int = 40) -> float:
    """Share of pixels whose every channel is within `tol` levels (codec, colour matrix and filtering
    differences stay well inside it; a region of the wrong colour does not)."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) <= tol).mean())
