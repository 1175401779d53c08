"""The numpy forward pass of the policies (looptune.agent.inference) against torch: the same
log-probabilities / Q-values / scores and the same action choices, on every shipped policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import looptune
from looptune.agent import tiler
from looptune.agent.inference import Mlp, NumpyPolicy, read_tensors
from looptune.agent.policy import DATA_DIR, load_policy
from looptune.agent.policy_io import PolicyFormatError
from looptune.agent.tiler_policy import load_tiler
from looptune.search.agent import action_scores, observe, rollout

PAPER = sorted(p for p in DATA_DIR.glob("policy_*.safetensors") if "tiler" not in p.name)
TILERS = sorted(DATA_DIR.glob("policy_tiler_*.safetensors"))
REPO = Path(__file__).resolve().parents[1]


def _torch_logits(policy, obs: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        obs_t, _ = policy.model.policy.obs_to_tensor(obs)
        if hasattr(policy.model, "q_net"):
            return policy.model.q_net(obs_t).numpy()
        return policy.model.policy.get_distribution(obs_t).distribution.logits.numpy()


def _states(policy, n: int) -> list[looptune.LoopTree]:
    """Real states: random walks from matmuls across (and beyond) the training range."""
    rng = np.random.default_rng(5)
    space_trees = []
    for _ in range(n):
        m, k, nn = (int(v) for v in rng.integers(16, 300, 3))
        tree = looptune.matmul(m, k, nn).default_schedule()
        for _ in range(int(rng.integers(0, 8))):
            nxt = tree.try_apply(policy.actions[int(rng.integers(len(policy.actions)))])
            if nxt is not None and nxt.depth <= policy.max_loops:
                tree = nxt
        space_trees.append(tree)
    return space_trees


def test_shipped_files_are_found():
    assert len(PAPER) >= 2 and len(TILERS) >= 3


def test_read_tensors_matches_safetensors():
    st = pytest.importorskip("safetensors.numpy")
    for path in PAPER + TILERS:
        ours, theirs = read_tensors(path), st.load_file(str(path))
        assert sorted(ours) == sorted(theirs)
        for k in ours:
            assert ours[k].dtype == theirs[k].dtype
            np.testing.assert_array_equal(ours[k], theirs[k])


def test_read_tensors_refuses_malformed_files(tmp_path):
    good = PAPER[0].read_bytes()
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + n])
    cases = {
        "short": good[:5],
        "huge_header": (10**9).to_bytes(8, "little") + good[8:],
        "not_json": n.to_bytes(8, "little") + b"{" * n + good[8 + n :],
        "truncated": good[: 8 + n + 100],
    }
    key = next(k for k in header if k != "__metadata__")
    bad = dict(header)
    bad[key] = {**header[key], "dtype": "BF16"}
    text = json.dumps(bad).encode()
    cases["bf16"] = len(text).to_bytes(8, "little") + text + good[8 + n :]
    for name, data in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(data)
        with pytest.raises(PolicyFormatError):
            read_tensors(path)


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_numpy_paper_policy_equals_torch(path):
    pytest.importorskip("sb3_contrib")
    fast, ref = load_policy(path), load_policy(path, backend="torch")
    assert isinstance(fast.model, NumpyPolicy)
    rng = np.random.default_rng(0)
    random_obs = rng.uniform(-1, 1, (300, fast.model.obs_size)).astype(np.float32)
    trees = _states(fast, 120)
    real_obs = np.stack([observe(fast, t) for t in trees])
    for obs in (random_obs, real_obs):
        ours, theirs = fast.model.action_scores(obs), _torch_logits(ref, obs)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
        assert (ours.argmax(1) == theirs.argmax(1)).all()
    # masked argmax, action by action, as the agent search takes it
    for tree, obs in zip(trees, real_obs):
        mask = fast.model.n_actions == len(fast.actions) and np.asarray(
            [tree.try_apply(a) is not None for a in fast.actions]
        )
        a = np.where(mask, action_scores(fast.model, obs), -np.inf).argmax()
        b = np.where(mask, action_scores(ref.model, obs), -np.inf).argmax()
        assert a == b
    # whole greedy rollouts visit the same states
    for m, k, n in ((64, 64, 64), (128, 256, 64), (96, 112, 128), (256, 80, 200)):
        tree = looptune.matmul(m, k, n).default_schedule()
        assert [s.hash() for s in rollout(fast, tree)] == [s.hash() for s in rollout(ref, tree)]


@pytest.mark.parametrize("path", TILERS, ids=lambda p: p.stem)
def test_numpy_tiler_scores_equal_torch(path):
    pytest.importorskip("torch")
    fast, ref = load_tiler(path), load_tiler(path, backend="torch")
    assert isinstance(fast.net, Mlp)
    comps = [
        looptune.matmul(128, 256, 64),
        looptune.matmul(67, 131, 33),
        looptune.matmul(1024, 1024, 8),
        looptune.batch_matmul(6, 100, 72, 130),
        looptune.batch_matmul(3, 17, 5, 33),
        looptune.conv2d(1, 64, 56, 56, 64, 3, 3, 1, 1),
        looptune.conv2d(1, 3, 9, 7, 4, 3, 3, stride=2, pad=1),
    ]
    for comp in comps:
        trees = tiler.candidates(comp, fast.isa)
        ours, theirs = fast.scores(trees), ref.scores(trees)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        assert ours.argmax() == theirs.argmax()
        top = [[t.hash() for t in p.rank(comp)[0][:3]] for p in (fast, ref)]
        assert top[0] == top[1]


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo", "dqn"])
def test_numpy_forward_of_other_algorithms(algo):
    """Policies not shipped (PPO, DQN, other activations and layer sizes): a freshly built SB3
    network with random weights gives the same outputs in numpy."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("sb3_contrib")
    from looptune.agent import policy_io
    from looptune.space import ScheduleSpace

    space = ScheduleSpace("paper", 10, "box")
    torch.manual_seed(1)
    policy_kwargs = {"net_arch": [32, 16], "activation_fn": "ReLU" if algo == "dqn" else "ELU"}
    network = {
        "policy_class": policy_io.POLICY_CLASSES[algo][0],
        "observation_space": policy_io._space_to_json(space.observation_space()),
        "action_space": {"type": "Discrete", "n": len(space.actions)},
        "policy_kwargs": policy_kwargs,
    }
    net = policy_io.build_policy(network, algo)
    net.set_training_mode(False)
    tensors = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    fast = NumpyPolicy(network, algo, tensors)
    sizes = ((64, 96), (80, 256))
    trees = [looptune.matmul(m, 64, n).default_schedule().split(4) for m, n in sizes]
    for tree in trees:
        obs = space.observe(tree)
        obs_t, _ = net.obs_to_tensor(obs)
        with torch.no_grad():
            if algo == "dqn":
                theirs = net.q_net(obs_t)[0].numpy()
            else:
                theirs = net.get_distribution(obs_t).distribution.logits[0].numpy()
        np.testing.assert_allclose(fast.action_scores(obs), theirs, rtol=1e-5, atol=1e-6)
        mask = space.mask(tree)
        action, _ = fast.predict(obs, action_masks=mask)
        assert mask[action] and action == int(np.argmax(np.where(mask, theirs, -np.inf)))


def test_network_that_does_not_fit_its_spaces_is_refused():
    meta = json.loads(PAPER[0].with_suffix(".json").read_text())
    tensors = read_tensors(PAPER[0])
    tensors["action_net.weight"] = tensors["action_net.weight"][:5]
    tensors["action_net.bias"] = tensors["action_net.bias"][:5]
    with pytest.raises(PolicyFormatError, match="spaces need"):
        NumpyPolicy(meta["network"], meta["algo"], tensors)
    dict_net = {**meta["network"], "observation_space": {
        "type": "Dict", "spaces": {"a": {"type": "Box", "low": 0, "high": 1, "shape": [760]}}}}
    with pytest.raises(PolicyFormatError, match="only Box"):
        NumpyPolicy(dict_net, meta["algo"], read_tensors(PAPER[0]))
    with pytest.raises(PolicyFormatError, match="activation"):
        Mlp([(np.zeros((2, 3), np.float32), np.zeros(2, np.float32))], "Softplus")


def test_tune_with_the_agent_never_imports_torch():
    """`looptune tune` runs the shipped agent with torch unavailable (a core install)."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['stable_baselines3'] = None; "
        "sys.modules['sb3_contrib'] = None; sys.modules['safetensors'] = None\n"
        "from looptune.cli import main\n"
        "rc = main(['tune', 'matmul', '128', '256', '64', '--json', '--time-budget', '2'])\n"
        "heavy = [m for m in ('networkx', 'matplotlib', 'tqdm') if m in sys.modules]\n"
        "print('HEAVY', heavy); sys.exit(rc)\n"
    )
    env = {"PYTHONPATH": str(REPO / "python"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout[: out.stdout.rindex("HEAVY")])
    assert report["search"] == "agent" and report["check"]["ok"]
    assert report["wall_seconds"] > report["tuning_seconds"] > 0
    assert "HEAVY []" in out.stdout
