"""looptune: tune tensor programs for the CPU with reinforcement learning.

>>> import looptune
>>> comp = looptune.matmul(128, 256, 64)
>>> tree = comp.default_schedule().down().split(16)
>>> kernel = tree.compile()
>>> kernel.benchmark().gflops  # doctest: +SKIP
"""

from looptune._core import (
    Computation,
    Kernel,
    Loop,
    LoopTree,
    TimingResult,
    batch_matmul,
    conv2d,
    cpu_name,
    cpu_signature,
    host_isa,
    isa_supported,
    matmul,
    measure_peak_gflops,
    parse_computation,
    quantize_per_channel_s8,
    quantize_u8,
)
from looptune._core import (
    contraction as _contraction,
)
from looptune.errors import (
    BufferTooLargeError,
    CompileError,
    IllegalActionError,
    LoopTuneError,
    UnknownBenchmarkError,
)
from looptune.threads import (
    ThreadsWarning,
    get_num_threads,
    num_threads,
    set_num_threads,
)
from looptune.threads import init_from_env as _threads_from_env

__version__ = "0.1.0"


def contraction(
    spec: str, sizes: dict[str, int] | None = None, *, epilogue: str = "", **kw: int
) -> Computation:
    """A generic two-input contraction, e.g. ``contraction("mk,kn->mn", m=128, k=64, n=256)``;
    ``epilogue`` as for matmul (the bias runs along the output's last letter)."""
    return _contraction(spec, {**(sizes or {}), **kw}, epilogue)


from looptune._compat import install as _install_compat
from looptune.envs import register_envs
from looptune.interop import install as _install_interop

_install_compat()
_threads_from_env()
register_envs()
_install_interop()



def __getattr__(name: str):  # lazy: ``import looptune`` never imports torch
    if name == "compile":
        from looptune.model import compile as compile_model

        globals()["compile"] = compile_model
        return compile_model
    raise AttributeError(f"module 'looptune' has no attribute {name!r}")


__all__ = [
    "BufferTooLargeError",
    "CompileError",
    "Computation",
    "IllegalActionError",
    "Kernel",
    "Loop",
    "LoopTree",
    "LoopTuneError",
    "ThreadsWarning",
    "TimingResult",
    "UnknownBenchmarkError",
    "batch_matmul",
    "compile",
    "contraction",
    "conv2d",
    "cpu_name",
    "cpu_signature",
    "get_num_threads",
    "host_isa",
    "isa_supported",
    "matmul",
    "measure_peak_gflops",
    "num_threads",
    "parse_computation",
    "quantize_per_channel_s8",
    "quantize_u8",
    "set_num_threads",
]
