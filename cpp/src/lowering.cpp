#include "lowering.h"

#include <algorithm>

#include "looptune/errors.h"

namespace looptune::detail {
namespace {

bool unit_or_zero(int64_t x) { return x == 0 || x == 1; }

bool vectorizable(const Lowered& low, const Loop& innermost) {
  if (!innermost.vectorize) return false;
  const auto& s = low.stride[innermost.var];
  return s[kOut] == 1 && unit_or_zero(s[kIn0]) && unit_or_zero(s[kIn1]);
}

// A reduction loop that walks at least one input with stride 1 (and the other with 0 or 1) may
// be the vector loop: lanes hold partial sums, summed horizontally when the output is stored.
// Masked lanes of a partial vector load zeros from the stride-1 input, so they add nothing.
bool reduction_vectorizable(const Lowered& low, const Loop& innermost) {
  if (!innermost.vectorize || !low.reduction[innermost.var]) return false;
  const auto& s = low.stride[innermost.var];
  return s[kOut] == 0 && unit_or_zero(s[kIn0]) && unit_or_zero(s[kIn1]) &&
         (s[kIn0] == 1 || s[kIn1] == 1);
}

struct TileShape {
  int64_t points = 0, accumulators = 0, max_offset = 0;
};

// Counts the points (vector FMAs) and distinct accumulators of a tile made of loops[t..],
// at full ranges. Returns points > kMaxTilePoints early when the tile is clearly too big.
TileShape measure_tile(const Lowered& low, int t) {
  std::vector<int64_t> range = full_ranges_at(low, t);
  int64_t bound = 1;
  for (size_t j = t; j < low.loops.size(); ++j) {
    const auto& L = low.loops[j];
    int64_t r = range[L.var];
    int64_t n = r / L.step + (r % L.step ? 1 : 0);
    if (j + 1 == low.loops.size() && low.lanes > 1) n = (r + low.lanes - 1) / low.lanes;
    bound *= n;
    range[L.var] = L.step;
    if (bound > kMaxTilePoints) return {bound, bound, 0};
  }
  // Exact enumeration (bounded by kMaxTilePoints).
  std::vector<std::pair<int64_t, int64_t>> outs;
  outs.reserve(static_cast<size_t>(bound));
  TileShape shape;
  for_each_tile_point(low, t, full_ranges_at(low, t),
                      [&](const std::vector<int64_t>& off, const std::vector<int64_t>&) {
                        ++shape.points;
                        outs.push_back(acc_key(low, off));
                        for (int tsr = 0; tsr < 3; ++tsr)
                          shape.max_offset = std::max(shape.max_offset, tensor_offset(low, off, tsr));
                      });
  std::sort(outs.begin(), outs.end());
  shape.accumulators = std::unique(outs.begin(), outs.end()) - outs.begin();
  return shape;
}

bool fits(const Lowered& low, const TileShape& s) {
  return s.points <= kMaxTilePoints && s.accumulators <= low.acc_max &&
         s.max_offset * 4 < (int64_t(1) << 30);
}

// Splits an innermost loop that is too large to be a tile on its own into a runtime loop
// over register-sized chunks and the chunk itself. When the chunk indexes the output, the
// chunk loop is moved above the reduction loops right over it (a legal reordering: each output
// element still sums its products in the same order), so the chunk's accumulators stay in
// registers across the reduction instead of being reloaded for every reduction step.
void strip_mine_innermost(Lowered& low) {
  const int last = static_cast<int>(low.loops.size()) - 1;
  const LoweredLoop inner = low.loops[last];
  const int64_t range = full_ranges_at(low, last)[inner.var];
  const bool output_var = !low.reduction[inner.var];
  const int64_t chunk = output_var     ? int64_t(low.lanes) * std::min(8, low.acc_max)
                       : low.reduce_vec ? int64_t(low.lanes) * 4
                                        : 64;
  if (chunk >= range) return;
  LoweredLoop outer = inner;
  outer.step = chunk;
  outer.unroll = false;
  outer.synthetic = true;
  int at = last;
  while (output_var && at > 0 && low.reduction[low.loops[at - 1].var] &&
         low.loops[at - 1].var != inner.var)
    --at;
  low.loops.insert(low.loops.begin() + at, outer);
}

void honour_unroll_annotations(Lowered& low) {
  int64_t product = 1;
  for (int i = low.tile_start - 1; i >= 0; --i) {
    auto& L = low.loops[i];
    if (!L.unroll) continue;
    const int64_t size = full_ranges_at(low, i)[L.var] / L.step;
    if (product * size <= kMaxUnrollProduct) {
      product *= size;
    } else {
      L.unroll = false;
      ++low.unroll_ignored;
    }
  }
}

// The strides (per variable) of a blocked output in the user's layout, when every block is full
// (the user's buffer then holds exactly the kernel's elements); empty if not applicable. Viewing
// the user's tensor as [A][D][B] and the kernel's as [A][D/L][B][L], each variable walks one of
// the four kernel dimensions, whose user strides are D*B, L*B, 1 and B.
std::vector<int64_t> user_out_strides(const TensorAccess& o, const std::vector<int64_t>& extents) {
  const Blocking& b = o.blocking;
  if (!b.active() || b.outer_pos != b.dim || b.size % b.factor != 0) return {};
  int64_t A = 1, B = 1;
  for (int d = 0; d < static_cast<int>(o.shape.size()); ++d) {
    if (d < b.dim) A *= o.shape[d];
    if (d > b.dim) B *= o.shape[d];
  }
  const int64_t L = b.factor, blocks = b.size / L;
  const int64_t kdim[4] = {blocks * B * L, B * L, L, 1}, udim[4] = {b.size * B, L * B, 1, B};
  const int64_t size[4] = {A, blocks, B, L};
  std::vector<int64_t> out;
  for (size_t v = 0; v < o.strides.size(); ++v) {
    const int64_t s = o.strides[v];
    int d = 0;
    while (d < 4 && (s == 0 || s % kdim[d] != 0)) ++d;
    if (s == 0) { out.push_back(0); continue; }
    // the variable must stay inside its kernel dimension
    if (d == 4 || (s / kdim[d]) * (extents[v] - 1) >= size[d]) return {};
    out.push_back(s / kdim[d] * udim[d]);
  }
  return out;
}

// Decides Lowered::out_user and switches the output strides to the user's layout.
void choose_output_layout(Lowered& low, const Computation& c) {
  if (!c.out.padded()) return;
  const std::vector<int64_t> user = user_out_strides(c.out, low.extents);
  if (user.empty()) return;
  const bool vector_store = low.lanes > 1 && !low.reduce_vec;
  const bool transposed = vector_store && user[low.vec_var] != 1;
  // a transposed store writes each output once: the accumulators are never reloaded
  if (transposed && !low.zero_init) return;
  // every lane of every tile point stays within a 32-bit displacement
  int64_t reach = 0;
  for (size_t v = 0; v < user.size(); ++v) reach += user[v] * (low.extents[v] - 1);
  if (reach * 4 >= (int64_t(1) << 30)) return;
  low.out_user = true;
  low.out_transposed = transposed;
  for (size_t v = 0; v < user.size(); ++v) low.stride[v][kOut] = user[v];
}

// Decides Lowered::epi_fused and the bias strides (see there).
void choose_epilogue_fusion(Lowered& low, const Computation& c, bool blocked_out) {
  const Epilogue& e = c.epilogue;
  std::vector<int64_t> user;  // the user-layout strides of a blocked output stored blocked
  if (blocked_out && c.out.padded() && !low.out_user) {
    user = user_out_strides(c.out, low.extents);
    if (user.empty()) return;
  }
  if (e.empty() || low.lanes == 1 || low.reduce_vec || !low.zero_init ||
      (c.out.padded() && !low.out_user && user.empty()) ||
      (e.act == "gelu" && low.out_transposed))
    return;
  // the output (user layout) viewed as [A][Ch][B]: a variable's bias stride is its stride's
  // component along Ch
  const int bd = c.bias_dim();
  int64_t B = 1;
  for (int d = bd + 1; d < static_cast<int>(c.out.shape.size()); ++d) B *= c.out.shape[d];
  const int64_t ch = c.out.shape[bd];
  std::vector<int64_t> bs(low.extents.size(), 0);
  for (size_t v = 0; v < bs.size(); ++v) {
    const int64_t s = user.empty() ? low.stride[v][kOut] : user[v];
    if (s != 0 && s % B == 0) bs[v] = (s / B) % ch;
  }
  // the vector loop walks the bias by 0 or 1 (a transposed store: 1, the channel block)
  if (bs[low.vec_var] > 1 || (low.out_transposed && bs[low.vec_var] != 1)) return;
  low.epi_fused = true;
  low.epi_bias = e.bias;
  low.epi_add = e.add;
  low.epi_act = e.act == "relu" ? 1 : e.act == "relu6" ? 2 : e.act == "gelu" ? 3 : 0;
  low.bias_stride = bs;
  low.epi_scale = e.scale;
  low.epi_bias_offset = e.scale ? ch : 0;
  low.epi_requant = e.requant && !low.out_transposed && (!c.out.padded() || low.out_user);
}

}  // namespace

std::vector<int64_t> full_ranges_at(const Lowered& low, int i) {
  std::vector<int64_t> range = low.extents;
  for (int j = 0; j < i; ++j) range[low.loops[j].var] = low.loops[j].step;
  return range;
}

std::vector<int64_t> restride(const std::vector<int64_t>& strides,
                              const std::vector<int64_t>& extents,
                              const std::vector<int64_t>& from, const std::vector<int64_t>& to) {
  std::vector<int64_t> ts(to.size(), 1);
  for (int d = static_cast<int>(to.size()) - 1; d-- > 0;) ts[d] = ts[d + 1] * to[d + 1];
  return restride_to_strides(strides, extents, from, ts);
}

std::vector<int64_t> restride_to_strides(const std::vector<int64_t>& strides,
                                         const std::vector<int64_t>& extents,
                                         const std::vector<int64_t>& from,
                                         const std::vector<int64_t>& to_strides) {
  const int nd = static_cast<int>(from.size());
  std::vector<int64_t> fs(nd, 1);
  for (int d = nd - 1; d-- > 0;) fs[d] = fs[d + 1] * from[d + 1];
  std::vector<int64_t> out(strides.size(), 0);
  for (size_t v = 0; v < strides.size(); ++v) {
    const int64_t s = strides[v];
    if (s == 0 || extents[v] == 1) {  // (a single iteration never moves: kept as it is)
      out[v] = s;
      continue;
    }
    int d = 0;  // the outermost dim whose stride divides s with the walk inside it
    while (d < nd && (s % fs[d] != 0 || (s / fs[d]) * (extents[v] - 1) >= from[d])) ++d;
    if (d == nd) throw CompileError("a buffer view needs every variable to walk one dimension");
    out[v] = s / fs[d] * to_strides[d];
  }
  return out;
}

Lowered lower(const LoopTree& tree, Isa isa, bool allow_out_user, bool blocked_out_epilogue) {
  const Computation& c = tree.computation();
  Lowered low;
  low.isa = isa;
  for (const auto& v : c.vars) {
    low.extents.push_back(v.extent);
    low.reduction.push_back(v.reduction);
  }
  for (size_t v = 0; v < c.vars.size(); ++v)
    low.stride.push_back({c.in0.strides[v], c.in1.strides[v], c.out.strides[v]});
  for (const auto& L : tree.loops()) low.loops.push_back({L.var, L.step, L.unroll, false, L.parallel});
  if (low.loops.empty()) throw CompileError("cannot compile an empty loop tree");

  const bool plain_vec = vectorizable(low, tree.loops().back());
  low.reduce_vec = !plain_vec && reduction_vectorizable(low, tree.loops().back());
  const bool vec = plain_vec || low.reduce_vec;
  low.lanes = vec ? isa_lanes(isa) : 1;
  low.vec_var = vec ? tree.loops().back().var : -1;
  // scalar code keeps to the 16 registers every ISA encodes (VEX); vector code has the ISA's
  low.nregs = vec ? isa_facts(isa).vector_registers : 16;
  low.acc_max = low.nregs - kScratchRegisters;
  if (c.is_int8()) {
    low.int8 = int8_path(isa, true);
    if (low.int8 == Int8Path::Exact) low.acc_max -= kExactScratch;
  }

  int n = static_cast<int>(low.loops.size());
  low.vec_range = full_ranges_at(low, n - 1)[low.loops.back().var];
  if (!fits(low, measure_tile(low, n - 1))) {
    strip_mine_innermost(low);
    n = static_cast<int>(low.loops.size());
    low.vec_range = full_ranges_at(low, n - 1)[low.loops.back().var];
    if (!fits(low, measure_tile(low, n - 1)))
      throw CompileError("innermost loop cannot be register-tiled (offsets too large)");
  }
  for (int i = 0; i < n; ++i)  // strip-mining inserts below the parallel loop, never above
    if (low.loops[i].parallel) low.par = i;
  if (low.par >= n - 1) throw CompileError("the parallel loop cannot be the innermost loop");
  low.tile_start = n - 1;
  TileShape shape = measure_tile(low, n - 1);
  while (low.tile_start > low.par + 1) {
    const TileShape wider = measure_tile(low, low.tile_start - 1);
    if (!fits(low, wider)) break;
    shape = wider;
    --low.tile_start;
  }
  low.tile_points = static_cast<int>(shape.points);
  low.tile_accumulators = static_cast<int>(shape.accumulators);

  low.hoist_start = low.tile_start;
  while (low.hoist_start > 0 && low.reduction[low.loops[low.hoist_start - 1].var])
    --low.hoist_start;
  low.zero_init = true;
  for (int i = 0; i < low.hoist_start; ++i)
    if (low.reduction[low.loops[i].var]) low.zero_init = false;
  for (int i = low.tile_start; i < n; ++i) low.loops[i].unroll = false;
  if (low.par >= 0) {
    const LoweredLoop& P = low.loops[low.par];
    const int64_t r = full_ranges_at(low, low.par)[P.var];
    low.par_iterations = r / P.step + (r % P.step ? 1 : 0);
    if (P.unroll) ++low.unroll_ignored;
    low.loops[low.par].unroll = false;
    if (low.reduction[P.var] || low.par >= low.hoist_start)
      throw CompileError("the parallel loop must iterate an output variable");
  }
  honour_unroll_annotations(low);
  if (allow_out_user) choose_output_layout(low, c);
  choose_epilogue_fusion(low, c, blocked_out_epilogue);
  return low;
}

}  // namespace looptune::detail
