// Which vector ISA the JIT targets on this CPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace looptune {

// A new ISA: a value here (the registration line), its row in cpu.cpp's table (name, lanes,
// registers, CPUID check) and its code generator in jit_x86.cpp.
enum class Isa { AVX512, AVX2 };

// Best ISA of this CPU (AVX-512F, else AVX2+FMA); LOOPTUNE_ISA=avx2 forces AVX2.
// Throws CompileError on a CPU with neither.
Isa host_isa();
bool isa_supported(Isa isa);
std::string isa_name(Isa isa);
Isa parse_isa(const std::string& name);  // "avx512" | "avx2"; throws std::invalid_argument
// Every ISA the engine generates code for, best first (whether or not this CPU runs it).
const std::vector<Isa>& known_isas();
int isa_lanes(Isa isa);                  // float32 lanes per vector register
std::string cpu_name();                  // brand string, for cache keys and reports
// "<vendor> family F model M" from CPUID: the microarchitecture, which a brand string under a
// hypervisor may hide ("AMD EPYC" for several generations); selects host-tuned policies.
std::string cpu_signature();

// Vector registers code generation keeps free for loaded vectors and broadcasts.
constexpr int kScratchRegisters = 4;

// The one home of ISA and cache facts (Python reads them through looptune._core.isa_facts).
struct IsaFacts {
  int lanes;             // float32 lanes per vector register
  int vector_registers;  // architectural vector registers (zmm0-31 / ymm0-15)
  int accumulator_registers;  // of those, what a register tile may hold (the rest is scratch)
  int peak_fma_chains;   // independent FMA chains of the peak loop (measure_peak_gflops)
  int64_t l1d_bytes;     // data cache sizes read from CPUID (0 when the CPU does not say)
  int64_t l2_bytes;
  int64_t l3_bytes;
};
IsaFacts isa_facts(Isa isa);

// How int8 computations multiply on an ISA (the generator's choice, from CPUID):
//   VnniEvex: vpdpbusd, EVEX (AVX512-VNNI; ymm on the AVX2 ISA also needs AVX512-VL)
//   VnniVex:  vpdpbusd, VEX (AVX-VNNI, ymm only: the AVX2 ISA on CPUs that have it)
//   Exact:    no VNNI: bytes widened to 16 bits and two vpmaddwd per group of 4 (exact: every
//             product of u8 and s8 fits; vpmaddubsw is not used, it saturates)
//   None:     no int8 path on this CPU (AVX-512 without VNNI or BW)
enum class Int8Path { None, VnniEvex, VnniVex, Exact };
bool cpu_has_avx512_vnni();  // AVX512-VNNI and AVX512-VL
bool cpu_has_avx_vnni();
// The path `isa` uses on this CPU. LOOPTUNE_INT8_PATH=exact forces the exact path (testing it
// on a VNNI host), =vnni requires a VNNI one, =auto or unset: the best; anything else throws
// CompileError, as does None when `require` is set.
Int8Path int8_path(Isa isa, bool require = false);
std::string int8_path_name(Int8Path p);  // "vnni_evex" | "vnni_vex" | "exact" | "none"

}  // namespace looptune
