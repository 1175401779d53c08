"""looptune.compile and the torch.compile backend on whole models (small models of the zoo's
structures; the full-size ones are in test_model_slow.py)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import looptune  # noqa: E402
import looptune.model  # noqa: E402
from looptune.model import ModelInputError, TrainingModeError, zoo  # noqa: E402

EPS = 2.0**-23


def assert_matches(out: torch.Tensor, ref: torch.Tensor, plan: looptune.model.Plan) -> None:
    """Within a tolerance that grows with the longest reduction of the compiled layers
    (float32 rounding of a sum of L products: a few ulp times L, relative to the values)."""
    red = max([la.reduction for la in plan.layers], default=1)
    scale = max(1.0, float(ref.abs().max()))
    tol = 8 * EPS * red * scale
    assert out.shape == ref.shape
    err = float((out - ref).abs().max())
    assert err <= tol, f"max error {err:.3g} > {tol:.3g} (reduction {red})"


SMALL = {
    "resnet18": (lambda: zoo.resnet18(10, 8), (3, 32, 32)),
    "mobilenet_v2": (lambda: zoo.mobilenet_v2(10, 0.25), (3, 32, 32)),
    "bert": (lambda: zoo.bert_layer(64, 4, 128), (16, 64)),
    "torch_encoder": (lambda: zoo.torch_encoder_layer(64, 4, 128), (16, 64)),
}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("records") / "records.jsonl")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_models_match_eager(name: str, batch: int, records: str) -> None:
    torch.manual_seed(batch)
    make, shape = SMALL[name]
    model = make().eval()
    x = torch.randn(batch, *shape)
    compiled = looptune.compile(model, x, records=records, quiet=True)
    with torch.no_grad():
        ref = model(x)
        out1 = compiled(x)
        out2 = compiled(x)  # buffers reused: the same answer, and out1 left alone
    assert_matches(out1, ref, compiled.plan)
    assert torch.equal(out1, out2)
    assert out1.data_ptr() != out2.data_ptr()
    assert compiled.plan.layers, compiled.summary
    # nothing the engine covers is left to torch
    assert not {"conv2d", "linear", "batchnorm2d"} & set(compiled.plan.torch_ops), compiled.summary


def test_resnet_summary_and_fusion(records: str) -> None:
    model = zoo.resnet18(10, 8).eval()
    x = torch.randn(1, 3, 32, 32)
    compiled = looptune.compile(model, x, records=records, quiet=True)
    s = compiled.summary
    assert s.startswith("looptune: 20 conv2d, 1 linear, 1 maxpool2d ("), s
    assert "8 bias+add+relu" in s and "20 batchnorm folded" in s, s
    assert s.endswith("torch: 1 adaptiveavgpool2d, 1 flatten"), s
    fused = [la.epilogue for la in compiled.plan.layers]
    assert fused.count("bias+relu") == 9 and fused.count("bias") == 4
    assert compiled.plan.pool["buffers"] < compiled.plan.pool["pooled"]


@pytest.mark.skipif(not looptune.model.engine_features()["epilogue"], reason="no epilogue")
def test_fusion_off_matches_fusion_on(records: str) -> None:
    torch.manual_seed(3)
    model = zoo.mobilenet_v2(10, 0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    on = looptune.compile(model, x, records=records, quiet=True)
    off = looptune.compile(model, x, records=records, quiet=True, fuse=False)
    assert on.plan.fused and not off.plan.fused
    assert "unfused" in off.summary
    with torch.no_grad():
        ref = model(x)
        assert_matches(on(x), ref, on.plan)
        assert_matches(off(x), ref, off.plan)
    headers = {op.kernel.tree.computation.header() for op in on.graph_module.modules()
               if isinstance(op, looptune.model.runtime.LoopOp)}
    assert any("bias" in h for h in headers)


def test_second_compile_measures_nothing(tmp_path) -> None:
    model = zoo.resnet18(10, 8).eval()
    x = torch.randn(1, 3, 32, 32)
    rec = str(tmp_path / "r.jsonl")
    cold = looptune.compile(model, x, records=rec, quiet=True)
    assert cold.plan.tune_stats.measured > 0 and cold.plan.tune_stats.tuned > 0
    warm = looptune.compile(model, x, records=rec, quiet=True)
    st = warm.plan.tune_stats
    assert st.measured == 0 and st.tuned == 0 and st.from_records == st.layers > 0
    for a, b in zip(cold.plan.layers, warm.plan.layers):
        assert a.dims == b.dims
    # the same schedules: the warm kernels are the cold ones
    trees = lambda c: [m.kernel.tree.dump() for m in c.graph_module.modules()  # noqa: E731
                       if isinstance(m, looptune.model.runtime.LoopOp)]
    assert trees(cold) == trees(warm)


def test_no_records_and_search_by_name() -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU()).eval()
    x = torch.randn(4, 16)
    compiled = looptune.compile(model, x, records=False, search="greedy1", layer_budget=0.2,
                                quiet=True)
    with torch.no_grad():
        assert_matches(compiled(x), model(x), compiled.plan)
    with pytest.raises(ValueError, match="unknown search"):
        looptune.compile(model, x, records=False, search="nope", quiet=True)


@pytest.mark.parametrize("seed", range(24))
def test_random_models(seed: int, records: str) -> None:
    model, shape = zoo.random_model(seed)
    x = torch.randn(*shape)
    compiled = looptune.compile(model, x, records=records, search="base", quiet=True)
    with torch.no_grad():
        assert_matches(compiled(x), model(x), compiled.plan)


def test_uncovered_ops_run_in_torch(records: str) -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dil = nn.Conv2d(3, 4, 3, padding=2, dilation=2)  # dilation: torch
            self.rect = nn.Conv2d(4, 4, (3, 1), padding=1)  # 3x1 kernel: looptune
            self.uneven = nn.Conv2d(4, 4, 3, padding=(1, 0))  # uneven pads: torch
            self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")  # torch
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.uneven(self.reflect(self.rect(self.dil(x))))  # 8x8, 8x10, 8x10, 8x8
            z = torch.matmul(y, torch.ones(8, 8))  # a constant operand: torch
            b = torch.matmul(z, z.transpose(-2, -1)[:, :, :1, :].expand(2, 4, 8, 8))
            return self.lin(torch.sigmoid(b) + z)

    model = Odd().eval()
    x = torch.randn(2, 3, 8, 8)
    compiled = looptune.compile(model, x, records=records, quiet=True)
    with torch.no_grad():
        assert_matches(compiled(x), model(x), compiled.plan)
    assert compiled.plan.torch_ops["conv2d"] == 3
    assert [la.kind for la in compiled.plan.layers].count("conv2d") == 1


def test_changed_shape_recompiles(records: str) -> None:
    model = zoo.resnet18(10, 8).eval()
    compiled = looptune.compile(model, torch.randn(1, 3, 32, 32), records=records, quiet=True)
    x = torch.randn(2, 3, 40, 40)
    with pytest.warns(RuntimeWarning, match="new input shapes"):
        out = compiled(x)
    with torch.no_grad():
        assert_matches(out, model(x), compiled.plan)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(x)  # kept: no second compile


def test_bad_inputs_and_modes(records: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(TrainingModeError, match="eval"):
        looptune.compile(model, x, records=records, quiet=True)
    model.eval()
    with pytest.raises(TypeError, match="nn.Module"):
        looptune.compile(lambda t: t, x, records=records)
    with pytest.raises(ModelInputError, match="float32"):
        looptune.compile(model, x.double(), records=records)
    compiled = looptune.compile(model, x, records=records, quiet=True)
    with pytest.raises(ModelInputError, match="float32"):
        compiled(x.half())
    with pytest.raises(ModelInputError, match="requires grad"):
        compiled(x.clone().requires_grad_())
    with pytest.raises(ModelInputError, match="torch.Tensor"):
        compiled(x.numpy())
    with pytest.raises(ValueError, match="threads"):
        looptune.compile(model, x, threads=0, records=records)
    with torch.no_grad():  # no grad mode: an input that requires grad is fine
        out = compiled(x.clone().requires_grad_())
        assert_matches(out, model(x), compiled.plan)
    compiled.train()
    with pytest.raises(TrainingModeError):
        compiled(x)
    assert isinstance(TrainingModeError("x"), looptune.LoopTuneError)


def test_dynamo_backend(records: str) -> None:
    torch.manual_seed(0)
    model = zoo.resnet18(10, 8).eval()
    x = torch.randn(2, 3, 32, 32)
    torch._dynamo.reset()
    fn = torch.compile(model, backend="looptune", options={"records": records, "quiet": True})
    with torch.no_grad():
        out, ref = fn(x), model(x)
        plan = looptune.model.backend.looptune_backend.last_plan
        assert_matches(out, ref, plan)
        assert plan.summary.startswith("looptune: 20 conv2d, 1 linear"), plan.summary
        model.fc.weight.mul_(2)  # a weight changed in place: never the stale packed copy
        with pytest.warns(RuntimeWarning, match="weight changed"):
            out = fn(x)
        assert_matches(out, model(x), plan)
    torch._dynamo.reset()


def test_dynamo_backend_grad_mode_falls_back(records: str) -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    x = torch.randn(3, 8)
    torch._dynamo.reset()
    fn = torch.compile(model, backend="looptune", options={"records": records, "quiet": True})
    with pytest.warns(RuntimeWarning, match="grad mode"):
        out = fn(x)
    out.sum().backward()  # autograd works: torch ran the graph
    assert model[0].weight.grad is not None
    torch._dynamo.reset()


def test_import_looptune_does_not_import_torch() -> None:
    code = ("import sys, looptune; assert 'torch' not in sys.modules; "
            "f = looptune.compile; assert 'torch' in sys.modules; "
            "import looptune.model; assert f is looptune.model.compile")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.filterwarnings("ignore:looptune backend. an input shape changed:RuntimeWarning")
def test_dynamo_backend_dynamic_shapes_stay_correct(records: str) -> None:
    model = zoo.resnet18(10, 8).eval()
    torch._dynamo.reset()
    fn = torch.compile(model, backend="looptune", dynamic=True,
                       options={"records": records, "quiet": True})
    with torch.no_grad():
        for batch in (2, 3):
            x = torch.randn(batch, 3, 32, 32)
            out = fn(x)
            plan = looptune.model.backend.looptune_backend.last_plan
            assert_matches(out, model(x), plan)
    # symbolic sizes: no kernel is compiled for a shape that might change
    assert plan.summary.startswith("looptune: nothing"), plan.summary
    torch._dynamo.reset()


def test_threads_follow_torch_when_the_engine_has_them(records: str) -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.GELU()).eval()
    x = torch.randn(4, 16)
    compiled = looptune.compile(model, x, records=records, quiet=True)
    engine_threads = hasattr(looptune, "num_threads")
    assert compiled.threads == (torch.get_num_threads() if engine_threads else 1)
    one = looptune.compile(model, x, threads=1, records=records, quiet=True)
    assert one.threads == 1
    with torch.no_grad():
        assert_matches(compiled(x), model(x), compiled.plan)
        assert_matches(one(x), model(x), one.plan)
