// quantize_u8 / quantize_per_channel_s8 (see quantize.h): AVX2 loops (every CPU the engine
// runs on has AVX2).
#include "looptune/quantize.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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

// round half to even (the default MXCSR mode) of x[0..8) * inv, + zp
__attribute__((target("avx2,fma"))) inline __m256i quantize8(const float* x, __m256 inv,
                                                             __m256i zp) {
  return _mm256_add_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x), inv)), zp);
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

}  // namespace

void quantize_u8(const float* x, int64_t n, uint8_t* q, float* scale, int32_t* zero_point,
                 bool have_params) {
  if (have_params) {
    if (!std::isfinite(*scale) || !(*scale > 0.0f))
      throw std::invalid_argument("scale must be finite and positive, got " +
                                  std::to_string(*scale));
    if (*zero_point < 0 || *zero_point > 255)
      throw std::invalid_argument("zero_point must be in 0..255, got " +
                                  std::to_string(*zero_point));
    float lo, hi;
    bool finite;
    min_max(x, n, &lo, &hi, &finite);
    if (!finite) throw std::invalid_argument("quantize_u8: x has a non-finite value");
  } else {
    float lo, hi;
    bool finite;
    min_max(x, n, &lo, &hi, &finite);
    if (!finite) throw std::invalid_argument("quantize_u8: x has a non-finite value");
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f) || !std::isfinite(s)) s = 1.0f;
    const float z = std::nearbyint(-lo / s);
    *scale = s;
    *zero_point = static_cast<int32_t>(std::min(255.0f, std::max(0.0f, z)));
  }
  quantize_span(x, n, q, 1.0f / *scale, *zero_point);
}

void quantize_per_channel_s8(const float* w, int64_t outer, int64_t channels, int64_t inner,
                             int8_t* q, float* scale) {
  std::fill(scale, scale + channels, 0.0f);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c) {
      const float* p = w + (o * channels + c) * inner;
      float m = scale[c];
      for (int64_t i = 0; i < inner; ++i) {
        if (!std::isfinite(p[i]))
          throw std::invalid_argument("quantize_per_channel_s8: w has a non-finite value");
        m = std::max(m, std::fabs(p[i]));
      }
      scale[c] = m;
    }
  for (int64_t c = 0; c < channels; ++c) scale[c] = scale[c] > 0.0f ? scale[c] / 127.0f : 1.0f;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c) {
      const float* p = w + (o * channels + c) * inner;
      int8_t* d = q + (o * channels + c) * inner;
      const float inv = 1.0f / scale[c];
      for (int64_t i = 0; i < inner; ++i)
        d[i] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, std::nearbyint(p[i] * inv))));
    }
}

}  // namespace looptune
