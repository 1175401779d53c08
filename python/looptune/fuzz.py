"""Seeded differential fuzzer of the engine against numpy, with guard pages and a watchdog.

    python -m looptune.fuzz --minutes 10 --seed 1 [--json out.json]

Each *case* is a computation (matmul, batch matmul, conv2d with strides 1-3, pads 0-3 and
groups (grouped and depthwise), or a random two-input contraction) with odd sizes and a random
epilogue (bias, residual add, relu/relu6/gelu; its operands guarded too), and ``--schedules``
random legal schedules of it (random walks over the rich action set). Every schedule is
compiled for each ISA the CPU runs (AVX-512 and AVX2), run on inputs and an output that end
exactly at a ``PROT_NONE`` guard page (an overrun faults instead of passing silently), and
compared with numpy in float64; its dump is parsed back and must give the same tree and hash.
Each conv2d kernel is also compiled with random buffer views (the input read in its kernel
layout from a wider zero-bordered buffer, the output written into the interior of one, NCHW or
blocked; ``view_mismatch``) and must give exactly its plain output and leave the border zero.
Every kernel is also compiled with random caller strides (``compile(strides=...)``: each of
a, b and out, at random, a view of a guarded buffer with its dims permuted and padded, the
attention shapes' transposed views among them) and must give exactly its plain output, leave
every byte of the buffer outside the output view untouched, and run on 2-8 threads
(``strided_mismatch``).
Half the schedules that have no parallel loop after the walk get one on a random legal loop;
every kernel is run again on a random 2-8 threads (more than the cores, often) and must give
exactly its 1-thread output.

A quarter of the cases are int8 (``dtype="int8"`` matmul, batch matmul, conv2d with groups and
depthwise, every layout; a third of them with the extreme values 255 x -128 / 127): uint8 and
int8 inputs, compiled for each ISA on each int8 path the CPU runs (the best, and the exact
path forced by ``LOOPTUNE_INT8_PATH=exact``); int32 outputs must equal numpy's int64 sums
exactly, dequantizing epilogues (``scale+...``) the float64 reference within float rounding,
requantizing ones (``...+requant``, uint8) quantize_u8 of the same schedule without requant
bit for bit (and the float64 reference within one step).

Every case also runs one row function (``_core.gelu`` / ``softmax`` / ``layer_norm`` /
``quantize_u8``, a random op on an odd shape in guarded memory, ``rowops_mismatch``) on each
ISA: against a float64 reference (``quantize_u8``: exactly its float32 rounding of x / scale
with its own parameters), and the same bits at 1 thread and 2-8.

Work runs in a worker subprocess that reports each case before and after it; the parent is the
watchdog: a worker that dies is a *crash*, one silent for ``--hang-seconds`` is a *hang*, and
the parent restarts a worker after the failing case. Everything is determined by the seed.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import mmap
import os
import queue
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

PAGE = mmap.PAGESIZE
PROT_NONE = 0


# ---------------------------------------------------------------- generation (deterministic)


def _odd(rng: random.Random, hi: int) -> int:
    return rng.choice([1, 2, 3, 5, 7, 9, 11, 13, 15, 16, 17, 19, 23, 24, 29, 31, 33, 37, 41])


# kernel layouts of matmul and conv2d: the default rule, plain, blocked by either ISA's width,
# and blocks of 1 (a transposed B)
LAYOUTS = ("auto", "plain", "blocked16", "blocked8", "blocked1")


# epilogues (half the cases have none)
EPILOGUES = ("", "", "", "bias", "bias+relu", "bias+add+relu", "add+relu6", "bias+gelu",
             "gelu", "add", "bias+add+gelu", "relu6")


# int8 epilogues (a third of the cases have none): the output is int32 without one, uint8
# with a last 'requant'
INT8_EPILOGUES = ("", "", "", "", "scale", "scale+bias", "scale+bias+relu", "scale+bias+add+relu6",
                  "scale+gelu", "scale+add", "scale+requant", "scale+bias+relu+requant",
                  "scale+bias+add+relu6+requant")

INT8_SHARE = 0.25  # of the cases


def random_int8_computation(rng: random.Random) -> Any:
    """An int8 matmul, batch matmul or conv2d (groups, depthwise) with odd sizes (k often not
    a multiple of 4) and a random epilogue; ValueError if the engine refuses it."""
    import looptune

    kind = rng.choice(("matmul", "matmul", "bmm", "conv2d", "conv2d"))
    layout = rng.choice(LAYOUTS)
    epi = rng.choice(INT8_EPILOGUES)
    if kind == "matmul":
        return looptune.matmul(_odd(rng, 41), rng.choice([1, 2, 3, 5, 6, 7, 13, 33, 64, 70]),
                               _odd(rng, 41), layout=layout, epilogue=epi, dtype="int8")
    if kind == "bmm":
        return looptune.batch_matmul(rng.randint(1, 3), _odd(rng, 24), _odd(rng, 24),
                                     _odd(rng, 24), epilogue=epi, dtype="int8")
    stride, pad = rng.randint(1, 3), rng.randint(0, 2)
    r, s = rng.randint(1, 3), rng.randint(1, 3)
    h, w = rng.randint(max(1, r - 2 * pad), 11), rng.randint(max(1, s - 2 * pad), 11)
    groups = rng.choice([1, 1, 2, 3, "depthwise"])
    if groups == "depthwise":
        c = rng.choice([1, 3, 8, 16, 19])
        groups, k = c, c
    else:
        c = groups * rng.randint(1, 9)
        k = groups * rng.choice([1, 3, 8, 13, 16])
        block = int(layout[7:] or 0) if layout.startswith("blocked") else 0
        if groups > 1 and block and (k // groups) % block:
            layout = "auto"
    return looptune.conv2d(rng.randint(1, 2), c, h, w, k, r, s, stride, pad, layout=layout,
                           groups=groups, epilogue=epi, dtype="int8")


def int8_paths(isa: str) -> list[str]:
    """LOOPTUNE_INT8_PATH values to compile an int8 kernel with on this CPU: the best path,
    and the exact one when the best is a VNNI one."""
    from looptune import _core

    best = _core.isa_facts(isa)["int8_path"]
    if best == "none":
        return []
    return ["auto", "exact"] if best != "exact" else ["auto"]


def random_computation(rng: random.Random) -> Any:
    """A computation of a random kind with odd sizes and a random epilogue (conv2d: random
    groups too, depthwise included); ValueError if the engine refuses it."""
    import looptune

    kind = rng.choice(("matmul", "matmul", "bmm", "conv2d", "conv2d", "einsum"))
    layout = rng.choice(LAYOUTS)
    epi = rng.choice(EPILOGUES)
    if kind == "matmul":
        return looptune.matmul(_odd(rng, 41), _odd(rng, 41), _odd(rng, 41), layout=layout,
                               epilogue=epi)
    if kind == "bmm":
        return looptune.batch_matmul(rng.randint(1, 4), _odd(rng, 24), _odd(rng, 24),
                                     _odd(rng, 24), epilogue=epi)
    if kind == "conv2d":
        stride, pad = rng.randint(1, 3), rng.randint(0, 3)
        r, s = rng.randint(1, 4), rng.randint(1, 4)
        h, w = rng.randint(max(1, r - 2 * pad), 13), rng.randint(max(1, s - 2 * pad), 13)
        groups = rng.choice([1, 1, 2, 3, 4, "depthwise"])
        if groups == "depthwise":
            c = rng.choice([1, 3, 8, 13, 16, 19, 24, 33])
            groups, k = c, c * rng.choice([1, 1, 1, 2])
        else:
            c = groups * rng.randint(1, 5)
            k = groups * rng.choice([1, 3, 5, 7, 8, 13, 16])
            block = int(layout[7:] or 0) if layout.startswith("blocked") else 0
            if groups > 1 and block and (k // groups) % block:
                layout = "auto"  # blocks of channels may not straddle groups
        return looptune.conv2d(
            rng.randint(1, 2), c, h, w, k, r, s, stride, pad, layout=layout, groups=groups,
            epilogue=epi,
        )
    return random_contraction(rng, epi)


def random_contraction(rng: random.Random, epilogue: str = "") -> Any:
    """A random two-input contraction: each index in the output and/or reduced over."""
    import looptune

    letters = rng.sample("abcdefghijkmnpqrstuvwxyz", rng.randint(2, 5))
    red = [x for x in letters if rng.random() < 0.4] or [letters[0]]
    free = [x for x in letters if x not in red] or [letters[-1]]
    red = [x for x in red if x not in free] or [rng.choice("lo")]
    a = [x for x in free if rng.random() < 0.6] + red
    b = [x for x in free if x not in a] + red
    b += [x for x in free if x in a and rng.random() < 0.2]  # batch-like indices
    rng.shuffle(a)
    rng.shuffle(b)
    out = list(free)
    rng.shuffle(out)
    spec = f"{''.join(a)},{''.join(b)}->{''.join(out)}"
    sizes = {x: rng.choice([1, 2, 3, 5, 7, 9, 13, 16, 17]) for x in set(a + b + out)}
    return looptune.contraction(spec, sizes, epilogue=epilogue)


def random_schedule(comp: Any, rng: random.Random) -> Any:
    from looptune.space.actions import RICH_ACTIONS

    tree = comp.default_schedule()
    for _ in range(rng.randint(0, 30)):
        nxt = tree.try_apply(rng.choice(RICH_ACTIONS))
        if nxt is not None:
            tree = nxt
    if tree.parallel_loop is None and rng.random() < 0.5:
        tree = mark_parallel(tree, rng)
    return tree


def checked_schedule(comp: Any, rng: random.Random, wrong: list) -> Any:
    """A :func:`random_schedule` of ``comp``; a dump/parse round trip that does not give it
    back (equal and with the same hash) is appended to ``wrong``."""
    from looptune import LoopTree

    tree = random_schedule(comp, rng)
    back = LoopTree.parse(tree.dump())
    if back != tree or back.hash() != tree.hash():
        wrong.append({"what": "dump/parse round trip", "tree": tree.dump()})
    return tree


def mark_parallel(tree: Any, rng: random.Random) -> Any:
    """``tree`` with a random loop that may be parallel marked so (``tree`` if none may)."""
    from looptune.space import at_cursor

    cursor = tree.cursor
    options = [p for p in range(tree.depth) if at_cursor(tree, p).is_legal("parallel")]
    if not options:
        return tree
    return at_cursor(at_cursor(tree, rng.choice(options)).toggle_parallel(), cursor)


def parallel_mismatch(kernel: Any, a: np.ndarray, b: np.ndarray, want: np.ndarray,
                      threads: int, **epilogue: np.ndarray) -> str:
    """"" when ``kernel`` on ``threads`` threads gives exactly ``want`` (its 1-thread result);
    ``epilogue``: its bias / residual."""
    from looptune import _core

    old = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        got = kernel(a, b, **epilogue)
    finally:
        _core.set_num_threads(old)
    if np.array_equal(got, want, equal_nan=True):
        return ""
    diff = int(np.count_nonzero(got != want))
    return f"{threads} threads differ from 1 thread in {diff} element(s)"


# ---------------------------------------------------------------- int8 reference


def int8_inputs(comp: Any, seed: int = 0, extreme: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 activations and int8 weights of an int8 computation's user shapes;
    ``extreme``: a = 255 everywhere and b = -128 / 127 at random (the largest sums)."""
    rng = np.random.default_rng(seed)
    ash, bsh = tuple(comp.inputs[0].shape), tuple(comp.inputs[1].shape)
    if extreme:
        return (np.full(ash, 255, np.uint8),
                rng.choice(np.array([-128, 127], np.int8), bsh).astype(np.int8))
    return (rng.integers(0, 256, ash, dtype=np.uint8),
            rng.integers(-128, 128, bsh, dtype=np.int8))


def int8_expected(comp: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The exact int32 accumulators of an int8 computation (numpy in int64)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    if comp.kind in ("matmul", "batch_matmul"):
        out = np.matmul(a64, b64)
    elif comp.kind == "conv2d":
        stride, pad, groups = comp.conv_stride, comp.conv_pad, comp.groups
        n, _, h, w = a.shape
        k, cg, r, s = b.shape
        ap = np.pad(a64, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        oh, ow = (h + 2 * pad - r) // stride + 1, (w + 2 * pad - s) // stride + 1
        out = np.zeros((n, k, oh, ow), np.int64)
        kg = k // groups
        for g in range(groups):
            for i in range(r):
                for j in range(s):
                    patch = ap[:, g * cg:(g + 1) * cg, i:i + stride * oh:stride,
                               j:j + stride * ow:stride]
                    out[:, g * kg:(g + 1) * kg] += np.einsum(
                        "nchw,kc->nkhw", patch, b64[g * kg:(g + 1) * kg, :, i, j])
    else:
        raise ValueError(f"no int8 reference for {comp.kind}")
    assert np.abs(out).max(initial=0) < 2**31
    return out.astype(np.int32)


def nchw_to_view(x: np.ndarray, halo: int, block: int = 0) -> np.ndarray:
    """``x`` (NCHW) inside a zero border of ``halo``, channel-blocked by ``block`` when > 0
    (``[N][ceil(C/L)][H+2h][W+2h][L]``, the tail block zero): a buffer view's layout."""
    n, c, h, w = x.shape
    if not block:
        buf = np.zeros((n, c, h + 2 * halo, w + 2 * halo), np.float32)
        buf[:, :, halo:halo + h, halo:halo + w] = x
        return buf
    cb = -(-c // block)
    full = np.zeros((n, cb * block, h, w), np.float32)
    full[:, :c] = x
    buf = np.zeros((n, cb, h + 2 * halo, w + 2 * halo, block), np.float32)
    buf[:, :, halo:halo + h, halo:halo + w, :] = full.reshape(n, cb, block, h, w).transpose(
        0, 1, 3, 4, 2)
    return buf


def view_to_nchw(buf: np.ndarray, shape: tuple[int, ...], halo: int) -> np.ndarray:
    """Inverse of :func:`nchw_to_view` (``shape``: the NCHW shape)."""
    n, c, h, w = shape
    inner = buf[:, :, halo:halo + h, halo:halo + w]
    if buf.ndim == 4:
        return inner
    return inner.transpose(0, 1, 4, 2, 3).reshape(n, -1, h, w)[:, :c]


def view_mismatch(tree: Any, isa: str, a: np.ndarray, b: np.ndarray, want: np.ndarray,
                  extra: dict, rng: random.Random, mem: GuardedArrays) -> str | None:
    """A conv2d schedule compiled with random buffer views (the input already in its kernel
    layout inside a wider zero border; the output, and a residual, in the interior of a
    bordered buffer, NCHW or blocked): "" when it gives exactly ``want`` (the kernel without
    views) and leaves the border zero, None when the schedule refuses the views
    (CompileError), else what differs. The view buffers end at guard pages."""
    from looptune.errors import CompileError

    comp = tree.computation
    pad, block = int(comp.conv_pad), int(comp.block)
    in_alloc = tuple(comp.inputs[0].alloc_shape)
    in_block = block if len(in_alloc) == 5 else 0
    p_halo, q = pad + rng.randint(0, 2), rng.randint(0, 2)
    k = comp.output.shape[1]
    out_block = block if block and k % block == 0 and rng.random() < 0.5 else 0
    xin = mem.array(nchw_to_view(a, p_halo, in_block).shape, nchw_to_view(a, p_halo, in_block))
    d = p_halo - pad
    in_off = (0, 0, d, d, 0) if in_block else (0, 0, d, d)
    obuf = nchw_to_view(np.zeros_like(want), q, out_block)
    gout = mem.array(obuf.shape, obuf)
    out_off = (0, 0, q, q, 0) if out_block else (0, 0, q, q)
    kw = dict(extra)
    if "residual" in kw:
        r = nchw_to_view(kw["residual"], q, out_block)
        kw["residual"] = mem.array(r.shape, r)
    try:
        kernel = tree.compile(isa, in_view=(xin.shape, in_off), out_view=(gout.shape, out_off))
    except CompileError:
        return None
    kernel(xin, b, gout, **kw)
    got = view_to_nchw(gout, want.shape, q)
    border = gout.copy()
    border[:, :, q:q + want.shape[2], q:q + want.shape[3]] = 0
    if not np.array_equal(got, want):
        return f"views differ from the plain kernel in {int(np.sum(got != want))} element(s)"
    if np.any(border != 0):
        return "a kernel with an out view wrote its border"
    return ""


def random_strides(shape: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
    """Element strides of a random layout of ``shape``: its dims in a random order (the
    attention views' transposes among them), each padded by 0-3 elements at random, the
    innermost sometimes at stride 2 (an interleaved buffer)."""
    order = list(range(len(shape)))
    rng.shuffle(order)
    strides = [0] * len(shape)
    step = rng.choice([1, 1, 1, 2])
    for d in reversed(order):
        strides[d] = step
        step *= shape[d] + rng.choice([0, 0, 1, 3])
    return tuple(strides)


def strided_array(mem: GuardedArrays, shape: tuple[int, ...], strides: tuple[int, ...],
                  dtype: Any, fill: Any) -> tuple[np.ndarray, np.ndarray]:
    """(view, base): a view of ``shape`` at element ``strides`` into a guarded 1-D buffer that
    ends with its last element (the buffer filled with ``fill``)."""
    span = 1 + sum((n - 1) * st for n, st in zip(shape, strides)) if all(shape) else 1
    base = mem.array((span,), dtype=dtype)
    base[...] = fill
    item = np.dtype(dtype).itemsize
    view = np.lib.stride_tricks.as_strided(base, shape, tuple(st * item for st in strides))
    return view, base


def strided_mismatch(tree: Any, isa: str, a: np.ndarray, b: np.ndarray, want: np.ndarray,
                     extra: dict, rng: random.Random, mem: GuardedArrays) -> str:
    """``tree`` compiled with random caller strides for a random subset of a, b and out (a
    residual takes out's): "" when it gives exactly ``want`` (the plain kernel's output) at 1
    and 2-8 threads and writes nothing outside the output view, else what differs."""
    which = [t for t in ("in0", "in1", "out") if rng.random() < 0.6] or ["in1"]
    arrays = {"in0": a, "in1": b, "out": want}
    strides = {t: random_strides(arrays[t].shape, rng) for t in which}
    args = {}
    for t in ("in0", "in1"):
        x = arrays[t]
        args[t] = strided_array(mem, x.shape, strides[t], x.dtype, 0)[0] if t in strides else x
        args[t][...] = x
    sentinel = 0x5A if want.dtype == np.int32 else np.nan
    if "out" in strides:
        out, base = strided_array(mem, want.shape, strides["out"], want.dtype, sentinel)
    else:
        out, base = np.empty_like(want), None
    kw = dict(extra)
    if "residual" in kw and "out" in strides:
        kw["residual"] = strided_array(mem, want.shape, strides["out"], np.float32, 0)[0]
        kw["residual"][...] = extra["residual"]
    kernel = tree.compile(isa, strides=strides)
    for threads in (1, rng.randint(2, 8)):
        from looptune import _core

        old = _core.get_num_threads()
        _core.set_num_threads(threads)
        try:
            got = kernel(args["in0"], args["in1"], out, **kw)
        finally:
            _core.set_num_threads(old)
        if got is not out:
            return "a strided call did not return its out"
        if not np.array_equal(got, want, equal_nan=True):
            diff = int(np.count_nonzero(got != want))
            return (f"strides {strides} ({kernel.facts['access']}), {threads} threads: "
                    f"{diff} element(s) differ from the plain kernel")
        if base is not None:
            touched = np.zeros(base.shape, bool)
            np.lib.stride_tricks.as_strided(touched, want.shape, tuple(
                st * touched.itemsize for st in strides["out"]))[...] = True
            outside = base[~touched]
            clean = (np.all(outside == sentinel) if want.dtype == np.int32
                     else np.all(np.isnan(outside)))
            if not clean:
                return f"strides {strides}: the kernel wrote outside its output view"
    return ""


# ---------------------------------------------------------------- guarded buffers


class GuardedArrays:
    """float32 arrays whose last byte is followed by a PROT_NONE page (freed on close)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._mmap = libc.mmap
        self._mmap.restype = ctypes.c_void_p
        self._mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        self._mprotect = libc.mprotect
        self._mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._munmap = libc.munmap
        self._munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._maps: list[tuple[int, int]] = []

    def array(self, shape: tuple[int, ...], fill: np.ndarray | None = None,
              dtype: Any = np.float32) -> np.ndarray:
        n = int(np.prod(shape, dtype=np.int64))
        dtype = np.dtype(dtype)
        nbytes = dtype.itemsize * n
        data_pages = max(1, -(-nbytes // PAGE))
        size = (data_pages + 1) * PAGE
        addr = self._mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise MemoryError("mmap failed")
        self._maps.append((addr, size))
        guard = addr + data_pages * PAGE
        if self._mprotect(guard, PAGE, PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
        start = guard - nbytes
        buf = (ctypes.c_uint8 * max(nbytes, 1)).from_address(start if n else guard - 1)
        arr = np.ctypeslib.as_array(buf)[:nbytes].view(dtype).reshape(shape)
        if fill is not None:
            arr[...] = fill
        return arr

    def close(self) -> None:
        for addr, size in self._maps:
            self._munmap(addr, size)
        self._maps.clear()


# ---------------------------------------------------------------- the worker


ROW_OPS = ("gelu", "softmax", "layer_norm", "quantize_u8")


def _row_reference(op: str, x: np.ndarray, scale: float, w: np.ndarray | None,
                   b: np.ndarray | None, eps: float) -> np.ndarray:
    """The float64 value of a row function (``_core.gelu`` / ``softmax`` / ``layer_norm``)."""
    v = x.astype(np.float64)
    if op == "gelu":
        erf = np.frompyfunc(math.erf, 1, 1)
        return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)).astype(np.float64))
    if op == "softmax":
        e = np.exp(v * scale - np.max(v * scale, axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    mean = v.mean(axis=-1, keepdims=True)
    y = (v - mean) / np.sqrt(((v - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    return y * (1.0 if w is None else w) + (0.0 if b is None else b)


def rowops_mismatch(rng: random.Random, mem: GuardedArrays) -> tuple[str, str]:
    """One row function (a random op, odd shape, scale, affine or not) in guarded memory on
    every ISA: against a float64 reference (``quantize_u8``: exactly its float32 rounding of
    x / scale with its own parameters), and the same bits at 1 thread and 2-8. Returns (what
    ran, "" or why not)."""
    from looptune import _core

    op = rng.choice(ROW_OPS)
    shape = tuple(_odd(rng, 40) for _ in range(rng.randint(1, 3)))
    shape = shape[:-1] + (rng.choice((1, 3, 15, 16, 17, 33, 64, 127, 768)),)
    nprng = np.random.default_rng(rng.getrandbits(32))
    x = mem.array(shape, (nprng.standard_normal(shape) * rng.choice((0.1, 1.0, 4.0)) +
                          rng.choice((0.0, 0.0, 3.0))).astype(np.float32))
    scale, eps = rng.choice((1.0, 0.125, 2.5)), rng.choice((1e-5, 1e-3))
    d = shape[-1]
    w = mem.array((d,), nprng.standard_normal(d).astype(np.float32)) if rng.random() < .7 \
        else None
    b = mem.array((d,), nprng.standard_normal(d).astype(np.float32)) if w is not None \
        else None
    what = f"{op} {shape}"
    for isa in isas():
        runs = []
        for threads in (1, rng.randint(2, 8)):
            _core.set_num_threads(threads)
            try:
                if op == "quantize_u8":
                    runs.append(_core.quantize_u8(x, isa=isa))
                    continue
                out = mem.array(shape)
                if op == "gelu":
                    _core.gelu(x, out=out, isa=isa)
                elif op == "softmax":
                    _core.softmax(x, scale, out=out, isa=isa)
                else:
                    _core.layer_norm(x, w, b, eps, out=out, isa=isa)
                runs.append((out.copy(),))
            finally:
                _core.set_num_threads(1)
        if op == "quantize_u8":
            (q1, s1, z1), (q2, s2, z2) = runs
            if not (np.array_equal(q1, q2) and (s1, z1) == (s2, z2)):
                return what, f"{isa}: quantize_u8 differs between thread counts"
            # the engine's arithmetic in float32: round half to even of x * (1 / scale)
            inv = np.float32(1.0) / np.float32(s1)
            want = np.clip(np.rint(x * inv) + np.float32(z1), 0, 255).astype(np.uint8)
            if not np.array_equal(q1, want):
                n = int(np.count_nonzero(q1 != want))
                return what, f"{isa}: quantize_u8 differs from round(x / scale) in {n} values"
            continue
        got, again = runs[0][0], runs[1][0]
        if not np.array_equal(got, again):
            return what, f"{isa}: {op} differs between thread counts"
        want = _row_reference(op, x, scale, w, b, eps)
        tol = {"gelu": 2e-6, "softmax": 2e-6, "layer_norm": 2e-5}[op] * (1 + np.abs(want))
        err = np.abs(got - want)
        if not (np.all(np.isfinite(got)) and np.all(err <= tol)):
            return what, f"{isa}: {op} off by {float(np.max(err)):.3g}"
    return what, ""


def isas() -> list[str]:
    from looptune import _core

    return _core.supported_isas()


def _rows_checked(rng: random.Random) -> dict:
    """:func:`rowops_mismatch` once, as fields of a case's result (``row_wrong`` a list)."""
    mem = GuardedArrays()
    try:
        what, bad = rowops_mismatch(rng, mem)
    except Exception as exc:  # noqa: BLE001 (a row function must not raise on legal input)
        what, bad = "row op", f"{type(exc).__name__}: {exc}"
    finally:
        mem.close()
    return {"rowops": 1, "row_wrong": [{"row_op": what, "error": bad}] if bad else []}


def run_case(seed: int, index: int, schedules: int) -> dict:
    """Fuzz case ``index`` of ``seed``: returns counts and the first failures."""
    from looptune.measure.reference import (
        epilogue_inputs,
        expected,
        random_inputs,
        reduction_length,
    )

    rng = random.Random(seed * 1_000_003 + index)
    srng = random.Random(f"strided/{seed}/{index}")  # (the main stream stays as it was)
    rows = _rows_checked(random.Random(f"rows/{seed}/{index}"))
    if rng.random() < INT8_SHARE:
        return {**run_int8_case(rng, index, schedules, srng), **rows}
    try:
        comp = random_computation(rng)
    except ValueError:
        return {"schedules": 0, "kernels": 0, "wrong": [], "exceptions": [], "refused": 1,
                **rows}
    a, b = random_inputs(comp, seed=index)
    extra = epilogue_inputs(comp, seed=index)
    want = expected(comp, a, b, **extra)
    tol = 1e-5 + 2e-6 * reduction_length(comp)
    mem = GuardedArrays()
    out: dict[str, Any] = {
        "schedules": 0, "kernels": 0, "wrong": [], "exceptions": [], "refused": 0, **rows
    }
    try:
        ga, gb = mem.array(a.shape, a), mem.array(b.shape, b)
        go = mem.array(tuple(comp.output.shape))
        gextra = {name: mem.array(x.shape, x) for name, x in extra.items()}
        for _ in range(schedules):
            tree = checked_schedule(comp, rng, out["wrong"])
            for isa in isas():
                go[...] = np.nan
                threads = rng.randint(2, 8)
                try:
                    kernel = tree.compile(isa)
                    got = kernel(ga, gb, go, **gextra)
                    same = parallel_mismatch(kernel, ga, gb, got.copy(), threads, **gextra)
                except Exception as exc:  # a legal schedule must compile and run
                    out["exceptions"].append(
                        {"isa": isa, "error": f"{type(exc).__name__}: {exc}", "tree": tree.dump()}
                    )
                    continue
                err = float(np.max(np.abs(got - want))) if got.size else 0.0
                if not (np.all(np.isfinite(got)) and err <= tol):
                    out["wrong"].append({"isa": isa, "error": err, "tree": tree.dump()})
                if same:
                    out["wrong"].append({"isa": isa, "error": same, "tree": tree.dump()})
                try:
                    bad = strided_mismatch(tree, isa, ga, gb, got.copy(), gextra, srng, mem)
                except Exception as exc:  # noqa: BLE001 (any failure is reported)
                    bad = f"strides: {type(exc).__name__}: {exc}"
                if bad:
                    out["wrong"].append({"isa": isa, "error": bad, "tree": tree.dump()})
                else:
                    out["strided"] = out.get("strided", 0) + 1
                if comp.kind == "conv2d":
                    try:
                        bad = view_mismatch(tree, isa, ga, gb, got.copy(), gextra, rng, mem)
                    except Exception as exc:
                        bad = f"views: {type(exc).__name__}: {exc}"
                    if bad is None:
                        out["views_refused"] = out.get("views_refused", 0) + 1
                    elif bad:
                        out["wrong"].append({"isa": isa, "error": bad, "tree": tree.dump()})
                    else:
                        out["views"] = out.get("views", 0) + 1
                out["kernels"] += 1
            out["schedules"] += 1
    finally:
        mem.close()
    return out


def _without_requant(tree: Any) -> Any:
    """The same schedule of its computation without the last 'requant' epilogue term."""
    from looptune import LoopTree

    head, rest = tree.dump().split("\n", 1)
    return LoopTree.parse(head.removesuffix("+requant") + "\n" + rest)


def run_int8_case(rng: random.Random, index: int, schedules: int,
                  srng: random.Random | None = None) -> dict:
    """An int8 case of run_case: exact int32 results (or the epilogue's within rounding) on
    every ISA and int8 path, guard pages and thread counts as for float32."""
    from looptune import quantize_u8
    from looptune.measure.reference import apply_epilogue, epilogue_inputs

    out: dict[str, Any] = {
        "schedules": 0, "kernels": 0, "wrong": [], "exceptions": [], "refused": 0
    }
    try:
        comp = random_int8_computation(rng)
    except ValueError:
        out["refused"] = 1
        return out
    a, b = int8_inputs(comp, seed=index, extreme=rng.random() < 1 / 3)
    acc = int8_expected(comp, a, b)
    extra: dict[str, np.ndarray] = {}
    want: np.ndarray = acc
    tol = 0.0
    requant = comp.epilogue.endswith("+requant")
    rq: dict[str, Any] = {}  # the requant term's out_scale / out_zero_point
    if comp.epilogue:  # float32 = act(float(acc) * scale + bias + residual)
        scale = np.random.default_rng(index).uniform(1e-5, 1e-3, comp.bias_shape)
        extra = {"scale": scale.astype(np.float32),
                 **{k: v for k, v in epilogue_inputs(comp, seed=index).items()
                    if k not in ("out_scale", "out_zero_point")}}  # (rq below)
        shape = [1] * acc.ndim
        shape[1 if comp.kind == "conv2d" else -1] = comp.bias_shape[0]
        deq = acc.astype(np.float64) * extra["scale"].astype(np.float64).reshape(shape)
        want = apply_epilogue(comp, deq, bias=extra.get("bias"), residual=extra.get("residual"))
        tol = 1e-5 * (1.0 + float(np.max(np.abs(deq), initial=0.0)))
        if requant:  # a scale that keeps most values inside 0..255 (some saturate)
            top = float(np.max(np.abs(want), initial=0.0)) or 1.0
            rq = {"out_scale": top / rng.choice((40.0, 127.0, 300.0)),
                  "out_zero_point": rng.choice((0, 1, 77, 128, 254, 255))}
    mem = GuardedArrays()
    try:
        ga, gb = mem.array(a.shape, a, np.uint8), mem.array(b.shape, b, np.int8)
        out_dtype = np.uint8 if requant else np.float32 if comp.epilogue else np.int32
        go = mem.array(tuple(comp.output.shape), dtype=out_dtype)
        gextra = {name: mem.array(x.shape, x) for name, x in extra.items()}
        saved = os.environ.pop("LOOPTUNE_INT8_PATH", None)
        paths = {isa: int8_paths(isa) for isa in isas()}  # (with the variable unset)
        try:
            for _ in range(schedules):
                tree = checked_schedule(comp, rng, out["wrong"])
                for isa in isas():
                    for path in paths[isa]:
                        os.environ["LOOPTUNE_INT8_PATH"] = path
                        go[...] = np.nan if out_dtype == np.float32 else 0x5A
                        threads = rng.randint(2, 8)
                        try:
                            kernel = tree.compile(isa)
                            got = kernel(ga, gb, go, **gextra, **rq)
                            same = parallel_mismatch(kernel, ga, gb, got.copy(), threads,
                                                     **gextra, **rq)
                            if requant:  # quantize_u8 of the same schedule's float32 result
                                y = _without_requant(tree).compile(isa)(ga, gb, **gextra)
                                y_q = quantize_u8(y, rq["out_scale"], rq["out_zero_point"])[0]
                        except Exception as exc:  # a legal schedule must compile and run
                            out["exceptions"].append({
                                "isa": isa, "int8_path": path,
                                "error": f"{type(exc).__name__}: {exc}", "tree": tree.dump()})
                            continue
                        if requant:  # bit-exact, and within one step of the float64 reference
                            ref = np.clip(np.rint(want / np.float32(rq["out_scale"]))
                                          + rq["out_zero_point"], 0, 255)
                            err = float(np.count_nonzero(got != y_q))
                            bad = err > 0 or float(np.max(np.abs(got - ref), initial=0.0)) > 1
                        elif comp.epilogue:
                            err = float(np.max(np.abs(got - want), initial=0.0))
                            bad = not (np.all(np.isfinite(got)) and err <= tol)
                        else:
                            err = float(np.count_nonzero(got != want))
                            bad = err > 0
                        if bad:
                            out["wrong"].append({"isa": isa, "int8_path": path, "error": err,
                                                 "tree": tree.dump()})
                        if same:
                            out["wrong"].append({"isa": isa, "int8_path": path, "error": same,
                                                 "tree": tree.dump()})
                        if srng is not None and not requant:  # (requant kernels: dense only)
                            try:
                                bad = strided_mismatch(tree, isa, ga, gb, got.copy(), gextra,
                                                       srng, mem)
                            except Exception as exc:  # noqa: BLE001 (reported)
                                bad = f"strides: {type(exc).__name__}: {exc}"
                            if bad:
                                out["wrong"].append({"isa": isa, "int8_path": path,
                                                     "error": bad, "tree": tree.dump()})
                            else:
                                out["strided"] = out.get("strided", 0) + 1
                        out["kernels"] += 1
                out["schedules"] += 1
        finally:
            if saved is None:
                os.environ.pop("LOOPTUNE_INT8_PATH", None)
            else:
                os.environ["LOOPTUNE_INT8_PATH"] = saved
    finally:
        mem.close()
    return out


def worker(seed: int, first: int, schedules: int) -> None:
    """Run cases first, first+1, ... forever, one JSON line before ("begin") and after each."""
    index = first
    inject = os.environ.get("LOOPTUNE_FUZZ_INJECT", "")  # "crash:N" / "hang:N": tests the watchdog
    kind, _, at = inject.partition(":")
    while True:
        print(json.dumps({"begin": index}), flush=True)
        if kind and at == str(index):
            if kind == "crash":
                os.abort()
            time.sleep(3600)
        res = run_case(seed, index, schedules)
        print(json.dumps({"done": index, **res}), flush=True)
        index += 1


# ---------------------------------------------------------------- the watchdog


@dataclass
class Report:
    seed: int
    minutes_budget: float
    schedules_per_case: int
    isas: list[str]
    cases: int = 0
    schedules: int = 0
    kernels: int = 0
    views: int = 0  # conv2d kernels also checked with buffer views (view_mismatch)
    strided: int = 0  # kernels also checked with random caller strides (strided_mismatch)
    rowops: int = 0  # row functions checked (rowops_mismatch: one a case)
    refused_computations: int = 0
    wrong: int = 0
    exceptions: int = 0
    crashes: int = 0
    hangs: int = 0
    seconds: float = 0.0
    schedules_per_minute: float = 0.0
    failures: list[dict] = field(default_factory=list)


def _reader(stream: Any, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def fuzz(minutes: float, seed: int, schedules: int = 20, hang_seconds: float = 60.0,
         max_schedules: int | None = None, progress: bool = False) -> Report:
    """Fuzz for ``minutes`` (or until ``max_schedules``); returns the report."""
    report = Report(seed, minutes, schedules, isas())
    t0 = time.monotonic()
    deadline = t0 + 60.0 * minutes
    index = 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    def more() -> bool:
        return max_schedules is None or report.schedules < max_schedules

    while time.monotonic() < deadline and more():
        cmd = [sys.executable, "-m", "looptune.fuzz", "--worker", "--seed", str(seed),
               "--first", str(index), "--schedules", str(schedules)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        q: queue.Queue = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, q), daemon=True).start()
        current, last = index, time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline or not more():
                proc.kill()
                proc.wait()
                break
            try:
                line = q.get(timeout=max(0.05, min(hang_seconds - (now - last), deadline - now)))
            except queue.Empty:
                if time.monotonic() - last < hang_seconds:
                    continue  # the deadline, not the watchdog: stop at the top of the loop
                proc.kill()
                proc.wait()
                report.hangs += 1
                report.failures.append({"kind": "hang", "case": current})
                index = current + 1
                break
            last = time.monotonic()
            if line is None:  # the worker died
                code = proc.wait()
                report.crashes += 1
                report.failures.append({"kind": "crash", "case": current, "returncode": code})
                index = current + 1
                break
            msg = json.loads(line)
            if "begin" in msg:
                current = msg["begin"]
                continue
            report.cases += 1
            report.schedules += msg["schedules"]
            report.kernels += msg["kernels"]
            report.views += msg.get("views", 0)
            report.strided += msg.get("strided", 0)
            report.rowops += msg.get("rowops", 0)
            report.refused_computations += msg["refused"]
            msg["wrong"] = msg["wrong"] + msg.get("row_wrong", [])
            report.wrong += len(msg["wrong"])
            report.exceptions += len(msg["exceptions"])
            report.failures += [{"kind": "wrong", "case": msg["done"], **w} for w in msg["wrong"]]
            report.failures += [
                {"kind": "exception", "case": msg["done"], **w} for w in msg["exceptions"]
            ]
            index = msg["done"] + 1
            if progress and report.cases % 200 == 0:
                print(f"[fuzz] {report.schedules} schedules, {report.wrong} wrong, "
                      f"{report.crashes} crashes, {report.hangs} hangs", file=sys.stderr)
    report.seconds = round(time.monotonic() - t0, 1)
    report.schedules_per_minute = round(report.schedules / max(report.seconds, 1e-9) * 60, 1)
    report.failures = report.failures[:50]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedules", type=int, default=20, help="random schedules per computation")
    p.add_argument("--hang-seconds", type=float, default=60.0, help="watchdog timeout per case")
    p.add_argument("--max-schedules", type=int, default=None)
    p.add_argument("--json", default=None, help="write the report here (atomically)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not (args.minutes > 0 and args.schedules >= 1 and args.hang_seconds > 0):
        p.error("--minutes and --hang-seconds must be > 0 and --schedules >= 1")
    if args.worker:
        worker(args.seed, args.first, args.schedules)
        return 0
    report = fuzz(args.minutes, args.seed, args.schedules, args.hang_seconds,
                  args.max_schedules, progress=True)
    text = json.dumps(asdict(report), indent=1)
    if args.json:
        from looptune.util.fileio import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    clean = report.wrong == report.exceptions == report.crashes == report.hangs == 0
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
