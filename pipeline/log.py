"""Logging setup: stdlib logging to stderr; FFmpeg's own log stays quiet unless --verbose."""

import logging


def setup(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    for noisy in ("PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import av.logging

        av.logging.set_level(av.logging.VERBOSE if verbose else None)
    except Exception:  # pragma: no cover - PyAV is a dependency; logging control is best effort
        pass
