// Run-time ISA selection from CPUID (via Xbyak::util::Cpu) and the CPU's brand string.
#include "looptune/cpu.h"

#include <xbyak/xbyak_util.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "looptune/errors.h"

namespace looptune {

namespace {

const Xbyak::util::Cpu& cpu() {
  static const Xbyak::util::Cpu c;
  return c;
}

// The one table of ISA facts, best ISA first: a new ISA is a row here (and its generator).
struct IsaRow {
  Isa isa;
  const char* name;
  int lanes;             // float32 lanes per vector register
  int vector_registers;  // architectural vector registers
  int peak_fma_chains;   // independent FMA chains of the peak loop
  bool (*supported)();   // CPUID says this CPU runs it
};

const IsaRow kIsas[] = {
    {Isa::AVX512, "avx512", 16, 32, 24,
     [] { return cpu().has(Xbyak::util::Cpu::tAVX512F); }},
    {Isa::AVX2, "avx2", 8, 16, 12,
     [] { return cpu().has(Xbyak::util::Cpu::tAVX2) && cpu().has(Xbyak::util::Cpu::tFMA); }},
};

const IsaRow& row(Isa isa) {
  for (const IsaRow& r : kIsas)
    if (r.isa == isa) return r;
  throw std::logic_error("an Isa value without a row in cpu.cpp's table");
}

}  // namespace

const std::vector<Isa>& known_isas() {
  static const std::vector<Isa> all = [] {
    std::vector<Isa> v;
    for (const IsaRow& r : kIsas) v.push_back(r.isa);
    return v;
  }();
  return all;
}

bool isa_supported(Isa isa) { return row(isa).supported(); }

std::string isa_name(Isa isa) { return row(isa).name; }

int isa_lanes(Isa isa) { return row(isa).lanes; }

namespace {

// Data/unified cache sizes per level (1..3) from CPUID leaf 4 (Intel) or 0x8000001D (AMD):
// both use the same layout (type in EAX[4:0], level in EAX[7:5], ways/partitions/line/sets).
std::array<int64_t, 4> cache_sizes() {
  std::array<int64_t, 4> out{};
  using C = Xbyak::util::Cpu;
  uint32_t leaf = 0;
  if (cpu().has(C::tINTEL)) {
    leaf = 4;
  } else {
    uint32_t ext[4];
    C::getCpuid(0x80000000u, ext);
    if (ext[0] >= 0x8000001Du) leaf = 0x8000001Du;
  }
  if (leaf == 0) return out;
  for (uint32_t i = 0; i < 16; ++i) {
    uint32_t r[4];
    C::getCpuidEx(leaf, i, r);
    const uint32_t type = r[0] & 0x1f, level = (r[0] >> 5) & 0x7;
    if (type == 0) break;
    if ((type != 1 && type != 3) || level < 1 || level > 3) continue;  // skip instruction caches
    const int64_t ways = ((r[1] >> 22) & 0x3ff) + 1, parts = ((r[1] >> 12) & 0x3ff) + 1;
    const int64_t line = (r[1] & 0xfff) + 1, sets = int64_t(r[2]) + 1;
    out[level] = ways * parts * line * sets;
  }
  return out;
}

}  // namespace

IsaFacts isa_facts(Isa isa) {
  static const std::array<int64_t, 4> caches = cache_sizes();
  const IsaRow& r = row(isa);
  return IsaFacts{r.lanes,           r.vector_registers, r.vector_registers - kScratchRegisters,
                  r.peak_fma_chains, caches[1],          caches[2],
                  caches[3]};
}

static std::string isa_choices() {
  std::string out;
  for (const IsaRow& r : kIsas) out += (out.empty() ? "'" : " or '") + std::string(r.name) + "'";
  return out;
}

Isa parse_isa(const std::string& name) {
  for (const IsaRow& r : kIsas)
    if (name == r.name) return r.isa;
  throw std::invalid_argument("unknown ISA '" + name + "'; choose " + isa_choices());
}

Isa host_isa() {
  if (const char* forced = std::getenv("LOOPTUNE_ISA"); forced && *forced) {
    Isa isa;
    try {
      isa = parse_isa(forced);
    } catch (const std::invalid_argument&) {
      throw CompileError(std::string("LOOPTUNE_ISA='") + forced + "' is not " + isa_choices());
    }
    if (!isa_supported(isa))
      throw CompileError(std::string("LOOPTUNE_ISA='") + forced + "' is not supported by this CPU");
    return isa;
  }
  for (const IsaRow& r : kIsas)
    if (r.supported()) return r.isa;
  throw CompileError("looptune needs AVX2+FMA or AVX-512");
}

std::string cpu_name() {
  uint32_t max_ext[4];
  Xbyak::util::Cpu::getCpuid(0x80000000u, max_ext);
  if (max_ext[0] < 0x80000004u) return "unknown x86-64";
  char brand[49] = {0};
  for (uint32_t i = 0; i < 3; ++i) {
    uint32_t regs[4];
    Xbyak::util::Cpu::getCpuid(0x80000002u + i, regs);
    std::memcpy(brand + 16 * i, regs, 16);
  }
  std::string s(brand);
  size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
  return b == std::string::npos ? "unknown x86-64" : s.substr(b, e - b + 1);
}

std::string cpu_signature() {
  uint32_t r[4];
  Xbyak::util::Cpu::getCpuid(0, r);
  char vendor[13] = {0};
  std::memcpy(vendor, &r[1], 4);  // EBX, EDX, ECX spell the vendor
  std::memcpy(vendor + 4, &r[3], 4);
  std::memcpy(vendor + 8, &r[2], 4);
  Xbyak::util::Cpu::getCpuid(1, r);
  const uint32_t base_family = (r[0] >> 8) & 0xf, base_model = (r[0] >> 4) & 0xf;
  uint32_t family = base_family, model = base_model;
  if (base_family == 0xf) family += (r[0] >> 20) & 0xff;
  if (base_family == 0xf || base_family == 0x6) model += ((r[0] >> 16) & 0xf) << 4;
  return std::string(vendor) + " family " + std::to_string(family) + " model " +
         std::to_string(model);
}

bool cpu_has_avx512_vnni() {
  using C = Xbyak::util::Cpu;
  return cpu().has(C::tAVX512_VNNI) && cpu().has(C::tAVX512VL) && cpu().has(C::tAVX512BW);
}

bool cpu_has_avx_vnni() { return cpu().has(Xbyak::util::Cpu::tAVX_VNNI); }

std::string int8_path_name(Int8Path p) {
  switch (p) {
    case Int8Path::VnniEvex: return "vnni_evex";
    case Int8Path::VnniVex: return "vnni_vex";
    case Int8Path::Exact: return "exact";
    default: return "none";
  }
}

Int8Path int8_path(Isa isa, bool require) {
  using C = Xbyak::util::Cpu;
  Int8Path best = Int8Path::None, exact = Int8Path::None;
  if (isa == Isa::AVX512) {
    if (cpu_has_avx512_vnni()) best = Int8Path::VnniEvex;
    if (cpu().has(C::tAVX512BW) && cpu().has(C::tAVX512VL)) exact = Int8Path::Exact;
  } else {
    if (cpu_has_avx_vnni()) best = Int8Path::VnniVex;
    else if (cpu_has_avx512_vnni()) best = Int8Path::VnniEvex;
    if (cpu().has(C::tAVX2)) exact = Int8Path::Exact;
  }
  if (best == Int8Path::None) best = exact;
  Int8Path chosen = best;
  if (const char* v = std::getenv("LOOPTUNE_INT8_PATH"); v && *v) {
    const std::string s(v);
    if (s == "exact") chosen = exact;
    else if (s == "vnni") chosen = best == Int8Path::Exact ? Int8Path::None : best;
    else if (s != "auto")
      throw CompileError("LOOPTUNE_INT8_PATH='" + s + "' is not 'auto', 'vnni' or 'exact'");
  }
  if (require && chosen == Int8Path::None)
    throw CompileError("no int8 code path for " + isa_name(isa) + " on this CPU (" + cpu_name() +
                       "; LOOPTUNE_INT8_PATH=" +
                       (std::getenv("LOOPTUNE_INT8_PATH") ? std::getenv("LOOPTUNE_INT8_PATH")
                                                          : "auto") + ")");
  return chosen;
}

}  // namespace looptune
