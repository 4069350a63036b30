"""What a checkpoint is checked against before a render resumes it: the input's fingerprint, the resolved config's
hash and the stream layout, as its manifest recorded them (pipeline.render.checkpoint writes the manifest).

`check_resume` reads a manifest without touching the folder, so a resume that would be refused (another input, a
changed config) is refused before the model loads; `RunDir.open` runs the same comparison again under its lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

log = logging.getLogger(__name__)

SCHEMA = 2
_SAMPLES, _BLOCK = 64, 1 << 16


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> dict:
    """Size and a hash of the first and last MiB plus 64 blocks spread over the file: decided by content
    (a `touch` changes nothing), cheap on a 10 GB input, and it catches a replaced or re-encoded one."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        for k in range(_SAMPLES):
            f.seek(size * k // _SAMPLES)
            h.update(f.read(_BLOCK))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return {"path": str(path.resolve()), "size": size, "sha256_sampled": h.hexdigest()}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


def read_manifest(run_dir: Path, *, quiet: bool = False) -> dict | None:
    """The manifest in `run_dir`, or None when there is none or it cannot be read (then a render starts over)."""
    manifest_path = run_dir / "manifest.json"
    try:
        return json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    except (OSError, ValueError):
        if not quiet:
            log.warning("unreadable manifest in %s: starting over", run_dir)
        return None


def mismatch(old: dict, fp: dict, config: dict, config_hash: str, stream: dict) -> str | None:
    """What differs between a manifest and this render, in words; None when the render resumes it."""
    if old.get("schema") != SCHEMA:
        return f"checkpoint schema ({old.get('schema')} vs {SCHEMA})"
    o = old.get("input", {})
    if (o.get("size"), o.get("sha256_sampled")) != (fp["size"], fp["sha256_sampled"]):
        what = "size" if o.get("size") != fp["size"] else "content"
        return (f"input: its {what} changed (was {o.get('path')}, {o.get('size')} bytes; "
                f"now {fp['path']}, {fp['size']} bytes)")
    if old.get("config_hash") != config_hash:
        changes = _diff(old.get("config", {}), config)
        return "config: " + "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
    if old.get("stream") != stream:
        return "stream layout: " + "; ".join(_diff(old.get("stream", {}), stream)[:4])
    return None


def refuse_changed(old: dict | None, output: Path, fp: dict, config: dict, config_hash: str, stream: dict) -> None:
    """Raise the user's error when `old` is a checkpoint of another input or other settings."""
    problem = mismatch(old, fp, config, config_hash, stream) if old is not None else None
    if problem:
        raise InputError(f"an unfinished render of {output.name} exists with a different {problem}; "
                         "re-run with the same input and settings to resume, or add --restart")


def check_resume(run_dir: Path, output: Path, *, input_path: Path, config: dict, config_hash: str, stream: dict,
                 restart: bool) -> None:
    """Before the model loads: refuse a resume `RunDir.open` would refuse, reading only the manifest."""
    if not restart:
        refuse_changed(read_manifest(run_dir, quiet=True), output, fingerprint(input_path), config, config_hash,
                       stream)
