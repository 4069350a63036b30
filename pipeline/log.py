"""Logging setup: stdlib logging to stderr; FFmpeg's own log stays quiet unless --verbose."""

import logging
import sys


class _Plain(logging.Formatter):
    """Info as the bare message; warnings and worse as `warning: message`, like the error lines."""

    def format(self, record: logging.LogRecord) -> str:
        msg = super().format(record)
        return msg if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {msg}"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (it may be swapped, e.g. by a test harness)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup(verbose: bool) -> None:
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose
                         else _Plain("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import av.logging

        av.logging.set_level(av.logging.VERBOSE if verbose else None)
    except Exception:  # pragma: no cover - PyAV is a dependency; logging control is best effort
        pass
