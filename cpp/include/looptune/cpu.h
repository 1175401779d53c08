// Which vector ISA the JIT targets on this CPU.
#pragma once

#include <string>

namespace looptune {

enum class Isa { AVX512, AVX2 };

// Best ISA of this CPU (AVX-512F, else AVX2+FMA); LOOPTUNE_ISA=avx2 forces AVX2.
// Throws CompileError on a CPU with neither.
Isa host_isa();
bool isa_supported(Isa isa);
std::string isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // "avx512" | "avx2"; throws std::invalid_argument
int isa_lanes(Isa isa);                  // float32 lanes per vector register
std::string cpu_name();                  // brand string, for cache keys and reports

}  // namespace looptune
