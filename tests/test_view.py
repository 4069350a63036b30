"""`deepdream view`: the server's file rules (fixed routes, ranges, traversal, symlinks), its error
contract, and the page in a real headless Chromium (what it draws, a drag, a refused traversal)."""

from __future__ import annotations

import http.client
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import py360convert
import pytest

from pipeline.config import load_config
from pipeline.review.view import build_server, parse_range
from stages.vr.spherical_meta import inject_spherical
from tests.browser import find_or_install_chromium, match_fraction, run_page, shot_pixels
from tests.conftest import REPO, cli_env, run_inprocess
from tests.synth import make_text_file, write_clip

# 8 yaw sectors x 3 latitude bands, each its own colour, kept inside 40..215 so no channel clips
# through the codec's YUV round trip.
_LEVELS = (40, 128, 215)
_PALETTE = [(r, g, b) for r in _LEVELS for g in _LEVELS for b in _LEVELS if len({r, g, b}) > 1][:24]


def sectors(h: int = 256, w: int = 512, roll: int = 0) -> np.ndarray:
    e = np.zeros((h, w, 3), np.uint8)
    for band, (y0, y1) in enumerate([(0, h // 4), (h // 4, 3 * h // 4), (3 * h // 4, h)]):
        for k in range(8):
            e[y0:y1, k * w // 8:(k + 1) * w // 8] = _PALETTE[band * 8 + k]
    return np.roll(e, roll, axis=1)


def first_frame(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A top-bottom stereo 360° dream (the right eye is the left's negative, so showing the wrong eye
    fails), its mono 'source' (the sectors half a turn round), and a flat pair."""
    d = tmp_path_factory.mktemp("view")
    tb = np.concatenate([sectors(), 255 - sectors()])
    write_clip(d / "plain_tb.mp4", [tb] * 6, rate=10)
    write_clip(d / "plain_src.mp4", [sectors(roll=256)] * 6, rate=10)
    inject_spherical(d / "plain_tb.mp4", d / "dream.mp4", stereo="top-bottom")
    inject_spherical(d / "plain_src.mp4", d / "source.mp4")
    return {"dream": d / "dream.mp4", "source": d / "source.mp4",
            "flat": write_clip(d / "flat.mp4", [np.tile(np.uint8(_PALETTE[3]), (90, 160, 1))] * 4, rate=10),
            "flat_src": write_clip(d / "flat_src.mp4", [np.tile(np.uint8(_PALETTE[17]), (90, 160, 1))] * 4,
                                   rate=10)}


def serve(video, source=None, reports=None):
    server = build_server(video, load_config("default", []), source=source, port=0, reports=reports)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture
def server(clips):
    s = serve(clips["dream"], clips["source"])
    yield s
    s.shutdown()
    s.server_close()


def get(server, path: str, headers: dict | None = None, method: str = "GET"):
    """One raw request: http.client sends the path byte for byte (no `..` clean-up as a browser does)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=95-200", 100) == (95, 99)
    assert parse_range("bytes=100-", 100) is False and parse_range("bytes=-0", 100) is False
    for ignored in ("bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=-", "garbage"):
        assert parse_range(ignored, 100) is None, ignored


def test_range_requests_seek_into_the_video(server, clips):
    data = clips["dream"].read_bytes()
    status, h, body = get(server, "/video")
    assert status == 200 and body == data and h["Accept-Ranges"] == "bytes" and h["Content-Type"] == "video/mp4"
    status, h, body = get(server, "/video", {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and h["Content-Range"] == f"bytes 10-19/{len(data)}"
    status, h, body = get(server, "/video", {"Range": "bytes=-7"})
    assert status == 206 and body == data[-7:]
    status, h, body = get(server, "/source", {"Range": "bytes=100-"})
    assert status == 206 and body == clips["source"].read_bytes()[100:]
    status, h, _ = get(server, "/video", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and h["Content-Range"] == f"bytes */{len(data)}"
    status, h, body = get(server, "/video", method="HEAD")
    assert status == 200 and body == b"" and h["Content-Length"] == str(len(data))


def test_only_the_named_files_and_the_page_are_served(server, clips):
    for path in ("/", "/viewer.js", "/three.module.min.js", "/three.LICENSE", "/info.json", "/video", "/source"):
        assert get(server, path)[0] == 200, path
    status, _, body = get(server, "/info.json")
    assert body.count(b'"projection": "equirect"') == 2 and b'"stereo": "top-bottom"' in body
    for path in ("/index.html", "/web/", "/vendor/three.LICENSE", "/pipeline/review/view.py", "/video/", "/videos",
                 "/dream.mp4", "/etc/passwd", "/" + str(clips["dream"]).lstrip("/"), "/report"):
        assert get(server, path)[0] == 404, path
    assert get(server, "/report", method="POST", headers={"Content-Length": "0"})[0] == 404  # CLI: no inbox


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/video/..%2f..%2fetc%2fpasswd",
                                  "/%252e%252e/etc/passwd", "/..\\..\\etc\\passwd", "/.%2e/video", "//etc/passwd",
                                  "/C:/Windows/win.ini", "http://127.0.0.1/video", "/./video", "/video%00"])
def test_traversal_and_absolute_paths_get_404(server, path):
    assert get(server, path)[0] == 404


def test_other_hosts_are_refused(server):
    """A page elsewhere that rebinds its name to 127.0.0.1 reaches the port but not the files."""
    assert get(server, "/video", {"Host": "evil.example"})[0] == 403
    assert get(server, "/video", {"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_a_file_swapped_for_a_symlink_is_not_followed(clips, tmp_path):
    video = tmp_path / "v.mp4"
    shutil.copy(clips["dream"], video)
    s = serve(video)
    try:
        assert get(s, "/video")[0] == 200
        video.unlink()
        (tmp_path / "secret.txt").write_text("secret")
        video.symlink_to(tmp_path / "secret.txt")
        assert get(s, "/video")[0] == 404
    finally:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize("case", ["missing", "not_video", "still", "symlink", "bad_port", "port_in_use",
                                  "source_missing", "source_not_video"])
def test_bad_view_requests_are_one_line_errors(clips, tmp_path, capfd, case):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    link = tmp_path / "link.mp4"
    link.symlink_to(clips["dream"])
    args = {"missing": [tmp_path / "nope.mp4"], "not_video": [make_text_file(tmp_path / "t.mp4")],
            "symlink": [link], "bad_port": [clips["dream"], "--port", "70000"],
            "port_in_use": [clips["dream"], "--port", str(busy.getsockname()[1])],
            "still": [REPO / "sample_media" / "chelsea.png"],
            "source_missing": [clips["dream"], "--source", tmp_path / "nope.mp4"],
            "source_not_video": [clips["dream"], "--source", make_text_file(tmp_path / "s.mp4")]}[case]
    try:
        rc, out, err = run_inprocess(["view", *args, "--port", "0"] if "--port" not in args else ["view", *args],
                                     capfd)
    finally:
        busy.close()
    assert rc == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err


@pytest.mark.slow
def test_cli_prints_its_url_and_stops_cleanly_on_ctrl_c(clips):
    p = subprocess.Popen([sys.executable, "-m", "pipeline", "view", str(clips["dream"]), "--port", "0"], cwd=REPO,
                         env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith("deepdream view: http://127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/info.json")
        assert conn.getresponse().status == 200
        conn.close()
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "Traceback" not in p.stderr.read()


def expected_view(frame: np.ndarray, shot: dict, width: int) -> np.ndarray:
    """What a camera with the shot's yaw, pitch and vertical fov sees on the sphere, over `width` px."""
    h = shot["height"]
    hfov = math.degrees(2 * math.atan(math.tan(math.radians(shot["fov"]) / 2) * width / h))
    return py360convert.e2p(frame, (hfov, shot["fov"]), shot["yaw"], shot["pitch"], (h, width)).astype(np.uint8)


@pytest.fixture(scope="session")
def chromium():
    return find_or_install_chromium()


@pytest.mark.slow
@pytest.mark.xdist_group("chromium")
def test_chromium_draws_the_sphere_side_by_side_and_a_drag_turns_both_views(chromium, clips):
    reports: list = []
    s = serve(clips["dream"], clips["source"], reports=reports)
    try:
        r = run_page(chromium, s)
    finally:
        s.shutdown()
        s.server_close()
    assert r["mode"] == "split" and [v["url"] for v in r["views"]] == ["/video", "/source"]
    frames = {"/video": first_frame(clips["dream"])[:256], "/source": first_frame(clips["source"])}  # left eye
    start, dragged, keyed = r["shots"]
    assert (start["yaw"], start["pitch"]) == (0, 0)
    # the drag went 60 px right and 20 px down: the content follows the pointer, so the camera turns
    # left and up by (px x fov / canvas height) degrees; the arrow key adds 5 degrees of yaw
    per_px = start["fov"] / start["height"]
    assert dragged["yaw"] == pytest.approx(-60 * per_px) and dragged["pitch"] == pytest.approx(20 * per_px)
    assert keyed["yaw"] == pytest.approx(dragged["yaw"] + 5)
    for shot in (start, dragged, keyed):
        px = shot_pixels(shot)
        for v in r["views"]:
            got = px[:, v["x"]:v["x"] + v["width"]]
            want = expected_view(frames[v["url"]], shot, v["width"])
            assert match_fraction(got, want) > 0.9, (v["url"], shot["yaw"], match_fraction(got, want))
    # paired: the drag really changed the picture (the view before it no longer matches)
    before = shot_pixels(start)[:, :r["views"][0]["width"]]
    after = shot_pixels(dragged)[:, :r["views"][0]["width"]]
    assert match_fraction(before, after) < 0.75
    assert all(status == 404 for _, status in r["traversal"]), r["traversal"]


@pytest.mark.slow
@pytest.mark.xdist_group("chromium")
def test_chromium_plays_flat_video_flat_with_a_before_after_wipe(chromium, clips):
    reports: list = []
    s = serve(clips["flat"], clips["flat_src"], reports=reports)
    try:
        r = run_page(chromium, s)
    finally:
        s.shutdown()
        s.server_close()
    assert r["mode"] == "wipe"
    dream_rgb, src_rgb = first_frame(clips["flat"])[45, 80], first_frame(clips["flat_src"])[45, 80]
    for shot, wipe in zip(r["shots"], (0.5, r["wipe"], r["wipe"])):
        px = shot_pixels(shot)
        h, w = px.shape[:2]
        plane = min(w, round(h * 16 / 9))  # 16:9 letterboxed into the canvas, centred
        x0, x1, xw = (w - plane) // 2, (w + plane) // 2, round(wipe * w)
        assert match_fraction(px[:, x0 + 3:xw - 3], src_rgb[None, None]) > 0.95  # before: the source
        assert match_fraction(px[:, xw + 3:x1 - 3], dream_rgb[None, None]) > 0.95  # after: the dream
        if x0 > 2:
            assert px[:, :x0 - 2].max() < 10 and px[:, x1 + 2:].max() < 10  # black bars beside the frame
    assert r["wipe"] == pytest.approx((r["css"][0] / 4 + 60) / r["css"][0])  # the drag moved the wipe


def test_without_chromium_the_browser_test_skips_with_the_reason(tmp_path, monkeypatch):
    """Where apt-get cannot install Chromium (here: one that fails, as with no network), the browser
    test is skipped saying why, not failed."""
    apt = tmp_path / "apt-get"
    apt.write_text("#!/bin/sh\necho 'E: Unable to locate package chromium' >&2\nexit 100\n")
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(pytest.skip.Exception, match="exited 100: E: Unable to locate package chromium"):
        find_or_install_chromium()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root and apt-get"):
        find_or_install_chromium()
