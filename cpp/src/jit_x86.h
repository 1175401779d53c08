// The x86-64 JIT (internal): turns a lowered loop nest into machine code with xbyak.
#pragma once

#include <memory>

#include "looptune/kernel.h"
#include "lowering.h"

namespace Xbyak {
class CodeGenerator;
}

namespace looptune::detail {

using KernelFn = void (*)(const float* in0, const float* in1, float* out);

struct JitCode {
  std::unique_ptr<Xbyak::CodeGenerator> gen;  // owns the executable (read+exec only) pages
  KernelFn fn = nullptr;
};

// Generates code for `low`; fills the instruction counts of `facts`. Throws CompileError.
JitCode generate(const Lowered& low, CompileFacts& facts);

// A register-only FMA loop for measuring peak throughput: `iters` iterations of `chains`
// independent vector FMAs. Signature: void(int64_t iters).
JitCode generate_peak_loop(Isa isa, int chains);

}  // namespace looptune::detail
