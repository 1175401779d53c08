// A compiled kernel and the facts the code generator reports about it.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "looptune/cpu.h"
#include "looptune/loop_tree.h"

namespace looptune {

// What the generator knows about the code it emitted ("hidden" compile-time features).
struct CompileFacts {
  std::string isa;
  int lanes = 1;                 // 1 when the innermost loop is not vectorized
  bool vectorized = false;
  bool reduction_vectorized = false;  // the vector loop is a reduction (horizontal sum at store)
  bool epilogue_fused = false;   // the epilogue is applied to the accumulators before the
                                 // kernel's (only) store; otherwise in a pass after the kernel
  bool out_transposed = false;   // a blocked output stored in the user's layout by in-register
                                 // transposes (no copy pass after the kernel)
  int tile_loops = 0;            // innermost loops fully unrolled into the register tile
  int tile_accumulators = 0;     // vector (or scalar) accumulator registers of the tile
  int tile_rows = 0, tile_vectors = 0;  // register tile shape (rows x vectors of the vector var)
  bool accumulators_hoisted = false;    // tile kept in registers across reduction loops
  int hoisted_loops = 0;         // reduction loops the tile stays in registers across
  bool zero_init = false;        // output written once (no memset / reload of C needed)
  int runtime_loops = 0;         // loops emitted as real loops (counters + branches)
  int unrolled_loops = 0;        // loops emitted unrolled outside the tile
  int64_t code_bytes = 0;
  int64_t fma = 0, loads = 0, stores = 0, broadcasts = 0, masked = 0, pointer_updates = 0,
          branches = 0;          // static instruction counts by kind
  int64_t tail_bodies = 0;       // partial-tile bodies emitted for loop tails
  int spills = 0;                // accumulators that did not fit in registers (always 0 today)
  int parallel_loop = -1;        // the tree's parallel loop (-1: none; the kernel runs serially)
  int64_t parallel_iterations = 0;  // its iterations (tail included): the work split over threads
  double compile_seconds = 0.0;
  std::string int8_path;         // int8 computations: int8_path_name() of the code; "" else
  // How the kernel reaches each caller buffer (in0, in1, out): "dense" (the C-contiguous
  // buffer, or a BufferView), "in_place" (read / written at the caller's strides, no copy) or
  // "packed" (strided operands the JIT cannot address: copied at call time into the kernel's
  // own dense buffer, an output copied back). See KernelViews::strides.
  std::string access[3] = {"dense", "dense", "dense"};
};

// The caller's buffer of one tensor when it is not the kernel's default one (layout
// propagation between the layers of a model): a larger row-major buffer of `shape` in which the
// kernel's own buffer starts at `offset` (per dim). For in0, the view holds the kernel layout
// (Computation::in0.alloc_shape: conv padding, channel blocks) and the kernel reads it as it is,
// without a relayout copy (the caller keeps its conv padding zero). For out, the view holds
// either the user's layout (rank of out.shape) or, for a blocked output, the kernel's blocked
// layout (rank of out.alloc_shape, full blocks only); the kernel writes only the region the
// tensor occupies (a zeroed border stays zero), and an epilogue residual has the out view's
// shape (read at the same offsets). A view needs a fused epilogue (or none).
struct BufferView {
  std::vector<int64_t> shape, offset;
  bool active() const { return !shape.empty(); }
};
// strides[t] (t: 0 in0, 1 in1, 2 out): element strides, one per user-facing dim of the tensor,
// of the buffer the caller passes (numpy's strides / itemsize), all >= 1 (0 allowed for a
// dim of extent 1; output dims may not share memory); empty: the dense
// C-contiguous buffer. A tensor read in place is addressed at these strides by the generated
// code (no copy); where the schedule's vector loop would become strided (e.g. the transposed
// operand of an attention matmul), the operand is packed at call time by a blocked in-register
// transpose instead (CompileFacts::access tells which). A strided output is written in place
// when its vector loop stays unit-stride and its epilogue is fused (or it has none); otherwise
// the kernel computes into a dense buffer of its own and copies the result out. An epilogue
// residual of a strided output has the output's strides. Not combined with a BufferView of the
// same tensor, nor with a constant in1 (set_constant_in1) when in1 is strided.
struct KernelViews {
  BufferView in0, out;
  std::array<std::vector<int64_t>, 3> strides;
  bool strided(int t) const { return !strides[t].empty(); }
  bool any() const {
    return in0.active() || out.active() || strided(0) || strided(1) || strided(2);
  }
};

struct TimingResult {
  double min_seconds = 0, median_seconds = 0;
  double gflops = 0;         // from min_seconds (best run)
  double median_gflops = 0;  // from median_seconds
  int64_t runs = 0;
};

class Kernel {
 public:
  Kernel(const LoopTree& tree, Isa isa);  // compiles; throws CompileError
  // Compiles with buffer views (see BufferView); throws CompileError when the schedule cannot
  // read / write them (e.g. a user-layout out view of a blocked output without a transposed
  // store, or an epilogue that is not fused).
  Kernel(const LoopTree& tree, Isa isa, const KernelViews& views);
  ~Kernel();
  Kernel(const Kernel&) = delete;
  Kernel& operator=(const Kernel&) = delete;

  // Unpadded, dense row-major buffers of the computation's shapes (or of the strides it was
  // compiled with, KernelViews::strides); any alignment. Inputs whose kernel layout differs
  // (TensorAccess::padded) are copied into it first.
  // in1 == nullptr uses the constant operand kept by set_constant_in1 (CompileError if none).
  // `out` needs no zero-fill (run zeroes it when the kernel accumulates into it). Safe to call
  // from several threads at once; a kernel without relayout copies takes no lock.
  // bias / residual: the epilogue's operands (Computation::epilogue): bias of
  // Computation::bias_shape() (nullptr: the one kept by set_constant_bias), residual of the
  // output's shape; both ignored when the epilogue does not name them. The epilogue is fused
  // into the kernel's store (facts().epilogue_fused) or applied in a pass after it.
  // threads: how many threads share the parallel loop (0: num_threads(), thread_pool.h); a
  // kernel without a parallel loop runs on the calling thread whatever it is. The result is
  // bit-identical at every thread count.
  // int8 computations (Computation::dtype): in0 holds u8, in1 s8 (the user's layouts, as
  // bytes), out int32 without an epilogue, else float32: act(float(acc) * scale[channel] +
  // bias + residual) (scale of bias_shape(); nullptr: the one kept by set_constant_scale).
  // A 'requant' epilogue: out holds uint8 = quantize_u8(y, out_scale, out_zero_point) of the
  // float32 result y of the rest of the chain, bit for bit: requantized in the JIT's store
  // with the fused chain (facts().epilogue_fused; vector stores in the user's layout only),
  // else y is computed into a kernel-owned buffer and requantized in a pass split over the
  // threads. out_scale 0: the constant ones (set_constant_requant); std::invalid_argument
  // for bad or missing parameters.
  void run(const float* in0, const float* in1, float* out, int threads = 0,
           const float* bias = nullptr, const float* residual = nullptr,
           const float* scale = nullptr, float out_scale = 0.0f,
           int32_t out_zero_point = 0) const;
  // 'requant' epilogues: keeps the output's scale and zero point, so calls may omit them.
  void set_constant_requant(float out_scale, int32_t out_zero_point);
  bool has_constant_requant() const { return constant_out_scale_ > 0.0f; }
  void set_constant_scale(const float* scale);  // int8 epilogues: keeps a copy of the scale
  bool has_constant_scale() const { return !constant_scale_.empty(); }
  // Keeps a copy of the epilogue's bias, so calls may pass none.
  void set_constant_bias(const float* bias);
  bool has_constant_bias() const { return !constant_bias_.empty(); }
  // Keeps a kernel-layout (packed) copy of in1, e.g. the weights of an inference layer, so calls
  // that pass no in1 skip its relayout.
  void set_constant_in1(const float* in1);
  bool has_constant_in1() const { return constant_ != nullptr; }
  // Times the kernel, relayout copies included, on its own 64-byte-aligned random buffers of
  // the user's shapes: warm-up, then repeated runs
  // until `min_seconds` (counted from the warm-up) have passed and at least `min_runs` samples
  // are taken (at most max_runs). Kernels under ~20 us run in batches, one sample per batch;
  // a slower kernel's warm-up is its first sample (a cold run never lowers the best time).
  // With `prepacked`, in1 is packed once before timing (the constant-weights case).
  // A kernel compiled with strides (KernelViews::strides) is timed through run() on buffers
  // spanning its strided views, its call-time packing included (prepacked is ignored);
  // CompileError for one compiled with a BufferView.
  // threads: as for run() (0: num_threads()).
  TimingResult benchmark(double min_seconds, int64_t min_runs, int64_t max_runs,
                         bool prepacked = false, int threads = 0) const;
  // The threads a call with `threads` (0: num_threads()) uses: 1 without a parallel loop, at
  // most the parallel loop's iterations.
  int threads_used(int threads = 0) const;

  const LoopTree& tree() const { return tree_; }
  const KernelViews& views() const { return views_; }
  // Shapes of the caller's buffers: a view's shape, else the computation's user shape.
  const std::vector<int64_t>& in0_shape() const;
  const std::vector<int64_t>& out_shape() const;
  const CompileFacts& facts() const { return facts_; }
  // How the kernel reaches the caller's buffer of tensor t (0 in0, 1 in1, 2 out).
  enum class Access { Dense, InPlace, Packed };
  Access access(int t) const { return access_[t]; }
  // The caller's element strides of tensor t (empty: dense); see KernelViews::strides.
  const std::vector<int64_t>& strides(int t) const { return views_.strides[t]; }
  struct Relayout;  // kernel-layout input buffers (defined in kernel.cpp)
  std::string assembly() const;  // disassembly of the generated code (objdump, else hex)
  Isa isa() const { return isa_; }

 private:
  // kernel buffers; `threads` already resolved by threads_used(); epi: {bias, residual} of
  // an epilogue fused into the kernel's store (nullptr: none)
  void call(const float* in0, const float* in1, float* out, int threads,
            const float* const* epi = nullptr) const;
  // run() for the dense buffers (strided operands already packed), threads resolved
  void run_dense(const float* in0, const float* in1, float* out, int threads, const float* bias,
                 const float* residual, const float* scale) const;
  // run_dense() of a 'requant' epilogue: the float32 chain into scratch, then the u8 pass
  void run_requant(const float* in0, const float* in1, uint8_t* out, int threads,
                   const float* bias, const float* residual, const float* scale,
                   float out_scale, int32_t out_zero_point) const;
  void run_body(const float* in0, const float* in1, float* out, int threads,
                const float* const* epi = nullptr) const;  // run() less an unfused epilogue
  // in1_packed: in1 is already in the kernel's layout.
  void execute(const float* in0, const float* in1, bool in1_packed, float* out,
               const Relayout& r, int threads, const float* const* epi = nullptr) const;
  TimingResult benchmark_strided(double min_seconds, int64_t min_runs, int64_t max_runs,
                                 int threads) const;
  struct Packed;
  std::unique_ptr<Packed> pack_in1(const float* in1) const;
  LoopTree tree_;
  Isa isa_;
  CompileFacts facts_;
  bool relaid_[2] = {false, false};  // input i is copied into its kernel layout first
  bool out_relaid_ = false;  // the output is computed in a blocked layout, then copied (a
                             // blocked output the kernel cannot store in the user's layout)
  KernelViews views_;
  Access access_[3] = {Access::Dense, Access::Dense, Access::Dense};
  bool packs_ = false;  // some operand is packed (Access::Packed) at call time
  struct StridedWork;   // the dense copies of packed operands (kernel.cpp)
  mutable std::mutex strided_mutex_;
  mutable std::unique_ptr<StridedWork> strided_work_;
  int64_t in0_base_ = 0, out_base_ = 0;  // element offsets of the kernel's buffers in the views
  std::unique_ptr<Packed> constant_;  // set_constant_in1
  std::vector<float> constant_bias_;  // set_constant_bias
  std::vector<float> constant_scale_;  // set_constant_scale
  float constant_out_scale_ = 0.0f;    // set_constant_requant (0: none)
  int32_t constant_out_zero_point_ = 0;
  bool chain_fused_ = false;   // the float32 chain is fused into the store
  bool requant_fused_ = false;  // and the requant step too (facts().epilogue_fused then; a
                                // requant kernel without it requantizes in a pass)
  mutable std::mutex requant_mutex_;  // run() reuses its float32 scratch across calls
  mutable std::vector<float> requant_scratch_;
  mutable std::mutex workspace_mutex_;  // run() reuses its relayout buffers across calls
                                        // (only kernels with relayout copies have them)
  mutable std::unique_ptr<Relayout> workspace_;
  struct Code;
  std::unique_ptr<Code> code_;
};

// out = act(out + bias[channel] + residual) over the user-facing output of `c` (its epilogue;
// nothing when it has none): one vectorized pass. bias / residual may be nullptr when the
// epilogue does not name them. Rows are shared among `threads`.
void apply_epilogue(const Computation& c, float* out, const float* bias, const float* residual,
                    int threads = 1);
// int8: out (holding the int32 accumulators) = float(acc) * scale[channel], in place.
void dequantize_output(const Computation& c, float* out, const float* scale, int threads = 1);
// int8: the sum of each output channel's weights (in1 in the user's layout, s8): with
// activations quantized as round(x / s) + zp, acc - zp * sum is the exact sum of the
// zero-point-free products (fold -zp * scale * sum into the bias). matmul: [N] (column sums
// of [K][N]); conv2d: [K]; batch_matmul: std::invalid_argument (its sums differ per batch).
std::vector<int32_t> int8_weight_sums(const Computation& c, const int8_t* in1);

// GELU (exact, erf form: 0.5 x (1 + erf(x / sqrt 2))) of n floats, in place; the vectorized
// approximation the epilogue uses (absolute error of erf under ~2e-7).
void gelu_inplace(float* x, int64_t n);

// Peak single-core FP32 FMA throughput of this ISA, measured with a JIT'd register-only loop.
double measure_peak_gflops(Isa isa, double min_seconds = 0.05);

}  // namespace looptune
