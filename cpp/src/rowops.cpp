// GELU, softmax and layer norm over float32 rows (see rowops.h): the kernels of
// rowops_kernels.inc instantiated for AVX2+FMA and AVX-512, and the drivers that split the
// work over the thread pool.
#include "looptune/rowops.h"

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (a self-initialized variable), which
// -Wuninitialized reports at every inlined use; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>

#include "looptune/thread_pool.h"

// No contraction of a multiply and an add into an FMA: the kernels' arithmetic is exactly the
// operations written, so GELU here gives the bits of the JIT's fused GELU (jit_x86.cpp), which
// a kernel with a fused epilogue and one whose epilogue pass runs must agree on.
#pragma GCC optimize("fp-contract=off")

namespace looptune {

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
namespace {
using F = __m256;
constexpr int L = 8;
using Tail = __m256i;
inline Tail tail(int m) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(m), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline F ld(const float* p) { return _mm256_loadu_ps(p); }
inline void st(float* p, F v) { _mm256_storeu_ps(p, v); }
inline F keep_or(F v, Tail t, float f) {
  return _mm256_blendv_ps(_mm256_set1_ps(f), v, _mm256_castsi256_ps(t));
}
inline F keep(F v, Tail t) { return _mm256_and_ps(v, _mm256_castsi256_ps(t)); }
inline F ld_tail(const float* p, Tail t, float fill) {
  return keep_or(_mm256_maskload_ps(p, t), t, fill);
}
inline void st_tail(float* p, Tail t, F v) { _mm256_maskstore_ps(p, t, v); }
inline F set(float f) { return _mm256_set1_ps(f); }
inline F add(F a, F b) { return _mm256_add_ps(a, b); }
inline F sub(F a, F b) { return _mm256_sub_ps(a, b); }
inline F mul(F a, F b) { return _mm256_mul_ps(a, b); }
inline F fma(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
inline F fnma(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
inline F vmax(F a, F b) { return _mm256_max_ps(a, b); }
inline F vmin(F a, F b) { return _mm256_min_ps(a, b); }
inline F vabs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
inline F vround(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n in the exponent bits: n = -127 (v = -88) gives the bits of +0
constexpr float kExpMin = -88.0f;
inline F ldexp(F p, F n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  return _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(e, 23)));
}
inline F gelu_select(F x, F h) {
  const F neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
  const F y = _mm256_blendv_ps(_mm256_sub_ps(x, h), h, neg);
  return _mm256_and_ps(y, _mm256_cmp_ps(x, _mm256_set1_ps(-10.0f), _CMP_NLT_UQ));
}
inline F div(F a, F b) { return _mm256_div_ps(a, b); }
inline float hmax(F v) {
  const __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_max_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_max_ss(b, _mm_movehdup_ps(b)));
}
inline float hsum_f(F v) {
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}
#include "rowops_kernels.inc"
}  // namespace
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
namespace avx512 {
namespace {
using F = __m512;
constexpr int L = 16;
using Tail = __mmask16;
inline Tail tail(int m) { return static_cast<__mmask16>((1u << m) - 1u); }
inline F ld(const float* p) { return _mm512_loadu_ps(p); }
inline void st(float* p, F v) { _mm512_storeu_ps(p, v); }
inline F keep_or(F v, Tail t, float f) { return _mm512_mask_mov_ps(_mm512_set1_ps(f), t, v); }
inline F keep(F v, Tail t) { return _mm512_maskz_mov_ps(t, v); }
inline F ld_tail(const float* p, Tail t, float fill) {
  return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), t, p);
}
inline void st_tail(float* p, Tail t, F v) { _mm512_mask_storeu_ps(p, t, v); }
inline F set(float f) { return _mm512_set1_ps(f); }
inline F add(F a, F b) { return _mm512_add_ps(a, b); }
inline F sub(F a, F b) { return _mm512_sub_ps(a, b); }
inline F mul(F a, F b) { return _mm512_mul_ps(a, b); }
inline F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
inline F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
inline F vmax(F a, F b) { return _mm512_max_ps(a, b); }
inline F vmin(F a, F b) { return _mm512_min_ps(a, b); }
inline F vabs(F a) { return _mm512_abs_ps(a); }
inline F vround(F a) {
  return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
// vscalefps: p 2^n (n = -159 at v = -110: underflows to 0)
constexpr float kExpMin = -110.0f;
inline F ldexp(F p, F n) { return _mm512_scalef_ps(p, n); }
inline F gelu_select(F x, F h) {
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const F y = _mm512_mask_sub_ps(h, static_cast<__mmask16>(~neg), x, h);
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-10.0f), _CMP_NLT_UQ), y);
}
inline F div(F a, F b) { return _mm512_div_ps(a, b); }
inline float hmax(F v) { return _mm512_reduce_max_ps(v); }
inline float hsum_f(F v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_movehdup_ps(b)));
}
#include "rowops_kernels.inc"
}  // namespace
}  // namespace avx512
#pragma GCC pop_options

namespace {

// Threads worth waking for `work` elements: a part gets at least kMinPart of them (the pool's
// wake-up costs microseconds; below that one thread is faster).
constexpr int64_t kMinPart = 16384;
int threads_for(int64_t work, int threads) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work / kMinPart)));
}

}  // namespace

void gelu(const float* x, float* y, int64_t n, Isa isa, int threads) {
  if (n <= 0) return;
  // blocks of 1024 elements (whole vectors of either ISA): the same split for every thread count
  constexpr int64_t kBlock = 1024;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, threads_for(n, threads), [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
    if (isa == Isa::AVX512) avx512::gelu_run(x + i0, y + i0, i1 - i0);
    else avx2::gelu_run(x + i0, y + i0, i1 - i0);
  });
}

void gelu_span(float* x, int64_t n) {
  if (host_isa() == Isa::AVX512) avx512::gelu_run(x, x, n);
  else avx2::gelu_run(x, x, n);
}

void softmax(const float* x, float* y, int64_t rows, int64_t d, float scale, Isa isa,
             int threads) {
  if (rows <= 0 || d <= 0) return;
  parallel_for(rows, threads_for(rows * d, threads), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (isa == Isa::AVX512) avx512::softmax_row(x + r * d, y + r * d, d, scale);
      else avx2::softmax_row(x + r * d, y + r * d, d, scale);
    }
  });
}

void layer_norm(const float* x, float* y, int64_t rows, int64_t d, const float* w,
                const float* b, float eps, Isa isa, int threads) {
  if (rows <= 0 || d <= 0) return;
  parallel_for(rows, threads_for(rows * d, threads), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      if (isa == Isa::AVX512) avx512::layer_norm_row(x + r * d, y + r * d, d, w, b, eps);
      else avx2::layer_norm_row(x + r * d, y + r * d, d, w, b, eps);
    }
  });
}

}  // namespace looptune
