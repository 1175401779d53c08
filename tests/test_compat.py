"""The module paths of before the package was grouped keep working (looptune._compat)."""
import importlib
import importlib.util
import subprocess
import sys

import pytest

from looptune._compat import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_is_the_new_module(old):
    new = MOVED[old]
    if new.startswith("looptune.agent.") and importlib.util.find_spec("torch") is None:
        pytest.skip("the agent modules need torch")
    mod_old, mod_new = importlib.import_module(old), importlib.import_module(new)
    assert mod_old is mod_new
    assert mod_new.__spec__.name == new  # the module keeps its own spec


def test_from_import_of_old_path_gives_the_same_objects():
    from looptune.measure.reference import check_tree as new
    from looptune.reference import check_tree as old

    assert old is new


def test_python_dash_m_old_training_path_runs_the_new_module():
    out = subprocess.run(
        [sys.executable, "-m", "looptune.train", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "--algo" in out.stdout


def test_unknown_old_name_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("looptune.no_such_module")
