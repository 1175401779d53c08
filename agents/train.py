"""Train an SB3 agent: wraps ``looptune.agent.train`` (see there; also ``looptune train``).

    python agents/train.py --algo maskable_ppo --timesteps 200000 --save runs/mppo/policy
"""

from __future__ import annotations

from looptune.agent.train import (  # noqa: F401  (re-exported for scripts and tests)
    build_model,
    command_line,
    env_kwargs,
    main,
    make_env_fn,
    make_vec_env,
    parse_args,
)

if __name__ == "__main__":
    main()
