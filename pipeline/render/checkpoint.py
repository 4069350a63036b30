"""Run directory for resumable renders: manifest of commit records, closed segments, temporal states, lock.

Layout beside OUTPUT (e.g. out/clip.mp4):
    out/clip.mp4.deepdream-run/
        manifest.json         schema, input fingerprint, resolved config + hash, stream info, commit records
        segments/000003.mp4   closed-GOP segment number 3: frames [3·F, 4·F) for F frames per segment
        states/000003.npz     TemporalState after segment 3 (lossless), for the segments the policy keeps
        lock                  flock'd while a render runs (the kernel drops it if the process dies)

A segment is committed by writing its file, then its state, then the manifest that names both with their
sizes and SHA-256: the manifest write is the commit, so a kill at any point leaves either the old record
or the new one, and files no record names are removed on the next open. On resume every record is
verified; a damaged or missing segment is re-rendered from the nearest kept state before it.

States are large (15 bytes per pixel), so only some are kept: those after the last two segments, plus
milestones every `milestone_every` segments, a spacing that doubles whenever more than MILESTONES would
be kept. Re-rendering a damaged old segment therefore costs at most that spacing in dreamed frames.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError
from pipeline.render.manifest import SCHEMA, check_resume, fingerprint, read_manifest, refuse_changed, sha256_file
from pipeline.render.records import TemporalState
from stages.common import publish, write_atomic
from stages.media.still import check_name_length

log = logging.getLogger(__name__)

KEEP_RECENT = 2
MILESTONES = 16


def run_dir_for(output: Path) -> Path:
    return output.with_name(output.name + ".deepdream-run")


# What a run directory holds: a folder by OUTPUT's run-dir name holding anything else is the user's, not a render's.
RUN_DIR_NAMES = frozenset({"manifest.json", "lock", "params.json", "segments", "states", "overlaps",
                           "final.part.mp4"})


def check_run_dir(output: Path, source: Path) -> None:
    """Before anything is written: the folder by the run directory's name is a render's, or absent, and the input
    is not inside it (a finished render deletes the folder, and a restart clears it)."""
    path = run_dir_for(output)
    check_name_length(path, "the checkpoint folder beside the output (OUTPUT.deepdream-run)")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        kind = "symbolic link" if path.is_symlink() else "file"
        raise InputError(f"{path} is a {kind} where the checkpoint folder goes; move or delete it")
    if not path.is_dir():
        return
    if source.exists() and os.path.realpath(source).startswith(os.path.realpath(path) + os.sep):
        raise InputError(f"the input {source} is inside {path}, the checkpoint folder this render deletes when done; "
                         "move the input or choose another output")
    # A manifest does not make a folder a render's: one holding anything a render never writes is the user's.
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name not in RUN_DIR_NAMES and not (p.name.startswith(".") and p.name.endswith(".part")))
    if foreign:
        raise InputError(f"{path} is not a deepdream checkpoint folder (it holds {foreign[0]!r}), and a render "
                         "clears that folder; move it or choose another output")


@dataclass(frozen=True)
class Pass:
    """One stretch of the frame loop: start from `state`, dream up to `stop_index` (None: to the end).

    Segments already committed are only dreamed (to carry the temporal chain), except those in `redo`,
    which are encoded and committed again; new segments are encoded. A scale-out chunk also limits what
    it encodes to [encode_from, encode_until), keeps the residuals of the frames in `capture` (its
    overlaps, cross-faded with the neighbouring chunk's) and restarts the chain at `resets`.
    """

    state: TemporalState
    stop_index: int | None = None
    redo: frozenset[int] = frozenset()
    encode_from: int = 0
    encode_until: int | None = None
    capture: tuple[tuple[int, int], ...] = ()
    resets: frozenset[int] = frozenset()
    seek: tuple[float, int] | None = None  # (seconds from the stream's start, index of that frame): jump there

    def encodes(self, index: int) -> bool:
        return self.encode_from <= index and (self.encode_until is None or index < self.encode_until)

    def captures(self, index: int) -> bool:
        return any(a <= index < b for a, b in self.capture)


class RunDir:
    """Lifecycle of one render's run directory. Holds the lock for as long as the object lives."""

    def __init__(self, output: Path, manifest: dict, lock_fd: int) -> None:
        self.output = output
        self.path = run_dir_for(output)
        self.seg_dir = self.path / "segments"
        self.state_dir = self.path / "states"
        self.manifest = manifest
        self._lock_fd = lock_fd

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, output: Path, *, input_path: Path, config: dict, config_hash: str, stream: dict,
             restart: bool) -> RunDir:
        path = run_dir_for(output)
        check_run_dir(output, input_path)  # again: the folder may have changed since the render's checks
        fp = fingerprint(input_path)
        made, had_lock = not path.exists(), (path / "lock").exists()
        path.mkdir(exist_ok=True)
        lock_fd = cls._lock(path, output)
        try:
            manifest = cls._load_manifest(path, output, fp, config, config_hash, stream, restart)
            run = cls(output, manifest, lock_fd)
            run.seg_dir.mkdir(exist_ok=True)
            run.state_dir.mkdir(exist_ok=True)
            run.write_manifest()
            run._drop_orphans()
        except BaseException:  # refused (another input's checkpoint, …): leave the folder as it was found
            os.close(lock_fd)
            if made:
                shutil.rmtree(path, ignore_errors=True)
            elif not had_lock:
                (path / "lock").unlink(missing_ok=True)
            raise
        return run

    @staticmethod
    def check(output: Path, **opening) -> None:
        """Before the model loads: refuse what `open` with the same arguments would refuse (another input's or other
        settings' checkpoint), reading the manifest without touching the folder."""
        check_resume(run_dir_for(output), output, **opening)

    @staticmethod
    def _lock(path: Path, output: Path) -> int:
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
        return lock_fd

    @staticmethod
    def _load_manifest(path: Path, output: Path, fp: dict, config: dict, config_hash: str, stream: dict,
                       restart: bool) -> dict:
        old = read_manifest(path)
        if not restart:
            refuse_changed(old, output, fp, config, config_hash, stream)
        if old is not None and restart:
            log.info("--restart: discarding %d finished segments", len(old.get("segments", [])))
        if old is None or restart:
            shutil.rmtree(path / "segments", ignore_errors=True)
            shutil.rmtree(path / "states", ignore_errors=True)
            old = {"schema": SCHEMA, "input": fp, "config": config, "config_hash": config_hash,
                   "stream": stream, "segments": [], "milestone_every": 1}
        return old

    def _drop_orphans(self) -> None:
        """Files no commit record names: written before a kill that came ahead of the manifest write, or
        the temp file of a killed finalize."""
        recs = [r for r in self.records if r]
        known = {s["file"] for s in recs}
        states = {s["state"]["file"] for s in recs if s.get("state")}
        for d, keep in ((self.seg_dir, known), (self.state_dir, states)):
            for p in d.iterdir():
                if p.name not in keep:
                    p.unlink()
        for p in self.path.iterdir():
            if p.is_file() and p.name not in RUN_DIR_NAMES:
                p.unlink()
            elif p.is_dir() and p.name not in ("segments", "states", "overlaps"):
                shutil.rmtree(p, ignore_errors=True)
        # Temp files beside OUTPUT from an older version's finalize, which nothing else can own: the lock
        # says no other render of this output runs.
        for p in self.output.parent.glob(f".{self.output.name}.*.part.mp4"):
            if p.resolve() != Path(self.manifest["input"]["path"]).resolve():  # a name like one, given as INPUT
                p.unlink(missing_ok=True)

    def write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
        write_atomic(self.path / "manifest.json", lambda f: f.write(text))

    # -- records ---------------------------------------------------------------------------------
    @property
    def records(self) -> list[dict]:
        return self.manifest["segments"]

    @property
    def frames_done(self) -> int:
        """Frames in the unbroken run of committed segments from the start."""
        done = 0
        for r in self.records:
            if not r:
                break
            done = r["first_index"] + r["frames"]
        return done

    def committed(self, number: int) -> bool:
        return number < len(self.records) and self.records[number] is not None

    def _segment_ok(self, rec: dict) -> str:
        p = self.seg_dir / rec["file"]
        if not p.is_file():
            return "missing"
        if p.stat().st_size != rec["size"]:
            return f"{p.stat().st_size} bytes instead of {rec['size']}"
        if sha256_file(p) != rec["sha256"]:
            return "its SHA-256 does not match"
        return ""

    def _load_state(self, rec: dict) -> TemporalState | None:
        s = rec.get("state")
        if not s:
            return None
        p = self.state_dir / s["file"]
        try:
            if p.stat().st_size != s["size"] or sha256_file(p) != s["sha256"]:
                raise ValueError("size or SHA-256 does not match")
            state = TemporalState.load(p)
        except (OSError, ValueError, KeyError) as e:
            log.warning("checkpoint state %s is damaged (%s); an earlier one is used", s["file"], e)
            return None
        if state.next_index != rec["first_index"] + rec["frames"]:
            log.warning("checkpoint state %s is for frame %d, not %d; an earlier one is used", s["file"],
                        state.next_index, rec["first_index"] + rec["frames"])
            return None
        return state

    def resume_passes(self) -> list[Pass]:
        """Verify every record, then the passes that bring the render back.

        All good: one pass from the last state. A damaged or missing segment: a repair pass from the
        nearest good state before it that encodes only the damaged segments (the ones between are dreamed
        again to carry the temporal chain, and come out identical), then the rest from the last state.
        A lost last state: one pass from the nearest good state, re-encoding the last segment to rebuild it.
        """
        recs = self.records
        if not recs:
            return [Pass(TemporalState())]
        bad = []
        for i, rec in enumerate(recs):
            why = self._segment_ok(rec)
            if why:
                log.warning("checkpoint segment %s is damaged (%s); it is rendered again", rec["file"], why)
                bad.append(i)
        last_state = self._load_state(recs[-1])
        if not bad and last_state is not None:
            return [Pass(last_state)]
        first = bad[0] if bad else len(recs) - 1
        start = None
        for k in range(first - 1, -1, -1):
            start = self._load_state(recs[k])
            if start is not None:
                break
        start = start or TemporalState()
        if last_state is None:
            log.info("re-rendering from frame %d to rebuild the checkpoint", start.next_index)
            return [Pass(start, None, frozenset(bad) | {len(recs) - 1})]
        stop = recs[bad[-1]]["first_index"] + recs[bad[-1]]["frames"]
        log.info("re-rendering frames %d..%d to repair %d damaged segment(s)", start.next_index, stop - 1, len(bad))
        return [Pass(start, stop, frozenset(bad)), Pass(last_state)]

    def segment_temp(self, number: int) -> Path:
        return self.seg_dir / f".{number:06d}.mp4.part"

    def _keep_state(self, number: int, last: int) -> bool:
        return number > last - KEEP_RECENT or number % self.manifest["milestone_every"] == 0

    def _update_spacing(self, last: int) -> None:
        """Double the milestone spacing until at most MILESTONES of them fall before the recent states."""
        while (last - KEEP_RECENT) // self.manifest["milestone_every"] + 1 > MILESTONES:
            self.manifest["milestone_every"] *= 2

    def commit_segment(self, number: int, temp: Path, *, first_index: int, frames: int, first_pts: int | None,
                       end_time: float, state: TemporalState | None) -> None:
        """Publish a closed segment: segment file, then its state, then the manifest record naming both."""
        final = self.seg_dir / f"{number:06d}.mp4"
        publish(temp, final)
        rec = {"file": final.name, "first_index": first_index, "frames": frames, "first_pts": first_pts,
               "end_time": end_time, "size": final.stat().st_size, "sha256": sha256_file(final), "state": None}
        recs = self.records
        last = max(number, len(recs) - 1)
        self._update_spacing(last)
        if state is not None and self._keep_state(number, last):
            sp = self.state_dir / f"{number:06d}.npz"
            write_atomic(sp, state.save)
            rec["state"] = {"file": sp.name, "size": sp.stat().st_size, "sha256": sha256_file(sp)}
        if number >= len(recs):  # scale-out chunks commit out of order: the gap waits for its chunk
            recs.extend([None] * (number + 1 - len(recs)))
        recs[number] = rec  # a new segment, or a repaired one
        dropped = []
        for i, r in enumerate(recs):
            if r and r.get("state") and not self._keep_state(i, last):
                dropped.append(r["state"]["file"])
                r["state"] = None
        self.manifest["frames_done"] = self.frames_done  # for people reading the manifest
        self.write_manifest()
        for name in dropped:  # only once no record names them
            (self.state_dir / name).unlink(missing_ok=True)
        log.debug("segment %s committed (%d frames, %d done)", final.name, frames, self.frames_done)

    def segment_paths(self) -> list[Path]:
        missing = [i for i, s in enumerate(self.records) if not s]
        if missing:
            raise RuntimeError(f"segments {missing[:5]} were never committed")
        return [self.seg_dir / s["file"] for s in self.records]

    def temp_output(self) -> Path:
        """Where finalize writes the joined file before renaming it onto OUTPUT (same filesystem)."""
        return self.path / "final.part.mp4"

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    @contextlib.contextmanager
    def held(self):
        """The render's hold on its run directory: released at the end; a render that fails before its first
        segment leaves nothing behind."""
        try:
            yield self
        except BaseException:
            if not self.records:
                self.remove()
            raise
        finally:
            self.close()
