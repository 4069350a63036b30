"""The built wheel works on its own: presets ship inside it, the entry point runs from any directory."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import preset_names
from tests.conftest import CHELSEA, REPO, cli_env

pytestmark = pytest.mark.slow  # builds a wheel and runs it in subprocesses


def _pip(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args, "--no-input", "--disable-pip-version-check", "-q"],
                       cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built into a wheel (from a copy, so the checkout gets no build/ or egg-info) and installed
    with --target into a fresh folder outside the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("pipeline", "stages", "configs"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    _pip("wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), cwd=src)
    wheels = list((root / "dist").glob("deepdream_video-*.whl"))
    assert len(wheels) == 1, wheels
    target = root / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheels[0]), cwd=root)
    return target


def _env(target: Path) -> dict[str, str]:
    # The wheel's packages shadow the checkout's (PYTHONPATH comes before site-packages, where the
    # editable install points at the checkout); torch & co. still come from this environment.
    return cli_env(PYTHONPATH=str(target))


def test_installed_packages_come_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    code = ("import json, pipeline, configs, stages; from pipeline.config import preset_names; "
            "print(json.dumps([pipeline.__file__, configs.__file__, stages.__file__, preset_names()]))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(installed), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    *files, names = json.loads(r.stdout)
    assert all(Path(f).is_relative_to(installed) for f in files), files
    assert names == preset_names() and "default" in names
    assert (installed / "configs" / "default.yaml").is_file()
    web = installed / "pipeline" / "review" / "web"  # `deepdream view` works offline: its page and three.js ship
    assert all((web / n).is_file() for n in ("index.html", "viewer.js", "vendor/three.module.min.js"))


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_runs_from_another_directory(installed: Path, tmp_path: Path, preset: str) -> None:
    exe = installed / "bin" / "deepdream"
    assert exe.is_file()
    out = tmp_path / "out.png"
    r = subprocess.run([str(exe), "image", str(CHELSEA), str(out), "-c", preset, "--set", "input.max_side=48",
                        "--set", "dream.octaves=1", "--set", "dream.iterations=1"],
                       cwd=tmp_path, env=_env(installed), capture_output=True, text=True, timeout=180)
    if r.returncode == 2 and "weights" in r.stderr:
        # classic_googlenet offline: the preset was found; its model's weights are not on this machine.
        assert preset == "classic_googlenet", r.stderr
        assert not out.exists()
        return
    assert r.returncode == 0, r.stderr
    assert out.is_file() and (tmp_path / "out.png.yaml").is_file()
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # like any file the user's tools create
