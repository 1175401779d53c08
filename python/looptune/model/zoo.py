"""The models of the tests and of ``benchmarks/models.py``, defined here (torchvision's wheel
does not load against the CPU torch build this project uses). Each follows the published
architecture; the weights are random (``torch.manual_seed`` decides them).

* :func:`resnet18` (He et al. 2016), :func:`mobilenet_v2` (Sandler et al. 2018), both with
  ``width`` / ``width_mult`` to make small test models of the same structure;
* :class:`BertLayer`: a BERT-base encoder layer (hidden 768, 12 heads, FFN 3072) written as
  ``nn.Linear`` + softmax attention; :func:`torch_encoder_layer`: the same layer as torch's own
  ``nn.TransformerEncoderLayer``;
* :func:`random_model`: a seeded conv / batch-norm / ReLU / residual / linear stack with random
  channels, strides, pads and groups (the randomized correctness tests).
"""

from __future__ import annotations

import math
import random

import torch
from torch import nn
from torch.nn import functional as F


def _conv_bn(c: int, k: int, r: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c, k, r, stride, r // 2, groups=groups, bias=False), nn.BatchNorm2d(k)]


class BasicBlock(nn.Module):
    def __init__(self, c: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c, k, 3, stride)
        self.conv2, self.bn2 = _conv_bn(k, k, 3)
        self.relu = nn.ReLU(inplace=True)
        self.down = nn.Sequential(*_conv_bn(c, k, 1, stride)) if stride != 1 or c != k else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, width, 7, 2), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers, c = [], width
        for i, k in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c, k, stride), BasicBlock(k, k, 1)]
            c = k
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.pool(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, width: int = 64) -> ResNet18:
    """ResNet-18 (``width=64`` is the published one; smaller widths make test models)."""
    return ResNet18(num_classes, width)


class InvertedResidual(nn.Module):
    def __init__(self, c: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(c, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True)]
        layers += _conv_bn(hidden, k, 1)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c == k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def _div8(v: float) -> int:
    return max(8, int(v + 4) // 8 * 8)


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, first stride) of the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        c = _div8(32 * width_mult)
        last = _div8(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [*_conv_bn(3, c, 3, 2), nn.ReLU6(inplace=True)]
        for t, ch, n, s in self.SETTINGS:
            k = _div8(ch * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c, k, s if i == 0 else 1, t))
                c = k
        layers += [*_conv_bn(c, last, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 (``width_mult=1.0`` is the published one)."""
    return MobileNetV2(num_classes, width_mult)


class BertLayer(nn.Module):
    """One BERT encoder layer (post-norm): self-attention + FFN, each with a residual and
    LayerNorm; input ``(batch, seq, hidden)``. BERT-base: hidden 768, 12 heads, FFN 3072."""

    def __init__(self, hidden: int = 768, heads: int = 12, ffn: int = 3072) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.ffn1, self.ffn2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.act = nn.GELU()
        self.norm2 = nn.LayerNorm(hidden)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, s, _ = t.shape
        return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(b, s, h)
        x = self.norm1(x + self.out(ctx))
        return self.norm2(x + self.ffn2(self.act(self.ffn1(x))))


def bert_layer(hidden: int = 768, heads: int = 12, ffn: int = 3072) -> BertLayer:
    """A BERT-base encoder layer written with ``nn.Linear`` and softmax attention."""
    return BertLayer(hidden, heads, ffn)


def torch_encoder_layer(
    hidden: int = 768, heads: int = 12, ffn: int = 3072
) -> nn.TransformerEncoderLayer:
    """The same layer as torch's ``nn.TransformerEncoderLayer`` (GELU, post-norm, batch
    first, no dropout)."""
    return nn.TransformerEncoderLayer(
        hidden, heads, ffn, dropout=0.0, activation="gelu", batch_first=True
    )


class _RandomBlock(nn.Module):
    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None, act: nn.Module | None,
                 residual: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.act, self.residual = conv, bn, act, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        if self.residual:
            y = y + x
        return self.act(y) if self.act is not None else y


def random_model(seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """A seeded random conv/bn/relu/add/linear stack and its input shape ``(n, c, h, w)``:
    channels, kernel sizes, strides, pads, groups and the residual adds are drawn from ``seed``
    (the BN statistics too, so folding is exercised)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c, hw = rng.choice((1, 3, 4, 8)), rng.randint(5, 14)
    shape = (rng.choice((1, 2, 3)), c, hw, hw)
    blocks: list[nn.Module] = []
    for _ in range(rng.randint(1, 4)):
        r = rng.choice((1, 3, 5)) if hw >= 5 else 1
        stride, pad = rng.choice((1, 1, 2)), rng.randint(0, r // 2 + 1)
        groups = rng.choice([g for g in (1, 1, 2, c) if c % g == 0])
        k = groups * rng.randint(1, 12 // groups + 1) if groups > 1 else rng.randint(1, 24)
        conv = nn.Conv2d(c, k, r, stride, pad, groups=groups, bias=rng.random() < 0.5)
        out_hw = (hw + 2 * pad - r) // stride + 1
        if out_hw < 1:
            break
        bn = nn.BatchNorm2d(k) if rng.random() < 0.6 else None
        if bn is not None:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)
        act = rng.choice((nn.ReLU(), nn.ReLU6(), nn.GELU(), None))
        residual = k == c and out_hw == hw
        blocks.append(_RandomBlock(conv, bn, act, residual and rng.random() < 0.7))
        c, hw = k, out_hw
    head = nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, rng.randint(1, 20)))
    if rng.random() < 0.5:
        head.append(nn.ReLU())
    return nn.Sequential(*blocks, head).eval(), shape
