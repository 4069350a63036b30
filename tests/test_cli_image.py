"""`deepdream image` end to end: the real CLI on real files, small sizes and few iterations.

Subprocess runs (`python -m pipeline`) check what only a real process shows: exit status, the stderr a
user sees, startup. Each costs 5-7 s of interpreter + torch start on this 2-core machine, so the many
other cases call the same entry point in-process (`pipeline.cli.main(argv)`, which `deepdream` runs),
with stdout/stderr captured at the file-descriptor level; main() sends its log lines to that stderr too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import load_config
from tests.conftest import CHELSEA, REPO, cli_env, resized, run_inprocess

FAST = ["--set", "input.max_side=64", "--set", "dream.octaves=2", "--set", "dream.iterations=2"]


def run_subprocess(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Small real input files made from the chelsea photo, plus broken ones."""
    d = tmp_path_factory.mktemp("media")
    with Image.open(CHELSEA) as im:
        rgb = np.asarray(im.convert("RGB"))
    small = resized(rgb, 64, 43)
    paths = {"png": CHELSEA}

    jpg = d / "chelsea.jpg"
    Image.fromarray(rgb).save(jpg, quality=90)
    paths["jpg"] = jpg

    # A JPEG cut in half: Pillow must really fail on it (it tolerates losing only the tail marker).
    trunc = d / "truncated.jpg"
    data = jpg.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError):
        with Image.open(trunc) as im:
            im.load()
    paths["truncated"] = trunc

    (d / "text.jpg").write_text("this is not a JPEG\n")
    paths["text"] = d / "text.jpg"
    (d / "empty.png").write_bytes(b"")
    paths["empty"] = d / "empty.png"
    (d / "a_directory.png").mkdir()
    paths["dir"] = d / "a_directory.png"
    paths["small_png"] = d / "small.png"
    Image.fromarray(small).save(paths["small_png"])
    return paths


# --------------------------------------------------------------------------- real subprocesses


@pytest.fixture(scope="module")
def subprocess_runs(media, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Several real `python -m pipeline image` runs, started together to share the startup cost."""
    cases = {
        "ok": (media["png"], "o.png", FAST),
        "truncated": (media["truncated"], "o.png", FAST),
    }
    dirs = {name: tmp_path_factory.mktemp(f"sub_{name}") for name in cases}
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {name: pool.submit(run_subprocess, ["image", src, dirs[name] / out, *extra])
                   for name, (src, out, extra) in cases.items()}
        return {name: (f.result(), dirs[name]) for name, f in futures.items()}


@pytest.mark.slow
def test_subprocess_success_writes_output_and_config(subprocess_runs):
    proc, d = subprocess_runs["ok"]
    assert proc.returncode == 0, proc.stderr
    out = d / "o.png"
    assert proc.stdout.strip() == str(out)
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in d.iterdir()) == ["o.png", "o.png.yaml"]  # no temp files left
    assert image_size(out) == (64, 43)
    cfg_text = (d / "o.png.yaml").read_text()
    assert f"# source: {CHELSEA}" in cfg_text
    data = yaml.safe_load(cfg_text)
    assert data["input"]["max_side"] == 64
    assert data["dream"]["octaves"] == 2 and data["dream"]["iterations"] == 2
    assert data["model"]["name"] == "efficientnet_lite0"


@pytest.mark.slow
def test_subprocess_and_inprocess_runs_are_byte_identical(subprocess_runs, tmp_path, capfd):
    proc, d = subprocess_runs["ok"]
    assert proc.returncode == 0
    rc, *_ = run_inprocess(["image", CHELSEA, tmp_path / "o.png", *FAST], capfd)
    assert rc == 0
    assert (tmp_path / "o.png").read_bytes() == (d / "o.png").read_bytes()


@pytest.mark.slow
def test_subprocess_bad_input_is_one_error_line(subprocess_runs):
    proc, d = subprocess_runs["truncated"]
    message = "error: cannot decode image "
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert proc.stdout == ""
    assert list(d.iterdir()) == []


# --------------------------------------------------------------------------------- in-process runs


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_different(tmp_path, capfd):
    outs = {}
    for name, extra in (("a", []), ("b", []), ("c", ["--set", "dream.seed=1"])):
        rc, out, err = run_inprocess(["image", CHELSEA, tmp_path / f"{name}.png", *FAST, *extra], capfd)
        assert rc == 0, err
        outs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]


@pytest.mark.slow
def test_rerun_from_the_written_config_reproduces_the_output(tmp_path, capfd):
    first = tmp_path / "first.png"
    rc, *_ = run_inprocess(["image", CHELSEA, first, *FAST, "--set", "dream.layers={block6: 0.5, block9: 1}"],
                           capfd)
    assert rc == 0
    cfg = load_config(str(tmp_path / "first.png.yaml"))
    assert dict(cfg.dream.layers) == {"block6": 0.5, "block9": 1.0}
    again = tmp_path / "again.png"
    rc, *_ = run_inprocess(["image", CHELSEA, again, "-c", tmp_path / "first.png.yaml"], capfd)
    assert rc == 0
    assert again.read_bytes() == first.read_bytes()


@pytest.mark.slow
def test_relative_output_path(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_inprocess(["image", CHELSEA, "rel.jpg", *FAST], capfd)
    assert rc == 0, err
    assert (tmp_path / "rel.jpg").is_file() and (tmp_path / "rel.jpg.yaml").is_file()


@pytest.mark.slow
def test_dream_changes_the_image(media, tmp_path, capfd):
    out = tmp_path / "o.png"
    rc, *_ = run_inprocess(["image", media["small_png"], out, *FAST], capfd)
    assert rc == 0
    src = np.asarray(Image.open(media["small_png"]), dtype=np.float32)
    dst = np.asarray(Image.open(out), dtype=np.float32)
    assert src.shape == dst.shape
    assert 0.3 < np.abs(dst - src).mean() < 40, np.abs(dst - src).mean()


BAD_CASES = {
    # name: (input key or path, output name, extra args, stderr prefix)
    "missing": ("missing", "o.png", [], "error: input not found: "),
    "directory": ("dir", "o.png", [], "error: input is a directory, not a file: "),
    "empty": ("empty", "o.png", [], "error: input is an empty file: "),
    "text_as_jpg": ("text", "o.png", [], "error: not an image Pillow can read: "),
    "truncated_jpeg": ("truncated", "o.png", [], "error: cannot decode image "),
    "unknown_model": ("png", "o.png", ["--set", "model.name=nope"],
                      "error: model.name: unknown model 'nope'"),
    "unknown_layer": ("png", "o.png", ["--set", "dream.layers=[block99]"],
                      "error: dream.layers: unknown layer 'block99' for efficientnet_lite0; "
                      "valid layers: stem, block0, block1"),
    "unknown_key": ("png", "o.png", ["--set", "dream.octavez=2"], "error: dream.octavez: unknown key"),
    "octaves_0": ("png", "o.png", ["--set", "dream.octaves=0"], "error: dream.octaves: must be >= 1, got 0"),
    "bad_choice": ("png", "o.png", ["--set", "dream.device=tpu"], "error: dream.device: must be one of"),
    "missing_preset": ("png", "o.png", ["-c", "no_such_preset"],
                       "error: no preset or config file 'no_such_preset'; presets: "),
    "output_dir_missing": ("png", "no_such_dir/o.png", [], "error: output directory does not exist: "),
    "output_ext": ("png", "o.gif", [], "error: output "),
    "output_no_ext": ("png", "o", [], "error: output "),
    "output_is_dir": ("png", "taken.png", [], "error: output is a directory: "),
    "weights_missing": ("png", "o.png", ["--set", "model.weights=/no/such/w.pth"],
                        "error: model.weights: no such file: /no/such/w.pth"),
    "channel_range": ("png", "o.png", ["--set", "dream.channels={block9: [112]}"],
                      "error: dream.channels.block9: channel 112 out of range 0..111"),
    "guide_missing": ("png", "o.png", ["--set", "dream.guide=/no/such/guide.png"],
                      "error: dream.guide: no such file: "),
    "equirect_not_2to1": ("png", "o.png", ["--set", "projection=equirect"],
                          "error: projection=equirect needs a 2:1 frame per eye, got 64x43"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exit_2_one_line_nothing_written(media, tmp_path, capfd, case):
    src_key, out_name, extra, prefix = BAD_CASES[case]
    src = media[src_key] if src_key in media else media["png"].with_name("no_such_input.png")
    outdir = tmp_path / "out"
    outdir.mkdir()
    if case == "output_is_dir":
        (outdir / out_name).mkdir()
    before = sorted(outdir.rglob("*"))
    rc, out, err = run_inprocess(["image", src, outdir / out_name, *FAST, *extra], capfd)
    assert rc == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert "Traceback" not in err and out == ""
    assert sorted(outdir.rglob("*")) == before  # no output, no temp files
    if case == "output_ext":
        assert "unsupported image type .gif" in lines[0]
    if case == "output_no_ext":
        assert "unsupported image type (none)" in lines[0]


def test_output_dir_not_writable(tmp_path, capfd):
    outdir = tmp_path / "ro"
    outdir.mkdir()
    outdir.chmod(0o500)
    try:
        if os.access(outdir, os.W_OK):
            pytest.skip("running as root: permission bits do not stop writes, so this cannot be tested here")
        rc, _, err = run_inprocess(["image", CHELSEA, outdir / "o.png", *FAST], capfd)
        assert rc == 2
        assert err.splitlines() == [f"error: output directory is not writable: {outdir}"]
        assert list(outdir.iterdir()) == []
    finally:
        outdir.chmod(0o700)


@pytest.mark.slow
def test_torchvision_model_without_weights_offline(tmp_path, capfd, monkeypatch):
    """Not a config error (it fails when the weights are fetched); still exit 2 with one error line."""
    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert torch.hub.get_dir().startswith(str(tmp_path / "torch_home"))
    outdir = tmp_path / "out"
    outdir.mkdir()
    rc, out, err = run_inprocess(["image", CHELSEA, outdir / "o.png", *FAST, "--set", "model.name=googlenet"],
                                    capfd)
    assert rc == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.weights" in errors[0], err
    assert "Traceback" not in err
    assert list(outdir.iterdir()) == []


# --------------------------------------------------------------------------------- bigger runs


@pytest.mark.slow
def test_large_image_is_tiled(tmp_path, capfd):
    """A 4000×3000 photo-sized input dreams on 512 px tiles (99 of them) and keeps its size.

    In-process and on the `stem` layer to stay near 15 s on 2 CPU cores: one iteration of the default
    block9 over those tiles measured ~55 s (one thread, idle machine) to ~6 min (oversubscribed).
    """
    h, w = 3000, 4000
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([(np.sin(xx / 37) + np.cos(yy / 53)) * 60 + 128, np.sin((xx + yy) / 71) * 100 + 128,
                    xx / w * 255], -1).clip(0, 255).astype(np.uint8)
    src, out = tmp_path / "big.jpg", tmp_path / "big_dream.jpg"
    Image.fromarray(img).save(src, quality=90)
    t0 = time.perf_counter()
    rc, _, err = run_inprocess(["image", src, out, "--set", "dream.octaves=1", "--set", "dream.iterations=1",
                                "--set", "dream.tile=512", "--set", "dream.layers=[stem]",
                                "--set", "dream.step_size=16"], capfd)
    wall = time.perf_counter() - t0
    assert rc == 0, err
    assert image_size(out) == (w, h)
    # Every region was dreamed (the tiles cover the frame): mean change per 500 px block.
    src_a = np.asarray(Image.open(src), dtype=np.float32)
    dst_a = np.asarray(Image.open(out), dtype=np.float32)
    blocks = np.abs(dst_a - src_a).mean(axis=2).reshape(6, 500, 8, 500).mean(axis=(1, 3))
    with capfd.disabled():
        print(f"\n4000x3000 tiled dream (1 octave, 1 iteration, stem, tile 512), in-process: {wall:.1f} s; "
              f"mean change per 500 px block {blocks.min():.1f}..{blocks.max():.1f} levels")
    assert blocks.min() > 2.0, blocks.round(1)


@pytest.mark.slow
def test_default_preset_at_256px(tmp_path, capfd):
    """All default dream settings (4 octaves × 10 iterations, block9, tile 512) on a 256 px image."""
    out = tmp_path / "o.png"
    t0 = time.perf_counter()
    proc = run_subprocess(["image", CHELSEA, out, "--set", "input.max_side=256"], timeout=400)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert image_size(out) == (256, 170)
    cfg = load_config(str(tmp_path / "o.png.yaml"))
    assert cfg.dream == load_config("default").dream
    wrote = [line for line in proc.stderr.splitlines() if line.startswith("wrote ")]
    with capfd.disabled():
        print(f"\ndefault preset, 256 px (256x170), subprocess: {wall:.1f} s wall; log: {wrote}")


def test_shutil_which_deepdream_entry_point():
    """The console script is installed and is the same CLI."""
    exe = shutil.which("deepdream", path=str(Path(sys.executable).parent))
    assert exe is not None
    assert "pipeline.cli" in Path(exe).read_text()
