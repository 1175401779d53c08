"""BatchNorm folding: an eval-mode BatchNorm after a convolution becomes part of the
convolution's weights and bias (``w' = w * g / sqrt(var + eps)``, ``b' = (b - mean) * g /
sqrt(var + eps) + beta``), so the kernel computes both and the BN costs nothing."""

from __future__ import annotations

import torch


def fold_bn(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The folded (weight, bias) of a conv (weight ``[K, C/g, R, S]``) followed by BN over K.
    Computed in float64 and rounded once."""
    w = weight.detach().double()
    k = w.shape[0]
    scale = torch.rsqrt(var.detach().double() + eps)
    if gamma is not None:
        scale = scale * gamma.detach().double()
    b = torch.zeros(k, dtype=torch.float64) if bias is None else bias.detach().double()
    shift = (b - mean.detach().double()) * scale
    if beta is not None:
        shift = shift + beta.detach().double()
    w = w * scale.view(k, *([1] * (w.dim() - 1)))
    return w.float().contiguous(), shift.float().contiguous()
