// Declarations shared by the pybind11 registration files (bindings only).
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <string>

#include "looptune/computation.h"
#include "looptune/cpu.h"

namespace looptune::bindings {

namespace py = pybind11;

void register_computation(py::module_& m);
void register_loop_tree(py::module_& m);
void register_kernel(py::module_& m);
void register_rowops(py::module_& m);  // register_rowops.cpp

// Python holds computations by shared pointer; trees share the same object.
using CompPtr = std::shared_ptr<Computation>;
inline CompPtr share(Computation c) { return std::make_shared<Computation>(std::move(c)); }
inline CompPtr unconst(std::shared_ptr<const Computation> c) {
  return std::const_pointer_cast<Computation>(std::move(c));
}

// None -> host ISA; an unknown or unsupported name -> std::invalid_argument (ValueError).
Isa resolve_isa(const std::optional<std::string>& name);

}  // namespace looptune::bindings
