// The schedule: an ordered nest of loops over a computation's variables, plus a cursor.
//
// Each loop iterates one variable with a fixed step (elements per iteration). Splitting a
// loop of step s by N gives an outer loop of step s*N and an inner loop of step s. The range a
// loop covers is the step of the nearest enclosing loop of the same variable (or the extent);
// it runs range/step full iterations and then, if range%step != 0, one partial iteration
// (the tail) whose smaller range is handed to the inner loops of that variable. Loops of one
// variable therefore always appear in non-increasing step order (step <= range; an equal
// step is a loop of size 1, as splitting a loop by its full size gives), and every variable's
// innermost loop has step 1, so any legal tree visits every point of the iteration space
// exactly once.
//
// At most one loop may be marked parallel: its iterations (tail included) are shared among
// threads, each running the loops below it on its own range of iterations. It must iterate an
// output (non-reduction) variable, so distinct iterations write distinct output elements and
// every element is summed by one thread in the serial order (results are bit-identical at any
// thread count), and it must not be the innermost loop (the vector loop of the register tile).
// Outer loops, of any variable, stay serial around it: each thread runs them all and, at the
// parallel loop, only its share. Iteration j of the parallel loop owns the elements
// base + j*step .. + step of its variable in every iteration of the outer loops, so two
// threads never touch the same output element, whatever the split of that variable above.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "looptune/computation.h"

namespace looptune {

constexpr int kMaxTreeLoops = 16;  // loops per tree (split is illegal beyond this)

struct Loop {
  int var = 0;         // index into Computation::vars
  int64_t step = 1;    // elements of `var` per iteration
  bool unroll = false;     // annotation: emit fully unrolled (code generator may cap it)
  bool vectorize = true;   // annotation: may be vectorized when innermost (false forces scalar)
  bool parallel = false;   // iterations shared among threads (see the rule above)
  bool operator==(const Loop& o) const {
    return var == o.var && step == o.step && unroll == o.unroll && vectorize == o.vectorize &&
           parallel == o.parallel;
  }
};

class LoopTree {
 public:
  LoopTree() = default;
  LoopTree(std::shared_ptr<const Computation> comp, std::vector<Loop> loops, int cursor);

  // The base schedule: one loop per variable in the computation's natural order, no splits.
  static LoopTree base(std::shared_ptr<const Computation> comp);

  const Computation& computation() const { return *comp_; }
  std::shared_ptr<const Computation> computation_ptr() const { return comp_; }
  const std::vector<Loop>& loops() const { return loops_; }
  int cursor() const { return cursor_; }
  int depth() const { return static_cast<int>(loops_.size()); }

  int64_t range(int i) const;  // elements loop i covers in a full iteration of its parent
  int64_t size(int i) const;   // full iterations: range / step
  int64_t tail(int i) const;   // range % step (elements handed to inner loops of the same var)
  int parallel_loop() const;   // index of the parallel loop, -1 if none
  // Why loop i may not be parallel in this tree ("" if it may), other loops' marks ignored.
  std::string parallel_illegal(int i) const;

  std::string dump() const;    // loop_tool-style text; parse(dump()) == *this
  static LoopTree parse(const std::string& text);
  uint64_t hash() const;        // schedule identity: computation + loops (not the cursor)
  uint64_t state_hash() const;  // hash() plus the cursor

  bool operator==(const LoopTree& o) const;

 private:
  void validate() const;  // throws std::invalid_argument
  std::shared_ptr<const Computation> comp_;
  std::vector<Loop> loops_;
  int cursor_ = 0;
};

}  // namespace looptune
