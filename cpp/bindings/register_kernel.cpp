// Python bindings of Kernel (validated numpy calls, timing) and the CPU queries.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cmath>

#include "looptune/kernel.h"
#include "register.h"

namespace looptune::bindings {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

// Checks dtype, contiguity and shape; returns the array (a view, never a copy).
py::array checked(const py::handle& obj, const char* what, const TensorAccess& t, bool write) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(what) + " must be a numpy float32 array, got " +
                         py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  // Compare the type and byte order, not the dtype object: a float32 dtype may carry metadata.
  const py::dtype dt = a.dtype();
  if (dt.attr("num").cast<int>() != py::dtype::of<float>().attr("num").cast<int>() ||
      !dt.attr("isnative").cast<bool>())
    throw py::type_error(std::string(what) + " must have dtype float32 in native byte order, got " +
                         py::str(dt).cast<std::string>() + " ('" +
                         py::str(dt.attr("str")).cast<std::string>() + "')");
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  if (got != t.shape)
    throw py::value_error(std::string(what) + " has shape " + shape_str(got) + ", expected " +
                          shape_str(t.shape) + " for tensor " + t.name);
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + " must be C-contiguous (use np.ascontiguousarray)");
  if (write && !a.writeable()) throw py::value_error(std::string(what) + " is read-only");
  return a;
}

bool overlap(const py::array& x, const py::array& y) {
  auto lo = [](const py::array& a) { return static_cast<const char*>(a.data()); };
  return lo(x) < lo(y) + y.nbytes() && lo(y) < lo(x) + x.nbytes();
}

py::array call(const Kernel& k, const py::object& a, const py::object& b, const py::object& out) {
  const Computation& c = k.tree().computation();
  py::array A = checked(a, "a", c.in0, false), B;
  if (b.is_none() && !k.has_constant_in1())
    throw py::value_error("b is required: this kernel has no constant operand (set_constant)");
  if (!b.is_none()) B = checked(b, "b", c.in1, false);
  py::array O;
  if (out.is_none()) {
    O = py::array_t<float>(c.out.shape);
    std::fill_n(static_cast<float*>(O.mutable_data()), c.out.numel(), 0.0f);
  } else {
    O = checked(out, "out", c.out, true);
    if (overlap(O, A) || (!b.is_none() && overlap(O, B)))
      throw py::value_error("out must not overlap a or b");
  }
  const float* pa = static_cast<const float*>(A.data());
  const float* pb = b.is_none() ? nullptr : static_cast<const float*>(B.data());
  float* po = static_cast<float*>(O.mutable_data());
  {
    py::gil_scoped_release release;
    k.run(pa, pb, po);
  }
  return O;
}

py::dict facts_dict(const CompileFacts& f) {
  py::dict d;
  d["isa"] = f.isa;
  d["lanes"] = f.lanes;
  d["vectorized"] = f.vectorized;
  d["reduction_vectorized"] = f.reduction_vectorized;
  d["out_transposed"] = f.out_transposed;
  d["tile_loops"] = f.tile_loops;
  d["tile_accumulators"] = f.tile_accumulators;
  d["tile_rows"] = f.tile_rows;
  d["tile_vectors"] = f.tile_vectors;
  d["accumulators_hoisted"] = f.accumulators_hoisted;
  d["hoisted_loops"] = f.hoisted_loops;
  d["zero_init"] = f.zero_init;
  d["runtime_loops"] = f.runtime_loops;
  d["unrolled_loops"] = f.unrolled_loops;
  d["code_bytes"] = f.code_bytes;
  d["fma"] = f.fma;
  d["loads"] = f.loads;
  d["stores"] = f.stores;
  d["broadcasts"] = f.broadcasts;
  d["masked"] = f.masked;
  d["pointer_updates"] = f.pointer_updates;
  d["branches"] = f.branches;
  d["tail_bodies"] = f.tail_bodies;
  d["spills"] = f.spills;
  d["compile_seconds"] = f.compile_seconds;
  return d;
}

constexpr double kMaxMinTime = 60.0;  // seconds of timing per call at most
constexpr int64_t kMaxRuns = 100'000'000;

TimingResult bench(const Kernel& k, double min_time, int64_t min_runs, int64_t max_runs,
                   bool prepacked) {
  if (!std::isfinite(min_time) || min_time < 0 || min_time > kMaxMinTime)
    throw py::value_error("min_time must be in [0, 60] seconds, got " + std::to_string(min_time));
  if (min_runs < 1 || max_runs < min_runs || max_runs > kMaxRuns)
    throw py::value_error("need 1 <= min_runs <= max_runs, got min_runs=" +
                          std::to_string(min_runs) + ", max_runs=" + std::to_string(max_runs) +
                          " (max_runs at most 10**8)");
  py::gil_scoped_release release;
  return k.benchmark(min_time, min_runs, max_runs, prepacked);
}

}  // namespace

void register_kernel(py::module_& m) {
  py::class_<TimingResult>(m, "TimingResult", "Timing of a kernel: best and median run.")
      .def_readonly("min_seconds", &TimingResult::min_seconds)
      .def_readonly("median_seconds", &TimingResult::median_seconds)
      .def_readonly("gflops", &TimingResult::gflops, "from the best run")
      .def_readonly("median_gflops", &TimingResult::median_gflops)
      .def_readonly("runs", &TimingResult::runs)
      .def("__repr__", [](const TimingResult& r) {
        return "TimingResult(gflops=" + std::to_string(r.gflops) +
               ", median_gflops=" + std::to_string(r.median_gflops) +
               ", runs=" + std::to_string(r.runs) + ")";
      });

  py::class_<Kernel>(m, "Kernel", "A JIT-compiled loop tree.")
      .def_property_readonly("tree", [](const Kernel& k) { return k.tree(); })
      .def_property_readonly("isa", [](const Kernel& k) { return isa_name(k.isa()); })
      .def_property_readonly("facts", [](const Kernel& k) { return facts_dict(k.facts()); })
      .def_property_readonly("assembly", &Kernel::assembly)
      .def("__call__", &call, py::arg("a"), py::arg("b") = py::none(), py::arg("out") = py::none(),
           "Compute out = a (x) b on numpy float32 arrays; returns out (allocated when None). "
           "b=None uses the constant operand kept by set_constant().")
      .def("set_constant",
           [](Kernel& k, const py::object& b) {
             py::array B = checked(b, "b", k.tree().computation().in1, false);
             k.set_constant_in1(static_cast<const float*>(B.data()));
           },
           py::arg("b"),
           "Keep a packed (kernel-layout) copy of b, e.g. constant weights; call with b=None.")
      .def_property_readonly("has_constant", &Kernel::has_constant_in1)
      .def("benchmark", &bench, py::arg("min_time") = 0.01, py::arg("min_runs") = 3,
           py::arg("max_runs") = 100000, py::arg("prepacked") = false,
           "Time the kernel on its own aligned buffers (relayout copies included); "
           "prepacked=True packs b once before timing (constant weights).")
      .def("__repr__", [](const Kernel& k) {
        return "<Kernel " + k.tree().computation().name() + " " + isa_name(k.isa()) + " " +
               std::to_string(k.facts().code_bytes) + " bytes>";
      });

  m.def("host_isa", [] { return isa_name(host_isa()); }, "The best ISA of this CPU.");
  m.def("isa_supported", [](const std::string& s) { return isa_supported(parse_isa(s)); },
        py::arg("isa"));
  m.def("cpu_name", &cpu_name);
  m.def("cpu_signature", &cpu_signature,
        "\"<vendor> family F model M\" from CPUID (the microarchitecture).");
  m.def(
      "measure_peak_gflops",
      [](std::optional<std::string> isa, double min_time) {
        if (!std::isfinite(min_time) || min_time < 0 || min_time > kMaxMinTime)
          throw py::value_error("min_time must be in [0, 60] seconds, got " +
                                std::to_string(min_time));
        Isa chosen = resolve_isa(isa);
        py::gil_scoped_release release;
        return measure_peak_gflops(chosen, min_time);
      },
      py::arg("isa") = py::none(), py::arg("min_time") = 0.05,
      "Measured single-core FP32 FMA peak of this machine.");
}

}  // namespace looptune::bindings
