// Exceptions that cross into Python with their own types.
#pragma once

#include <stdexcept>
#include <string>

namespace looptune {

// An action that is not legal in the current loop tree (maps to looptune.IllegalActionError).
class IllegalActionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The JIT could not produce code (maps to looptune.CompileError); never a wrong result.
class CompileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace looptune
