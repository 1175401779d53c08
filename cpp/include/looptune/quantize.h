// Fast quantization helpers of int8 inference (the model path calls them per layer call).
#pragma once

#include <cstdint>

#include "looptune/cpu.h"

namespace looptune {

// Asymmetric per-tensor u8 quantization, the way PyTorch's dynamic quantization picks its
// parameters: the range [min(x, 0), max(x, 0)] maps onto 0..255, scale = range / 255 (1 when
// the range is 0), zero_point = clamp(round(-min / scale), 0, 255). `have_params`: use *scale
// and *zero_point as given instead (static quantization, requantizing an output). Then
// q = clamp(round_half_even(x / scale) + zero_point, 0, 255). Throws std::invalid_argument
// on a non-finite x (or a given scale that is not finite and positive, or a zero point outside
// 0..255). AVX2 or AVX-512 loops (`isa`; the same results), split over up to `threads` of the
// engine's pool for large inputs (the results do not depend on the thread count).
void quantize_u8(const float* x, int64_t n, uint8_t* q, float* scale, int32_t* zero_point,
                 bool have_params, Isa isa = Isa::AVX2, int threads = 1);

// quantize_u8 with given parameters (requantizing a kernel's float32 result, the 'requant'
// epilogue): q[i] = clamp(round_half_even(x[i] * (1 / scale)) + zero_point, 0, 255) in float32,
// bit-identical to quantize_u8(have_params) on finite x, without its finiteness scan (+-inf
// saturate to 255 / 0, NaN gives 0). Throws std::invalid_argument for a scale that is not
// finite and positive or a zero point outside 0..255.
void requantize_u8(const float* x, int64_t n, uint8_t* q, float scale, int32_t zero_point,
                   Isa isa = Isa::AVX2, int threads = 1);

// Symmetric per-channel s8 quantization of weights viewed as [outer][channels][inner]:
// scale[c] = max |w| over channel c / 127 (1 for an all-zero channel) and
// q = clamp(round_half_even(w / scale[c]), -127, 127). Throws on a non-finite weight.
void quantize_per_channel_s8(const float* w, int64_t outer, int64_t channels, int64_t inner,
                             int8_t* q, float* scale);

}  // namespace looptune
