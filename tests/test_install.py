"""The package as a new user gets it: the built wheel in a fresh virtualenv, run from a folder
outside the checkout. Slow (a wheel build and pip installs): run with ``pytest -m slow``.

The core dependencies come from the package index (pip's cache is reused); torch for the RL
test is the pinned CPU build, installed first as the README says.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TORCH = os.environ.get("LOOPTUNE_TEST_TORCH", "torch==2.13.0")


def run(cmd: list[str], cwd: Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")  # not the checkout's build/: no clash with make
    pip_wheel = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(dist)]
    run([*pip_wheel, f"--config-settings=build-dir={build}"], ROOT)
    (path,) = dist.glob("looptune-*.whl")
    names = zipfile.ZipFile(path).namelist()
    assert "looptune/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    assert any(n.startswith("looptune/_core") and n.endswith(".so") for n in names)
    return path


def fresh_venv(where: Path) -> Path:
    """A virtualenv without system site-packages; returns its bin folder."""
    run([sys.executable, "-m", "venv", str(where)], where.parent)
    return where / "bin"


def test_wheel_without_extras_tunes_shows_and_makes_the_env(wheel: Path, tmp_path: Path) -> None:
    bin_ = fresh_venv(tmp_path / "venv")
    run([str(bin_ / "pip"), "install", "-q", str(wheel)], tmp_path)
    work = tmp_path / "work"  # outside the checkout: nothing can come from the source tree
    work.mkdir()
    out = run(
        [
            str(bin_ / "looptune"),
            "tune",
            "matmul",
            "64",
            "64",
            "64",
            "--search",
            "greedy1",
            "--save",
            "mm.lt",
        ],
        work,
    ).stdout
    assert "correctness: tuned kernel" in out and "saved: mm.lt" in out
    shown = run([str(bin_ / "looptune"), "show", "mm.lt"], work).stdout
    assert shown.startswith("computation: matmul m=64 k=64 n=64")
    assert shown.split("\n", 2)[2].strip() == (work / "mm.lt").read_text().strip()
    # the first command: the default (agent) search needs torch, absent here -> greedy2
    proc = run([str(bin_ / "looptune"), "tune", "matmul", "128", "256", "64"], work)
    assert "using greedy2 instead" in proc.stderr and "search: greedy2" in proc.stdout
    code = (
        "import gymnasium as gym, looptune, importlib.util as u; "
        "env = gym.make('LoopTune-v0'); obs, info = env.reset(seed=0); "
        "print(looptune.__file__, u.find_spec('torch') is None, "
        "env.observation_space.contains(obs))"
    )
    where, no_torch, ok = run([str(bin_ / "python"), "-c", code], work).stdout.split()
    assert Path(where).is_relative_to(tmp_path / "venv") and no_torch == "True" and ok == "True"


def test_wheel_with_rl_extra_trains_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    bin_ = fresh_venv(tmp_path / "venv")
    run([str(bin_ / "pip"), "install", "-q", TORCH], tmp_path)  # the CPU build first
    run([str(bin_ / "pip"), "install", "-q", f"{wheel}[rl]"], tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    run(
        [
            str(bin_ / "looptune"),
            "train",
            "--algo",
            "ppo",
            "--timesteps",
            "256",
            "--n-envs",
            "1",
            "--n-steps",
            "128",
            "--batch-size",
            "64",
            "--eval-freq",
            "1000000",
            "--eval-benchmarks",
            "1",
            "--logdir",
            "runs",
            "--save",
            "policy",
            "--progress",  # needs rich, from the rl extra
        ],
        work,
    )
    saved = {p.name for p in work.glob("policy.*")}  # policy.zip, or .safetensors + .json
    assert saved & {"policy.zip", "policy.safetensors"}, saved
    out = run(
        [str(bin_ / "looptune"), "tune", "matmul", "64", "64", "64", "--search", "agent"], work
    ).stdout
    assert "search: agent" in out
