// Copies between tensors in arbitrary element strides (internal): the call-time packing of a
// strided operand the JIT cannot read in place, and the scatter of a strided output.
#pragma once

#include <cstdint>
#include <vector>

namespace looptune::detail {

// Row-major (C-contiguous) element strides of `shape`.
std::vector<int64_t> dense_strides(const std::vector<int64_t>& shape);

// Elements the view of `shape` with `strides` (all >= 0) spans from its first element:
// sum((shape[d] - 1) * strides[d]) + 1 (0 for an empty shape).
int64_t span_elements(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides);

// dst[i] = src[i] for every index i of `shape`, each side at its own element strides (>= 0),
// elements of `elem_bytes` (1 or 4) bytes. Touches exactly the elements of the two views. When
// the unit-stride dims of the two sides differ (a transposing copy), square tiles are
// transposed in registers: 16x16 floats in zmm registers when `wide` (an AVX-512 kernel), else
// 8x8 in ymm (AVX2). Work shared among `threads`.
void copy_strided(const void* src, const std::vector<int64_t>& src_strides, void* dst,
                  const std::vector<int64_t>& dst_strides, const std::vector<int64_t>& shape,
                  int elem_bytes, int threads, bool wide);

// Zeroes every (4-byte) element of the view of `shape` with `strides`, nothing else.
void zero_strided(float* dst, const std::vector<int64_t>& strides,
                  const std::vector<int64_t>& shape, int threads);

// dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols (floats): register tiles of 16x16
// (`wide`, AVX-512) or 8x8 (AVX2), scalar edges.
void transpose_floats(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows,
                      int64_t cols, bool wide);
// The same with the widest tiles this CPU runs.
void transpose_floats(const float* src, int64_t ss, float* dst, int64_t ds, int64_t rows,
                      int64_t cols);

}  // namespace looptune::detail
