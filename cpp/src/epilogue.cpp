// The pointwise epilogue of a computation (bias, residual add, activation), applied to the
// user-facing output in one vectorized pass after the kernel has written it.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "looptune/kernel.h"
#include "looptune/rowops.h"
#include "looptune/thread_pool.h"

namespace looptune {
namespace {

// The user-facing output viewed as [outer][ch][inner] around its channel dim (bias_dim()).
struct ChannelSplit {
  int64_t outer, ch, inner;
};
ChannelSplit channel_split(const Computation& c) {
  const int bd = c.bias_dim();
  ChannelSplit s{1, c.out.shape[bd], 1};
  for (int d = 0; d < static_cast<int>(c.out.shape.size()); ++d) {
    if (d < bd) s.outer *= c.out.shape[d];
    if (d > bd) s.inner *= c.out.shape[d];
  }
  return s;
}

enum Act { kNone = 0, kRelu = 1, kRelu6 = 2, kGelu = 3 };

Act act_of(const Epilogue& e) {
  if (e.act == "relu") return kRelu;
  if (e.act == "relu6") return kRelu6;
  if (e.act == "gelu") return kGelu;
  return kNone;
}

template <int A>
__attribute__((target("avx2,fma"))) inline __m256 activate(__m256 x) {
  if constexpr (A == kRelu) return _mm256_max_ps(x, _mm256_setzero_ps());
  if constexpr (A == kRelu6)
    return _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(6.0f));
  return x;
}

// x[i] = act(x[i] + bias + res[i]) for i < n: bias is bias_vec[i] when bias_vec is set, else
// the scalar bias_s; res may be nullptr.
template <int A>
__attribute__((target("avx2,fma"))) void span(float* x, const float* res, const float* bias_vec,
                                              float bias_s, int64_t n) {
  if constexpr (A == kGelu) {  // the sums, then rowops' GELU over the span (still in L1)
    span<kNone>(x, res, bias_vec, bias_s, n);
    gelu_span(x, n);
    return;
  }
  const __m256 bs = _mm256_set1_ps(bias_s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    v = _mm256_add_ps(v, bias_vec ? _mm256_loadu_ps(bias_vec + i) : bs);
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + i));
    _mm256_storeu_ps(x + i, activate<A>(v));
  }
  if (i == n) return;
  float tx[8] = {0}, tr[8] = {0}, tb[8] = {0};
  const int64_t m = n - i;
  std::memcpy(tx, x + i, sizeof(float) * m);
  if (res) std::memcpy(tr, res + i, sizeof(float) * m);
  if (bias_vec) std::memcpy(tb, bias_vec + i, sizeof(float) * m);
  __m256 v = _mm256_add_ps(_mm256_loadu_ps(tx), bias_vec ? _mm256_loadu_ps(tb) : bs);
  v = _mm256_add_ps(v, _mm256_loadu_ps(tr));
  _mm256_storeu_ps(tx, activate<A>(v));
  std::memcpy(x + i, tx, sizeof(float) * m);
}

template <int A>
void apply(const Computation& c, float* out, const float* bias, const float* res, int threads) {
  const ChannelSplit sp = channel_split(c);
  const int64_t outer = sp.outer, ch = sp.ch, inner = sp.inner;
  const bool use_bias = c.epilogue.bias && bias, use_res = c.epilogue.add && res;
  if (inner == 1) {  // channels last: rows of ch, the bias a vector along each row
    parallel_for(outer, threads, [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a)
        span<A>(out + a * ch, use_res ? res + a * ch : nullptr, use_bias ? bias : nullptr,
                0.0f, ch);
    });
    return;
  }
  parallel_for(outer * ch, threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = i % ch, o = i * inner;
      span<A>(out + o, use_res ? res + o : nullptr, nullptr, use_bias ? bias[k] : 0.0f, inner);
    }
  });
}

}  // namespace

void apply_epilogue(const Computation& c, float* out, const float* bias, const float* residual,
                    int threads) {
  if (c.epilogue.empty()) return;
  switch (act_of(c.epilogue)) {
    case kRelu: return apply<kRelu>(c, out, bias, residual, threads);
    case kRelu6: return apply<kRelu6>(c, out, bias, residual, threads);
    case kGelu: return apply<kGelu>(c, out, bias, residual, threads);
    default: return apply<kNone>(c, out, bias, residual, threads);
  }
}

void gelu_inplace(float* x, int64_t n) { gelu_span(x, n); }

namespace {

__attribute__((target("avx2,fma"))) void scale_span(float* x, float scale_s,
                                                    const float* scale_vec, int64_t n) {
  int32_t* xi = reinterpret_cast<int32_t*>(x);
  const __m256 ss = _mm256_set1_ps(scale_s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<__m256i*>(xi + i)));
    _mm256_storeu_ps(x + i, _mm256_mul_ps(v, scale_vec ? _mm256_loadu_ps(scale_vec + i) : ss));
  }
  for (; i < n; ++i) x[i] = static_cast<float>(xi[i]) * (scale_vec ? scale_vec[i] : scale_s);
}

}  // namespace

void dequantize_output(const Computation& c, float* out, const float* scale, int threads) {
  const ChannelSplit sp = channel_split(c);
  const int64_t outer = sp.outer, ch = sp.ch, inner = sp.inner;
  if (inner == 1) {
    parallel_for(outer, threads, [&](int64_t a0, int64_t a1) {
      for (int64_t a = a0; a < a1; ++a) scale_span(out + a * ch, 0.0f, scale, ch);
    });
    return;
  }
  parallel_for(outer * ch, threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) scale_span(out + i * inner, scale[i % ch], nullptr, inner);
  });
}

}  // namespace looptune
