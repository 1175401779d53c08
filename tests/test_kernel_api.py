"""Kernel API from Python: argument validation, output allocation, results against numpy."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

import looptune


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _tol(k):
    return 1e-5 * max(8, k) ** 0.5 * 8


@pytest.fixture(scope="module")
def kernel():
    return looptune.matmul(17, 9, 33).default_schedule().compile()


@pytest.mark.parametrize(
    "m, k, n", [(1, 1, 1), (3, 17, 5), (17, 67, 33), (64, 64, 64), (67, 131, 3)]
)
def test_matches_numpy(m, k, n):
    a, b = _rand((m, k), 1), _rand((k, n), 2)
    tree = looptune.matmul(m, k, n).default_schedule()
    c = tree.compile()(a, b)
    assert c.shape == (m, n) and c.dtype == np.float32
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=_tol(k))


def test_random_schedules_match_numpy(computations, random_walk):
    rng = random.Random(3)
    for comp in computations:
        a = _rand(comp.inputs[0].shape, 4)
        b = _rand(comp.inputs[1].shape, 5)
        ref = _conv_ref(comp, a, b) if comp.kind == "conv2d" else np.einsum(comp.spec, a, b)
        red = int(np.prod([v.extent for v in comp.vars if v.reduction]))
        for _ in range(4):
            tree = random_walk(comp.default_schedule(), rng, rng.randrange(25))
            out = tree.compile()(a, b)
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=_tol(red), err_msg=tree.dump())


def _conv_ref(comp, x, w):
    pad, stride = comp.conv_pad, comp.conv_stride
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, k, oh, ow = comp.output.shape
    r, s = w.shape[2:]
    out = np.zeros((n, k, oh, ow), np.float32)
    for i in range(r):
        for j in range(s):
            patch = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            out += np.einsum("nchw,kc->nkhw", patch, w[:, :, i, j])
    return out


def test_out_is_overwritten_and_returned(kernel):
    a, b = _rand((17, 9)), _rand((9, 33))
    out = np.full((17, 33), 7.0, np.float32)
    res = kernel(a, b, out=out)
    assert res is out
    np.testing.assert_allclose(out, a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(kernel(a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_host_isa_override():
    code = "import looptune; print(looptune.host_isa())"

    def run(isa: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "LOOPTUNE_ISA": isa}
        return subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
        )

    assert run("avx2").stdout.strip() == "avx2"
    bad = run("sse2")
    assert bad.returncode != 0 and "CompileError" in bad.stderr and "LOOPTUNE_ISA" in bad.stderr


def test_dtype_errors(kernel):
    a, b = _rand((17, 9)), _rand((9, 33))
    with pytest.raises(TypeError, match="float64"):
        kernel(a.astype(np.float64), b)
    with pytest.raises(TypeError, match="int32"):
        kernel(a, b.astype(np.int32))
    with pytest.raises(TypeError, match="numpy float32 array"):
        kernel(a.tolist(), b)
    with pytest.raises(TypeError, match="float16"):
        kernel(a, b, out=np.zeros((17, 33), np.float16))


def test_shape_errors(kernel):
    a, b = _rand((17, 9)), _rand((9, 33))
    with pytest.raises(ValueError, match=r"shape \(9, 17\), expected \(17, 9\)"):
        kernel(a.T.copy(), b)
    with pytest.raises(ValueError, match="expected"):
        kernel(a, b[:, :32].copy())
    with pytest.raises(ValueError, match="expected"):
        kernel(a, b, out=np.zeros((17, 32), np.float32))
    with pytest.raises(ValueError, match="expected"):
        kernel(a.ravel(), b)


def test_contiguity_and_overlap_errors(kernel):
    a, b = _rand((17, 9)), _rand((9, 33))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel(np.asfortranarray(a), b)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernel(_rand((17, 18))[:, ::2], b)
    ro = np.zeros((17, 33), np.float32)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        kernel(a, b, out=ro)
    sq = looptune.matmul(8, 8, 8).default_schedule().compile()
    x = _rand((8, 8))
    with pytest.raises(ValueError, match="overlap"):
        sq(x, _rand((8, 8)), out=x)


def test_unaligned_inputs_are_fine():
    buf = _rand(64 * 64 + 1)
    a = buf[1:].reshape(64, 64)  # 4-byte offset from the allocation
    assert a.ctypes.data % 64 != 0
    b = _rand((64, 64), 9)
    k = looptune.matmul(64, 64, 64).default_schedule().down().down().split(16).compile()
    np.testing.assert_allclose(k(a, b), a @ b, rtol=1e-4, atol=_tol(64))


def test_kernel_properties_and_benchmark(kernel):
    assert kernel.isa in ("avx512", "avx2") and kernel.isa == looptune.host_isa()
    assert kernel.tree == looptune.matmul(17, 9, 33).default_schedule()
    facts = kernel.facts
    for key in (
        "lanes",
        "vectorized",
        "code_bytes",
        "fma",
        "loads",
        "stores",
        "branches",
        "spills",
        "compile_seconds",
        "tile_rows",
        "tile_vectors",
    ):
        assert key in facts
    assert facts["code_bytes"] > 0 and facts["fma"] > 0
    assert isinstance(kernel.assembly, str) and kernel.assembly
    r = kernel.benchmark(min_time=0.0, min_runs=3, max_runs=5)
    assert r.runs >= 3 and r.gflops > 0 and r.min_seconds <= r.median_seconds
    for bad in (
        {"min_time": -1.0},
        {"min_runs": 0},
        {"min_runs": 5, "max_runs": 4},
        {"min_time": float("nan")},
    ):
        with pytest.raises(ValueError):
            kernel.benchmark(**bad)


def test_isa_arguments():
    tree = looptune.matmul(8, 8, 8).default_schedule()
    with pytest.raises(ValueError, match="unknown ISA"):
        tree.compile("sse4")
    with pytest.raises(ValueError):
        looptune.isa_supported("neon")
    assert looptune.isa_supported("avx2")
    k2 = tree.compile("avx2")
    assert k2.isa == "avx2" and k2.facts["isa"] == "avx2"
    assert isinstance(looptune.cpu_name(), str) and looptune.cpu_name()
    assert looptune.measure_peak_gflops(min_time=0.01) > 1.0


def test_stub_matches_the_compiled_module():
    import ast
    from pathlib import Path

    from looptune import _core

    stub = ast.parse((Path(looptune.__file__).parent / "_core.pyi").read_text())
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            declared = {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
            declared |= {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
            runtime = getattr(_core, node.name)
            assert all(hasattr(runtime, n) for n in declared), node.name
            public = {n for n in dir(runtime) if not n.startswith("_")}
            assert public <= declared, (node.name, public - declared)
        elif isinstance(node, ast.FunctionDef):
            assert hasattr(_core, node.name)
        elif isinstance(node, ast.AnnAssign):
            assert hasattr(_core, node.target.id)
