"""`deepdream view`: a local web page that plays a result on a sphere (or flat) beside its source.

The server is the standard library's ThreadingHTTPServer on 127.0.0.1. It serves a fixed table of
URLs (the page, its script, the vendored three.js, /info.json, /video and /source) and nothing else:
a request path is looked up in that table, never joined onto a directory, so no listing or traversal
exists to refuse. Paths that try it anyway (`..` raw or percent-encoded, backslashes, `//host`) get 404
before the lookup, and the named files are opened without following symlinks, so a file swapped for a
link after start is not served either. Range requests (206/416) let the browser seek.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import sys
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import InputError

log = logging.getLogger("deepdream")

WEB = Path(__file__).resolve().parent / "web"
DEFAULT_PORT = 8360
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
    "/three.module.min.js": ("vendor/three.module.min.js", "text/javascript; charset=utf-8"),
    "/three.LICENSE": ("vendor/three.LICENSE", "text/plain; charset=utf-8"),
}
_VIDEO_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
                ".mkv": "video/x-matroska"}
# Only inline styles; scripts, media and fetches come from this server alone (offline by construction).
_CSP = "default-src 'self'; style-src 'self' 'unsafe-inline'; media-src 'self' blob:; img-src 'self' data:"
_CHUNK = 1 << 16
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True)
class Route:
    path: Path
    mime: str


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """The inclusive byte range (first, last) a `Range` header asks for in a file of `size` bytes.

    None: no header, or one this server answers with the whole file (malformed, several ranges, a
    unit other than bytes), which RFC 9110 allows. False: a well-formed range that misses the file (416).
    """
    if not header:
        return None
    m = _RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else False
    a = int(first)
    b = min(int(last), size - 1) if last else size - 1
    if last and int(last) < a:
        return None
    return (a, b) if a < size else False


def _suspicious(raw_path: str) -> bool:
    """True for request paths that try to leave the URL table: `..` segments (also %2e%2e and %2f
    spellings), backslashes, NUL, and absolute forms (`//host/...`, `/C:/...`, `http://...`)."""
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        return True
    path = urlsplit(raw_path).path
    decoded = unquote(unquote(path))  # twice: %252e%252e is a classic double-encoding trick
    return ("\\" in decoded or "\0" in decoded or ":" in decoded
            or any(seg == ".." or seg == "." for seg in decoded.split("/")) or decoded.startswith("//"))


class ViewServer(ThreadingHTTPServer):
    """The routes, the page's info and, with `reports`, a POST /report inbox (the browser test's)."""

    daemon_threads = True

    def __init__(self, port: int, routes: dict[str, Route], info: dict, reports: list | None = None):
        self.routes, self.info, self.reports = routes, info, reports
        self.report_ready = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request, client_address):
        # A browser closing a connection mid-request (it does while seeking, and on exit) is routine.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    server_version = "deepdream-view"
    protocol_version = "HTTP/1.1"  # keep-alive: a seeking video makes many small range requests

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, fmt, *args):  # per-request lines only with --verbose
        log.debug("view: " + fmt, *args)

    def _host_ok(self) -> bool:
        # A page elsewhere could point its own name at 127.0.0.1 (DNS rebinding) and read the files;
        # only our own host names are answered.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        return host in ("127.0.0.1", "localhost")

    def _status(self, code: HTTPStatus, extra: dict | None = None) -> None:
        body = f"{code.value} {code.phrase}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _common_headers(self, mime: str) -> None:
        self.send_header("Content-Type", mime)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", "no-store")

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        if not self._host_ok():
            return self._status(HTTPStatus.FORBIDDEN)
        if _suspicious(self.path):
            return self._status(HTTPStatus.NOT_FOUND)
        path = urlsplit(self.path).path
        if path == "/info.json":
            body = json.dumps(self.server.info).encode()
            self.send_response(HTTPStatus.OK)
            self._common_headers("application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return None
        route = self.server.routes.get(path)
        if route is None:
            return self._status(HTTPStatus.NOT_FOUND)
        return self._send_file(route)

    def do_POST(self):
        if not self._host_ok():
            self.close_connection = True  # its body stays unread: the connection cannot carry another request
            return self._status(HTTPStatus.FORBIDDEN)
        if self.server.reports is None or self.path != "/report":
            self.close_connection = True
            return self._status(HTTPStatus.NOT_FOUND)
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or not 0 < int(length) <= 64 << 20:
            self.close_connection = True
            return self._status(HTTPStatus.BAD_REQUEST)
        n = int(length)
        try:
            self.server.reports.append(json.loads(self.rfile.read(n)))
        except ValueError:
            return self._status(HTTPStatus.BAD_REQUEST)
        self.server.report_ready.set()
        return self._status(HTTPStatus.NO_CONTENT)

    def _send_file(self, route: Route) -> None:
        try:  # O_NOFOLLOW: a symlink in the named file's place is refused, not followed
            fd = os.open(route.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return self._status(HTTPStatus.NOT_FOUND)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return self._status(HTTPStatus.NOT_FOUND)
            size = st.st_size
            rng = parse_range(self.headers.get("Range"), size)
            if rng is False:
                return self._status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                    {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
            first, last = rng if rng else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if rng else HTTPStatus.OK)
            self._common_headers(route.mime)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(max(0, last - first + 1)))
            if rng:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if self.command == "HEAD":
                return None
            f.seek(first)
            left = last - first + 1
            try:
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser dropped a range it no longer needs (normal while seeking)
        return None


def _check_file(path: Path, what: str) -> Path:
    if path.is_symlink():
        raise InputError(f"{what} {path} is a symbolic link; name the file itself ({os.path.realpath(path)})")
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file")
    return path


def _describe(path: Path, cfg, url: str, what: str) -> dict:
    """What the page needs to map one video: its layout decided as a render decides it (`probe`)."""
    from pipeline.review.probe import probe_json

    p = probe_json(path, cfg)
    if not p["duration"]:  # FFmpeg opens stills as one-frame streams; a <video> element cannot play them
        raise InputError(f"{what} {path} is a still image, not a video ({p['video_codec']}); "
                         f"deepdream view plays videos (deepdream preview makes a sheet of a still)")
    return {"url": url, "name": path.name, "width": p["width"], "height": p["height"], "fps": p["fps"],
            "duration": p["duration"], "projection": p["projection"], "stereo": p["stereo"]}


def build_server(video: Path, cfg, *, source: Path | None = None, port: int = DEFAULT_PORT,
                 reports: list | None = None) -> ViewServer:
    """Check the inputs and bind; every refusal is an InputError before anything listens."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port: must be 0 (any free port) ... 65535, got {port}")
    video = _check_file(Path(video), "video")
    info = {"video": _describe(video, cfg, "/video", "video"), "source": None}
    routes = {url: Route(WEB / name, mime) for url, (name, mime) in _ASSETS.items()}
    routes["/video"] = Route(video, _VIDEO_TYPES.get(video.suffix.lower(), "application/octet-stream"))
    if source is not None:
        source = _check_file(Path(source), "source")
        info["source"] = _describe(source, cfg, "/source", "source")
        routes["/source"] = Route(source, _VIDEO_TYPES.get(source.suffix.lower(), "application/octet-stream"))
    try:
        return ViewServer(port, routes, info, reports)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} is in use on 127.0.0.1 (choose another with --port N, "
                             f"or --port 0 for any free one)") from None
        raise InputError(f"cannot listen on 127.0.0.1:{port}: {e.strerror or e}") from None


def run_view(video: Path, cfg, *, source: Path | None = None, port: int = DEFAULT_PORT) -> None:
    """Serve until Ctrl-C, which is the normal way to stop (a clean exit, not an error)."""
    server = build_server(video, cfg, source=source, port=port)
    print(f"deepdream view: {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("deepdream view: stopped", flush=True)
    finally:
        server.server_close()


__all__ = ["DEFAULT_PORT", "ViewServer", "build_server", "parse_range", "run_view"]
