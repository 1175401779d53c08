// The verified form a loop tree is lowered to before code generation (internal).
//
// Lowering decides everything the generator needs and checks every limit, so the generator
// never sees unchecked input: which variable is vectorized, which innermost loops form the
// register tile, which reduction loops the tile stays in registers across, and whether the
// output can be written once (no pre-zeroing of C).
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "looptune/cpu.h"
#include "looptune/loop_tree.h"

namespace looptune::detail {

constexpr int kIn0 = 0, kIn1 = 1, kOut = 2;
constexpr int kBias = 3, kRes = 4;  // the fused epilogue's operands (pointer registers r14, r15)
constexpr int64_t kMaxTilePoints = 256;  // unrolled (vector) FMAs in one tile instance
constexpr int64_t kMaxUnrollProduct = 64;

struct LoweredLoop {
  int var = 0;
  int64_t step = 1;
  bool unroll = false;        // honoured unroll annotation (outside the tile)
  bool synthetic = false;     // added by lowering to strip-mine an oversized innermost loop
  bool parallel = false;      // the tree's parallel loop
};

struct Lowered {
  std::vector<LoweredLoop> loops;
  std::vector<int64_t> extents;                 // per var
  std::vector<bool> reduction;                  // per var
  std::vector<std::array<int64_t, 3>> stride;   // per var: element stride in in0, in1, out
  Isa isa = Isa::AVX512;
  int nregs = 32;       // vector registers the generator may use
  int acc_max = 28;     // accumulators a tile may hold
  int lanes = 1;        // 1 = scalar code
  int vec_var = -1;
  // The vector loop is a reduction (stride 0 in the output, 0/1 in the inputs): accumulators
  // hold partial sums per lane and are summed horizontally into the output at the store.
  bool reduce_vec = false;
  int64_t vec_range = 1;  // range of the innermost (vector) loop in full iterations
  int tile_start = 0;   // loops[tile_start..] are unrolled into the register tile
  int hoist_start = 0;  // loops[hoist_start..tile_start) are reduction loops around the tile
  bool zero_init = false;
  // The kernel writes the output in the user's layout although the computation blocks it
  // (stride[v][kOut] are then the user's strides): scalar code and reduction vector loops store
  // single elements anyway; a vector loop over the inner block stores its accumulators through
  // an in-register transpose (out_transposed), so no copy pass converts the output afterwards.
  bool out_user = false;
  bool out_transposed = false;
  // The epilogue is applied to the accumulators right before their store (the output is
  // written once, from registers, in the user's layout, by vector stores, transposed ones
  // included): bias (its element stride per variable: bias_stride), residual (the output's
  // strides), relu / relu6 / GELU (GELU not in a transposed store, and only when 4 scratch
  // registers are free). Otherwise (accumulated outputs, outputs copied from a blocked layout,
  // reduction vector loops, scalar code) the kernel runs without it and a pass applies it
  // afterwards; facts().epilogue_fused tells which.
  bool epi_fused = false, epi_bias = false, epi_add = false;
  int epi_act = 0;  // 0 none, 1 relu, 2 relu6, 3 gelu (not with a transposed store)
  // int8: the accumulators are converted to float and multiplied by scale[channel] first.
  // The epilogue's first operand pointer then holds {scale[Ch], bias[Ch]}: the scale at the
  // bias offset, the bias epi_bias_offset elements further (Ch, the output channels).
  bool epi_scale = false;
  int64_t epi_bias_offset = 0;
  // int8 'requant' (with epi_fused): the store requantizes each vector to uint8 (the output's
  // addressing in bytes) with {1/out_scale, zero point} from the epilogue's third pointer.
  // Only for vector stores in the user's layout (no transposed store, no blocked-output copy).
  bool epi_requant = false;
  std::vector<int64_t> bias_stride;
  int tile_accumulators = 0, tile_points = 0;
  int unroll_ignored = 0;
  // The parallel loop (-1: none). It stays outside the register tile and the hoisted region
  // (it iterates an output variable), is never unrolled, and runs only the iterations
  // [start, end) the generated function is given, of `par_iterations` (its full iterations
  // plus the tail, at full range); in an outer loop's tail, where it has fewer, the range is
  // clipped to them.
  int par = -1;
  int64_t par_iterations = 1;
  // int8 computations: how the generator multiplies (Int8Path::None for float32). Tensor
  // elements are 32-bit either way (an input word: 4 bytes of consecutive reduction values);
  // the exact path needs kExactScratch more scratch registers (fewer accumulators).
  Int8Path int8 = Int8Path::None;
};
constexpr int kExactScratch = 2;

// Visits every point of the register tile made of loops[t..]: `range` holds each variable's
// range when loop t starts; f(off, range) gets each point's per-variable element offsets and
// ranges (the vectorized variable advances by whole vectors, its range is the lanes in use).
template <class F>
void for_each_tile_point(const Lowered& low, int t, std::vector<int64_t> range, F&& f) {
  const int n = static_cast<int>(low.loops.size());
  std::vector<int64_t> off(range.size(), 0);
  auto rec = [&](auto&& self, int j) -> void {
    if (j == n) return f(off, range);
    const LoweredLoop& L = low.loops[j];
    const bool vec = j == n - 1 && low.lanes > 1;
    const int64_t step = vec ? low.lanes : L.step, saved = range[L.var], base = off[L.var];
    for (int64_t x = 0; x < saved; x += step) {
      off[L.var] = base + x;
      range[L.var] = std::min(step, saved - x);
      self(self, j + 1);
    }
    off[L.var] = base;
    range[L.var] = saved;
  };
  rec(rec, t);
}

// Element offset of a point in tensor `t`.
inline int64_t tensor_offset(const Lowered& low, const std::vector<int64_t>& off, int t) {
  int64_t x = 0;
  for (size_t v = 0; v < off.size(); ++v) x += off[v] * low.stride[v][t];
  return x;
}

// Identifies a tile accumulator: the output offset, plus (for a reduction vector loop) which
// vector of the tile's vector loop the point belongs to, so independent partial sums break the
// FMA dependency chain.
inline std::pair<int64_t, int64_t> acc_key(const Lowered& low, const std::vector<int64_t>& off) {
  const int64_t o = tensor_offset(low, off, kOut);
  if (!low.reduce_vec) return {o, 0};
  return {o, (off[low.vec_var] % low.vec_range) / low.lanes};
}

// Throws CompileError if the tree cannot be lowered (never for a valid LoopTree).
// allow_out_user: the output may be written in the user's layout (see Lowered::out_user).
// blocked_out_epilogue: the output is written in its blocked kernel layout into the caller's
// buffer (an out BufferView), so a fused epilogue is allowed there (bias strides from the
// user's layout; full blocks only).
Lowered lower(const LoopTree& tree, Isa isa, bool allow_out_user = true,
              bool blocked_out_epilogue = false);

// Re-expresses per-variable element strides of a row-major buffer of dims `from` in a buffer
// of dims `to` (same rank, each at least as large); throws CompileError if a variable does not
// walk one dimension.
std::vector<int64_t> restride(const std::vector<int64_t>& strides,
                              const std::vector<int64_t>& extents,
                              const std::vector<int64_t>& from, const std::vector<int64_t>& to);

// The same, into a buffer with arbitrary element strides per dim (`to_strides`, e.g. a caller's
// strided numpy view); restride() is the case of row-major strides.
std::vector<int64_t> restride_to_strides(const std::vector<int64_t>& strides,
                                         const std::vector<int64_t>& extents,
                                         const std::vector<int64_t>& from,
                                         const std::vector<int64_t>& to_strides);

// The generator cannot store this tile through the transposed store (too few registers): the
// kernel is lowered again with allow_out_user = false.
struct TransposeUnavailable {};

// The range each var has when loop `i` starts, for full (non-tail) iterations of its parents.
std::vector<int64_t> full_ranges_at(const Lowered& low, int i);

}  // namespace looptune::detail
