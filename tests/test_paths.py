"""Paths a user may hand the tool: outputs that are inputs by another name, names the file system cannot hold, a
folder at the checkpoint folder's name, a name that is not UTF-8. Each is refused in one line with nothing written,
or renders; no file of the user's is ever written over or deleted."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.conftest import CHELSEA, run_inprocess
from tests.synth import make_clip
from tests.test_hostile import FAST_CLI, error_line, nothing_written

TINY = ["--set", "input.max_side=32", "--set", "dream.octaves=1", "--set", "dream.iterations=1"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(folder: Path) -> dict[Path, str]:
    """Every file under `folder` and its hash: what must not change."""
    return {p: sha(p) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def test_no_command_writes_over_an_input(tmp_path, capfd):
    """Every file a command writes is checked against every file it reads: OUTPUT.yaml given back as `-c` (through
    a link too), a preview written onto its --source, a metrics plot onto either video, a plot path that is a
    directory. Each is one error line, exit 2, and every file stays as it was."""
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=3)
    still = tmp_path / "c.png"
    still.write_bytes(CHELSEA.read_bytes())
    cfg = tmp_path / "out.mp4.yaml"
    cfg.write_text("dream:\n  octaves: 1\n")
    (tmp_path / "link.yaml").symlink_to(cfg.name)
    (tmp_path / "c.png.yaml").write_text("dream:\n  iterations: 1\n")
    (tmp_path / "plots").mkdir()
    cases = {
        "video -c OUTPUT.yaml": ["video", clip, tmp_path / "out.mp4", "-c", cfg, *FAST_CLI],
        "video -c a link to it": ["video", clip, tmp_path / "out.mp4", "-c", tmp_path / "link.yaml", *FAST_CLI],
        "image -c OUTPUT.yaml": ["image", still, tmp_path / "c.png", "-c", tmp_path / "c.png.yaml"],
        "animate -c OUTPUT.yaml": ["animate", still, tmp_path / "out.mp4", "-c", cfg],
        "preview onto --source": ["preview", clip, still, "--source", still],
        "plot onto the source": ["metrics", clip, clip, "--plot", clip],
        "plot onto ./the dreamed": ["metrics", clip, clip, "--plot", tmp_path / "." / "clip.mp4"],
        "plot is a directory": ["metrics", clip, clip, "--plot", tmp_path / "plots"],
        "plot onto the render's config": ["metrics", clip, still, "--plot", tmp_path / "c.png.yaml"],
    }
    before = {p: sha(p) for p in tmp_path.iterdir() if p.is_file()}
    for name, argv in cases.items():
        rc, _, err = run_inprocess(argv, capfd)
        line = error_line(err)
        assert rc == 2 and ("is the input file" in line or "is a directory" in line), (name, line)
        assert {p: sha(p) for p in tmp_path.iterdir() if p.is_file()} == before, name


def test_names_the_file_system_cannot_hold_are_refused_before_anything_is_written(tmp_path, capfd):
    """A name of 255 bytes fits, but OUTPUT.yaml or OUTPUT.deepdream-run beside it would not (the render used to
    fail after dreaming, as an internal error, its output left behind); a folder name over 255 bytes cannot even be
    looked up, as input, output or -c file."""
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=3)
    long_dir = tmp_path / ("d" * 300)
    cases = {
        "video, no room for the run dir": ["video", clip, tmp_path / ("o" * 242 + ".mp4"), *TINY],
        "image, no room for OUTPUT.yaml": ["image", CHELSEA, tmp_path / ("o" * 250 + ".png"), *TINY],
        "output name over 255": ["image", CHELSEA, tmp_path / ("o" * 256 + ".png"), *TINY],
        "output folder over 255": ["video", clip, long_dir / "o.mp4", *TINY],
        "input folder over 255": ["video", long_dir / "i.mp4", tmp_path / "o.mp4", *TINY],
        "-c folder over 255": ["video", clip, tmp_path / "o.mp4", "-c", long_dir / "c.yaml", *TINY],
        "guide folder over 255": ["image", CHELSEA, tmp_path / "o.png", "--set", f"dream.guide={long_dir}/g.png"],
    }
    before = set(tmp_path.iterdir())
    for name, argv in cases.items():
        rc, _, err = run_inprocess(argv, capfd)
        line = error_line(err)
        assert rc == 2 and ("over this file system's" in line or "File name too long" in line), (name, line)
        nothing_written(tmp_path, before)


def test_a_folder_of_the_users_at_the_checkpoint_folders_name_is_never_cleared(tmp_path, capfd):
    """A folder a render did not make (it holds a file no render writes, even beside a manifest.json), a symbolic
    link there, or an input inside it: refused as they are, --restart or not."""
    clip = make_clip(tmp_path / "clip.mp4", width=64, height=48, frames=3)
    run_dir = tmp_path / "out.mp4.deepdream-run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    (run_dir / "manifest.json").write_text("{not json")
    before = tree(tmp_path)
    for restart in ([], ["--restart"]):
        rc, _, err = run_inprocess(["video", clip, tmp_path / "out.mp4", *FAST_CLI, *restart], capfd)
        assert rc == 2 and "not a deepdream checkpoint folder" in error_line(err)
        assert tree(tmp_path) == before
    (run_dir / "manifest.json").unlink()
    link = tmp_path / "link.mp4.deepdream-run"
    link.symlink_to(tmp_path / "nowhere")
    rc, _, err = run_inprocess(["video", clip, tmp_path / "link.mp4", *FAST_CLI], capfd)
    assert rc == 2 and "symbolic link" in error_line(err) and link.is_symlink()
    (run_dir / "keep.txt").rename(run_dir / "in.mp4")
    (run_dir / "in.mp4").write_bytes(clip.read_bytes())
    before = tree(tmp_path)
    rc, _, err = run_inprocess(["video", run_dir / "in.mp4", tmp_path / "out.mp4", *FAST_CLI], capfd)
    assert rc == 2 and "is inside" in error_line(err)
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_a_refused_resume_leaves_the_folder_as_it_found_it(tmp_path, capfd, monkeypatch):
    """Another input's checkpoint (its manifest, no lock file: copied, or left by a machine that died) is refused
    without the lock file the refusal used to leave in it."""
    import pipeline.render.runner as runner

    first, second = (make_clip(tmp_path / f"{n}.mp4", width=64, height=48, frames=3, seed=k)
                     for k, n in enumerate(("a", "b")))

    def killed(*_a, **_k):
        raise KeyboardInterrupt  # a render of `first` that stops before its finalize

    monkeypatch.setattr(runner, "finalize", killed)
    rc, _, _ = run_inprocess(["video", first, tmp_path / "o.mp4", *FAST_CLI], capfd)
    monkeypatch.undo()
    run_dir = tmp_path / "o.mp4.deepdream-run"
    assert rc == 130 and (run_dir / "manifest.json").is_file()
    (run_dir / "lock").unlink()
    before = sorted(run_dir.rglob("*"))
    rc, _, err = run_inprocess(["video", second, tmp_path / "o.mp4", *FAST_CLI], capfd)
    assert rc == 2, err
    assert sorted(run_dir.rglob("*")) == before


@pytest.mark.slow
def test_an_input_named_like_an_old_temp_file_survives_its_render(tmp_path, capfd):
    """A render clears `.OUTPUT.*.part.mp4` temp files an older version's finalize left beside OUTPUT; an input
    that happens to bear such a name is not one."""
    src = make_clip(tmp_path / ".out.mp4.x.part.mp4", width=64, height=48, frames=3)
    data = src.read_bytes()
    rc, _, err = run_inprocess(["video", src, tmp_path / "out.mp4", *FAST_CLI], capfd)
    assert rc == 0, err
    assert src.read_bytes() == data


@pytest.mark.slow
def test_a_name_that_is_not_utf8_renders_and_is_kept_in_the_sidecar(tmp_path, capfd):
    """Linux names are bytes: `i\\xffn.png` is a valid file. The render and OUTPUT.yaml (which names its source)
    used to fail on it as an internal error."""
    src = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/i\xffn.png"))
    src.write_bytes(CHELSEA.read_bytes())
    out = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/o\xff.png"))
    rc, _, err = run_inprocess(["image", src, out, *TINY], capfd)
    assert rc == 0, err
    assert b"i\xffn.png" in Path(str(out) + ".yaml").read_bytes()
