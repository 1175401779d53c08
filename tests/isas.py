"""The ISAs kernels are generated for, as pytest parameters: those this CPU cannot run are
reported as skipped, with the reason, rather than left out of the run."""

from __future__ import annotations

import pytest

import looptune

ALL = ("avx512", "avx2")  # every ISA the engine generates code for
RUNNABLE = [isa for isa in ALL if looptune.isa_supported(isa)]
ISA_PARAMS = [
    pytest.param(
        isa,
        marks=pytest.mark.skipif(
            not looptune.isa_supported(isa),
            reason=f"this CPU ({looptune.cpu_name()}) cannot run {isa} code",
        ),
    )
    for isa in ALL
]
