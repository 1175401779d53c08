"""Loading a policy never runs code from the file: a crafted SB3 zip whose pickle payload writes
a file is refused by every public entry point, and the payload is shown to be live (it does run
when the user explicitly passes ``trust_pickle=True``)."""

from __future__ import annotations

import base64
import json
import pickle
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")

import looptune
from looptune import cli, search
from looptune.agent.policy import (
    PolicyFormatError,
    UntrustedPolicyError,
    default_policy_path,
    load_policy,
)
from looptune.search.agent import tune


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def craft(tmp: Path, name: str = "evil.zip") -> tuple[Path, Path]:
    """An SB3-style zip whose ``data`` entry holds a pickle that writes ``marker`` when loaded."""
    marker = tmp / "PWNED"
    blob = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}}
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("data", json.dumps(data))
        z.writestr("policy.pth", pickle.dumps(_Payload(marker)))
        z.writestr("_stable_baselines3_version", "2.0.0")
    meta = json.loads(default_policy_path("avx512").with_suffix(".json").read_text())
    meta.pop("network")
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path, marker


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch notes the pickle protocol
def test_the_payload_is_live_when_pickles_are_trusted(tmp_path):
    path, marker = craft(tmp_path)
    warns = pytest.warns(RuntimeWarning, match="runs any code")
    with pytest.raises(Exception), warns:  # noqa: B017  (whatever SB3 raises after the payload)
        load_policy(path, trust_pickle=True)
    assert marker.read_text() == "pwned"  # so the refusals below are real refusals


def test_load_policy_refuses_a_zip(tmp_path):
    path, marker = craft(tmp_path)
    with pytest.raises(UntrustedPolicyError, match="trust_pickle=True"):
        load_policy(path)
    assert not marker.exists()


def test_a_pickle_renamed_safetensors_is_not_unpickled(tmp_path):
    path, marker = craft(tmp_path)
    fake = path.with_suffix(".safetensors")
    shutil.copy(path, fake)
    meta = json.loads(default_policy_path("avx512").with_suffix(".json").read_text())
    fake.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PolicyFormatError, match="not a safetensors file"):
        load_policy(fake)
    assert not marker.exists()


def test_agent_search_and_tune_refuse_it(tmp_path):
    path, marker = craft(tmp_path)
    tree = looptune.matmul(32, 32, 32).default_schedule()
    with pytest.raises(UntrustedPolicyError):
        tune(tree, policy=str(path))
    with pytest.raises(UntrustedPolicyError):
        search.get("agent")(tree, policy=str(path))
    assert not marker.exists()


def test_cli_tune_policy_refuses_it(tmp_path, capsys):
    path, marker = craft(tmp_path)
    code = cli.main(["tune", "matmul", "32", "32", "32", "--policy", str(path)])
    assert code == 2 and "trust-pickle" in capsys.readouterr().err
    assert not marker.exists()


def test_evaluate_script_refuses_it(tmp_path):
    path, marker = craft(tmp_path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agents"))
    import evaluate

    with pytest.raises(UntrustedPolicyError):
        evaluate.main(["--policy", str(path), "--limit", "1", "--quiet"])
    assert not marker.exists()


def _meta_copy(tmp_path: Path, **change: object) -> Path:
    src = default_policy_path("avx512")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    for k, v in change.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"env_id": None}, "has no 'env_id'"),
        ({"env_id": "os:system-v0"}, "module imports are refused"),
        ({"env_id": "CartPole-v1"}, "is not one of"),
        ({"env_id": 3}, "not a LoopTune env id"),
        ({"algo": "a2c"}, "unknown algorithm"),
        ({"network": {"policy_class": "builtins.eval"}}, "uses the policy class"),
    ],
)
def test_bad_metadata_is_refused_with_a_typed_error(tmp_path, change, phrase):
    path = _meta_copy(tmp_path, **change)
    with pytest.raises(PolicyFormatError, match=phrase):
        load_policy(path)


def test_module_in_env_id_is_never_imported(tmp_path):
    name = "looptune_evil_module_xyz"
    (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / 'IMPORTED')!r}, 'w')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(PolicyFormatError):
            load_policy(_meta_copy(tmp_path, env_id=f"{name}:Env-v0"))
    finally:
        sys.path.remove(str(tmp_path))
    assert name not in sys.modules and not (tmp_path / "IMPORTED").exists()


def test_shipped_policy_is_tensors_only():
    for isa in ("avx512", "avx2"):
        path = default_policy_path(isa)
        assert path.suffix == ".safetensors" and not path.with_suffix(".zip").exists()
        assert load_policy(path).model.n_actions == 7
        assert load_policy(path, backend="torch").model.policy.action_space.n == 7


def test_looptune_train_never_runs_a_script_from_the_cwd(tmp_path, monkeypatch, capsys):
    (tmp_path / "agents").mkdir()
    marker = tmp_path / "RAN"
    (tmp_path / "agents" / "train.py").write_text(f"open({str(marker)!r}, 'w')\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--help"]) == 0
    assert "--algo" in capsys.readouterr().out and not marker.exists()


def test_debug_dump_never_runs_objdump_from_path(tmp_path):
    import os
    import subprocess

    marker = tmp_path / "RAN"
    fake = tmp_path / "objdump"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n")
    fake.chmod(0o755)
    env = {**os.environ, "LOOPTUNE_DEBUG": "1", "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    code = "import looptune; looptune.matmul(8, 8, 8).default_schedule().compile()"
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "absolute path" in res.stderr
    assert not marker.exists()
