// The `looptune._core` extension module: registration and exception translation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "looptune/cpu.h"
#include "looptune/errors.h"
#include "looptune/mutations.h"
#include "looptune/safety.h"
#include "register.h"

namespace py = pybind11;

namespace looptune::bindings {

namespace {

// Raise the Python class of the same name defined in looptune/errors.py.
void raise_python(const char* cls, const char* what) {
  py::object type = py::module_::import("looptune.errors").attr(cls);
  PyErr_SetString(type.ptr(), what);
}

}  // namespace

Isa resolve_isa(const std::optional<std::string>& name) {
  if (!name) return host_isa();
  Isa isa = parse_isa(*name);
  if (!isa_supported(isa))
    throw std::invalid_argument("ISA '" + *name + "' is not supported by this CPU (" +
                                cpu_name() + ")");
  return isa;
}

}  // namespace looptune::bindings

PYBIND11_MODULE(_core, m) {
  namespace lb = looptune::bindings;
  m.doc() = "looptune's C++ engine: loop-tree IR, schedule mutations, x86-64 JIT and timing.";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const looptune::IllegalActionError& e) {
      lb::raise_python("IllegalActionError", e.what());
    } catch (const looptune::CompileError& e) {
      lb::raise_python("CompileError", e.what());
    } catch (const looptune::BufferTooLargeError& e) {
      lb::raise_python("BufferTooLargeError", e.what());
    }
  });
  // Long C++ loops poll this: with the GIL, run Python's signal handlers (Ctrl-C raises
  // KeyboardInterrupt, which propagates out of the loop as error_already_set).
  looptune::set_interrupt_hook([] {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  });
  m.attr("MAX_TREE_LOOPS") = looptune::kMaxTreeLoops;
  m.attr("MAX_LOOPS") = looptune::kMaxTreeLoops;  // the old name of MAX_TREE_LOOPS
  m.attr("MAX_UNROLL") = looptune::kMaxUnroll;
  m.attr("DEFAULT_MAX_LOOPS") = looptune::kDefaultMaxLoops;
  m.def("check_action", &looptune::check_action_name, py::arg("action"),
        "Raise ValueError unless `action` is a well-formed action name.");
  m.def(
      "known_isas",
      [] {
        std::vector<std::string> names;
        for (looptune::Isa i : looptune::known_isas()) names.push_back(looptune::isa_name(i));
        return names;
      },
      "Every ISA the engine generates code for, best first.");
  m.def(
      "supported_isas",
      [] {
        std::vector<std::string> names;
        for (looptune::Isa i : looptune::known_isas())
          if (looptune::isa_supported(i)) names.push_back(looptune::isa_name(i));
        return names;
      },
      "The ISAs of known_isas() this CPU runs, best first.");
  m.def(
      "isa_facts",
      [](std::optional<std::string> isa) {
        // Facts of a named ISA are known even when this CPU lacks it (cache sizes are the host's).
        const looptune::Isa chosen = isa ? looptune::parse_isa(*isa) : looptune::host_isa();
        const looptune::IsaFacts f = looptune::isa_facts(chosen);
        py::dict d;
        d["isa"] = looptune::isa_name(chosen);
        d["lanes"] = f.lanes;
        d["vector_registers"] = f.vector_registers;
        d["accumulator_registers"] = f.accumulator_registers;
        d["peak_fma_chains"] = f.peak_fma_chains;
        d["l1d_bytes"] = f.l1d_bytes;
        d["l2_bytes"] = f.l2_bytes;
        d["l3_bytes"] = f.l3_bytes;
        d["supported"] = looptune::isa_supported(chosen);
        // int8: the CPU's VNNI flags and the path int8 kernels of this ISA use here
        d["vnni"] = looptune::cpu_has_avx512_vnni();
        d["avx_vnni"] = looptune::cpu_has_avx_vnni();
        d["int8_path"] = looptune::int8_path_name(looptune::int8_path(chosen));
        return d;
      },
      py::arg("isa") = py::none(),
      "Vector lanes, register count, peak-loop FMA chains and CPUID cache sizes of an ISA; "
      "vnni (AVX512-VNNI with VL), avx_vnni (the VEX AVX-VNNI) and int8_path: how its int8 "
      "kernels multiply on this CPU ('vnni_evex', 'vnni_vex', 'exact': no VNNI, exact 16-bit "
      "products; 'none'; LOOPTUNE_INT8_PATH=exact forces the exact path).");
  m.attr("MAX_EXTENT") = looptune::kMaxExtent;
  m.attr("MAX_VARS") = looptune::kMaxVars;
  lb::register_computation(m);
  lb::register_loop_tree(m);
  lb::register_kernel(m);
  lb::register_rowops(m);
}
