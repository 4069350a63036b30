"""What every stage and the pipeline share: the user-error type and the one all-or-nothing file writer.

`InputError` marks the user's mistake (a file, an option, a config value); the CLI turns it into one
`error: ...` line and exit code 2. Every file the tool publishes (outputs, sidecars, manifests,
checkpoint states, plots) goes through `write_atomic`: temp file in the same directory, fsync, rename,
fsync of the directory, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

TEMP_NAME_KEEP = 64  # characters of a file's name in its temp file's


class InputError(Exception):
    """The user's input (file, option, config value) is wrong. Message is one line, shown as is."""


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except PermissionError:  # a folder one may write into but not list (mode -wx): the rename stands unsynced
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(p: Path) -> None:
    with open(p, "rb") as f:
        os.fsync(f.fileno())


@functools.cache
def publish_mode() -> int:
    """Mode for a published file: 0666 minus the umask, as `open()` would create it (mkstemp uses 0600).

    Read once: os.umask can only be read by setting it, which would race with other threads' files.
    """
    try:
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: Path, path: Path) -> None:
    """Make a finished temp file the real one: normal permissions, fsync, rename, fsync the directory."""
    os.chmod(tmp, publish_mode())
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(_parent(path))


def write_atomic(path: Path, writer: Callable[[BinaryIO], object], *, tmp_dir: Path | None = None) -> None:
    """`writer(f)` fills a temp file beside `path` (or in `tmp_dir`, on the same filesystem), which then
    replaces `path` in one step."""
    path = Path(path)
    # The temp name keeps the start of the real one: a name near the file system's limit has no room for more.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:TEMP_NAME_KEEP]}.", suffix=".part", dir=tmp_dir or _parent(path))
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
        publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
