"""Shared fixtures: seeded random schedules for the engine tests, and the ISAs kernels run on."""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable

import pytest
from isas import ISA_PARAMS

import looptune
from looptune.space.actions import RICH_ACTIONS

# The Ray tests need the `ray` extra, which pins gymnasium 1.2.2: they run in a second venv
# (scripts/ray_tests.sh, called by .ci/run). Without ray they are not collected (not skipped:
# in CI's main run a skip means an ISA this CPU lacks), and the report header says so.
HAS_RAY = importlib.util.find_spec("ray") is not None
collect_ignore = [] if HAS_RAY else ["test_distributed.py"]


def pytest_report_header(config):
    if not HAS_RAY:
        return "ray not installed: tests/test_distributed.py runs in scripts/ray_tests.sh"
    return None


def walk(
    tree: looptune.LoopTree, rng: random.Random, steps: int, actions: tuple[str, ...] = RICH_ACTIONS
) -> looptune.LoopTree:
    """Apply `steps` random legal actions (illegal picks are skipped, as in the env)."""
    for _ in range(steps):
        nxt = tree.try_apply(rng.choice(actions))
        if nxt is not None:
            tree = nxt
    return tree


@pytest.fixture
def random_walk() -> Callable[..., looptune.LoopTree]:
    return walk


@pytest.fixture
def computations() -> list[looptune.Computation]:
    """A spread of ops and odd sizes, including size-1 loops."""
    return [
        looptune.matmul(1, 3, 17),
        looptune.matmul(67, 131, 3),
        looptune.matmul(128, 64, 256),
        looptune.batch_matmul(3, 17, 5, 33),
        looptune.conv2d(1, 3, 9, 7, 4, 3, 3, stride=2, pad=1),
        looptune.contraction("abc,cd->abd", a=2, b=5, c=7, d=9),
    ]


@pytest.fixture(params=ISA_PARAMS)
def cpu_isa(request: pytest.FixtureRequest) -> str:
    """Each ISA in turn, for tests that compile and run kernels: those this CPU lacks are
    skipped (so an AVX2 host runs the avx2 case and reports the avx512 one as skipped)."""
    return request.param
