"""The entry point of the ``"looptune"`` torch.compile backend (``pyproject.toml``, group
``torch_dynamo_backends``): dynamo loads this module by name. It imports nothing heavy itself;
the backend (:mod:`looptune.model.backend`) is imported on the first compile."""

from __future__ import annotations

from typing import Any


def looptune_backend(gm: Any, example_inputs: list, **options: Any) -> Any:
    """``torch.compile(model, backend="looptune")``: see :mod:`looptune.model.backend`."""
    from looptune.model.backend import looptune_backend as backend

    return backend(gm, example_inputs, **options)
