#include "looptune/kernel.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#include <immintrin.h>
#include <xbyak/xbyak.h>

#include "jit_x86.h"
#include "looptune/errors.h"
#include "looptune/quantize.h"
#include "looptune/safety.h"
#include "looptune/thread_pool.h"
#include "lowering.h"
#include "strided.h"

namespace looptune {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct AlignedFloats {
  explicit AlignedFloats(int64_t n) : n(n) {
    p = static_cast<float*>(std::aligned_alloc(64, ((n * 4 + 63) / 64) * 64));
    if (!p) throw std::bad_alloc();
  }
  ~AlignedFloats() { std::free(p); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* p;
  int64_t n;
};

// Copies a dense tensor of `shape` into a zeroed buffer of `alloc` shape at offset `pad`, its
// rows (the last dimension) shared among `threads`.
void copy_padded(const float* src, float* dst, const TensorAccess& t, int threads) {
  const int nd = static_cast<int>(t.shape.size());
  std::vector<int64_t> dst_stride(nd, 1), src_stride(nd, 1);
  int64_t rows = 1, base = 0;
  for (int d = nd - 1; d-- > 0;) {
    dst_stride[d] = dst_stride[d + 1] * t.alloc_shape[d + 1];
    src_stride[d] = src_stride[d + 1] * t.shape[d + 1];
  }
  for (int d = 0; d < nd; ++d) base += t.pad[d] * dst_stride[d];
  for (int d = 0; d + 1 < nd; ++d) rows *= t.shape[d];
  const size_t row_bytes = sizeof(float) * t.shape[nd - 1];
  parallel_for(rows, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t s = 0, o = base, rest = r;
      for (int d = nd - 2; d >= 0; --d) {
        const int64_t i = rest % t.shape[d];
        rest /= t.shape[d];
        s += i * src_stride[d];
        o += i * dst_stride[d];
      }
      std::memcpy(dst + o, src + s, row_bytes);
    }
  });
}

// Copies between the user's dense layout and a blocked kernel layout (see Blocking): the user's
// tensor is viewed as [A][size][B], the kernel's as [A][blocks][B][factor] or
// [blocks][A][B][factor]. The zero padding of the last block is never written. The blocks are
// shared among `threads`.
void blocked_copy(const float* user, float* kern, const TensorAccess& t, bool to_kernel,
                  int threads) {
  const Blocking& b = t.blocking;
  int64_t A = 1, B = 1;
  for (int d = 0; d < static_cast<int>(t.shape.size()); ++d) {
    if (d < b.dim) A *= t.shape[d];
    if (d > b.dim) B *= t.shape[d];
  }
  const int64_t D = b.size, L = b.factor, blocks = (D + L - 1) / L;
  auto base = [&](int64_t a, int64_t bo) {
    return (b.outer_pos == 0 ? bo * A + a : a * blocks + bo) * B * L;
  };
  parallel_for(A * blocks, threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t a = i / blocks, bo = i % blocks;
      float* k = kern + base(a, bo);
      if (B == 1) {  // the blocked dim is the last one: runs of L contiguous elements
        const size_t bytes = sizeof(float) * std::min(L, D - bo * L);
        const float* u = user + a * D + bo * L;
        if (to_kernel) std::memcpy(k, u, bytes);
        else std::memcpy(const_cast<float*>(u), k, bytes);
        continue;
      }
      // one block: [B][L] <-> L user rows of B
      const int64_t width = std::min(L, D - bo * L);
      float* u = const_cast<float*>(user) + (a * D + bo * L) * B;
      if (to_kernel) detail::transpose_floats(u, B, k, L, width, B);
      else detail::transpose_floats(k, L, u, B, B, width);
    }
  });
}

// A blocked input with conv padding (depthwise conv2d: NCHW -> [N][C/L][H+2p][W+2p][L]): each
// row of L channels x W columns is transposed into place. Padding is never written.
void blocked_padded_copy(const float* src, float* dst, const TensorAccess& t, int threads) {
  const int64_t N = t.shape[0], C = t.shape[1], H = t.shape[2], W = t.shape[3];
  const int64_t L = t.blocking.factor, CB = (C + L - 1) / L;
  const int64_t hp = t.alloc_shape[2], wp = t.alloc_shape[3], ph = t.pad[2], pw = t.pad[3];
  parallel_for(N * CB, threads, [&](int64_t i0, int64_t i1) {  // blocks shared by threads
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / CB, cb = i % CB, rows = std::min(L, C - cb * L);
      for (int64_t h = 0; h < H; ++h)
        detail::transpose_floats(src + ((n * C + cb * L) * H + h) * W, H * W,
                  dst + (((n * CB + cb) * hp + h + ph) * wp + pw) * L, L, rows, W);
    }
  });
}

// dst word i = bytes {r0[i], r1[i], r2[i], r3[i]} for i < n (a null row gives zeros).
void interleave4(const uint8_t* const r[4], uint8_t* dst, int64_t n) {
  static const uint8_t zeros[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i v[4];
    for (int j = 0; j < 4; ++j)
      v[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r[j] ? r[j] + i : zeros));
    const __m128i ab_lo = _mm_unpacklo_epi8(v[0], v[1]), ab_hi = _mm_unpackhi_epi8(v[0], v[1]);
    const __m128i cd_lo = _mm_unpacklo_epi8(v[2], v[3]), cd_hi = _mm_unpackhi_epi8(v[2], v[3]);
    __m128i* o = reinterpret_cast<__m128i*>(dst + 4 * i);
    _mm_storeu_si128(o, _mm_unpacklo_epi16(ab_lo, cd_lo));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(ab_lo, cd_lo));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(ab_hi, cd_hi));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(ab_hi, cd_hi));
  }
  for (; i < n; ++i)
    for (int j = 0; j < 4; ++j) dst[4 * i + j] = r[j] ? r[j][i] : 0;
}

// byte_copy's fast case: the grouped dim gd (< nd - 1) puts up to 4 consecutive indices in
// the bytes of one word and the last dim walks whole words (NCHW -> [N][C/4][H][W][4]
// activations, [K][N] -> [K/4][N][4] weights): each word row is interleaved from up to 4
// source rows (missing ones: zeros, which are padding). False if the map is not of this form.
bool byte_copy_interleaved(const uint8_t* src, uint8_t* dst, const TensorAccess& t,
                           int threads) {
  const int nd = static_cast<int>(t.shape.size());
  const auto& map = t.byte_map;
  const int64_t W = t.shape[nd - 1];
  for (int64_t i = 1; i < W; ++i)
    if (map[nd - 1][i] != map[nd - 1][0] + 4 * i) return false;
  int gd = -1;
  for (int d = 0; d + 1 < nd && gd < 0; ++d)
    for (int64_t i = 1; i < t.shape[d] && gd < 0; ++i)
      if (map[d][i] == map[d][i - 1] + 1) gd = d;
  if (gd < 0) return false;
  std::vector<int64_t> leads, counts;  // first index of each word along gd, and its values
  for (int64_t i = 0; i < t.shape[gd];) {
    int64_t j = 1;
    while (j < 4 && i + j < t.shape[gd] && map[gd][i + j] == map[gd][i] + j) ++j;
    if (map[gd][i] % 4 != 0) return false;
    leads.push_back(i);
    counts.push_back(j);
    i += j;
  }
  int64_t A = 1, Bm = 1;
  for (int d = 0; d < gd; ++d) A *= t.shape[d];
  for (int d = gd + 1; d + 1 < nd; ++d) Bm *= t.shape[d];
  const int64_t G = t.shape[gd], L = static_cast<int64_t>(leads.size());
  parallel_for(A * L * Bm, threads, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w % Bm, l = (w / Bm) % L, a = w / (Bm * L);
      int64_t base = map[gd][leads[l]] + map[nd - 1][0], rest = a;
      for (int d = gd - 1; d >= 0; --d) {
        base += map[d][rest % t.shape[d]];
        rest /= t.shape[d];
      }
      rest = b;
      for (int d = nd - 2; d > gd; --d) {
        base += map[d][rest % t.shape[d]];
        rest /= t.shape[d];
      }
      const uint8_t* rows[4] = {nullptr, nullptr, nullptr, nullptr};
      for (int64_t j = 0; j < counts[l]; ++j)
        rows[j] = src + ((a * G + leads[l] + j) * Bm + b) * W;
      interleave4(rows, dst + base, W);
    }
  });
  return true;
}

// An int8 input's bytes into the kernel's buffer (TensorAccess::byte_map), rows of the last
// user dim shared among `threads`. Padding bytes are never written (but the interleaved copy
// writes zeros into padding bytes of the words it fills).
void byte_copy(const uint8_t* src, uint8_t* dst, const TensorAccess& t, int threads) {
  const int nd = static_cast<int>(t.shape.size());
  const auto& map = t.byte_map;
  const int64_t W = t.shape[nd - 1], rows = t.numel() / W;
  const std::vector<int64_t>& last = map[nd - 1];
  if (nd >= 2 && W >= 4 && byte_copy_interleaved(src, dst, t, threads)) return;
  bool contiguous = true;
  for (int64_t i = 0; i < W && contiguous; ++i) contiguous = last[i] == last[0] + i;
  parallel_for(rows, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t base = 0, rest = r;
      for (int d = nd - 2; d >= 0; --d) {
        base += map[d][rest % t.shape[d]];
        rest /= t.shape[d];
      }
      const uint8_t* s = src + r * W;
      uint8_t* o = dst + base;
      if (contiguous) {
        std::memcpy(o + last[0], s, W);
      } else {
        for (int64_t i = 0; i < W; ++i) o[last[i]] = s[i];
      }
    }
  });
}

// The user's input in the kernel's buffer layout (conv padding, longer rows or blocking).
void to_kernel_layout(const float* src, float* dst, const TensorAccess& t, int threads) {
  if (!t.byte_map.empty())
    return byte_copy(reinterpret_cast<const uint8_t*>(src), reinterpret_cast<uint8_t*>(dst), t,
                     threads);
  // (an input blocked in dim 1 of NCHW: only the depthwise conv's; outputs never come here)
  if (t.blocking.active() && t.blocking.dim == 1 && t.shape.size() == 4 &&
      t.alloc_shape.size() == 5)
    blocked_padded_copy(src, dst, t, threads);
  else if (t.blocking.active()) blocked_copy(src, dst, t, true, threads);
  else copy_padded(src, dst, t, threads);
}

// Fills the facts lowering decided and generates the code (the generator adds its counts).
detail::JitCode generate_code(const detail::Lowered& low, Isa isa, CompileFacts& facts) {
  facts = CompileFacts{};
  facts.isa = isa_name(isa);
  if (low.int8 != Int8Path::None) facts.int8_path = int8_path_name(low.int8);
  facts.lanes = low.lanes;
  facts.vectorized = low.lanes > 1;
  facts.reduction_vectorized = low.reduce_vec;
  facts.out_transposed = low.out_transposed;
  facts.epilogue_fused = low.epi_fused;
  facts.tile_loops = static_cast<int>(low.loops.size()) - low.tile_start;
  facts.tile_accumulators = low.tile_accumulators;
  facts.accumulators_hoisted = low.hoist_start < low.tile_start;
  facts.hoisted_loops = low.tile_start - low.hoist_start;
  facts.zero_init = low.zero_init;
  if (low.lanes > 1) {
    const int64_t r = detail::full_ranges_at(low, static_cast<int>(low.loops.size()) - 1)[low.vec_var];
    facts.tile_vectors = static_cast<int>((r + low.lanes - 1) / low.lanes);
  } else {
    facts.tile_vectors = 1;
  }
  facts.tile_rows = std::max(1, low.tile_accumulators / std::max(1, facts.tile_vectors));
  facts.parallel_loop = low.par;  // (lowering inserts loops below it only)
  facts.parallel_iterations = low.par < 0 ? 0 : low.par_iterations;
  return detail::generate(low, facts);
}


bool debug_enabled() {
  const char* v = std::getenv("LOOPTUNE_DEBUG");
  return v && *v && std::string(v) != "0";
}

}  // namespace

struct Kernel::Code {
  detail::Lowered low;
  detail::JitCode jit;
};

// A kernel-layout copy of in1 (zero padding included), or nullptr data for a dense in1 that
// the kernel reads as it is.
struct Kernel::Packed {
  std::unique_ptr<AlignedFloats> buf;
};

std::unique_ptr<Kernel::Packed> Kernel::pack_in1(const float* in1) const {
  if (views_.strided(1))
    throw std::invalid_argument("this kernel reads b at the strides it was compiled with; "
                                "compile it without strides['in1'] to keep a constant b");
  const TensorAccess& t = tree_.computation().in1;
  auto p = std::make_unique<Packed>();
  const int64_t n = t.alloc_numel();
  p->buf = std::make_unique<AlignedFloats>(n);
  if (relaid_[1]) {
    std::memset(p->buf->p, 0, sizeof(float) * n);
    to_kernel_layout(in1, p->buf->p, t, threads_used());
  } else {
    std::memcpy(p->buf->p, in1, sizeof(float) * n);  // (int8: alloc words == user bytes)
  }
  return p;
}

void Kernel::set_constant_in1(const float* in1) { constant_ = pack_in1(in1); }

Kernel::Kernel(const LoopTree& tree, Isa isa) : Kernel(tree, isa, KernelViews{}) {}

namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Checks that `v` holds a buffer of dims `inner` at its offset; returns that offset in elements.
int64_t view_base(const BufferView& v, const std::vector<int64_t>& inner, const char* what) {
  if (v.shape.size() != inner.size() || v.offset.size() != inner.size())
    throw CompileError(std::string(what) + " view: needs shape and offset of rank " +
                       std::to_string(inner.size()));
  int64_t base = 0, stride = 1;
  for (int d = static_cast<int>(inner.size()) - 1; d >= 0; --d) {
    if (v.offset[d] < 0 || v.offset[d] + inner[d] > v.shape[d] || v.shape[d] > kMaxExtent)
      throw CompileError(std::string(what) + " view: dim " + std::to_string(d) + " of " +
                         std::to_string(v.shape[d]) + " cannot hold " + std::to_string(inner[d]) +
                         " elements at offset " + std::to_string(v.offset[d]));
    base += v.offset[d] * stride;
    stride *= v.shape[d];
  }
  if (stride > kMaxTensorElements) throw CompileError(std::string(what) + " view is too large");
  return base;
}

const char* const kTensorKeys[3] = {"in0", "in1", "out"};

const TensorAccess& tensor_of(const Computation& c, int t) {
  return t == 0 ? c.in0 : t == 1 ? c.in1 : c.out;
}

// std::invalid_argument unless every given stride list has the tensor's rank and positive
// entries (and names no tensor that also has a BufferView).
void check_strides(const KernelViews& views, const Computation& c) {
  for (int t = 0; t < 3; ++t) {
    if (!views.strided(t)) continue;
    const std::string what = std::string("strides['") + kTensorKeys[t] + "']";
    const auto& s = views.strides[t];
    const auto& shape = tensor_of(c, t).shape;
    if (s.size() != shape.size())
      throw std::invalid_argument(what + " needs " + std::to_string(shape.size()) +
                                  " strides (one per dim of tensor " + tensor_of(c, t).name +
                                  "), got " + std::to_string(s.size()));
    for (size_t d = 0; d < s.size(); ++d)  // (a dim of extent 1 never moves: 0 is fine there)
      if (s[d] < (shape[d] > 1 ? 1 : 0) || s[d] > kMaxTensorElements)
        throw std::invalid_argument(what + ": dim " + std::to_string(d) + " has stride " +
                                    std::to_string(s[d]) +
                                    "; strides must be positive element counts (zero, negative "
                                    "and overflowing strides are refused)");
    if (t == 2) {  // each output element its own memory: dims nest, each past the last
      std::vector<int> order;
      for (int d = 0; d < static_cast<int>(s.size()); ++d)
        if (shape[d] > 1) order.push_back(d);
      std::sort(order.begin(), order.end(), [&](int x, int y) { return s[x] < s[y]; });
      int64_t reach = 1;
      for (int d : order) {
        if (s[d] < reach)
          throw std::invalid_argument(what + " would let output elements share memory (dim " +
                                      std::to_string(d) + " has stride " +
                                      std::to_string(s[d]) + " inside the " +
                                      std::to_string(reach) + " elements of the dims below)");
        reach = s[d] * shape[d];
      }
    }
    if ((t == 0 && views.in0.active()) || (t == 2 && views.out.active()))
      throw std::invalid_argument(what + " and a buffer view of the same tensor cannot be "
                                  "combined");
  }
}

// A tensor whose kernel buffer is its user layout (possibly with longer rows against cache
// aliasing, which only changes the row strides): the generated code may address it at the
// caller's strides. Conv padding, blocking and int8 word layouts need a copy.
bool addressable_in_place(const TensorAccess& t, bool output) {
  if (!t.byte_map.empty() || t.blocking.active()) return false;
  if (output) return !t.padded();
  for (int64_t p : t.pad)
    if (p != 0) return false;
  if (t.alloc_shape.size() != t.shape.size()) return false;
  for (size_t d = 0; d + 1 < t.shape.size(); ++d)
    if (t.alloc_shape[d] != t.shape[d]) return false;
  return true;
}

}  // namespace

Kernel::Kernel(const LoopTree& tree, Isa isa, const KernelViews& views)
    : tree_(tree), isa_(isa), views_(views) {
  if (!isa_supported(isa)) throw CompileError("this CPU does not support " + isa_name(isa));
  const Computation& c = tree.computation();
  check_strides(views, c);
  if (c.is_int8()) {
    int8_path(isa, true);  // CompileError if there is none
    if (views.in0.active() || views.out.active())
      throw CompileError("buffer views are for float32 kernels; int8 kernels take their own copies");
    if (c.epilogue.requant && views.any())
      throw CompileError("a 'requant' epilogue's kernel takes dense buffers only (no strides)");
  }
  {  // inputs, output and relayout copies, checked before anything is allocated
    check_buffer_bytes(4.0 * (static_cast<double>(c.in0.numel()) + c.in1.numel() +
                              c.in0.alloc_numel() + c.in1.alloc_numel() + c.out.alloc_numel()),
                       c.name());
  }
  // An out view in the user's layout (rank of out.shape) or the blocked kernel layout.
  const bool out_view = views.out.active();
  const bool blocked_view = out_view && c.out.blocking.active() &&
                            views.out.shape.size() != c.out.shape.size();
  if (views.in0.active()) in0_base_ = view_base(views.in0, c.in0.alloc_shape, "in0");
  if (out_view) out_base_ = view_base(views.out, blocked_view ? c.out.alloc_shape : c.out.shape,
                                      "out");
  const auto t0 = Clock::now();
  code_ = std::make_unique<Code>();
  bool out_packed = false;  // a strided output computed densely, then copied out
  // the strides of the caller's buffers (views), and the user-layout output a view needs
  auto apply_views = [&](detail::Lowered& low) {
    if (out_view && !blocked_view && c.out.padded() && !low.out_user)
      throw CompileError("this schedule cannot store the output in the user's layout (out view)");
    std::vector<int64_t> s(low.extents.size());
    // the vector loop keeps its unit strides (its loads and stores are contiguous)
    auto keeps_unit = [&](int t) {
      if (low.vec_var >= 0 && low.stride[low.vec_var][t] == 1 && s[low.vec_var] != 1)
        throw CompileError("a buffer view would make the vector loop's accesses strided");
    };
    if (views.in0.active()) {
      for (size_t v = 0; v < s.size(); ++v) s[v] = low.stride[v][detail::kIn0];
      s = detail::restride(s, low.extents, c.in0.alloc_shape, views.in0.shape);
      keeps_unit(detail::kIn0);
      for (size_t v = 0; v < s.size(); ++v) low.stride[v][detail::kIn0] = s[v];
    }
    if (out_view) {
      for (size_t v = 0; v < s.size(); ++v) s[v] = low.stride[v][detail::kOut];
      s = detail::restride(s, low.extents, blocked_view ? c.out.alloc_shape : c.out.shape,
                           views.out.shape);
      keeps_unit(detail::kOut);
      for (size_t v = 0; v < s.size(); ++v) low.stride[v][detail::kOut] = s[v];
    }
    // Strided caller buffers: addressed in place where the code can, else packed (see
    // KernelViews::strides).
    for (int t = 0; t < 3; ++t) {
      access_[t] = views.strided(t) ? Access::Packed : Access::Dense;
      if (!views.strided(t) || (t == detail::kOut && out_packed)) continue;
      const TensorAccess& ta = tensor_of(c, t);
      if (!addressable_in_place(ta, t == detail::kOut)) continue;
      for (size_t v = 0; v < s.size(); ++v) s[v] = low.stride[v][t];
      try {
        s = detail::restride_to_strides(s, low.extents, ta.alloc_shape, views.strides[t]);
      } catch (const CompileError&) {
        continue;
      }
      // the vector loop keeps its unit stride; every offset fits a 32-bit displacement
      if (low.vec_var >= 0 && low.stride[low.vec_var][t] == 1 && s[low.vec_var] != 1) continue;
      if (detail::span_elements(ta.shape, views.strides[t]) * 4 >= (int64_t(1) << 30)) continue;
      // an output written in place takes its epilogue fused (the pass reads dense buffers)
      if (t == detail::kOut && !c.epilogue.empty() && !low.epi_fused) continue;
      for (size_t v = 0; v < s.size(); ++v) low.stride[v][t] = s[v];
      access_[t] = Access::InPlace;
    }
  };
  for (;;) {
    try {
      code_->low = detail::lower(tree, isa, !blocked_view, blocked_view);
      apply_views(code_->low);
      code_->jit = generate_code(code_->low, isa, facts_);
    } catch (const detail::TransposeUnavailable&) {  // the output goes through the copy pass
      code_->low = detail::lower(tree, isa, false);
      apply_views(code_->low);
      code_->jit = generate_code(code_->low, isa, facts_);
    }
    // the generator declined to fuse the epilogue into an in-place strided store
    if (access_[detail::kOut] != Access::InPlace || c.epilogue.empty() || facts_.epilogue_fused)
      break;
    out_packed = true;
  }
  static const char* const kAccessNames[3] = {"dense", "in_place", "packed"};
  for (int t = 0; t < 3; ++t) {
    facts_.access[t] = kAccessNames[static_cast<int>(access_[t])];
    packs_ = packs_ || access_[t] == Access::Packed;
  }
  if (out_view && !c.epilogue.empty() && !facts_.epilogue_fused)
    throw CompileError("an out view needs the epilogue fused into the kernel's store");
  chain_fused_ = facts_.epilogue_fused;
  // requant: fused into the store with the chain where lowering allowed it (the generator's
  // fallback unfuses both), else a pass after the store
  requant_fused_ = c.epilogue.requant && chain_fused_ && code_->low.epi_requant;
  if (c.epilogue.requant) facts_.epilogue_fused = requant_fused_;
  // fixed per kernel: off the timed path
  relaid_[0] = c.in0.padded() && !views.in0.active() && access_[0] != Access::InPlace;
  relaid_[1] = c.in1.padded() && access_[1] != Access::InPlace;
  out_relaid_ = c.out.padded() && !code_->low.out_user && !out_view;
  facts_.compile_seconds = seconds_since(t0);
  const auto& low = code_->low;
  if (debug_enabled()) {
    std::cerr << "[looptune] " << tree_.dump() << "\n[looptune] isa=" << facts_.isa
              << " lanes=" << low.lanes << " reduce_vec=" << low.reduce_vec << " tile_start=" << low.tile_start
              << " hoist_start=" << low.hoist_start << " zero_init=" << low.zero_init
              << " code_bytes=" << facts_.code_bytes << " fma=" << facts_.fma
              << "\n[looptune] disassembly: /usr/bin/objdump or LOOPTUNE_OBJDUMP (absolute path, "
                 "run without a shell; raw hex if missing)\n"
              << assembly() << std::endl;
  }
}

const std::vector<int64_t>& Kernel::in0_shape() const {
  return views_.in0.active() ? views_.in0.shape : tree_.computation().in0.shape;
}

const std::vector<int64_t>& Kernel::out_shape() const {
  return views_.out.active() ? views_.out.shape : tree_.computation().out.shape;
}

Kernel::~Kernel() = default;

int Kernel::threads_used(int threads) const {
  if (code_->low.par < 0) return 1;
  const int64_t t = threads > 0 ? threads : num_threads();
  return static_cast<int>(std::min<int64_t>(t, code_->low.par_iterations));
}

// The output is zeroed first when the kernel accumulates into it (in 16 KiB chunks per thread),
// then each thread runs its share of the parallel loop's iterations.
void Kernel::call(const float* in0, const float* in1, float* out, int threads,
                  const float* const* epi) const {
  const detail::KernelFn fn = code_->jit.fn;
  if (!code_->low.zero_init && access_[detail::kOut] == Access::InPlace) {
    detail::zero_strided(out, views_.strides[detail::kOut], tree_.computation().out.shape,
                         threads);
  } else if (!code_->low.zero_init) {
    const TensorAccess& o = tree_.computation().out;
    int64_t n = out_relaid_ ? o.alloc_numel() : o.numel();
    const int64_t chunk = 4096;
    if (views_.out.active()) {  // the whole view: its border is zero anyway
      out -= out_base_;
      n = numel_of(views_.out.shape);
    }
    parallel_for((n + chunk - 1) / chunk, threads, [&](int64_t c0, int64_t c1) {
      std::memset(out + c0 * chunk, 0, sizeof(float) * (std::min(n, c1 * chunk) - c0 * chunk));
    });
  }
  if (!code_->low.zero_init && views_.out.active()) out += out_base_;
  static const float* const kNoEpilogue[2] = {nullptr, nullptr};
  if (!epi) epi = kNoEpilogue;
  if (threads <= 1) return fn(in0, in1, out, 0, code_->low.par_iterations, epi);
  parallel_for(code_->low.par_iterations, threads,
               [&](int64_t b, int64_t e) { fn(in0, in1, out, b, e, epi); });
}

// Kernel-layout copies of the inputs whose buffer differs from the user's (conv padding,
// longer rows). Their padding is never written by a copy, so it stays zero while the buffers
// serve the same computation; they are zeroed again when the computation changes.
struct Kernel::Relayout {
  std::unique_ptr<AlignedFloats> in[2];
  std::unique_ptr<AlignedFloats> out;  // blocked output (every element written by the kernel)
  std::string owner;
  // out_copy: the kernel computes the output in its blocked layout (Kernel::out_relaid_).
  void prepare(const Computation& c, bool out_copy) {
    const TensorAccess* ts[2] = {&c.in0, &c.in1};
    if (out_copy && (!out || out->n != c.out.alloc_numel()))
      out = std::make_unique<AlignedFloats>(c.out.alloc_numel());
    if (!ts[0]->padded() && !ts[1]->padded()) return;  // the common case: nothing to copy
    const std::string key = c.header();
    for (int i = 0; i < 2; ++i) {
      if (!ts[i]->padded()) continue;
      const int64_t n = ts[i]->alloc_numel();
      if (!in[i] || in[i]->n != n) {
        in[i] = std::make_unique<AlignedFloats>(n);
        std::memset(in[i]->p, 0, sizeof(float) * n);
      } else if (key != owner) {
        std::memset(in[i]->p, 0, sizeof(float) * n);
      }
    }
    owner = key;
  }
  // Allocates the buffers a call of `c` needs that are missing, their padding zeroed: for a
  // workspace that only ever serves one computation (a kernel's own), so nothing is re-zeroed.
  // need_in1: in1 is copied (not the packed constant operand).
  void ensure(const Computation& c, bool out_copy, bool need_in1) {
    if (out_copy && !out) out = std::make_unique<AlignedFloats>(c.out.alloc_numel());
    const TensorAccess* ts[2] = {&c.in0, &c.in1};
    for (int i = 0; i < 2; ++i) {
      if (!ts[i]->padded() || in[i] || (i == 1 && !need_in1)) continue;
      in[i] = std::make_unique<AlignedFloats>(ts[i]->alloc_numel());
      std::memset(in[i]->p, 0, sizeof(float) * in[i]->n);
    }
  }
};

void Kernel::execute(const float* in0, const float* in1, bool in1_packed, float* out,
                     const Relayout& r, int threads, const float* const* epi) const {
  const Computation& c = tree_.computation();
  if (relaid_[0]) {
    to_kernel_layout(in0, r.in[0]->p, c.in0, threads);
    in0 = r.in[0]->p;
  }
  if (relaid_[1] && !in1_packed) {
    to_kernel_layout(in1, r.in[1]->p, c.in1, threads);
    in1 = r.in[1]->p;
  }
  if (!out_relaid_) return call(in0, in1, out, threads, epi);
  call(in0, in1, r.out->p, threads, epi);
  blocked_copy(out, r.out->p, c.out, false, threads);
}

void Kernel::set_constant_scale(const float* scale) {
  const Computation& c = tree_.computation();
  if (!c.epilogue.scale) throw std::invalid_argument("this kernel's epilogue has no scale");
  constant_scale_.assign(scale, scale + c.bias_shape()[0]);
}

void Kernel::set_constant_bias(const float* bias) {
  const Computation& c = tree_.computation();
  if (!c.epilogue.bias) throw std::invalid_argument("this kernel's epilogue has no bias");
  constant_bias_.assign(bias, bias + c.bias_shape()[0]);
}

// The dense copies of a kernel's packed operands (Access::Packed): inputs, output, and the
// residual of a packed output. Sized once (they serve one computation).
struct Kernel::StridedWork {
  std::unique_ptr<AlignedFloats> buf[4];  // in0, in1, out, residual
  float* get(int i, int64_t bytes) {
    if (!buf[i]) buf[i] = std::make_unique<AlignedFloats>((bytes + 3) / 4);
    return buf[i]->p;
  }
};

void Kernel::run(const float* in0, const float* in1, float* out, int threads, const float* bias,
                 const float* residual, const float* scale, float out_scale,
                 int32_t out_zero_point) const {
  threads = threads_used(threads);
  if (tree_.computation().epilogue.requant)  // (dense buffers only: no packing)
    return run_requant(in0, in1, reinterpret_cast<uint8_t*>(out), threads, bias, residual,
                       scale, out_scale, out_zero_point);
  if (!packs_) return run_dense(in0, in1, out, threads, bias, residual, scale);
  // Packed operands: copied between the caller's strides and dense buffers around the call.
  // The workspace serves one call at a time; a concurrent call uses buffers of its own.
  std::unique_lock<std::mutex> lock(strided_mutex_, std::try_to_lock);
  StridedWork local;
  StridedWork* w = &local;
  if (lock.owns_lock()) {
    if (!strided_work_) strided_work_ = std::make_unique<StridedWork>();
    w = strided_work_.get();
  }
  const Computation& c = tree_.computation();
  const TensorAccess* ts[3] = {&c.in0, &c.in1, &c.out};
  const void* ins[2] = {in0, in1};
  const bool wide = isa_ == Isa::AVX512;  // the packing's transposes: the kernel's ISA
  for (int t = 0; t < 2; ++t) {
    if (access_[t] != Access::Packed || !ins[t]) continue;
    const int eb = static_cast<int>(ts[t]->elem_bytes());
    void* dense = w->get(t, eb * ts[t]->numel());
    detail::copy_strided(ins[t], views_.strides[t], dense, detail::dense_strides(ts[t]->shape),
                         ts[t]->shape, eb, threads, wide);
    ins[t] = dense;
  }
  in0 = static_cast<const float*>(ins[0]);
  in1 = static_cast<const float*>(ins[1]);
  if (access_[detail::kOut] != Access::Packed)
    return run_dense(in0, in1, out, threads, bias, residual, scale);
  const std::vector<int64_t>& shape = c.out.shape;
  const std::vector<int64_t> dense = detail::dense_strides(shape);
  float* o = w->get(2, 4 * c.out.numel());
  if (residual) {
    float* r = w->get(3, 4 * c.out.numel());
    detail::copy_strided(residual, views_.strides[2], r, dense, shape, 4, threads, wide);
    residual = r;
  }
  run_dense(in0, in1, o, threads, bias, residual, scale);
  detail::copy_strided(o, dense, out, views_.strides[2], shape, 4, threads, wide);
}

void Kernel::run_dense(const float* in0, const float* in1, float* out, int threads,
                       const float* bias, const float* residual, const float* scale) const {
  if (views_.in0.active()) in0 += in0_base_;  // the kernel's buffers inside the views
  if (views_.out.active()) {
    out += out_base_;
    if (residual) residual += out_base_;
  }
  const Epilogue& e = tree_.computation().epilogue;
  if (e.empty()) return run_body(in0, in1, out, threads);
  const bool fused = chain_fused_;  // (the generator may have declined)
  if (e.bias && !bias) {
    if (constant_bias_.empty()) throw std::invalid_argument("no bias given and no constant bias set");
    bias = constant_bias_.data();
  }
  if (e.add && !residual) throw std::invalid_argument("the epilogue needs a residual");
  if (e.scale && !scale) {
    if (constant_scale_.empty())
      throw std::invalid_argument("no scale given and no constant scale set");
    scale = constant_scale_.data();
  }
  if (e.scale && fused) {  // the store reads {scale[Ch], bias[Ch]} through one pointer
    const int64_t ch = tree_.computation().bias_shape()[0];
    thread_local std::vector<float> params;
    params.resize(2 * ch);
    std::memcpy(params.data(), scale, sizeof(float) * ch);
    if (e.bias) std::memcpy(params.data() + ch, bias, sizeof(float) * ch);
    const float* const epi[2] = {params.data(), residual};
    return run_body(in0, in1, out, threads, epi);
  }
  if (e.scale) {  // int8: s32 accumulators, dequantized in place, then the float epilogue
    run_body(in0, in1, out, threads);
    dequantize_output(tree_.computation(), out, scale, threads);
    if (e.bias || e.add || !e.act.empty())
      apply_epilogue(tree_.computation(), out, bias, residual, threads);
    return;
  }
  const float* const epi[2] = {bias, residual};
  if (fused) return run_body(in0, in1, out, threads, epi);
  run_body(in0, in1, out, threads);
  apply_epilogue(tree_.computation(), out, bias, residual, threads);
}

void Kernel::set_constant_requant(float out_scale, int32_t out_zero_point) {
  if (!tree_.computation().epilogue.requant)
    throw std::invalid_argument("this kernel's epilogue has no requant");
  float probe = 0.0f;
  uint8_t q = 0;
  requantize_u8(&probe, 1, &q, out_scale, out_zero_point);  // validates the parameters
  constant_out_scale_ = out_scale;
  constant_out_zero_point_ = out_zero_point;
}

void Kernel::run_requant(const float* in0, const float* in1, uint8_t* out, int threads,
                         const float* bias, const float* residual, const float* scale,
                         float out_scale, int32_t out_zero_point) const {
  if (out_scale == 0.0f) {
    if (!has_constant_requant())
      throw std::invalid_argument("no out_scale given and no constant out_scale set");
    out_scale = constant_out_scale_;
    out_zero_point = constant_out_zero_point_;
  }
  float probe = 0.0f;
  uint8_t q = 0;
  requantize_u8(&probe, 1, &q, out_scale, out_zero_point);  // validates before the work
  if (requant_fused_) {  // the store requantizes: {scale, bias}, residual, {1/scale, zp}
    const Epilogue& e = tree_.computation().epilogue;
    if (e.bias && !bias) {
      if (constant_bias_.empty())
        throw std::invalid_argument("no bias given and no constant bias set");
      bias = constant_bias_.data();
    }
    if (e.add && !residual) throw std::invalid_argument("the epilogue needs a residual");
    if (!scale) {
      if (constant_scale_.empty())
        throw std::invalid_argument("no scale given and no constant scale set");
      scale = constant_scale_.data();
    }
    const int64_t ch = tree_.computation().bias_shape()[0];
    thread_local std::vector<float> params;
    params.resize(2 * ch);
    std::memcpy(params.data(), scale, sizeof(float) * ch);
    if (e.bias) std::memcpy(params.data() + ch, bias, sizeof(float) * ch);
    float rq[2] = {1.0f / out_scale, 0.0f};
    std::memcpy(&rq[1], &out_zero_point, 4);
    const float* const epi[3] = {params.data(), residual, rq};
    return run_body(in0, in1, reinterpret_cast<float*>(out), threads, epi);
  }
  const int64_t n = tree_.computation().out.numel();
  // The float32 result in a scratch buffer kept by the kernel (one call at a time; a
  // concurrent call uses its own).
  std::unique_lock<std::mutex> lock(requant_mutex_, std::try_to_lock);
  std::vector<float> local;
  std::vector<float>& y = lock.owns_lock() ? requant_scratch_ : local;
  if (static_cast<int64_t>(y.size()) < n) y.resize(n);
  run_dense(in0, in1, y.data(), threads, bias, residual, scale);
  requantize_u8(y.data(), n, out, out_scale, out_zero_point, isa_, threads);
}

void Kernel::run_body(const float* in0, const float* in1, float* out, int threads,
                      const float* const* epi) const {
  const bool packed = in1 == nullptr;
  if (packed) {
    if (!constant_) throw CompileError("no b given and no constant operand set");
    in1 = constant_->buf->p;
  }
  // The common case: every buffer is the user's own (no relayout copy), so the call needs no
  // workspace, no lock and no copy of the computation.
  if (!relaid_[0] && !(relaid_[1] && !packed) && !out_relaid_)
    return call(in0, in1, out, threads, epi);
  // The kernel's workspace (relayout buffers) serves one call at a time; a concurrent call
  // on another thread uses buffers of its own. It serves this kernel's computation only, so its
  // buffers are allocated and their padding zeroed once (copies never write padding).
  std::unique_lock<std::mutex> lock(workspace_mutex_, std::try_to_lock);
  if (lock.owns_lock()) {
    if (!workspace_) workspace_ = std::make_unique<Relayout>();
    workspace_->ensure(tree_.computation(), out_relaid_, !packed);
    return execute(in0, in1, packed, out, *workspace_, threads, epi);
  }
  Relayout local;
  local.ensure(tree_.computation(), out_relaid_, !packed);
  execute(in0, in1, packed, out, local, threads, epi);
}

// Timing buffers (the user's layout) are reused across calls on one thread while the shapes
// stay the same, so measuring many schedules of one computation does not pay for allocation
// and filling. Relayout copies are part of every timed call, as they are of run().
struct BenchBuffers {
  std::unique_ptr<AlignedFloats> a, b, o;
  std::vector<float> bias, residual;  // the epilogue's operands (random, like a and b)
  Kernel::Relayout relayout;
  bool fits(int64_t na, int64_t nb, int64_t no) const {
    return a && a->n == na && b->n == nb && o->n == no;
  }
  void reset(int64_t na, int64_t nb, int64_t no) {
    a = std::make_unique<AlignedFloats>(na);
    b = std::make_unique<AlignedFloats>(nb);
    o = std::make_unique<AlignedFloats>(no);
    uint32_t x = 2463534242u;  // xorshift32: uniform floats in [-1, 1)
    auto fill = [&](AlignedFloats& buf) {
      for (int64_t i = 0; i < buf.n; ++i) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        buf.p[i] = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
      }
    };
    fill(*a);
    fill(*b);
    bias.resize(std::max<int64_t>(1, nb));  // sized below to the computation's
    residual.resize(no);
    for (float& v : bias) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; v = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f; }
    for (float& v : residual) { x ^= x << 13; x ^= x >> 17; x ^= x << 5; v = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f; }
    std::memset(o->p, 0, sizeof(float) * no);
  }
};

namespace {

template <class F>
TimingResult time_runs(F&& run_once, int64_t flops, double min_seconds, int64_t min_runs,
                       int64_t max_runs) {
  const auto start = Clock::now();
  auto t0 = start;
  run_once();  // warm-up (code, caches, TLB); its time sizes the batches
  const double estimate = std::max(seconds_since(t0), 1e-9);
  // batch very short kernels so each sample is >= ~20 us of work (clock overhead < 1%)
  const int64_t batch = std::max<int64_t>(1, static_cast<int64_t>(2e-5 / estimate));
  std::vector<double> samples;
  // An unbatched warm-up is a sample of its own and counts towards the budget: a cold run can
  // only be slower, so it never lowers the best time, and slow kernels get one more sample.
  if (batch == 1) samples.push_back(estimate);
  while (static_cast<int64_t>(samples.size()) < max_runs &&
         (static_cast<int64_t>(samples.size()) < min_runs || seconds_since(start) < min_seconds)) {
    poll_interrupt();  // Ctrl-C: throws within ~20 ms plus one batch
    t0 = Clock::now();
    for (int64_t i = 0; i < batch; ++i) run_once();
    samples.push_back(seconds_since(t0) / static_cast<double>(batch));
  }
  std::sort(samples.begin(), samples.end());
  TimingResult r;
  r.runs = static_cast<int64_t>(samples.size()) * batch;
  r.min_seconds = samples.front();
  r.median_seconds = samples[samples.size() / 2];
  r.gflops = static_cast<double>(flops) / r.min_seconds * 1e-9;
  r.median_gflops = static_cast<double>(flops) / r.median_seconds * 1e-9;
  return r;
}

}  // namespace

TimingResult Kernel::benchmark(double min_seconds, int64_t min_runs, int64_t max_runs,
                               bool prepacked, int threads) const {
  const Computation& c = tree_.computation();
  if (views_.in0.active() || views_.out.active())
    throw CompileError("time the kernel compiled without buffer views");
  threads = threads_used(threads);
  if (views_.any()) return benchmark_strided(min_seconds, min_runs, max_runs, threads);
  thread_local BenchBuffers buf;
  if (!buf.fits(c.in0.numel(), c.in1.numel(), c.out.numel()))
    buf.reset(c.in0.numel(), c.in1.numel(), c.out.numel());
  buf.relayout.prepare(c, out_relaid_);
  const std::unique_ptr<Packed> packed = prepacked ? pack_in1(buf.b->p) : nullptr;
  const float *a = buf.a->p, *b = prepacked ? packed->buf->p : buf.b->p;
  float* o = buf.o->p;
  const Kernel::Relayout& layout = buf.relayout;
  // The epilogue pass is part of every timed call (its operands: random buffers).
  const bool epi = !c.epilogue.empty();
  // (int8: {scale, bias} of a fused epilogue, or the scale of the pass)
  if (epi && static_cast<int64_t>(buf.bias.size()) < 2 * c.bias_shape()[0])
    buf.bias.resize(2 * c.bias_shape()[0], 0.5f);
  const float *bias = buf.bias.data(), *res = buf.residual.data();
  std::vector<uint8_t> requant_bytes(c.epilogue.requant ? c.out.numel() : 0);
  auto execute = [&](const float* a_, const float* b_, bool packed_, float* o_,
                     const Kernel::Relayout& l_, int threads_) {
    const float rq[2] = {20.0f, 0.0f};  // (a requant store's {1/out_scale, zero point})
    const float* const ops[3] = {bias, res, rq};
    this->execute(a_, b_, packed_, o_, l_, threads_, ops);
    if (epi && c.epilogue.scale && !chain_fused_)
      dequantize_output(c, o_, bias, threads_);  // (a random scale)
    if (epi && !chain_fused_) apply_epilogue(c, o_, bias, res, threads_);
    if (c.epilogue.requant && !requant_fused_)  // the u8 pass (any valid parameters)
      requantize_u8(o_, c.out.numel(), requant_bytes.data(), 0.05f, 128, isa_, threads_);
  };

  return time_runs([&] { execute(a, b, prepacked, o, layout, threads); }, c.flops(), min_seconds,
                   min_runs, max_runs);
}


// A strided kernel (KernelViews::strides) timed through run(), packing included, on random
// buffers that span its strided views.
TimingResult Kernel::benchmark_strided(double min_seconds, int64_t min_runs, int64_t max_runs,
                                       int threads) const {
  const Computation& c = tree_.computation();
  const TensorAccess* ts[3] = {&c.in0, &c.in1, &c.out};
  std::unique_ptr<AlignedFloats> bufs[4];
  uint32_t x = 2463534242u;  // xorshift32: uniform floats in [-1, 1) (bytes, for int8 inputs)
  for (int t = 0; t < 4; ++t) {
    const TensorAccess& ta = *ts[std::min(t, 2)];
    const int64_t n = views_.strided(std::min(t, 2))
                          ? detail::span_elements(ta.shape, views_.strides[std::min(t, 2)])
                          : ta.numel();
    bufs[t] = std::make_unique<AlignedFloats>(std::max<int64_t>(1, n));
    for (int64_t i = 0; i < bufs[t]->n; ++i) {
      x ^= x << 13; x ^= x >> 17; x ^= x << 5;
      bufs[t]->p[i] = static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
  }
  const Epilogue& e = c.epilogue;
  std::vector<float> params(std::max<int64_t>(1, c.bias_shape().empty() ? 1 : c.bias_shape()[0]),
                            0.5f);
  const float* bias = e.bias ? params.data() : nullptr;
  const float* scale = e.scale ? params.data() : nullptr;
  const float* res = e.add ? bufs[3]->p : nullptr;
  const float* b = views_.strided(1) || !has_constant_in1() ? bufs[1]->p : nullptr;
  return time_runs([&] { run(bufs[0]->p, b, bufs[2]->p, threads, bias, res, scale); },
                   c.flops(), min_seconds, min_runs, max_runs);
}

std::string Kernel::assembly() const {
  const uint8_t* bytes = code_->jit.code.data();
  const size_t n = code_->jit.code.size();
  char path[] = "/tmp/looptune_asm_XXXXXX";
  const int fd = mkstemp(path);
  std::string out;
  if (fd >= 0) {
    const bool written = write(fd, bytes, n) == static_cast<ssize_t>(n);
    close(fd);
    // A fixed absolute path (or LOOPTUNE_OBJDUMP, if absolute), run without a shell: never a
    // program found on PATH. Without it, the raw bytes are printed instead.
    const char* tool = std::getenv("LOOPTUNE_OBJDUMP");
    const std::string exe = tool && tool[0] == '/' ? tool : "/usr/bin/objdump";
    if (written)
      out = run_program(exe, {"-D", "-b", "binary", "-mi386:x86-64", "-M", "intel", path});
    unlink(path);
  }
  const auto body = out.find("<.data>:");
  if (body != std::string::npos) return out.substr(body + 9);
  std::ostringstream hex;  // objdump missing: raw bytes
  for (size_t i = 0; i < n; ++i) {
    char b[4];
    std::snprintf(b, sizeof b, "%02x", bytes[i]);
    hex << b << ((i % 16 == 15) ? '\n' : ' ');
  }
  return hex.str();
}

double measure_peak_gflops(Isa isa, double min_seconds) {
  if (!isa_supported(isa)) throw CompileError("this CPU does not support " + isa_name(isa));
  const int chains = isa_facts(isa).peak_fma_chains;  // the one home of ISA facts (cpu.cpp)
  detail::JitCode code = detail::generate_peak_loop(isa, chains);
  auto fn = reinterpret_cast<void (*)(int64_t)>(reinterpret_cast<void*>(code.fn));
  const int64_t iters = 20000;
  const double flops = 2.0 * isa_lanes(isa) * chains * static_cast<double>(iters);
  fn(iters);
  double best = 1e30;
  const auto start = Clock::now();
  int reps = 0;
  while (reps < 5 || seconds_since(start) < min_seconds) {
    poll_interrupt();
    const auto t0 = Clock::now();
    fn(iters);
    best = std::min(best, seconds_since(t0));
    ++reps;
  }
  return flops / best * 1e-9;
}

}  // namespace looptune

namespace looptune {

std::vector<int32_t> int8_weight_sums(const Computation& c, const int8_t* in1) {
  if (!c.is_int8()) throw std::invalid_argument("weight sums are for int8 computations");
  const auto& s = c.in1.shape;
  if (c.kind == "matmul") {  // [K][N]: column sums
    std::vector<int32_t> out(s[1], 0);
    for (int64_t k = 0; k < s[0]; ++k)
      for (int64_t n = 0; n < s[1]; ++n) out[n] += in1[k * s[1] + n];
    return out;
  }
  if (c.kind == "conv2d") {  // [K][C/g][R][S]: one sum per output channel
    const int64_t inner = s[1] * s[2] * s[3];
    std::vector<int32_t> out(s[0], 0);
    for (int64_t k = 0; k < s[0]; ++k)
      for (int64_t i = 0; i < inner; ++i) out[k] += in1[k * inner + i];
    return out;
  }
  throw std::invalid_argument("weight sums of a " + c.kind +
                              " differ per batch; compute them with numpy");
}

}  // namespace looptune
