"""Layout propagation: buffer views of the engine (a kernel reading its input in its kernel
layout from a bordered buffer, writing its output into the interior of one) and their use
between the layers of a compiled model (looptune.model.layout)."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import looptune  # noqa: E402
import looptune.model  # noqa: E402
from looptune import CompileError  # noqa: E402
from looptune.fuzz import nchw_to_view, view_to_nchw  # noqa: E402
from looptune.model import zoo  # noqa: E402
from looptune.model.layout import Layout  # noqa: E402
from looptune.model.pool import MaxPoolOp  # noqa: E402
from looptune.model.runtime import LoopOp  # noqa: E402

EPS = 2.0**-23

# (n, c, h, w, k, r, s, stride, pad, groups, epilogue, input border, output border, blocked out)
CASES = [
    (2, 16, 9, 7, 32, 3, 3, 1, 1, 1, "bias+relu", 1, 1, False),
    (2, 16, 9, 7, 32, 3, 3, 1, 1, 1, "bias+relu", 2, 0, True),
    (1, 32, 10, 10, 32, 3, 3, 2, 1, 32, "bias+relu6", 2, 1, False),
    (1, 48, 11, 9, 48, 3, 3, 1, 1, 48, "bias+relu6", 1, 2, True),
    (3, 24, 7, 7, 24, 5, 5, 1, 2, 24, "", 2, 1, True),
    (1, 8, 6, 6, 16, 1, 1, 1, 0, 1, "", 1, 2, False),
    (1, 8, 8, 8, 32, 1, 1, 2, 0, 1, "bias", 1, 1, True),
    (2, 24, 8, 8, 48, 3, 3, 1, 1, 1, "bias+add+relu", 1, 1, False),
    (2, 12, 8, 8, 12, 3, 3, 1, 1, 1, "add+relu", 1, 1, False),  # plain layout (k < lanes)
    (1, 32, 9, 9, 64, 3, 3, 2, 1, 2, "bias", 1, 1, False),  # grouped, blocked
]


def _run_case(case, threads: int):
    n, c, h, w, k, r, s, st, p, g, epi, P, Q, blocked = case
    kw = {"groups": g} if g != 1 else {}
    comp = looptune.conv2d(n, c, h, w, k, r, s, stride=st, pad=p, epilogue=epi, **kw)
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // g, r, s)).astype(np.float32)
    ekw = {}
    oh, ow = (h + 2 * p - r) // st + 1, (w + 2 * p - s) // st + 1
    if "bias" in epi:
        ekw["bias"] = rng.standard_normal(k).astype(np.float32)
    if "add" in epi:
        ekw["residual"] = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    tree = comp.default_schedule()
    plain = tree.compile()
    want = plain(x, wt, **ekw)
    in_block = comp.block if len(comp.inputs[0].alloc_shape) == 5 else 0
    xb = nchw_to_view(x, P, in_block)
    d = P - p
    in_off = (0, 0, d, d, 0) if in_block else (0, 0, d, d)
    ob = comp.block if blocked else 0
    out = nchw_to_view(np.zeros_like(want), Q, ob)
    out_off = (0, 0, Q, Q, 0) if ob else (0, 0, Q, Q)
    if "residual" in ekw:
        ekw["residual"] = nchw_to_view(ekw["residual"], Q, ob)
    kernel = tree.compile(in_view=(xb.shape, in_off), out_view=(out.shape, out_off))
    assert kernel.views == {"in0": (xb.shape, in_off), "out": (out.shape, out_off)}
    with looptune.num_threads(threads):
        kernel(xb, wt, out, **ekw)
    return want, out, Q


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}x{c[4]}g{c[9]}s{c[7]}{c[10]}")
def test_views_give_exactly_the_plain_kernels_output(case, threads: int) -> None:
    want, out, q = _run_case(case, threads)
    assert np.array_equal(view_to_nchw(out, want.shape, q), want)
    border = out.copy()
    border[:, :, q:q + want.shape[2], q:q + want.shape[3]] = 0
    assert not border.any()  # only the interior is written


def test_views_refused_with_a_clear_error() -> None:
    comp = looptune.conv2d(1, 16, 8, 8, 32, 3, 3, stride=1, pad=1)
    tree = comp.default_schedule()
    with pytest.raises(CompileError, match="rank"):
        tree.compile(in_view=((1, 16, 10, 10), (0, 0, 0)))
    with pytest.raises(CompileError, match="cannot hold"):
        tree.compile(in_view=((1, 16, 10, 10), (0, 0, 1, 1)))  # 10 < 1 + 10
    with pytest.raises(CompileError, match="cannot hold"):
        tree.compile(out_view=((1, 32, 8, 8), (0, 0, 1, 0)))
    kernel = tree.compile(out_view=((1, 32, 10, 10), (0, 0, 1, 1)))
    with pytest.raises(CompileError, match="without buffer views"):
        kernel.benchmark()
    x = np.zeros((1, 16, 8, 8), np.float32)
    with pytest.raises(ValueError, match="expected"):
        kernel(x, np.zeros((32, 16, 3, 3), np.float32), np.zeros((1, 32, 8, 8), np.float32))
    # out=None: a zeroed buffer of the view's shape
    got = kernel(x, np.ones((32, 16, 3, 3), np.float32))
    assert got.shape == (1, 32, 10, 10) and not got.any()


# ---------------------------------------------------------------- models


class _Branch(nn.Module):
    """One activation read by two convs with different paddings (and maybe strides), summed."""

    def __init__(self, c: int, k: int, rng: random.Random, st: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, k, 3, st, 1), nn.BatchNorm2d(k), nn.ReLU())
        self.b = nn.Conv2d(c, k, 1, st, 0, bias=False)

    def forward(self, x):
        return torch.relu(self.a(x) + self.b(x))


class _Inverted(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise (random stride / kernel), 1x1 project."""

    def __init__(self, c: int, k: int, rng: random.Random, st: int) -> None:
        super().__init__()
        e, r = 16 * rng.randint(1, 3), rng.choice((3, 5))
        self.skip = st == 1 and c == k
        self.body = nn.Sequential(
            nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, e, r, st, r // 2, groups=e, bias=False), nn.BatchNorm2d(e), nn.ReLU6(),
            nn.Conv2d(e, k, 1, bias=False), nn.BatchNorm2d(k))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.skip else y


class _Basic(nn.Module):
    """ResNet's basic block (a 1x1 strided downsample when the shape changes)."""

    def __init__(self, c: int, k: int, rng: random.Random, st: int) -> None:
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(c, k, 3, st, 1, bias=False), nn.BatchNorm2d(k),
                                nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(k, k, 3, 1, 1, bias=False), nn.BatchNorm2d(k))
        self.down = None if (st == 1 and c == k) else nn.Conv2d(c, k, 1, st, bias=False)

    def forward(self, x):
        idt = x if self.down is None else self.down(x)
        return torch.relu(self.c2(self.c1(x)) + idt)


def random_layout_model(seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A seeded stack of branches, inverted-residual and basic blocks and plain convs of
    random widths (blocked and not), strides, pads and kernel sizes; a pooled linear head or
    the last activation itself as the output."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c, hw = rng.choice((3, 8, 16)), rng.randint(9, 16)
    shape = (rng.choice((1, 2, 3)), c, hw, hw)
    layers: list[nn.Module] = []
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(("conv", "branch", "inverted", "basic"))
        k = rng.choice((8, 12, 16, 32, 48)) if rng.random() < 0.7 else c
        st = rng.choice((1, 1, 2)) if hw >= 6 and not (kind == "basic" and k == c) else 1
        if kind == "conv":
            r = rng.choice((1, 3, 5)) if hw >= 5 else 1
            pad = max(rng.randint(0, r // 2 + 1), (r - hw + 1) // 2)
            layers += [nn.Conv2d(c, k, r, st, pad), nn.BatchNorm2d(k),
                       rng.choice((nn.ReLU(), nn.ReLU6(), nn.Identity()))]
            hw = (hw + 2 * pad - r) // st + 1
        else:
            layers.append({"branch": _Branch, "inverted": _Inverted, "basic": _Basic}[kind](
                c, k, rng, st))
            hw = (hw - 1) // st + 1
        c = k
    for m in layers:
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    if rng.random() < 0.5:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers).eval(), shape


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("records") / "records.jsonl")


def _tol(plan, ref: torch.Tensor) -> float:
    red = max([la.reduction for la in plan.layers], default=1)
    return 8 * EPS * red * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("seed", range(40))
def test_random_models_with_layouts_equal_the_copying_path(seed: int, records: str) -> None:
    model, shape = random_layout_model(seed)
    x = torch.randn(*shape)
    kw = {"records": records, "search": "base", "quiet": True}
    threads = 2 if seed % 2 else 1
    on = looptune.compile(model, x, threads=threads, **kw)
    off = looptune.compile(model, x, threads=threads, layouts=False, **kw)
    with torch.no_grad():
        ref, a, b = model(x), on(x), off(x)
        again = on(x)
    assert torch.equal(a, b), on.summary  # the same kernels, bit for bit
    assert torch.equal(a, again)
    assert float((a - ref).abs().max()) <= _tol(on.plan, ref)
    assert not off.plan.layouts


@pytest.mark.parametrize("threads", [1, 2])
def test_mobilenet_and_resnet_keep_layouts(threads: int, records: str) -> None:
    kw = {"records": records, "search": "base", "quiet": True, "threads": threads}
    torch.manual_seed(0)
    for make, fuse, blocked in ((lambda: zoo.mobilenet_v2(10, 0.5), True, True),
                                (lambda: zoo.resnet18(10, 16), True, False),
                                (lambda: zoo.mobilenet_v2(10, 0.5), False, True)):
        model = make().eval()
        x = torch.randn(2, 3, 48, 48)
        on = looptune.compile(model, x, fuse=fuse, **kw)
        off = looptune.compile(model, x, fuse=fuse, layouts=False, **kw)
        st = on.plan.layouts
        assert st["laid_out"] > 0 and st["direct_inputs"] > 0, on.summary
        assert "layouts:" in on.summary
        ops = [m for m in on.graph_module.modules() if isinstance(m, LoopOp)]
        laid = [op for op in ops if op.layout is not None]
        assert all(op.out_buf is not None and op.out_buf.shape == op.layout.buf_shape
                   for op in laid)
        assert (st["blocked"] > 0) == blocked
        with torch.no_grad():
            ref, a, b = model(x), on(x), off(x)
        assert torch.equal(a, b)
        assert float((a - ref).abs().max()) <= _tol(on.plan, ref)
        # the borders of the pooled buffers stayed zero
        for op in laid:
            border = op.out_buf.clone()
            op.layout.interior(border).zero_()
            assert not border.any()


def test_layout_geometry() -> None:
    lay = Layout((2, 32, 7, 5), halo=1, block=16)
    assert lay.buf_shape == (2, 2, 9, 7, 16) and lay.offset(0) == (0, 0, 1, 1, 0)
    plain = Layout((2, 8, 7, 5), halo=2)
    assert plain.buf_shape == (2, 8, 11, 9) and plain.offset(1) == (0, 0, 1, 1)
    buf = torch.zeros(plain.buf_shape)
    assert plain.interior(buf).shape == (2, 8, 7, 5)


def test_two_threads_with_parallel_kernels_and_layouts(records: str) -> None:
    """At threads=2 the compiled model calls its kernels on 2 threads; with every layer's
    schedule given a parallel loop (its first legal one: the batch) it gives exactly its
    1-thread output, layouts included (the engine's results are bit-identical at every thread
    count)."""
    from looptune.agent.tiler import parallel_loops
    from looptune.space import at_cursor

    torch.manual_seed(1)
    model = zoo.mobilenet_v2(10, 0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    kw = {"records": records, "search": "base", "quiet": True}
    one = looptune.compile(model, x, threads=1, **kw)
    two = looptune.compile(model, x, threads=2, **kw)
    assert two.threads == 2 and two.plan.layouts["laid_out"] > 0
    parallel = 0
    for op in two.graph_module.modules():
        if not isinstance(op, LoopOp):
            continue
        tree = op.kernel.tree
        if tree.parallel_loop is None:
            loops = parallel_loops(tree)
            if not loops:
                continue
            tree = at_cursor(at_cursor(tree, loops[0]).toggle_parallel(), tree.cursor)
        views = op.kernel.views
        op.use_kernel(tree.compile(in_view=views["in0"], out_view=views["out"]))
        assert op.kernel.threads_used(2) == 2
        parallel += 1
    assert parallel >= 40
    with torch.no_grad():
        a, b, ref = one(x), two(x), model(x)
    assert torch.equal(a, b)
    assert float((b - ref).abs().max()) <= _tol(two.plan, ref)


class _PoolNet(nn.Module):
    def __init__(self, act: nn.Module, k: int, s: int, p: int, functional: bool) -> None:
        super().__init__()
        self.c1, self.act = nn.Conv2d(3, 16, 3, 1, 1), act
        self.pool = (lambda x: torch.nn.functional.max_pool2d(x, k, s, p)) if functional \
            else nn.MaxPool2d(k, s, p)
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1)

    def forward(self, x):
        y = self.pool(self.act(self.c1(x)))
        return self.c2(y) + y


@pytest.mark.parametrize("seed", range(12))
def test_max_pools_are_exact(seed: int, records: str) -> None:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    k = rng.choice((1, 2, 3, 5))
    s, p = rng.choice((1, 2, 3)), rng.randint(0, k // 2)
    act = rng.choice((nn.ReLU(), nn.ReLU6(), nn.Identity(), nn.GELU()))  # GELU: negatives
    model = _PoolNet(act, k, s, p, functional=seed % 3 == 0).eval()
    x = torch.randn(rng.choice((1, 2)), 3, rng.randint(k + 2, 15), rng.randint(k + 2, 15))
    on = looptune.compile(model, x, records=records, search="base", quiet=True)
    off = looptune.compile(model, x, records=records, search="base", quiet=True, layouts=False)
    assert "1 maxpool2d" in on.summary.split("; torch:")[0], on.summary
    pool = next(m for m in on.graph_module.modules() if isinstance(m, MaxPoolOp))
    # a zero border replaces -inf padding only under a ReLU
    assert (pool.in_src is not None) == isinstance(act, (nn.ReLU, nn.ReLU6)) or p == 0 and \
        pool.in_src is None
    with torch.no_grad():
        ref, a, b = model(x), on(x), off(x)
        assert torch.equal(a, b) and torch.equal(a, on(x))
        # the pool itself is exact (a max of the same elements), on any input
        z = torch.randn(2, 5, x.shape[2], x.shape[3])
        alone = MaxPoolOp(tuple(z.shape), k, s, p)
        assert torch.equal(alone(z), torch.nn.functional.max_pool2d(z, k, s, p))
    assert float((a - ref).abs().max()) <= _tol(on.plan, ref)


_SEEN: list[int] = []


def _probe(x: torch.Tensor) -> torch.Tensor:
    """A torch op that records torch's thread count when it runs."""
    _SEEN.append(torch.get_num_threads())
    return x


torch.fx.wrap("_probe")


class _Probe(nn.Module):
    def forward(self, x):
        return _probe(x)


def test_torch_ops_run_serially_while_kernels_use_threads(records: str) -> None:
    from looptune.model import serial_torch_ops

    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with serial_torch_ops(2):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with serial_torch_ops(1):
            assert torch.get_num_threads() == 2
        _SEEN.clear()
        model = nn.Sequential(nn.Linear(8, 8), _Probe(), nn.Linear(8, 4)).eval()
        x = torch.randn(3, 8)
        two = looptune.compile(model, x, threads=2, records=records, search="base", quiet=True)
        _SEEN.clear()
        with torch.no_grad():
            out = two(x)
        assert _SEEN == [1] and torch.get_num_threads() == 2
        with torch.no_grad():
            assert float((out - model(x)).abs().max()) < 1e-5
    finally:
        torch.set_num_threads(old)
