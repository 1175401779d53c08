// The verified form a loop tree is lowered to before code generation (internal).
//
// Lowering decides everything the generator needs and checks every limit, so the generator
// never sees unchecked input: which variable is vectorized, which innermost loops form the
// register tile, which reduction loops the tile stays in registers across, and whether the
// output can be written once (no pre-zeroing of C).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "looptune/cpu.h"
#include "looptune/loop_tree.h"

namespace looptune::detail {

constexpr int kIn0 = 0, kIn1 = 1, kOut = 2;
constexpr int64_t kMaxTilePoints = 256;  // unrolled (vector) FMAs in one tile instance
constexpr int64_t kMaxUnrollProduct = 64;

struct LoweredLoop {
  int var = 0;
  int64_t step = 1;
  bool unroll = false;        // honoured unroll annotation (outside the tile)
  bool synthetic = false;     // added by lowering to strip-mine an oversized innermost loop
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
  int tile_start = 0;   // loops[tile_start..] are unrolled into the register tile
  int hoist_start = 0;  // loops[hoist_start..tile_start) are reduction loops around the tile
  bool zero_init = false;
  int tile_accumulators = 0, tile_points = 0;
  int unroll_ignored = 0;
};

// Throws CompileError if the tree cannot be lowered (never for a valid LoopTree).
Lowered lower(const LoopTree& tree, Isa isa);

// The range each var has when loop `i` starts, for full (non-tail) iterations of its parents.
std::vector<int64_t> full_ranges_at(const Lowered& low, int i);

}  // namespace looptune::detail
