"""Exception hierarchy. The compiled engine raises these types (see cpp/bindings/module.cpp)."""


class LoopTuneError(Exception):
    """Base class of every error looptune raises on purpose."""


class IllegalActionError(LoopTuneError, ValueError):
    """A schedule mutation that is not legal in the current loop tree."""


class CompileError(LoopTuneError, RuntimeError):
    """The JIT could not generate code for a loop tree."""


class UnknownBenchmarkError(LoopTuneError, KeyError):
    """A dataset or benchmark name that does not exist."""


class BufferTooLargeError(LoopTuneError, MemoryError, ValueError):
    """A computation's buffers exceed the memory cap (checked before anything is allocated)."""
