"""Run directory for resumable renders: manifest, closed segments, temporal state, lock.

Layout beside OUTPUT (e.g. out/clip.mp4):
    out/clip.mp4.deepdream-run/
        manifest.json        schema, input fingerprint, resolved config + hash, stream info, segments
        segments/000000.mp4  complete closed-GOP segments of checkpoint.segment_frames frames
        state.npz            TemporalState after the last complete segment (lossless)
        lock                 flock'd while a render runs (the kernel drops it if the process dies)
Every write goes to a temp file, is fsync'd, then renamed over the old one.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.records import TemporalState
from stages.common import fsync_dir, fsync_file, write_atomic

log = logging.getLogger(__name__)

SCHEMA = 1


def run_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".deepdream-run")


def fingerprint(path: Path) -> dict:
    """Size, mtime and a hash of the first and last MiB: cheap, and catches a replaced input."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256_ends": h.hexdigest()}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


class RunDir:
    """Lifecycle of one render's run directory. Holds the lock for as long as the object lives."""

    def __init__(self, output: Path, manifest: dict, lock_fd: int) -> None:
        self.output = output
        self.path = run_dir_for(output)
        self.seg_dir = self.path / "segments"
        self.manifest = manifest
        self._lock_fd = lock_fd

    @classmethod
    def open(cls, output: Path, *, input_path: Path, config: dict, config_hash: str, stream: dict,
             restart: bool) -> RunDir:
        path = run_dir_for(output)
        path.mkdir(exist_ok=True)
        lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(lock_fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise InputError(f"another render into {output} is running (lock {path / 'lock'}); "
                                 "wait for it or choose another output") from e
            raise
        os.ftruncate(lock_fd, 0)
        os.write(lock_fd, f"{os.getpid()}\n".encode())
        fp = fingerprint(input_path)
        manifest_path = path / "manifest.json"
        try:
            old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        except (OSError, ValueError):
            old = None
            log.warning("unreadable manifest in %s: starting over", path)
        if old is not None and not restart:
            problem = cls._mismatch(old, fp, config, config_hash, stream)
            if problem:
                os.close(lock_fd)
                raise InputError(f"an unfinished render of {output.name} exists with a different {problem}; "
                                 "re-run with the same input and settings to resume, or add --restart")
        if old is None or restart:
            if old is not None:
                log.info("--restart: discarding %d finished segments", len(old.get("segments", [])))
            shutil.rmtree(path / "segments", ignore_errors=True)
            (path / "state.npz").unlink(missing_ok=True)
            old = {"schema": SCHEMA, "input": fp, "config": config, "config_hash": config_hash,
                   "stream": stream, "segments": [], "frames_done": 0}
        (path / "segments").mkdir(exist_ok=True)
        run = cls(output, old, lock_fd)
        run._write_manifest()
        run._drop_orphans()
        return run

    @staticmethod
    def _mismatch(old: dict, fp: dict, config: dict, config_hash: str, stream: dict) -> str | None:
        if old.get("schema") != SCHEMA:
            return f"checkpoint schema ({old.get('schema')} vs {SCHEMA})"
        o = old.get("input", {})
        if (o.get("size"), o.get("sha256_ends"), o.get("mtime_ns")) != (fp["size"], fp["sha256_ends"], fp["mtime_ns"]):
            return f"input (was {o.get('path')}, {o.get('size')} bytes; now {fp['path']}, {fp['size']} bytes)"
        if old.get("config_hash") != config_hash:
            changes = _diff(old.get("config", {}), config)
            return "config: " + "; ".join(changes[:4]) + (" ..." if len(changes) > 4 else "")
        if old.get("stream") != stream:
            return "stream layout: " + "; ".join(_diff(old.get("stream", {}), stream)[:4])
        return None

    def _drop_orphans(self) -> None:
        """Segments written after the last manifest update (a kill between rename and manifest)."""
        known = {s["file"] for s in self.manifest["segments"]}
        for p in self.seg_dir.iterdir():
            if p.name not in known:
                p.unlink()

    def _write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        write_atomic(self.path / "manifest.json", lambda f: f.write(text))

    # -- state ---------------------------------------------------------------------------------
    @property
    def frames_done(self) -> int:
        return int(self.manifest["frames_done"])

    def load_state(self) -> TemporalState:
        if not self.manifest["segments"]:
            return TemporalState()
        state = TemporalState.load(self.path / "state.npz")
        if state.next_index != self.frames_done:
            raise InputError(f"the checkpoint in {self.path} is inconsistent (state at frame {state.next_index}, "
                             f"manifest at {self.frames_done}); add --restart to render from the start")
        return state

    def segment_temp(self, number: int) -> Path:
        return self.seg_dir / f".{number:06d}.mp4.part"

    def commit_segment(self, number: int, temp: Path, *, first_index: int, frames: int, first_pts: int | None,
                       end_time: float, state: TemporalState) -> None:
        """Publish a closed segment: segment file, then its state, then the manifest that names both."""
        final = self.seg_dir / f"{number:06d}.mp4"
        fsync_file(temp)
        os.replace(temp, final)
        fsync_dir(self.seg_dir)
        write_atomic(self.path / "state.npz", state.save)
        self.manifest["segments"].append({"file": final.name, "first_index": first_index, "frames": frames,
                                          "first_pts": first_pts, "end_time": end_time})
        self.manifest["frames_done"] = first_index + frames
        self._write_manifest()
        log.debug("segment %s committed (%d frames, %d done)", final.name, frames, self.frames_done)

    def segment_paths(self) -> list[Path]:
        return [self.seg_dir / s["file"] for s in self.manifest["segments"]]

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()
