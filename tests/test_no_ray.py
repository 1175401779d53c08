"""The core package and the CLI work without ray (the ``ray`` extra is optional)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PYTHON_DIR = str(Path(__file__).resolve().parents[1] / "python")

# ray made unimportable, whether or not it is installed
BLOCK = "import sys; sys.modules['ray'] = None\n"


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [PYTHON_DIR, *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_import_and_the_cli_never_import_ray():
    code = (
        "import looptune, looptune.cli, looptune.measure, looptune.search, looptune.agent\n"
        "import looptune.leaderboard.cli, looptune.costmodel, looptune.distributed\n"
        "from looptune.cli import main\n"
        "for cmd in (['--help'], ['eval', '--help'], ['leaderboard', '--help'],\n"
        "            ['train', '--help']):\n"
        "    try:\n"
        "        main(cmd)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "assert sys.modules['ray'] is None\n"
        "print('ok')\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert "--ray ADDR" in out.stdout and "--backend {sb3,rllib}" in out.stdout


def test_ray_commands_say_how_to_install_ray():
    code = (
        "from looptune.cli import main\n"
        "print('rc', main(['train', '--backend', 'rllib', '--timesteps', '10']))\n"
        "print('rc', main(['eval', '--ray', 'local', '--searches', 'base', '--limit', '1',\n"
        "                  '-q']))\n"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["rc", "1", "rc", "1"]
    assert out.stderr.count('pip install "looptune[ray]"') == 2
