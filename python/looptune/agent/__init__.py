"""The trained agents: the paper's step-by-step policy and the tiling agent.

* :mod:`~looptune.agent.policy` loads the shipped (or your own) policy and picks the one for the
  host ISA (``resolve_policy``: the one loader the CLI, the search registry and the agent search
  use); :mod:`~looptune.agent.policy_io` is its safe file format (safetensors + JSON);
  :mod:`~looptune.agent.inference` runs the loaded networks in numpy (tuning needs no torch).
* :mod:`~looptune.agent.tiler`, :mod:`~looptune.agent.tiler_policy` and
  :mod:`~looptune.agent.tile_features`: the tiling agent (tile macros, their scorer, its features).
* :mod:`~looptune.agent.train` and :mod:`~looptune.agent.train_callbacks`: SB3 training
  (``looptune train``, ``python -m looptune.agent.train``).

Importing this package imports nothing heavy; torch is imported only for training (and for
``backend="torch"`` loads).
"""
