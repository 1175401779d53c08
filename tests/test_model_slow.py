"""The full-size models of the zoo against eager PyTorch, batch 1 and 8 (slow: tuning every
layer of ResNet-18, MobileNetV2 and the BERT-base encoder layer takes tens of seconds)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_model import assert_matches  # noqa: E402

import looptune  # noqa: E402
from looptune.model import zoo  # noqa: E402

FULL = {
    "resnet18": (zoo.resnet18, (3, 224, 224)),
    "mobilenet_v2": (zoo.mobilenet_v2, (3, 224, 224)),
    "bert": (zoo.bert_layer, (128, 768)),
    "torch_encoder": (zoo.torch_encoder_layer, (128, 768)),
}


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("name", sorted(FULL))
def test_full_size_models_match_eager(name: str, batch: int, tmp_path_factory) -> None:
    torch.manual_seed(0)
    make, shape = FULL[name]
    model = make().eval()
    x = torch.randn(batch, *shape)
    rec = tmp_path_factory.getbasetemp() / "full_records.jsonl"
    compiled = looptune.compile(model, x, records=rec, quiet=True)
    with torch.no_grad():
        assert_matches(compiled(x), model(x), compiled.plan)
    assert not {"conv2d", "linear"} & set(compiled.plan.torch_ops), compiled.summary
