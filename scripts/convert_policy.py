"""Convert a trusted SB3 ``.zip`` policy to looptune's pickle-free format (run once per file).

    python scripts/convert_policy.py python/looptune/data/policy_avx512.zip

Writes ``NAME.safetensors`` (tensors only) and rewrites ``NAME.json`` with the network
description; prints the largest difference of the action logits between the two on random
observations (must be 0). Loading the zip unpickles it: convert only files you made yourself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def convert(src: Path) -> Path:
    import numpy as np
    import torch

    from looptune.agent.policy import load_policy, save_policy

    old = load_policy(src, trust_pickle=True)
    meta = dict(old.meta)
    meta.setdefault("algo", old.algo)
    meta["converted_from"] = {
        "file": src.name,
        "how": "scripts/convert_policy.py: SB3 load (trusted), policy.state_dict() -> safetensors",
    }
    dst = save_policy(old.model, src.with_suffix(".safetensors"), meta)
    new = load_policy(dst)
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(
        rng.uniform(-1, 1, (64, *old.model.policy.observation_space.shape)), dtype=torch.float32
    )
    with torch.no_grad():
        a = old.model.policy.get_distribution(obs).distribution.logits
        b = new.model.policy.get_distribution(obs).distribution.logits
    print(json.dumps({"file": str(dst), "max_logit_diff": float((a - b).abs().max())}))
    return dst


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        convert(Path(arg))
