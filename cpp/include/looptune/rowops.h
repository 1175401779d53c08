// Row-wise and pointwise float32 operations of transformer layers that run outside the JIT's
// kernels (GELU, softmax over the last dim, layer norm), vectorized for AVX-512 or AVX2+FMA and
// parallel over the engine's thread pool. Work is split at fixed boundaries (whole rows, or
// blocks of whole vectors) and every element is computed the same way whichever thread runs it,
// so results are bit-identical for every thread count.
#pragma once

#include <cstdint>

#include "looptune/cpu.h"

namespace looptune {

// y[i] = GELU(x[i]) = x/2 (1 + erf(x / sqrt 2)) for i < n (y may be x): x Phi(x) with
// Phi(-|x|) = 1 / (2 Q(|x|)^16), Q a fitted degree-7 polynomial (rowops_kernels.inc); absolute
// error under 4e-7 (PyTorch's float32 GELU: ~1.1e-6). GELU(x < -10) = +0 (so -inf gives 0),
// GELU(inf) = inf, NaN stays NaN. The same bits as the JIT's fused GELU on either ISA.
void gelu(const float* x, float* y, int64_t n, Isa isa, int threads);

// GELU of one span in place on the host ISA, on the calling thread (the epilogue pass).
void gelu_span(float* x, int64_t n);

// y = softmax(x * scale) over each of `rows` contiguous rows of d elements (y may be x):
// e = exp(x * scale - max_row(x * scale)), y = e / sum_row(e). A row holding NaN, +inf or only
// -inf gives NaN (as PyTorch); -inf entries of other rows give 0.
void softmax(const float* x, float* y, int64_t rows, int64_t d, float scale, Isa isa,
             int threads);

// y = (x - mean) / sqrt(var + eps) * w + b over each of `rows` rows of d elements (biased
// variance, two passes; w and b: d elements each, or nullptr for 1 and 0; y may be x).
void layer_norm(const float* x, float* y, int64_t rows, int64_t d, const float* w,
                const float* b, float eps, Isa isa, int threads);

}  // namespace looptune
