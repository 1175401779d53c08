#include "strided.h"

#include <algorithm>
#include <cstring>

// GCC 12 flags the _mm512_undefined_ps() inside the AVX-512 shuffle intrinsics as
// uninitialized (a false positive: every lane is written).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include "looptune/cpu.h"
#include "looptune/thread_pool.h"

namespace looptune::detail {
namespace {

// dst[j][i] = src[i][j] for an 8x8 tile (row strides in elements). Every CPU the JIT runs on
// has AVX2 (Kernel's constructor checks).
__attribute__((target("avx2"))) void transpose8x8(const float* src, int64_t ss, float* dst,
                                                  int64_t ds) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    r[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xEE);
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ds, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// The same for a 16x16 tile in zmm registers: after the in-lane unpack / shuffle stages, r[4g+k]
// holds column 4L+k of rows 4g..4g+3 in its 128-bit lane L; two lane shuffles gather them.
__attribute__((target("avx512f"))) void transpose16x16(const float* src, int64_t ss, float* dst,
                                                       int64_t ds) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ss);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512 u0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44);
    const __m512 u1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
    const __m512 v0 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44);
    const __m512 v1 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
    _mm512_storeu_ps(dst + k * ds, _mm512_shuffle_f32x4(u0, v0, 0x88));
    _mm512_storeu_ps(dst + (4 + k) * ds, _mm512_shuffle_f32x4(u0, v0, 0xDD));
    _mm512_storeu_ps(dst + (8 + k) * ds, _mm512_shuffle_f32x4(u1, v1, 0x88));
    _mm512_storeu_ps(dst + (12 + k) * ds, _mm512_shuffle_f32x4(u1, v1, 0xDD));
  }
}

bool host_avx512() {
  static const bool yes = isa_supported(Isa::AVX512);
  return yes;
}

// The dims of extent > 1 (the others never move an offset), outermost first.
std::vector<int> moving_dims(const std::vector<int64_t>& shape) {
  std::vector<int> dims;
  for (int d = 0; d < static_cast<int>(shape.size()); ++d)
    if (shape[d] > 1) dims.push_back(d);
  return dims;
}

// The last of `dims` with unit stride in `strides`, -1 if none.
int unit_dim(const std::vector<int>& dims, const std::vector<int64_t>& strides) {
  for (auto it = dims.rbegin(); it != dims.rend(); ++it)
    if (strides[*it] == 1) return *it;
  return -1;
}

// Iterates the index space of `shape` less the dims in `skip`: f(index, src offset, dst offset)
// for each combination with flat index in [r0, r1).
struct Outer {
  std::vector<int> dims;
  std::vector<int64_t> extent, s, d;
  int64_t count = 1;
  Outer(const std::vector<int>& moving, const std::vector<int>& skip,
        const std::vector<int64_t>& shape, const std::vector<int64_t>& ss,
        const std::vector<int64_t>& ds) {
    for (int x : moving) {
      if (std::find(skip.begin(), skip.end(), x) != skip.end()) continue;
      dims.push_back(x);
      extent.push_back(shape[x]);
      s.push_back(ss[x]);
      d.push_back(ds[x]);
      count *= shape[x];
    }
  }
  void offsets(int64_t r, int64_t& so, int64_t& dof) const {
    so = 0, dof = 0;
    for (int i = static_cast<int>(dims.size()) - 1; i >= 0; --i) {
      const int64_t x = r % extent[i];
      r /= extent[i];
      so += x * s[i];
      dof += x * d[i];
    }
  }
};

template <class T>
void copy_rows(const T* src, const std::vector<int64_t>& ss, T* dst,
               const std::vector<int64_t>& ds, const std::vector<int64_t>& shape,
               const std::vector<int>& moving, int inner, int threads) {
  const Outer outer(moving, {inner}, shape, ss, ds);
  const int64_t n = shape[inner], si = ss[inner], di = ds[inner];
  parallel_for(outer.count, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t so, dof;
      outer.offsets(r, so, dof);
      const T* s = src + so;
      T* d = dst + dof;
      if (si == 1 && di == 1) {
        std::memcpy(d, s, sizeof(T) * n);
      } else {
        for (int64_t i = 0; i < n; ++i) d[i * di] = s[i * si];
      }
    }
  });
}

// The transposing copy: dim a is unit-stride in src, dim b in dst. Each outer index and chunk of
// b rows is one transpose of a [b][a] tile of src (rows strided by src's b stride).
void copy_transposed(const float* src, const std::vector<int64_t>& ss, float* dst,
                     const std::vector<int64_t>& ds, const std::vector<int64_t>& shape,
                     const std::vector<int>& moving, int a, int b, int threads, bool wide) {
  const Outer outer(moving, {a, b}, shape, ss, ds);
  const int64_t chunk = 64, nb = shape[b], chunks = (nb + chunk - 1) / chunk;
  parallel_for(outer.count * chunks, threads, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      int64_t so, dof;
      outer.offsets(w / chunks, so, dof);
      const int64_t j0 = (w % chunks) * chunk, rows = std::min(chunk, nb - j0);
      transpose_floats(src + so + j0 * ss[b], ss[b], dst + dof + j0, ds[a], rows, shape[a],
                       wide);
    }
  });
}

}  // namespace

std::vector<int64_t> dense_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (int d = static_cast<int>(shape.size()) - 1; d-- > 0;) s[d] = s[d + 1] * shape[d + 1];
  return s;
}

int64_t span_elements(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t n = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return 0;
    n += (shape[d] - 1) * strides[d];
  }
  return n;
}

void transpose_floats(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows,
                      int64_t cols) {
  transpose_floats(src, ss, dst, ds, rows, cols, host_avx512());
}

void transpose_floats(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows,
                      int64_t cols, bool wide) {
  const int tile = wide && host_avx512() ? 16 : 8;
  const int64_t rt = rows / tile * tile, ct = cols / tile * tile;
  // rows innermost: each group of destination rows is written completely before the next,
  // while every source row streams forward
  for (int64_t j = 0; j < ct; j += tile)
    for (int64_t i = 0; i < rt; i += tile) {
      if (tile == 16) transpose16x16(src + i * ss + j, ss, dst + j * ds + i, ds);
      else transpose8x8(src + i * ss + j, ss, dst + j * ds + i, ds);
    }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = (i < rt ? ct : 0); j < cols; ++j) dst[j * ds + i] = src[i * ss + j];
}

void copy_strided(const void* src, const std::vector<int64_t>& src_strides, void* dst,
                  const std::vector<int64_t>& dst_strides, const std::vector<int64_t>& shape,
                  int elem_bytes, int threads, bool wide) {
  for (int64_t e : shape)
    if (e == 0) return;
  const std::vector<int> moving = moving_dims(shape);
  if (moving.empty()) {
    std::memcpy(dst, src, elem_bytes);
    return;
  }
  const int a = unit_dim(moving, src_strides), b = unit_dim(moving, dst_strides);
  if (elem_bytes == 4 && a >= 0 && b >= 0 && a != b && shape[a] >= 8 && shape[b] >= 8)
    return copy_transposed(static_cast<const float*>(src), src_strides, static_cast<float*>(dst),
                           dst_strides, shape, moving, a, b, threads, wide);
  const int inner = b >= 0 ? b : a >= 0 ? a : moving.back();
  if (elem_bytes == 4)
    return copy_rows(static_cast<const float*>(src), src_strides, static_cast<float*>(dst),
                     dst_strides, shape, moving, inner, threads);
  copy_rows(static_cast<const uint8_t*>(src), src_strides, static_cast<uint8_t*>(dst),
            dst_strides, shape, moving, inner, threads);
}

void zero_strided(float* dst, const std::vector<int64_t>& strides,
                  const std::vector<int64_t>& shape, int threads) {
  for (int64_t e : shape)
    if (e == 0) return;
  const std::vector<int> moving = moving_dims(shape);
  if (moving.empty()) {
    *dst = 0.0f;
    return;
  }
  const int u = unit_dim(moving, strides), inner = u >= 0 ? u : moving.back();
  const Outer outer(moving, {inner}, shape, strides, strides);
  const int64_t n = shape[inner], si = strides[inner];
  parallel_for(outer.count, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t o, unused;
      outer.offsets(r, o, unused);
      if (si == 1) std::memset(dst + o, 0, sizeof(float) * n);
      else
        for (int64_t i = 0; i < n; ++i) dst[o + i * si] = 0.0f;
    }
  });
}

}  // namespace looptune::detail
