// Code generation for a lowered loop nest.
//
// Shape of the generated code, outer to inner:
//   runtime loops (counter registers, pointer bumps, statically peeled tails)
//     accumulators zeroed or loaded                       <- hoist_start
//       reduction loops around the tile (runtime)
//         the register tile: fully unrolled vector FMAs    <- tile_start
//     accumulators stored
// Every range is known at compile time, so a loop's tail is emitted as a second copy of its
// body with smaller ranges; partial vectors use opmasks (AVX-512) or vmaskmovps (AVX2).
// The one exception is the parallel loop (Lowered::par, above the hoisted region): the function
// takes the range [start, end) of its iterations to run (the 4th and 5th arguments), so every
// thread calls the same code; outer loops are run by every thread in full.
// Pointer offsets that are known statically are folded into displacements (disp_).
#include "jit_x86.h"

#include <xbyak/xbyak.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>

#include "looptune/errors.h"

namespace looptune::detail {
namespace {

using namespace Xbyak;

alignas(64) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
constexpr int64_t kFlushDisp = int64_t(1) << 30;
constexpr int kStackSlots = 24;  // loop counters beyond the registers
// Further stack slots: the parallel range (the 4th and 5th arguments), the five pointers
// (tensors and the fused epilogue's) saved at the parallel loop, and a scratch slot for a large
// pointer advance.
constexpr int kSlotStart = kStackSlots, kSlotEnd = kStackSlots + 1, kSlotPtr = kStackSlots + 2,
              kSlotTmp = kStackSlots + 7, kSlotRq = kStackSlots + 8,
              kFrameSlots = kStackSlots + 11;  // (kSlotRq: 5 dwords)

enum class Kind { Vec, Bcast, Scalar };
constexpr int kPtrs = 5;  // in0, in1, out, and the fused epilogue's bias and residual

// Constants of the fused GELU, each broadcast over 16 lanes (a memory operand of any width).
// GELU(x) = x Phi(x) with Phi(-|x|) = 1 / (2 Q(|x|)^16), Q a fitted degree-7 polynomial: the
// same computation as rowops_kernels.inc's gelu_v (see there).
enum GeluConst {
  kAbsMask, kOne, kTwo, kHalf, kZero, kTen, kMinusTen, kQ7, kQ6, kQ5, kQ4, kQ3, kQ2, kQ1,
  kGeluConsts
};
struct alignas(64) Broadcast16 { uint32_t v[16]; };
const Broadcast16* gelu_table() {
  static const auto table = [] {
    std::array<Broadcast16, kGeluConsts> t{};
    auto setf = [&](int i, float f) { uint32_t b; std::memcpy(&b, &f, 4); for (auto& x : t[i].v) x = b; };
    auto seti = [&](int i, uint32_t b) { for (auto& x : t[i].v) x = b; };
    seti(kAbsMask, 0x7fffffffu);
    setf(kOne, 1.0f);
    setf(kTwo, 2.0f);
    setf(kHalf, 0.5f);
    setf(kZero, 0.0f);
    setf(kTen, 10.0f);
    setf(kMinusTen, -10.0f);
    setf(kQ7, 5.07935511e-07f);
    setf(kQ6, 8.91361822e-07f);
    setf(kQ5, 6.38705969e-05f);
    setf(kQ4, 1.43414554e-05f);
    setf(kQ3, 3.29578947e-03f);
    setf(kQ2, 2.11348515e-02f);
    setf(kQ1, 4.98680137e-02f);
    return t;
  }();
  return table.data();
}

// Raised by the generator when a fused epilogue needs more scratch registers than the tile
// leaves: the kernel is lowered again without fusion (the pass applies the epilogue).
struct FusionUnavailable {};

struct Point {
  int64_t off[3];
  int64_t boff;  // bias offset (fused epilogue)
  int active;  // lanes in use (vector var), 1 in scalar code
  int acc;
  std::pair<int64_t, int64_t> key;  // acc_key(): which accumulator the point adds to
  int64_t rkey;  // identifies the reduction-variable offsets
};

template <Isa I>
class NestGenerator : public CodeGenerator {
 public:
  NestGenerator(const Lowered& low, size_t max_size, uint8_t* buf, CompileFacts& facts)
      : CodeGenerator(max_size, buf), low_(low), facts_(facts),
        ranges_(low.extents) {
    for (int t = 0; t < 2; ++t) {
      kind_[t] = low.lanes == 1 ? Kind::Scalar
                 : low.stride[low.vec_var][t] == 1 ? Kind::Vec : Kind::Bcast;
    }
    kind_[kOut] = low.lanes == 1 ? Kind::Scalar : Kind::Vec;
    kind_[kRes] = kind_[kOut];
    kind_[kBias] = low.lanes == 1 ? Kind::Scalar
                   : low.epi_fused && low.bias_stride[low.vec_var] == 1 ? Kind::Vec
                                                                        : Kind::Bcast;
    prologue();
    emit_level(0);
    epilogue();
  }

 private:
  // ---- registers ----------------------------------------------------------------------
  Reg64 ptr_reg(int t) const {
    return t == 0 ? rdi : t == 1 ? rsi : t == 2 ? rdx : t == kBias ? r14 : r15;
  }
  Xmm vr(int i) const {
    if (low_.lanes == 1) return Xmm(i);
    if constexpr (I == Isa::AVX512) return Zmm(i); else return Ymm(i);
  }
  // The register of a partial vector's arithmetic, as narrow as its active lanes allow: a
  // tail of <= 4 (xmm) or <= 8 (ymm, AVX-512) floats needs no full-width FMA. A 512-bit FMA
  // on a 256-bit datapath (Zen 4) or on the one 512-bit port costs twice a 256-bit one, so a
  // 17-column tile (16 + 1 lanes) loses a third of its time to the tail otherwise. Loads and
  // stores stay masked at full width; VEX/EVEX writes zero the accumulator's unused lanes,
  // which nothing reads (stores are masked to the active lanes). Not for a vectorized
  // reduction or a transposed store, whose lanes are all combined or shuffled.
  Xmm narrow(int i, int active) const {
    if (low_.lanes == 1 || low_.reduce_vec || low_.out_transposed || active >= low_.lanes)
      return vr(i);
    if (active <= 4) return Xmm(i);
    if constexpr (I == Isa::AVX512) { if (active <= 8) return Ymm(i); }
    return vr(i);
  }
  // bytes per element of tensor t: 4, but 1 for a requantized (uint8) output
  int64_t eb(int t) const { return t == kOut && low_.epi_requant ? 1 : 4; }
  Address mem(int t, int64_t elem_off) {
    return ptr[ptr_reg(t) + static_cast<int32_t>(disp_[t] + elem_off * eb(t))];
  }
  // the requant store's constants in the frame: 1/out_scale, zero point, -512, 512, 255
  Address rq(int i) { return dword[rsp + 8 * kSlotRq + 4 * i]; }

  void prologue() {
    for (const Reg64& r : callee_saved()) push(r);
    sub(rsp, 8 * kFrameSlots);
    mov(qword[rsp + 8 * kSlotStart], rcx);  // rcx and r8 become loop counters
    mov(qword[rsp + 8 * kSlotEnd], r8);
    if (low_.epi_fused) {  // the 6th argument: {bias, residual[, requant]}
      mov(r14, qword[r9]);
      mov(r15, qword[r9 + 8]);
    }
    if (low_.epi_fused && low_.epi_requant) {  // {1/out_scale, zero point} into the frame
      mov(r11, qword[r9 + 16]);
      mov(eax, dword[r11]);
      mov(rq(0), eax);
      mov(eax, dword[r11 + 4]);
      mov(rq(1), eax);
      mov(rq(2), 0xC4000000);  // -512.0f
      mov(rq(3), 0x44000000);  // 512.0f
      mov(rq(4), 255);
    }
  }
  void epilogue() {
    add(rsp, 8 * kFrameSlots);
    auto regs = callee_saved();
    for (auto it = regs.rbegin(); it != regs.rend(); ++it) pop(*it);
    vzeroupper();
    ret();
  }
  std::vector<Reg64> callee_saved() const { return {rbx, rbp, r12, r13, r14, r15}; }

  // Counters for runtime loops: registers first, then stack slots.
  struct Counter { bool in_reg; Reg64 reg; int slot; };
  Counter acquire_counter() {
    const Reg64 regs[] = {rax, rcx, r8, r9, r10, rbx, rbp, r12, r13, r14, r15};
    const int nreg = low_.epi_fused ? 9 : 11;  // r14, r15: the fused epilogue's pointers
    const int d = counter_depth_++;
    if (d < nreg) return {true, regs[d], 0};
    if (d - nreg >= kStackSlots) throw CompileError("loop nest too deep for the code generator");
    return {false, rax, d - nreg};
  }
  void set_counter(const Counter& c, int64_t n) {
    if (c.in_reg) mov(c.reg, n);
    else { mov(r11, n); mov(qword[rsp + 8 * c.slot], r11); }
  }
  void count_down(const Counter& c, const Label& top) {
    if (c.in_reg) dec(c.reg); else dec(qword[rsp + 8 * c.slot]);
    jnz(top, T_NEAR);
    ++facts_.branches;
  }

  // ---- pointer displacement bookkeeping -----------------------------------------------
  void add_ptr(int t, int64_t bytes) {
    if (bytes == 0) return;
    if (bytes >= INT32_MIN && bytes <= INT32_MAX) add(ptr_reg(t), static_cast<int32_t>(bytes));
    else { mov(r11, bytes); add(ptr_reg(t), r11); }
    ++facts_.pointer_updates;
  }
  void shift(const std::array<int64_t, kPtrs>& bytes, int64_t times) {
    for (int t = 0; t < kPtrs; ++t) {
      disp_[t] += bytes[t] * times;
      if (disp_[t] > kFlushDisp || disp_[t] < -kFlushDisp) { add_ptr(t, disp_[t]); disp_[t] = 0; }
    }
  }
  void settle(const std::array<int64_t, kPtrs>& target) {
    for (int t = 0; t < kPtrs; ++t) { add_ptr(t, disp_[t] - target[t]); disp_[t] = target[t]; }
  }

  // ---- loops --------------------------------------------------------------------------
  void emit_level(int i) {
    if (i == low_.hoist_start) return emit_hoisted_region();
    if (i == low_.par) return emit_parallel_loop(i, [&] { emit_level(i + 1); });
    emit_loop(i, [&] { emit_level(i + 1); });
  }
  void emit_hoisted(int i) {
    if (i == low_.tile_start) return emit_tile();
    emit_loop(i, [&] { emit_hoisted(i + 1); });
  }

  template <class Body>
  void emit_loop(int i, Body&& body) {
    const LoweredLoop& L = low_.loops[i];
    const int v = L.var;
    const int64_t range = ranges_[v], n = range / L.step, tail = range % L.step;
    std::array<int64_t, kPtrs> adv{};
    for (int t = 0; t < 3; ++t) adv[t] = low_.stride[v][t] * L.step * eb(t);
    if (low_.epi_fused) {
      adv[kBias] = low_.bias_stride[v] * L.step * 4;
      adv[kRes] = low_.stride[v][kOut] * L.step * 4;
    }
    int64_t pos = 0;
    ranges_[v] = L.step;
    if (n == 1 || (n > 1 && L.unroll)) {
      for (int64_t j = 0; j < n; ++j) {
        shift(adv, j - pos);
        pos = j;
        body();
      }
      if (L.unroll) ++facts_.unrolled_loops;
    } else if (n > 1) {
      pos = emit_runtime_loop(i, n, adv, body);
    }
    if (tail > 0) {
      shift(adv, n - pos);
      pos = n;
      ranges_[v] = tail;
      ++facts_.tail_bodies;
      body();
    }
    shift(adv, -pos);
    ranges_[v] = range;
  }

  // Emits `n` (>= 2) iterations as a counted loop (unrolling the loop that wraps a small tile)
  // and leaves the effective pointers at iteration n. Invariant: effective pointer =
  // register + disp_; each trip's body nets to zero and settle() turns the trip's static
  // advance into one register bump, so every trip runs the same code.
  template <class Body>
  int64_t emit_runtime_loop(int i, int64_t n, const std::array<int64_t, kPtrs>& adv,
                            Body&& body) {
    int64_t u = 1;
    if (i == low_.tile_start - 1 && low_.tile_points < 32)
      u = std::min<int64_t>({n, 4, std::max<int64_t>(1, 48 / low_.tile_points)});
    const int64_t trips = n / u, rest = n % u;
    ++facts_.runtime_loops;
    if (trips > 1) {
      const std::array<int64_t, kPtrs> entry = disp_;
      Counter c = acquire_counter();
      set_counter(c, trips);
      Label top;
      L(top);
      for (int64_t j = 0; j < u; ++j) { body(); shift(adv, 1); }
      settle(entry);
      count_down(c, top);
      --counter_depth_;
    } else {
      for (int64_t j = 0; j < u; ++j) { body(); shift(adv, 1); }
    }
    for (int64_t j = 0; j < rest; ++j) { body(); shift(adv, 1); }
    return n;
  }

  // The parallel loop: runs its iterations [start, end) (clipped to the n full iterations it
  // has in this context), then the tail iteration if its index n is in the range. The tensor
  // pointers are saved at entry and restored at exit, so the static displacements stay exact
  // whatever range the thread was given.
  template <class Body>
  void emit_parallel_loop(int i, Body&& body) {
    const LoweredLoop& P = low_.loops[i];  // (L() is xbyak's label method)
    const int v = P.var;
    const int64_t range = ranges_[v], n = range / P.step, tail = range % P.step;
    std::array<int64_t, kPtrs> adv{};
    for (int t = 0; t < 3; ++t) adv[t] = low_.stride[v][t] * P.step * eb(t);
    if (low_.epi_fused) {
      adv[kBias] = low_.bias_stride[v] * P.step * 4;
      adv[kRes] = low_.stride[v][kOut] * P.step * 4;
    }
    const int nptr = low_.epi_fused ? kPtrs : 3;
    const Address start = qword[rsp + 8 * kSlotStart], end = qword[rsp + 8 * kSlotEnd];
    settle({});
    for (int t = 0; t < nptr; ++t) mov(qword[rsp + 8 * (kSlotPtr + t)], ptr_reg(t));
    auto restore = [&] {
      for (int t = 0; t < nptr; ++t) mov(ptr_reg(t), qword[rsp + 8 * (kSlotPtr + t)]);
      disp_ = {};
    };
    ++facts_.runtime_loops;
    ranges_[v] = P.step;
    if (n > 0) {
      for (int t = 0; t < nptr; ++t) {  // pointers += start * advance
        if (adv[t] == 0) continue;
        mov(r11, start);
        if (adv[t] >= INT32_MIN && adv[t] <= INT32_MAX) {
          imul(r11, r11, static_cast<int32_t>(adv[t]));
        } else {
          mov(qword[rsp + 8 * kSlotTmp], r11);
          mov(r11, adv[t]);
          imul(r11, qword[rsp + 8 * kSlotTmp]);
        }
        add(ptr_reg(t), r11);
        ++facts_.pointer_updates;
      }
      Label clipped, skip, top;
      mov(r11, end);  // trips = min(end, n) - start
      cmp(r11, static_cast<int32_t>(n));
      jle(clipped);
      mov(r11, n);
      L(clipped);
      sub(r11, start);
      jle(skip, T_NEAR);
      Counter c = acquire_counter();
      if (c.in_reg) mov(c.reg, r11);
      else mov(qword[rsp + 8 * c.slot], r11);
      L(top);
      body();
      shift(adv, 1);
      settle({});
      count_down(c, top);
      --counter_depth_;
      L(skip);
      ++facts_.branches;
    }
    if (tail > 0) {  // iteration n: run by the thread whose range holds it
      Label done;
      cmp(start, static_cast<int32_t>(n));
      jg(done, T_NEAR);
      cmp(end, static_cast<int32_t>(n));
      jle(done, T_NEAR);
      restore();
      shift(adv, n);
      ranges_[v] = tail;
      ++facts_.tail_bodies;
      body();
      L(done);
      facts_.branches += 2;
    }
    restore();
    ranges_[v] = range;
  }

  // ---- tile ---------------------------------------------------------------------------
  template <class F>
  void for_each_point(F&& f) {
    for_each_tile_point(low_, low_.tile_start, ranges_,
                        [&](const std::vector<int64_t>& off, const std::vector<int64_t>& range) {
                          Point p{};
                          p.active = low_.lanes == 1 ? 1 : static_cast<int>(range[low_.vec_var]);
                          for (int t = 0; t < 3; ++t) p.off[t] = tensor_offset(low_, off, t);
                          p.boff = 0;
                          if (low_.epi_fused)
                            for (size_t v = 0; v < off.size(); ++v)
                              p.boff += off[v] * low_.bias_stride[v];
                          p.key = acc_key(low_, off);
                          for (size_t v = 0; v < off.size(); ++v)
                            if (low_.reduction[v]) p.rkey = p.rkey * low_.extents[v] + off[v];
                          f(p);
                        });
  }

  void emit_hoisted_region() {
    accs_.clear();
    acc_boff_.clear();
    acc_index_.clear();
    for_each_point([&](const Point& p) {
      if (acc_index_.emplace(p.key, static_cast<int>(accs_.size())).second) {
        accs_.push_back({p.off[kOut], p.active});
        acc_boff_.push_back(p.boff);
      }
    });
    if (static_cast<int>(accs_.size()) > low_.acc_max) throw CompileError("tile exceeds registers");
    has_partial_ = false;
    for (const auto& a : accs_) has_partial_ |= a.second < low_.lanes;
    // Partial vectors of a reduction vector loop show up only inside the tile's tails.
    if (low_.reduce_vec) has_partial_ = true;
    cur_mask_ = 0;
    for (int a = 0; a < static_cast<int>(accs_.size()); ++a) {
      if (low_.zero_init || low_.reduce_vec) zero(a);
      else load(a, kOut, accs_[a].first, accs_[a].second);
    }
    emit_hoisted(low_.hoist_start);
    cur_mask_ = 0;
    if (low_.reduce_vec) return store_reduced();
    if (low_.out_transposed) return store_transposed();
    if (low_.epi_fused) fused_epilogue();
    if (low_.epi_fused && low_.epi_requant) return requant_store();
    for (int a = 0; a < static_cast<int>(accs_.size()); ++a) store(a, accs_[a].first, accs_[a].second);
  }

  // The 'requant' store: each accumulator (the epilogue's float32 y) becomes uint8 the way
  // quantize.cpp's spans do it: clamp(y * (1/out_scale), -512, 512), round half even
  // (vcvtps2dq, MXCSR's default), + zero point, saturated to 0..255; then stored as bytes
  // (AVX-512: vpmovdb, masked for a partial vector; AVX2: packed by vpackssdw / vpackuswb,
  // a partial vector stored byte by byte). Scratch: the two registers after the accumulators.
  void requant_store() {
    const int nacc = static_cast<int>(accs_.size()), t = nacc, u = nacc + 1;
    const int scratch_end = mask_reserved() ? mask_reg() : low_.nregs;
    if (u >= scratch_end) throw FusionUnavailable{};
    for (int a = 0; a < nacc; ++a) {
      const int64_t off = accs_[a].first;
      const int active = accs_[a].second;
      const Xmm A = vr(a), T = vr(t);
      vbroadcastss(T, rq(0));
      vmulps(A, A, T);
      vbroadcastss(T, rq(2));
      vmaxps(A, A, T);
      vbroadcastss(T, rq(3));
      vminps(A, A, T);
      vcvtps2dq(A, A);
      vpbroadcastd(T, rq(1));
      vpaddd(A, A, T);
      ++facts_.stores;
      if constexpr (I == Isa::AVX512) {
        vpxord(T, T, T);
        vpmaxsd(A, A, T);
        vpbroadcastd(T, rq(4));
        vpminsd(A, A, T);
        if (active == low_.lanes) {
          vpmovdb(mem(kOut, off), Zmm(a));
        } else {
          ++facts_.masked;
          need_mask(active);
          vpmovdb(mem(kOut, off) | k1, Zmm(a));
        }
      } else {
        const Xmm x(a), y(u);
        vextracti128(y, Ymm(a), 1);
        vpackssdw(x, x, y);   // 8 x s16 (saturating; the values fit)
        vpackuswb(x, x, x);   // 8 x u8 (saturating to 0..255) in the low 8 bytes
        if (active == low_.lanes) {
          vmovq(mem(kOut, off), x);
        } else {
          ++facts_.masked;
          int j = 0;
          if (active >= 4) {
            vmovd(mem(kOut, off), x);
            j = 4;
          }
          for (; j < active; ++j) vpextrb(mem(kOut, off + j), x, j);
        }
      }
    }
  }

  // The fused epilogue on every accumulator before its store: + bias (a vector along the
  // vector loop, or one broadcast value), + residual (at the output's offset), relu / relu6.
  // Scratch: the two registers after the accumulators (the tile leaves kScratchRegisters
  // free, the AVX2 mask register being the last).
  void fused_epilogue() {
    const int nacc = static_cast<int>(accs_.size()), t1 = nacc, t2 = nacc + 1;
    const int scratch_end = mask_reserved() ? mask_reg() : low_.nregs;
    if (low_.epi_act == 3 && t1 + 4 > scratch_end) throw FusionUnavailable{};
    if (low_.epi_act == 1 || low_.epi_act == 2) zero(t2);
    int six = -1;
    if (low_.epi_act == 2) {
      six = nacc + 2;
      mov(r11d, 0x40C00000);  // 6.0f
      vmovd(Xmm(six), r11d);
      vbroadcastss(vr(six), Xmm(six));
    }
    for (int a = 0; a < nacc; ++a) {
      const int active = accs_[a].second;
      if (low_.epi_scale) {  // int8: float(acc) * scale[channel]
        vcvtdq2ps(vr(a), vr(a));
        load(t1, kBias, acc_boff_[a], active);
        vmulps(vr(a), vr(a), vr(t1));
      }
      if (low_.epi_bias) {
        load(t1, kBias, acc_boff_[a] + low_.epi_bias_offset, active);
        vaddps(vr(a), vr(a), vr(t1));
      }
      if (low_.epi_add) {
        load(t1, kRes, accs_[a].first, active);
        vaddps(vr(a), vr(a), vr(t1));
      }
      if (low_.epi_act == 1 || low_.epi_act == 2) vmaxps(vr(a), vr(a), vr(t2));
      if (low_.epi_act == 2) vminps(vr(a), vr(a), vr(six));
      if (low_.epi_act == 3) gelu(a, t1, t1 + 1, t1 + 2, t1 + 3);
    }
  }

  // x = GELU(x) in place (scratch registers A, T, P, D; r11 holds the constant table).
  // min/max keep a NaN x: a NaN in the second source operand is what they return.
  void gelu(int x, int A, int T, int P, int D) {
    auto c = [&](int i) { return ptr[r11 + i * 64]; };
    mov(r11, reinterpret_cast<size_t>(gelu_table()));
    const Xmm X = vr(x), a = vr(A), t = vr(T), p = vr(P), d = vr(D);
    vmovups(a, c(kTen));
    vminps(a, a, X);
    vmovups(t, c(kMinusTen));
    vmaxps(a, t, a);                               // xc = clamp(x, -10, 10)
    if constexpr (I == Isa::AVX512) vpandd(t, a, c(kAbsMask)); else vandps(t, a, c(kAbsMask));
    vmovups(p, c(kQ7));                            // u = |xc|
    for (int k : {kQ6, kQ5, kQ4, kQ3, kQ2, kQ1}) vfmadd213ps(p, t, c(k));
    vmulps(p, p, t);                               // e = Q(u) - 1
    vaddps(d, p, c(kTwo));
    vmulps(p, p, d);                               // (1 + e)^2 - 1 = e (e + 2)
    vaddps(d, p, c(kTwo));
    vfmadd213ps(p, d, c(kOne));                    // Q^4 = e (e + 2) + 1
    vmulps(p, p, p);
    vmulps(p, p, p);                               // Q^16
    vmulps(a, a, c(kHalf));
    vdivps(a, a, p);                               // h = xc / 2 / Q^16
    vsubps(t, X, a);                               // x - h for x >= 0
    if constexpr (I == Isa::AVX512) {
      vcmpps(k2, X, c(kZero), 1);                  // x < 0 (LT_OS)
      vmovaps(t | k2, a);                          // h for x < 0
      vcmpps(k2, X, c(kMinusTen), 5);              // !(x < -10) (NLT_US: NaN too)
      vmovaps(X | k2 | T_z, t);                    // 0 below -10
    } else {
      vcmpps(d, X, c(kZero), 1);
      vblendvps(t, t, a, d);
      vcmpps(d, X, c(kMinusTen), 5);
      vandps(X, t, d);
    }
  }

  // Reduction vector loop: the accumulators of one output element are added together, summed
  // across lanes, and written (zero_init) or added to the output element.
  void store_reduced() {
    std::vector<int64_t> outs;
    for (const auto& a : accs_)
      if (std::find(outs.begin(), outs.end(), a.first) == outs.end()) outs.push_back(a.first);
    const int t = low_.nregs - 2;
    for (int64_t o : outs) {
      int first = -1;
      for (int a = 0; a < static_cast<int>(accs_.size()); ++a) {
        if (accs_[a].first != o) continue;
        if (first < 0) first = a;
        else if (int8()) vpaddd(vr(first), vr(first), vr(a));
        else vaddps(vr(first), vr(first), vr(a));
      }
      horizontal_sum(first, t);
      const Address dst = dword[ptr_reg(kOut) + static_cast<int32_t>(disp_[kOut] + o * 4)];
      if (!low_.zero_init && int8()) {
        vmovd(Xmm(t), dst);
        vpaddd(Xmm(first), Xmm(first), Xmm(t));
      } else if (!low_.zero_init) {
        vaddss(Xmm(first), Xmm(first), dst);
      }
      vmovss(dst, Xmm(first));
      ++facts_.stores;
    }
  }
  // ---- transposed store (Lowered::out_transposed) ----------------------------------------
  // Accumulator lanes are the inner block (user stride S); a run of g <= lanes accumulators at
  // consecutive user offsets o..o+g-1 is transposed in registers into one vector per lane j,
  // whose first g elements are stored (masked) at o + j*S.
  void store_transposed() {
    std::vector<int> order(accs_.size());
    for (int a = 0; a < static_cast<int>(order.size()); ++a) order[a] = a;
    std::sort(order.begin(), order.end(),
              [&](int x, int y) { return accs_[x].first < accs_[y].first; });
    std::vector<bool> busy(low_.nregs, false);
    for (int a = 0; a < static_cast<int>(accs_.size()); ++a) busy[a] = true;
    if (I == Isa::AVX2) busy[mask_reg()] = true;
    size_t i = 0;
    while (i < order.size()) {
      std::vector<int> run{order[i]};
      while (++i < order.size() && static_cast<int>(run.size()) < low_.lanes &&
             accs_[order[i]].first == accs_[run.back()].first + 1 &&
             accs_[order[i]].second == accs_[run[0]].second)
        run.push_back(order[i]);
      transpose_and_store(run, busy);
    }
  }

  // One pair operation of the transpose network: lo = op(a, b, imm_lo), hi = op(a, b, imm_hi).
  struct PairOp { int a, b, lo, hi, kind; };  // kind: 0 unpck ps, 1 unpck pd, 2 128-bit lanes, 3 idem
  // The network for lanes x lanes floats: slot r of the input is row r; slot c of the output is
  // column c. Stages: 32-bit interleave, 64-bit interleave, then 128-bit lane moves.
  std::vector<std::vector<PairOp>> network() const {
    const int n = low_.lanes;
    std::vector<std::vector<PairOp>> st(2);
    for (int k = 0; k < n; k += 2) st[0].push_back({k, k + 1, k, k + 1, 0});
    for (int k = 0; k < n; k += 4) {
      st[1].push_back({k, k + 2, k, k + 1, 1});
      st[1].push_back({k + 1, k + 3, k + 2, k + 3, 1});
    }
    // slot 4k+m now holds, in 128-bit lane q, column 4q+m of rows 4k..4k+3
    if (n == 8) {
      st.emplace_back();
      for (int m = 0; m < 4; ++m) st[2].push_back({m, 4 + m, m, 4 + m, 2});
    } else {
      st.emplace_back();
      st.emplace_back();
      for (int base : {0, 8})
        for (int m = 0; m < 4; ++m) st[2].push_back({base + m, base + 4 + m, base + m, base + 4 + m, 3});
      for (int m = 0; m < 4; ++m) {
        st[3].push_back({m, 8 + m, m, 8 + m, 3});
        st[3].push_back({4 + m, 12 + m, 4 + m, 12 + m, 3});
      }
    }
    return st;
  }
  // Output slot of the last AVX-512 stage -> column: (m, 8+m) -> columns m, 8+m; (4+m, 12+m) ->
  // columns 4+m, 12+m (lanes q = 0, 2 and 1, 3 of the shuffles), so slots are columns.

  void emit_pair(const PairOp& op, bool lo, Xmm d, Xmm a, Xmm b) {
    switch (op.kind) {
      case 0: lo ? vunpcklps(d, a, b) : vunpckhps(d, a, b); break;
      case 1: lo ? vunpcklpd(d, a, b) : vunpckhpd(d, a, b); break;
      case 2: vperm2f128(Ymm(d.getIdx()), Ymm(a.getIdx()), Ymm(b.getIdx()), lo ? 0x20 : 0x31); break;
      default: vshuff32x4(Zmm(d.getIdx()), Zmm(a.getIdx()), Zmm(b.getIdx()), lo ? 0x88 : 0xDD);
    }
  }

  void transpose_and_store(const std::vector<int>& run, std::vector<bool>& busy) {
    const auto net = network();
    const int n = low_.lanes, g = static_cast<int>(run.size()), active = accs_[run[0]].second;
    const int64_t base = accs_[run[0]].first, S = low_.stride[low_.vec_var][kOut];
    // real[s]: slot s holds lanes of some accumulator; need[k][s]: stage k's output s is used
    std::vector<std::vector<bool>> real(net.size() + 1, std::vector<bool>(n, false));
    for (int r = 0; r < g; ++r) real[0][r] = true;
    for (size_t k = 0; k < net.size(); ++k)
      for (const PairOp& op : net[k])
        real[k + 1][op.lo] = real[k + 1][op.hi] = real[k][op.a] || real[k][op.b];
    std::vector<std::vector<bool>> need(net.size() + 1, std::vector<bool>(n, false));
    for (int c = 0; c < active; ++c) need[net.size()][c] = real[net.size()][c];
    for (size_t k = net.size(); k-- > 0;)
      for (const PairOp& op : net[k])
        if (need[k + 1][op.lo] || need[k + 1][op.hi]) need[k][op.a] = need[k][op.b] = true;
    std::vector<int> reg(n, -1);
    for (int r = 0; r < g; ++r) reg[r] = run[r];
    transpose_busy_ = &busy;
    auto take = [&] {
      for (int x = 0; x < low_.nregs; ++x)
        if (!busy[x]) { busy[x] = true; return x; }
      throw TransposeUnavailable{};
    };
    for (size_t k = 0; k < net.size(); ++k) {
      const bool last = k + 1 == net.size();
      std::vector<int> next(n, -1);
      for (const PairOp& op : net[k]) {
        const bool want_lo = need[k + 1][op.lo] && real[k + 1][op.lo];
        const bool want_hi = need[k + 1][op.hi] && real[k + 1][op.hi];
        const int ra = real[k][op.a] ? reg[op.a] : reg[op.b];
        const int rb = real[k][op.b] ? reg[op.b] : ra;
        if (want_lo || want_hi) {
          int dlo = -1, dhi = -1;
          if (want_lo && want_hi) { dlo = take(); dhi = ra; }
          else (want_lo ? dlo : dhi) = ra;
          if (want_lo) emit_pair(op, true, vr(dlo), vr(ra), vr(rb));
          if (want_hi) emit_pair(op, false, vr(dhi), vr(ra), vr(rb));
          next[op.lo] = dlo;
          next[op.hi] = dhi;
        } else if (ra >= 0) {
          busy[ra] = false;
        }
        if (rb != ra && rb >= 0) busy[rb] = false;
        if (!last) continue;
        for (int c : {op.lo, op.hi}) {
          if (next[c] < 0) continue;
          if (low_.epi_fused)  // row c: channel c of the block, g consecutive outputs
            row_epilogue(next[c], base + c * S, g,
                         acc_boff_[run[0]] + c * low_.bias_stride[low_.vec_var], take());
          store_row(next[c], base + c * S, g);
          busy[next[c]] = false;
        }
      }
      reg = next;
    }
  }
  // The fused epilogue on one transposed row (its g elements share one bias value); t is a
  // scratch register, freed here.
  void row_epilogue(int r, int64_t off, int g, int64_t boff, int t) {
    if (low_.epi_scale) {
      vcvtdq2ps(vr(r), vr(r));
      vbroadcastss(vr(t), mem(kBias, boff));
      vmulps(vr(r), vr(r), vr(t));
    }
    if (low_.epi_bias) {
      vbroadcastss(vr(t), mem(kBias, boff + low_.epi_bias_offset));
      vaddps(vr(r), vr(r), vr(t));
    }
    if (low_.epi_add) {
      load(t, kRes, off, g);
      vaddps(vr(r), vr(r), vr(t));
    }
    if (low_.epi_act == 1 || low_.epi_act == 2) {  // (GELU is never fused here: lowering)
      zero(t);
      vmaxps(vr(r), vr(r), vr(t));
    }
    if (low_.epi_act == 2) {
      mov(r11d, 0x40C00000);  // 6.0f
      vmovd(Xmm(t), r11d);
      vbroadcastss(vr(t), Xmm(t));
      vminps(vr(r), vr(r), vr(t));
    }
    transpose_busy_->at(t) = false;
  }
  void store_row(int r, int64_t off, int g) {
    ++facts_.stores;
    if (g == low_.lanes) return vmovups(mem(kOut, off), vr(r));
    ++facts_.masked;
    need_mask(g);
    if constexpr (I == Isa::AVX512) vmovups(mem(kOut, off) | k1, vr(r));
    else vmaskmovps(mem(kOut, off), Ymm(mask_reg()), vr(r));
  }

  // Leaves the sum of register r's lanes in its lowest lane (t is a scratch register).
  void horizontal_sum(int r, int t) {
    if (int8()) {  // s32 lanes
      if constexpr (I == Isa::AVX512) {
        vextracti64x4(Ymm(t), Zmm(r), 1);
        vpaddd(Ymm(r), Ymm(r), Ymm(t));
        vextracti32x4(Xmm(t), Ymm(r), 1);
      } else {
        vextracti128(Xmm(t), Ymm(r), 1);
      }
      vpaddd(Xmm(r), Xmm(r), Xmm(t));
      vpshufd(Xmm(t), Xmm(r), 0x4E);
      vpaddd(Xmm(r), Xmm(r), Xmm(t));
      vpshufd(Xmm(t), Xmm(r), 0xB1);
      vpaddd(Xmm(r), Xmm(r), Xmm(t));
      return;
    }
    if constexpr (I == Isa::AVX512) {
      vextractf64x4(Ymm(t), Zmm(r), 1);
      vaddps(Ymm(r), Ymm(r), Ymm(t));
      vextractf32x4(Xmm(t), Ymm(r), 1);
    } else {
      vextractf128(Xmm(t), Ymm(r), 1);
    }
    vaddps(Xmm(r), Xmm(r), Xmm(t));
    vmovhlps(Xmm(t), Xmm(t), Xmm(r));
    vaddps(Xmm(r), Xmm(r), Xmm(t));
    vmovshdup(Xmm(t), Xmm(r));
    vaddss(Xmm(r), Xmm(r), Xmm(t));
  }

  void zero(int a) {
    if (I == Isa::AVX512 && low_.lanes > 1) vpxord(Zmm(a), Zmm(a), Zmm(a));
    else vxorps(Xmm(a), Xmm(a), Xmm(a));  // VEX zeroes the upper lanes
  }
  // Makes the mask select the first `active` lanes. The current mask is tracked statically
  // within straight-line code and forgotten (cur_mask_ = 0) wherever control flow joins.
  void need_mask(int active) {
    if (active == cur_mask_) return;
    if constexpr (I == Isa::AVX512) {
      mov(r11d, (1u << active) - 1);
      kmovw(k1, r11d);
    } else {
      mov(r11, reinterpret_cast<size_t>(kMaskTable));
      vmovups(Ymm(mask_reg()), ptr[r11 + (8 - active) * 4]);
    }
    cur_mask_ = active;
  }
  int mask_reg() const { return low_.nregs - 1; }
  bool mask_reserved() const { return I == Isa::AVX2 && has_partial_; }

  void load(int reg, int t, int64_t off, int active) {
    const Kind k = kind_[t];
    ++facts_.loads;
    if (k == Kind::Scalar) return vmovss(Xmm(reg), dword[ptr_reg(t) + static_cast<int32_t>(disp_[t] + off * 4)]);
    if (k == Kind::Bcast) { ++facts_.broadcasts; return vbroadcastss(vr(reg), mem(t, off)); }
    if (active == low_.lanes) return vmovups(vr(reg), mem(t, off));
    ++facts_.masked;
    need_mask(active);
    if constexpr (I == Isa::AVX512) vmovups(vr(reg) | k1 | T_z, mem(t, off));
    else vmaskmovps(vr(reg), Ymm(mask_reg()), mem(t, off));
  }
  void store(int reg, int64_t off, int active) {
    ++facts_.stores;
    if (kind_[kOut] == Kind::Scalar) return vmovss(mem(kOut, off), Xmm(reg));
    if (active == low_.lanes) return vmovups(mem(kOut, off), vr(reg));
    ++facts_.masked;
    need_mask(active);
    if constexpr (I == Isa::AVX512) vmovups(mem(kOut, off) | k1, vr(reg));
    else vmaskmovps(mem(kOut, off), Ymm(mask_reg()), vr(reg));
  }
  // ---- int8 (Lowered::int8): acc (s32 lanes) += dot of 4 u8 (in0) and 4 s8 (in1) per lane
  bool int8() const { return low_.int8 != Int8Path::None; }
  // The exact path's two scratch registers: the last ones below the AVX2 mask register.
  int exact_scratch(int i) const {
    return low_.nregs - (mask_reserved() ? 1 : 0) - 1 - i;
  }
  void dot4(int acc, int u8, int s8, int active) {
    const Xmm A = narrow(acc, active), U = narrow(u8, active), S = narrow(s8, active);
    if (low_.int8 != Int8Path::Exact)
      return vpdpbusd(A, U, S, low_.int8 == Int8Path::VnniVex ? VexEncoding : EvexEncoding);
    const Xmm t1 = narrow(exact_scratch(0), active), t2 = narrow(exact_scratch(1), active);
    vpsllw(t1, S, 8);
    vpsraw(t1, t1, 8);   // even bytes of the weights, sign-extended to 16 bits
    vpsllw(t2, U, 8);
    vpsrlw(t2, t2, 8);   // even bytes of the activations, zero-extended
    vpmaddwd(t1, t2, t1);  // two products of at most 32640 in magnitude each: exact
    vpaddd(A, A, t1);
    vpsraw(t1, S, 8);    // odd bytes
    vpsrlw(t2, U, 8);
    vpmaddwd(t1, t2, t1);
    vpaddd(A, A, t1);
  }

  // a: a register of input `ta` (fma_reg's callers pass which), b: one of the other input
  void fma_reg(int acc, int a, int b, int active, int ta = kIn0) {
    ++facts_.fma;
    if (int8()) return ta == kIn0 ? dot4(acc, a, b, active) : dot4(acc, b, a, active);
    if (low_.lanes == 1) vfmadd231ss(Xmm(acc), Xmm(a), Xmm(b));
    else vfmadd231ps(narrow(acc, active), narrow(a, active), narrow(b, active));
  }
  // acc += reg(a) * memory operand, when the operand can be read straight from memory.
  bool fma_mem(int acc, int a, int t, int64_t off, int active) {
    const Kind k = kind_[t];
    const int32_t d = static_cast<int32_t>(disp_[t] + off * 4);
    if (int8()) {  // the memory operand must be the s8 weights (in1), a whole vector or a
                   // broadcast word (AVX-512); never in scalar code (a vector would be read)
      if (t != kIn1 || low_.int8 == Int8Path::Exact || k == Kind::Scalar) return false;
      const PreferredEncoding enc = low_.int8 == Int8Path::VnniVex ? VexEncoding : EvexEncoding;
      if (k == Kind::Vec && active == low_.lanes) vpdpbusd(vr(acc), vr(a), ptr[ptr_reg(t) + d], enc);
      else if (k == Kind::Bcast && I == Isa::AVX512) {
        const int lanes = accs_[acc].second;
        vpdpbusd(narrow(acc, lanes), narrow(a, lanes), ptr_b[ptr_reg(t) + d], enc);
        ++facts_.broadcasts;
      } else return false;
      ++facts_.fma;
      ++facts_.loads;
      return true;
    }
    if (k == Kind::Scalar) vfmadd231ss(Xmm(acc), Xmm(a), dword[ptr_reg(t) + d]);
    else if (k == Kind::Vec && active == low_.lanes) vfmadd231ps(vr(acc), vr(a), ptr[ptr_reg(t) + d]);
    else if (k == Kind::Bcast && I == Isa::AVX512) {
      const int lanes = accs_[acc].second;  // the accumulator's active lanes
      vfmadd231ps(narrow(acc, lanes), narrow(a, lanes), ptr_b[ptr_reg(t) + d]);
      ++facts_.broadcasts;
    } else return false;
    ++facts_.fma;
    ++facts_.loads;
    return true;
  }

  void emit_tile() {
    cur_mask_ = 0;
    std::vector<Point> pts;
    for_each_point([&](Point p) { p.acc = acc_index_.at(p.key); pts.push_back(p); });
    // group points that share reduction offsets: they read the same operand values
    std::vector<std::vector<int>> groups;
    std::unordered_map<int64_t, int> gidx;
    for (int i = 0; i < static_cast<int>(pts.size()); ++i) {
      auto it = gidx.emplace(pts[i].rkey, static_cast<int>(groups.size()));
      if (it.second) groups.emplace_back();
      groups[it.first->second].push_back(i);
    }
    for (const auto& g : groups) emit_group(pts, g);
  }

  void emit_group(const std::vector<Point>& pts, const std::vector<int>& g) {
    // distinct operand values of each input
    std::vector<int64_t> vals[2];
    std::vector<int> act[2];
    std::vector<std::array<int, 2>> idx(g.size());
    for (size_t q = 0; q < g.size(); ++q) {
      for (int t = 0; t < 2; ++t) {
        const int64_t o = pts[g[q]].off[t];
        auto it = std::find(vals[t].begin(), vals[t].end(), o);
        idx[q][t] = static_cast<int>(it - vals[t].begin());
        if (it == vals[t].end()) { vals[t].push_back(o); act[t].push_back(pts[g[q]].active); }
      }
    }
    const int p = vals[0].size() <= vals[1].size() ? 0 : 1, s = 1 - p;
    const int nacc = static_cast<int>(accs_.size()), temp = nacc;
    if (low_.int8 == Int8Path::Exact &&
        low_.nregs - nacc - 1 - (mask_reserved() ? 1 : 0) - kExactScratch >= 2)
      return emit_group_exact(pts, g, vals, act, idx, p);
    const int free = low_.nregs - nacc - 1 - (mask_reserved() ? 1 : 0) -
                     (low_.int8 == Int8Path::Exact ? kExactScratch : 0);
    const int np = static_cast<int>(vals[p].size());
    for (int c0 = 0; c0 < np; c0 += free) {
      const int c1 = std::min(np, c0 + free);
      for (int j = c0; j < c1; ++j) load(temp + 1 + j - c0, p, vals[p][j], act[p][j]);
      for (size_t sv = 0; sv < vals[s].size(); ++sv) {
        std::vector<size_t> users;
        for (size_t q = 0; q < g.size(); ++q)
          if (idx[q][s] == static_cast<int>(sv) && idx[q][p] >= c0 && idx[q][p] < c1) users.push_back(q);
        if (users.empty()) continue;
        auto preg = [&](size_t q) { return temp + 1 + idx[q][p] - c0; };
        if (users.size() == 1 &&
            fma_mem(pts[g[users[0]]].acc, preg(users[0]), s, vals[s][sv], act[s][sv]))
          continue;
        load(temp, s, vals[s][sv], act[s][sv]);
        for (size_t q : users) fma_reg(pts[g[q]].acc, preg(q), temp, pts[g[q]].active, p);
      }
    }
  }

  // The exact int8 path's tile group: each operand value is split once into its even and odd
  // bytes widened to 16 bits (u8: zero-, s8: sign-extended): the p values (kept in registers)
  // per chunk, each s value once for all its users; then every point costs two vpmaddwd and
  // two vpaddd. Registers: temp (s even), exact_scratch(0) (s odd), exact_scratch(1) (the
  // product), and pairs (even, odd) of p values after temp.
  void split_bytes(int x, int odd, bool is_signed) {
    const Xmm X = vr(x), O = vr(odd);
    if (is_signed) vpsraw(O, X, 8); else vpsrlw(O, X, 8);
    vpsllw(X, X, 8);
    if (is_signed) vpsraw(X, X, 8); else vpsrlw(X, X, 8);
  }
  void emit_group_exact(const std::vector<Point>& pts, const std::vector<int>& g,
                        const std::vector<int64_t> (&vals)[2], const std::vector<int> (&act)[2],
                        const std::vector<std::array<int, 2>>& idx, int p) {
    const int s = 1 - p, nacc = static_cast<int>(accs_.size()), temp = nacc;
    const int sodd = exact_scratch(0), prod = exact_scratch(1);
    const int pairs = (low_.nregs - nacc - 1 - (mask_reserved() ? 1 : 0) - kExactScratch) / 2;
    const int np = static_cast<int>(vals[p].size());
    for (int c0 = 0; c0 < np; c0 += pairs) {
      const int c1 = std::min(np, c0 + pairs);
      for (int j = c0; j < c1; ++j) {
        const int r = temp + 1 + 2 * (j - c0);
        load(r, p, vals[p][j], act[p][j]);
        split_bytes(r, r + 1, p == kIn1);
      }
      for (size_t sv = 0; sv < vals[s].size(); ++sv) {
        std::vector<size_t> users;
        for (size_t q = 0; q < g.size(); ++q)
          if (idx[q][s] == static_cast<int>(sv) && idx[q][p] >= c0 && idx[q][p] < c1)
            users.push_back(q);
        if (users.empty()) continue;
        load(temp, s, vals[s][sv], act[s][sv]);
        split_bytes(temp, sodd, s == kIn1);
        for (size_t q : users) {
          const int a = pts[g[q]].acc, active = pts[g[q]].active;
          const int pe = temp + 1 + 2 * (idx[q][p] - c0);
          const Xmm A = narrow(a, active), P = narrow(prod, active);
          vpmaddwd(P, narrow(temp, active), narrow(pe, active));  // products of at most
          vpaddd(A, A, P);                                         // 32640: exact
          vpmaddwd(P, narrow(sodd, active), narrow(pe + 1, active));
          vpaddd(A, A, P);
          ++facts_.fma;
        }
      }
    }
  }

  const Lowered& low_;
  CompileFacts& facts_;
  std::vector<int64_t> ranges_;
  std::array<int64_t, kPtrs> disp_{};
  Kind kind_[kPtrs];
  std::vector<int64_t> acc_boff_;  // bias offset of each accumulator (fused epilogue)
  std::vector<bool>* transpose_busy_ = nullptr;  // registers in use by store_transposed
  int counter_depth_ = 0;
  std::vector<std::pair<int64_t, int>> accs_;  // (output offset, active lanes)
  std::map<std::pair<int64_t, int64_t>, int> acc_index_;
  bool has_partial_ = false;
  int cur_mask_ = 0;
};

template <Isa I>
class PeakGenerator : public CodeGenerator {
 public:
  PeakGenerator(int chains, uint8_t* buf) : CodeGenerator(4096, buf) {
    auto v = [](int i) -> Xmm { if constexpr (I == Isa::AVX512) return Zmm(i); else return Ymm(i); };
    const int nregs = isa_facts(I).vector_registers;
    for (int i = 0; i < nregs; ++i) vxorps(Xmm(i), Xmm(i), Xmm(i));
    Label top;
    L(top);
    for (int i = 0; i < chains; ++i) vfmadd231ps(v(i), v(nregs - 1), v(nregs - 2));
    dec(rdi);
    jnz(top, T_NEAR);
    vzeroupper();
    ret();
  }
};

// Generation scratch: one growing buffer per thread, reused by every kernel it compiles (no
// allocation or protection change per kernel; only the finished code is copied out).
std::vector<uint8_t>& scratch(size_t size) {
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < size) buf.assign(size, 0);
  return buf;
}

JitCode finish(const CodeGenerator& gen) {
  JitCode code;
  code.code = ExecutableCode(gen.getCode(), gen.getSize());
  code.fn = reinterpret_cast<KernelFn>(reinterpret_cast<uintptr_t>(code.code.data()));
  return code;
}

template <Isa I>
JitCode generate_for(const Lowered& low, CompileFacts& facts) {
  size_t size = 1 << 16;
  for (;;) {
    CompileFacts f = facts;
    try {
      NestGenerator<I> gen(low, size, scratch(size).data(), f);
      JitCode code = finish(gen);
      f.code_bytes = static_cast<int64_t>(gen.getSize());
      facts = f;
      return code;
    } catch (const Xbyak::Error& e) {
      if (static_cast<int>(e) != ERR_CODE_IS_TOO_BIG || size >= (size_t(1) << 28))
        throw CompileError(std::string("xbyak: ") + e.what());
      size *= 4;
    }
  }
}

}  // namespace

JitCode generate(const Lowered& low, CompileFacts& facts) {
  try {
    if (low.isa == Isa::AVX512) return generate_for<Isa::AVX512>(low, facts);
    return generate_for<Isa::AVX2>(low, facts);
  } catch (const FusionUnavailable&) {  // too few scratch registers: the pass applies it
    Lowered unfused = low;
    unfused.epi_fused = false;
    unfused.epi_requant = false;
    CompileFacts f = facts;
    f.epilogue_fused = false;
    JitCode code = low.isa == Isa::AVX512 ? generate_for<Isa::AVX512>(unfused, f)
                                          : generate_for<Isa::AVX2>(unfused, f);
    facts = f;
    return code;
  }
}

JitCode generate_peak_loop(Isa isa, int chains) {
  if (isa == Isa::AVX512) return finish(PeakGenerator<Isa::AVX512>(chains, scratch(4096).data()));
  return finish(PeakGenerator<Isa::AVX2>(chains, scratch(4096).data()));
}

ExecutableCode::ExecutableCode(const uint8_t* bytes, size_t n) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = std::max<size_t>(page, (n + page - 1) / page * page);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw CompileError("mmap failed for the kernel's code");
  std::memcpy(p, bytes, n);
  if (mprotect(p, len, PROT_READ | PROT_EXEC) != 0) {
    munmap(p, len);
    throw CompileError("mprotect failed for the kernel's code");
  }
  data_ = static_cast<uint8_t*>(p);
  size_ = n;
  mapped_ = len;
}

ExecutableCode::~ExecutableCode() {
  if (data_) munmap(data_, mapped_);
}

}  // namespace looptune::detail
