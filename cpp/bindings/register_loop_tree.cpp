// Python bindings of LoopTree, its loops and the pure mutations.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstdio>

#include "looptune/kernel.h"
#include "looptune/mutations.h"
#include "register.h"

namespace looptune::bindings {

namespace {

// The Python view of one loop of a tree.
struct LoopView {
  std::string var;
  int64_t step, size, tail, range;
  bool unroll, vectorize, parallel;
};

std::vector<LoopView> loop_views(const LoopTree& t) {
  std::vector<LoopView> out;
  for (int i = 0; i < t.depth(); ++i) {
    const Loop& l = t.loops()[i];
    out.push_back({t.computation().vars[l.var].name, l.step, t.size(i), t.tail(i), t.range(i),
                   l.unroll, l.vectorize, l.parallel});
  }
  return out;
}

std::string repr_loop(const LoopView& l) {
  auto b = [](bool v) { return v ? std::string("True") : std::string("False"); };
  return "Loop(var='" + l.var + "', step=" + std::to_string(l.step) +
         ", size=" + std::to_string(l.size) + ", tail=" + std::to_string(l.tail) +
         ", unroll=" + b(l.unroll) + ", vectorize=" + b(l.vectorize) +
         (l.parallel ? ", parallel=True" : "") + ")";
}

std::string repr_tree(const LoopTree& t) {
  char hash[32];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(t.hash()));
  return "<LoopTree " + t.computation().name() + " depth=" + std::to_string(t.depth()) +
         " cursor=" + std::to_string(t.cursor()) + " hash=" + hash + ">";
}

py::array_t<bool> mask_array(const LoopTree& t, const std::vector<std::string>& actions) {
  std::vector<bool> mask = legal_mask(t, actions);
  py::array_t<bool> out(static_cast<py::ssize_t>(mask.size()));
  bool* p = out.mutable_data();
  for (size_t i = 0; i < mask.size(); ++i) p[i] = mask[i];
  return out;
}

void register_mutations(py::class_<LoopTree>& c) {
  c.def("up", &cursor_up, "Move the cursor to the enclosing loop.")
      .def("down", &cursor_down, "Move the cursor to the next inner loop.")
      .def("swap_up", &swap_up, "Swap the cursor loop with the one above; the cursor follows.")
      .def("swap_down", &swap_down, "Swap the cursor loop with the one below; the cursor follows.")
      .def("split", &split, py::arg("factor"),
           "Split the cursor loop: outer step*factor, a new inner loop of the old step.")
      .def("merge", &merge, "Fold the cursor loop into the next loop of its variable below.")
      .def("toggle_unroll", &toggle_unroll)
      .def("toggle_vectorize", &toggle_vectorize)
      .def("toggle_parallel", &toggle_parallel,
           "Mark the cursor loop parallel (or serial again); IllegalActionError for a "
           "reduction loop, the innermost loop or a second parallel loop.")
      .def("apply", &apply, py::arg("action"), "Apply a named action (see looptune.actions).")
      .def("try_apply",
           py::overload_cast<const LoopTree&, const std::string&>(&try_apply),
           py::arg("action"), "Like apply, but None when illegal.")
      .def("is_legal", &is_legal, py::arg("action"))
      .def("legal_mask", &mask_array, py::arg("actions"),
           "Boolean numpy array: which of `actions` are legal here.")
      .def(
          "legality",
          [](const LoopTree& t, const std::vector<std::string>& actions, int max_loops) {
            Legality l = legality(t, actions, max_loops);
            py::array_t<bool> mask(static_cast<py::ssize_t>(l.mask.size()));
            bool* p = mask.mutable_data();
            for (size_t i = 0; i < l.mask.size(); ++i) p[i] = l.mask[i];
            return py::make_tuple(mask, l.reasons);
          },
          py::arg("actions"), py::arg("max_loops") = kDefaultMaxLoops,
          "(mask, reasons) for the whole action list under a depth cap, in one call.")
      .def("try_apply_capped",
           py::overload_cast<const LoopTree&, const std::string&, int>(&try_apply),
           py::arg("action"), py::arg("max_loops") = kDefaultMaxLoops,
           "try_apply with splits beyond max_loops loops illegal.");
}

// compile(strides=...): {"in0" | "in1" | "out": sequence of ints} into views.strides.
void parse_strides(const py::object& strides, KernelViews& views) {
  if (strides.is_none()) return;
  if (!py::isinstance<py::dict>(strides))
    throw py::type_error("strides must be a dict {'in0': (...), 'in1': (...), 'out': (...)}, got " +
                         py::str(py::type::of(strides).attr("__name__")).cast<std::string>());
  static const char* const keys[3] = {"in0", "in1", "out"};
  for (auto item : strides.cast<py::dict>()) {
    const std::string key = py::str(item.first).cast<std::string>();
    int t = 0;
    while (t < 3 && key != keys[t]) ++t;
    if (t == 3 || !py::isinstance<py::str>(item.first))
      throw py::value_error("strides: unknown tensor '" + key + "' (use 'in0', 'in1', 'out')");
    if (item.second.is_none()) continue;
    if (!py::isinstance<py::sequence>(item.second) || py::isinstance<py::str>(item.second))
      throw py::type_error("strides['" + key + "'] must be a sequence of ints");
    std::vector<int64_t> s;
    for (auto x : item.second.cast<py::sequence>()) {
      if (!PyIndex_Check(x.ptr()) || py::isinstance<py::bool_>(x))
        throw py::type_error("strides['" + key + "'] must hold ints, got " +
                             py::str(py::type::of(x).attr("__name__")).cast<std::string>());
      int overflow = 0;
      const py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(x.ptr()));
      if (!i) throw py::error_already_set();
      const long long v = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
      if (overflow) throw py::value_error("strides['" + key + "']: a stride is out of range");
      s.push_back(v);
    }
    if (s.empty()) throw py::value_error("strides['" + key + "'] is empty");
    views.strides[t] = std::move(s);
  }
}

}  // namespace

void register_loop_tree(py::module_& m) {
  py::class_<LoopView>(m, "Loop", "One loop of a LoopTree (a read-only view).")
      .def_readonly("var", &LoopView::var)
      .def_readonly("step", &LoopView::step, "elements of `var` per iteration")
      .def_readonly("size", &LoopView::size, "full iterations")
      .def_readonly("tail", &LoopView::tail, "elements left for a partial iteration")
      .def_readonly("range", &LoopView::range, "elements covered per iteration of its parent")
      .def_readonly("unroll", &LoopView::unroll)
      .def_readonly("vectorize", &LoopView::vectorize)
      .def_readonly("parallel", &LoopView::parallel, "iterations shared among threads")
      .def("__repr__", &repr_loop);

  py::class_<LoopTree> c(m, "LoopTree", "A schedule: ordered loops over a computation + cursor.");
  c.def_property_readonly("computation",
                          [](const LoopTree& t) { return unconst(t.computation_ptr()); })
      .def_property_readonly("loops", &loop_views, "outer to inner")
      .def_property_readonly("cursor", &LoopTree::cursor)
      .def_property_readonly("depth", &LoopTree::depth)
      .def_property_readonly(
          "parallel_loop",
          [](const LoopTree& t) -> std::optional<int> {
            const int p = t.parallel_loop();
            return p < 0 ? std::nullopt : std::optional<int>(p);
          },
          "index of the parallel loop, None if the tree has none")
      .def("dump", &LoopTree::dump)
      .def_static("parse", &LoopTree::parse, py::arg("text"), "Inverse of dump().")
      .def("hash", &LoopTree::hash, "Schedule identity (ignores the cursor); stable.")
      .def("state_hash", &LoopTree::state_hash, "hash() plus the cursor.")
      .def("__eq__",
           [](const LoopTree& a, py::object b) {
             return py::isinstance<LoopTree>(b) && a == b.cast<const LoopTree&>();
           })
      .def("__hash__", [](const LoopTree& t) { return t.hash(); })
      .def("__str__", &LoopTree::dump)
      .def("__repr__", &repr_tree)
      .def(py::pickle([](const LoopTree& t) { return t.dump(); },
                      [](const std::string& text) { return LoopTree::parse(text); }));
  register_mutations(c);
  c.def(
      "compile",
      [](const LoopTree& t, std::optional<std::string> isa,
         std::optional<std::pair<std::vector<int64_t>, std::vector<int64_t>>> in_view,
         std::optional<std::pair<std::vector<int64_t>, std::vector<int64_t>>> out_view,
         const py::object& strides) {
        Isa chosen = resolve_isa(isa);
        KernelViews views;
        if (in_view) views.in0 = {in_view->first, in_view->second};
        if (out_view) views.out = {out_view->first, out_view->second};
        parse_strides(strides, views);
        py::gil_scoped_release release;
        return std::make_unique<Kernel>(t, chosen, views);
      },
      py::arg("isa") = py::none(), py::kw_only(), py::arg("in_view") = py::none(),
      py::arg("out_view") = py::none(), py::arg("strides") = py::none(),
      "JIT-compile this schedule (isa None: the host's best). in_view / out_view: "
      "(shape, offset) of the caller's larger buffer holding the input in the kernel's layout "
      "(conv padding, channel blocks; read without a copy) / receiving the output (the user's "
      "layout, or a blocked output's kernel layout) at that offset; the border is never "
      "written. CompileError if the schedule cannot use them. strides: {'in0': (...), "
      "'in1': (...), 'out': (...)} (any subset), the element strides per dim of the numpy "
      "arrays the calls will pass for a, b, out (array.strides // itemsize; all >= 1): the "
      "kernel then takes exactly those strides (ValueError for others) and reads / writes them "
      "in place, or packs an operand whose vector loop would be strided at call time "
      "(kernel.facts['access']). A residual of a strided out has out's strides.");
}

}  // namespace looptune::bindings
