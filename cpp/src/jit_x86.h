// The x86-64 JIT (internal): turns a lowered loop nest into machine code with xbyak.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "looptune/kernel.h"
#include "lowering.h"

namespace looptune::detail {

// start, end: the iterations [start, end) of the parallel loop to run (Lowered::par); ignored
// by a kernel without one. Each thread calls the same code with its own range.
// epi: {bias, residual} of an epilogue fused into the store (Lowered::epi_fused), else unused.
using KernelFn = void (*)(const float* in0, const float* in1, float* out, int64_t start,
                          int64_t end, const float* const* epi);

// Pages holding a copy of generated code, read+execute only (never writable and executable at
// once: the code is generated in a per-thread scratch buffer, copied, then protected).
class ExecutableCode {
 public:
  ExecutableCode() = default;
  ExecutableCode(const uint8_t* bytes, size_t n);  // throws CompileError if mmap/mprotect fail
  ~ExecutableCode();
  ExecutableCode(ExecutableCode&& o) noexcept { swap(o); }
  ExecutableCode& operator=(ExecutableCode&& o) noexcept { swap(o); return *this; }
  ExecutableCode(const ExecutableCode&) = delete;
  ExecutableCode& operator=(const ExecutableCode&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void swap(ExecutableCode& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(mapped_, o.mapped_);
  }
  uint8_t* data_ = nullptr;
  size_t size_ = 0, mapped_ = 0;
};

struct JitCode {
  ExecutableCode code;
  KernelFn fn = nullptr;
};

// Generates code for `low`; fills the instruction counts of `facts`. Throws CompileError.
JitCode generate(const Lowered& low, CompileFacts& facts);

// A register-only FMA loop for measuring peak throughput: `iters` iterations of `chains`
// independent vector FMAs. Signature: void(int64_t iters).
JitCode generate_peak_loop(Isa isa, int chains);

}  // namespace looptune::detail
