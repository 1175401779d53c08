// quantize_u8 / quantize_per_channel_s8 (see quantize.h): AVX2 loops (every CPU the engine
// runs on has AVX2), and AVX-512 ones of quantize_u8.
#include "looptune/quantize.h"

#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (a self-initialized variable), which
// -Wuninitialized reports at every inlined use; the values are never read.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "looptune/thread_pool.h"

namespace looptune {

namespace {

// min, max of x, and whether every element is finite (x * 0 is NaN for inf and NaN).
__attribute__((target("avx2,fma"))) void min_max(const float* x, int64_t n, float* lo,
                                                 float* hi, bool* finite) {
  __m256 mn = _mm256_set1_ps(0.0f), mx = mn, bad = _mm256_setzero_ps();
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
    bad = _mm256_add_ps(bad, _mm256_mul_ps(v, zero));
  }
  float a[8], b[8], c[8];
  _mm256_storeu_ps(a, mn);
  _mm256_storeu_ps(b, mx);
  _mm256_storeu_ps(c, bad);
  float l = 0.0f, h = 0.0f, s = 0.0f;
  for (int j = 0; j < 8; ++j) {
    l = std::min(l, a[j]);
    h = std::max(h, b[j]);
    s += c[j];
  }
  for (; i < n; ++i) {
    l = std::min(l, x[i]);
    h = std::max(h, x[i]);
    s += x[i] * 0.0f;
  }
  *lo = l;
  *hi = h;
  *finite = std::isfinite(s) && std::isfinite(l) && std::isfinite(h);
}

// round half to even (the default MXCSR mode) of x[0..8) * inv, + zp. x * inv is clamped to
// +-512 first (the result saturates to 0 or 255 beyond either way; without the clamp a
// product over 2^31 converted to INT_MIN and saturated to 0 instead of 255).
__attribute__((target("avx2,fma"))) inline __m256i quantize8(const float* x, __m256 inv,
                                                             __m256i zp) {
  const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(x), inv),
                                               _mm256_set1_ps(-512.0f)),
                                 _mm256_set1_ps(512.0f));
  return _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
}

__attribute__((target("avx2,fma"))) void quantize_span(const float* x, int64_t n, uint8_t* q,
                                                       float inv, int32_t zp) {
  const __m256 iv = _mm256_set1_ps(inv);
  const __m256i z = _mm256_set1_epi32(zp);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i ab = _mm256_packs_epi32(quantize8(x + i, iv, z), quantize8(x + i + 8, iv, z));
    const __m256i cd =
        _mm256_packs_epi32(quantize8(x + i + 16, iv, z), quantize8(x + i + 24, iv, z));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), bytes);
  }
  for (; i < n; ++i) {
    const float r = std::nearbyint(x[i] * inv) + static_cast<float>(zp);
    q[i] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, r)));
  }
}

// The AVX-512 loops: the same results as the AVX2 ones (min and max are exact; the quantized
// value of an element is the same expression in both), the tail by masked vectors.
#define LT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))

LT_AVX512 void min_max_512(const float* x, int64_t n, float* lo, float* hi, bool* finite) {
  __m512 mn = _mm512_setzero_ps(), mx = mn, bad = mn;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);  // lanes past n: 0, inside the range
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
    bad = _mm512_add_ps(bad, _mm512_mul_ps(v, zero));
  }
  *lo = _mm512_reduce_min_ps(mn);
  *hi = _mm512_reduce_max_ps(mx);
  alignas(64) float c[16];
  _mm512_store_ps(c, bad);
  float s = 0.0f;
  for (int j = 0; j < 16; ++j) s += c[j];
  *finite = std::isfinite(s) && std::isfinite(*lo) && std::isfinite(*hi);
}

LT_AVX512 inline __m512i quantize16(__m512 x, __m512 inv, __m512i zp) {
  const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inv), _mm512_set1_ps(-512.0f)),
                                 _mm512_set1_ps(512.0f));
  const __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
  return _mm512_min_epi32(_mm512_max_epi32(r, _mm512_setzero_si512()), _mm512_set1_epi32(255));
}

LT_AVX512 void quantize_span_512(const float* x, int64_t n, uint8_t* q, float inv, int32_t zp) {
  const __m512 iv = _mm512_set1_ps(inv);
  const __m512i z = _mm512_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m128i a = _mm512_cvtepi32_epi8(quantize16(_mm512_loadu_ps(x + i), iv, z));
    const __m128i b = _mm512_cvtepi32_epi8(quantize16(_mm512_loadu_ps(x + i + 16), iv, z));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_set_m128i(b, a));
  }
  for (; i < n; i += 16) {
    const __mmask16 k =
        n - i >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512i r = quantize16(_mm512_maskz_loadu_ps(k, x + i), iv, z);
    _mm512_mask_cvtepi32_storeu_epi8(q + i, k, r);
  }
}

#undef LT_AVX512

// Inputs this large are split over the pool (parts of whole 64-element blocks, so each element
// is quantized by the same code whatever the thread count).
constexpr int64_t kParallelMin = 32768;
constexpr int64_t kBlock = 64;

int parts_for(int64_t n, int threads) {
  if (n < kParallelMin) return 1;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n / (kParallelMin / 2))));
}

void min_max_par(const float* x, int64_t n, float* lo, float* hi, bool* finite, Isa isa,
                 int threads) {
  const int parts = parts_for(n, threads);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  float los[kMaxThreads], his[kMaxThreads];
  bool fin[kMaxThreads];
  parallel_for(parts, parts, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const auto [b0, b1] = partition(blocks, parts, static_cast<int>(p));
      const int64_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
      if (isa == Isa::AVX512) min_max_512(x + i0, i1 - i0, &los[p], &his[p], &fin[p]);
      else min_max(x + i0, i1 - i0, &los[p], &his[p], &fin[p]);
    }
  });
  *lo = 0.0f;
  *hi = 0.0f;
  *finite = true;
  for (int p = 0; p < parts; ++p) {
    *lo = std::min(*lo, los[p]);
    *hi = std::max(*hi, his[p]);
    *finite = *finite && fin[p];
  }
}

void quantize_par(const float* x, int64_t n, uint8_t* q, float inv, int32_t zp, Isa isa,
                  int threads) {
  const int parts = parts_for(n, threads);
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  parallel_for(blocks, parts, [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * kBlock, i1 = std::min(n, b1 * kBlock);
    if (isa == Isa::AVX512) quantize_span_512(x + i0, i1 - i0, q + i0, inv, zp);
    else quantize_span(x + i0, i1 - i0, q + i0, inv, zp);
  });
}

void check_u8_params(float scale, int32_t zero_point, const char* what) {
  if (!std::isfinite(scale) || !(scale > 0.0f))
    throw std::invalid_argument(std::string(what) + "scale must be finite and positive, got " +
                                std::to_string(scale));
  if (zero_point < 0 || zero_point > 255)
    throw std::invalid_argument(std::string(what) + "zero_point must be in 0..255, got " +
                                std::to_string(zero_point));
}

}  // namespace

void requantize_u8(const float* x, int64_t n, uint8_t* q, float scale, int32_t zero_point,
                   Isa isa, int threads) {
  check_u8_params(scale, zero_point, "out_");
  quantize_par(x, n, q, 1.0f / scale, zero_point, isa, threads);
}

void quantize_u8(const float* x, int64_t n, uint8_t* q, float* scale, int32_t* zero_point,
                 bool have_params, Isa isa, int threads) {
  if (have_params) {
    check_u8_params(*scale, *zero_point, "");
    float lo, hi;
    bool finite;
    min_max_par(x, n, &lo, &hi, &finite, isa, threads);
    if (!finite) throw std::invalid_argument("quantize_u8: x has a non-finite value");
  } else {
    float lo, hi;
    bool finite;
    min_max_par(x, n, &lo, &hi, &finite, isa, threads);
    if (!finite) throw std::invalid_argument("quantize_u8: x has a non-finite value");
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
    const float z = std::nearbyint(-lo / s);
    *scale = s;
    *zero_point = static_cast<int32_t>(std::min(255.0f, std::max(0.0f, z)));
  }
  quantize_par(x, n, q, 1.0f / *scale, *zero_point, isa, threads);
}

namespace {

// m = max(m, |x|) over n floats (m: a scalar, or a vector of n maxima when per_elem);
// false if an element is not finite.
__attribute__((target("avx2,fma"))) bool abs_max(const float* x, int64_t n, float* m,
                                                 bool per_elem) {
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  __m256 acc = _mm256_set1_ps(per_elem ? 0.0f : *m), bad = zero;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_add_ps(bad, _mm256_mul_ps(v, zero));
    const __m256 a = _mm256_andnot_ps(sign, v);
    if (per_elem) _mm256_storeu_ps(m + i, _mm256_max_ps(_mm256_loadu_ps(m + i), a));
    else acc = _mm256_max_ps(acc, a);
  }
  float t[8], b[8];
  _mm256_storeu_ps(t, acc);
  _mm256_storeu_ps(b, bad);
  float sum = 0.0f;
  for (int j = 0; j < 8; ++j) sum += b[j];
  if (!per_elem)
    for (int j = 0; j < 8; ++j) *m = std::max(*m, t[j]);
  for (; i < n; ++i) {
    sum += x[i] * 0.0f;
    float& d = per_elem ? m[i] : *m;
    d = std::max(d, std::fabs(x[i]));
  }
  return std::isfinite(sum);
}

// q[i] = clamp(round_half_even(x[i] * inv), -127, 127), inv a scalar or (per_elem) a vector.
__attribute__((target("avx2,fma"))) void quantize_s8(const float* x, int64_t n,
                                                     const float* inv, bool per_elem,
                                                     int8_t* q) {
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256 is = _mm256_set1_ps(per_elem ? 0.0f : *inv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), per_elem ? _mm256_loadu_ps(inv + i) : is);
    v = _mm256_min_ps(_mm256_max_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT |
                                                           _MM_FROUND_NO_EXC), lo), hi);
    alignas(32) int32_t r[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(r), _mm256_cvtps_epi32(v));
    for (int j = 0; j < 8; ++j) q[i + j] = static_cast<int8_t>(r[j]);
  }
  for (; i < n; ++i)
    q[i] = static_cast<int8_t>(
        std::min(127.0f, std::max(-127.0f, std::nearbyint(x[i] * (per_elem ? inv[i] : *inv)))));
}

}  // namespace

void quantize_per_channel_s8(const float* w, int64_t outer, int64_t channels, int64_t inner,
                             int8_t* q, float* scale) {
  std::fill(scale, scale + channels, 0.0f);
  const bool rows = inner == 1;  // channels last: each row is a vector of channels
  bool finite = true;
  for (int64_t o = 0; o < outer; ++o) {
    if (rows) {
      finite &= abs_max(w + o * channels, channels, scale, true);
      continue;
    }
    for (int64_t c = 0; c < channels; ++c)
      finite &= abs_max(w + (o * channels + c) * inner, inner, scale + c, false);
  }
  if (!finite) throw std::invalid_argument("quantize_per_channel_s8: w has a non-finite value");
  std::vector<float> inv(channels);
  for (int64_t c = 0; c < channels; ++c) {
    scale[c] = scale[c] > 0.0f ? scale[c] / 127.0f : 1.0f;
    inv[c] = 1.0f / scale[c];
  }
  for (int64_t o = 0; o < outer; ++o) {
    if (rows) {
      quantize_s8(w + o * channels, channels, inv.data(), true, q + o * channels);
      continue;
    }
    for (int64_t c = 0; c < channels; ++c)
      quantize_s8(w + (o * channels + c) * inner, inner, &inv[c], false,
                  q + (o * channels + c) * inner);
  }
}

}  // namespace looptune
