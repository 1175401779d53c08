"""What a cost model is to the model-guided search, and the registry of cost models.

The search (:mod:`looptune.search.model_guided`) proposes points of a :class:`ConfigSpace` by
simulated annealing on a cost model's :meth:`CostModel.score`, lets the model cut the
proposals down (:meth:`CostModel.select`), measures the survivors and refits the model on every
trial (:meth:`CostModel.fit`). A cost model is a subclass of :class:`CostModel` in one file,
registered under a name::

    @register_cost_model("mine")
    class Mine(CostModel):
        def fit(self, trials): ...
        def score(self, points): ...

and ``looptune.search.get("mine")`` / ``tune(space, "mine")`` use it (built-in models are
imported by ``looptune/costmodel/__init__.py``: one line each). This module never imports
``looptune.search``: searches depend on cost models, not the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from looptune.measure.result import Outcome

if TYPE_CHECKING:
    from looptune.costmodel.evaluator import Evaluator

Point = tuple[int, ...]
# A pre-training row: (visible features, hidden features or None, outcome, gflops).
PretrainRow = tuple[np.ndarray, "np.ndarray | None", Outcome, float]


class TrialLike(Protocol):
    point: Point
    outcome: Outcome
    gflops: float


class SearchContext(Protocol):
    """What a cost model may ask of the search that runs it."""

    def random_unvisited(self, n: int, exclude: set) -> list[Point]: ...

    def caught(self, point: Point, outcome: Outcome, error: str) -> None:
        """Record a compile-time failure (a trial that is not measured)."""


class CostModel:
    """A cost model: no model at all (random search) unless a subclass says otherwise.

    Args:
        ev: the evaluator of the space (features, builds).
        alpha: proposals per measurement beyond one (``width``).
        pretrain: rows from earlier records (:func:`looptune.costmodel.pretrain_rows`).
    """

    name = "random"
    compiles_first = False  # True: the search compiles a point before measuring it

    def __init__(
        self, ev: Evaluator, *, alpha: int = 3, pretrain: Sequence[PretrainRow] = ()
    ) -> None:
        self.ev, self.alpha = ev, alpha
        self.pretrain = [(v, h, Outcome.parse(o), float(g)) for v, h, o, g in pretrain]

    @property
    def ready(self) -> bool:
        """False: the search proposes random points (or :meth:`cold_start`'s)."""
        return False

    def width(self, n: int) -> int:
        """How many annealing proposals to make for ``n`` measurements."""
        return n

    def score(self, points: list[Point]) -> np.ndarray:
        """What simulated annealing maximizes (higher = predicted faster)."""
        return np.zeros(len(points))

    def select(self, ctx: SearchContext, cands: list[Point], n: int) -> list[Point]:
        """Cut the proposals (best first) down; the search measures the first ``n``."""
        del ctx, n
        return cands

    def cold_start(self, ctx: SearchContext, n: int) -> list[Point] | None:
        """The plan before the model is :attr:`ready` (None: ``n`` random points)."""
        del ctx, n
        return None

    def fit(self, trials: Sequence[TrialLike]) -> None:
        """Refit on every trial so far (and :attr:`pretrain`)."""
        del trials

    # helpers for subclasses
    def rows(self, trials: Sequence[TrialLike]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(visible features, gflops, valid)`` of ``trials`` followed by the pretrain rows."""
        vis = [self.ev.visible(t.point) for t in trials] + [r[0] for r in self.pretrain]
        outcomes = [t.outcome for t in trials] + [r[2] for r in self.pretrain]
        gflops = [t.gflops for t in trials] + [r[3] for r in self.pretrain]
        valid = np.array([o is Outcome.OK for o in outcomes])
        return np.stack(vis), np.array(gflops, dtype=np.float64), valid


COST_MODELS: dict[str, type[CostModel]] = {}


def register_cost_model(name: str) -> Callable[[type[CostModel]], type[CostModel]]:
    """Class decorator: make ``cls`` the cost model called ``name`` (a later one replaces it)."""

    def add(cls: type[CostModel]) -> type[CostModel]:
        if not (isinstance(cls, type) and issubclass(cls, CostModel)):
            raise TypeError(f"a cost model subclasses CostModel, got {cls!r}")
        cls.name = name
        COST_MODELS[name] = cls
        return cls

    return add


def get_cost_model(name: str) -> type[CostModel]:
    """The cost model registered as ``name``."""
    try:
        return COST_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown tuner {name!r}; choose from {', '.join(COST_MODELS)}"
        ) from None


register_cost_model("random")(CostModel)

__all__ = [
    "COST_MODELS",
    "CostModel",
    "PretrainRow",
    "SearchContext",
    "get_cost_model",
    "register_cost_model",
]
