// Pure schedule mutations and named actions.
//
// Every mutation is checked by one legality function that builds nothing (so legal_mask is
// cheap) and only formats a reason when asked for one.
#include "looptune/mutations.h"

#include <stdexcept>

#include "looptune/errors.h"

namespace looptune {

namespace {

enum class Op { Up, Down, SwapUp, SwapDown, Split, Merge, Unroll, Vectorize, Parallel };

struct Action {
  Op op;
  int64_t factor = 0;  // split only
  std::string name;
};

Action parse_action(const std::string& name) {
  static const std::pair<const char*, Op> simple[] = {
      {"up", Op::Up},         {"down", Op::Down},   {"swap_up", Op::SwapUp},
      {"swap_down", Op::SwapDown}, {"merge", Op::Merge}, {"unroll", Op::Unroll},
      {"vectorize", Op::Vectorize}, {"parallel", Op::Parallel}};
  for (const auto& [n, op] : simple)
    if (name == n) return Action{op, 0, name};
  if (name.rfind("split_", 0) == 0) {
    std::string num = name.substr(6);
    const bool digits = num.find_first_not_of("0123456789") == std::string::npos;
    if (!num.empty() && num.size() <= 18 && digits) {
      int64_t f = std::stoll(num);
      if (f >= 2) return Action{Op::Split, f, name};
    }
    throw std::invalid_argument("bad split action '" + name +
                                "': expected split_<N> with N an integer >= 2");
  }
  throw std::invalid_argument("unknown action '" + name +
                              "'; expected up, down, swap_up, swap_down, split_<N>, merge, "
                              "unroll, vectorize or parallel");
}

std::string var_at(const LoopTree& t, int i) {
  return "'" + t.computation().vars[t.loops()[i].var].name + "'";
}

// True when `a` is legal in `t`; otherwise false and, if `why` is given, the reason.
bool check(const LoopTree& t, const Action& a, std::string* why, int cap = kMaxTreeLoops) {
  const int c = t.cursor(), d = t.depth();
  auto fail = [&](auto&& make) {
    if (why) *why = a.name + ": " + make();
    return false;
  };
  switch (a.op) {
    case Op::Up:
    case Op::SwapUp:
      if (c == 0) return fail([] { return std::string("cursor is on the outermost loop"); });
      if (a.op == Op::SwapUp && t.loops()[c - 1].var == t.loops()[c].var)
        return fail([&] { return "loops " + std::to_string(c - 1) + " and " + std::to_string(c) +
                                 " both iterate " + var_at(t, c); });
      if (a.op == Op::SwapUp && c == d - 1 && t.loops()[c - 1].parallel)
        return fail([&] { return "parallel loop " + std::to_string(c - 1) +
                                 " would become the innermost loop"; });
      return true;
    case Op::Down:
    case Op::SwapDown:
      if (c == d - 1) return fail([] { return std::string("cursor is on the innermost loop"); });
      if (a.op == Op::SwapDown && t.loops()[c + 1].var == t.loops()[c].var)
        return fail([&] { return "loops " + std::to_string(c) + " and " + std::to_string(c + 1) +
                                 " both iterate " + var_at(t, c); });
      if (a.op == Op::SwapDown && c + 1 == d - 1 && t.loops()[c].parallel)
        return fail([&] { return "parallel loop " + std::to_string(c) +
                                 " would become the innermost loop"; });
      return true;
    case Op::Split: {
      if (d >= cap)
        return fail([&] { return "the tree already has " + std::to_string(d) +
                                 " loops (the depth cap is " + std::to_string(cap) + ")"; });
      if (a.factor < 2)
        return fail([] { return std::string("a split factor must be at least 2"); });
      const int64_t size = t.size(c);
      if (a.factor > size)
        return fail([&] { return "factor " + std::to_string(a.factor) + " exceeds loop size " +
                                 std::to_string(size) + " of " + var_at(t, c) + " at cursor " +
                                 std::to_string(c); });
      return true;
    }
    case Op::Merge:
      for (int i = c + 1; i < d; ++i)
        if (t.loops()[i].var == t.loops()[c].var) return true;
      return fail([&] { return "no loop of " + var_at(t, c) + " below cursor " +
                               std::to_string(c) + " to merge into"; });
    case Op::Unroll:
      if (!t.loops()[c].unroll && t.size(c) > kMaxUnroll)
        return fail([&] { return "loop size " + std::to_string(t.size(c)) + " of " + var_at(t, c) +
                                 " exceeds the unroll limit " + std::to_string(kMaxUnroll); });
      return true;
    case Op::Vectorize:
      if (c != d - 1)
        return fail([] { return std::string("only the innermost loop can be (un)vectorized"); });
      return true;
    case Op::Parallel: {  // turning the mark off is always legal
      if (t.loops()[c].parallel) return true;
      const int p = t.parallel_loop();
      if (p >= 0)
        return fail([&] { return "loop " + std::to_string(p) +
                                 " is already parallel (at most one parallel loop)"; });
      if (!why) return t.parallel_illegal(c).empty();
      const std::string reason = t.parallel_illegal(c);
      return reason.empty() || fail([&] { return reason; });
    }
  }
  return false;
}

LoopTree with(const LoopTree& t, std::vector<Loop> loops, int cursor) {
  return LoopTree(t.computation_ptr(), std::move(loops), cursor);
}

// Applies an action already known to be legal.
LoopTree perform(const LoopTree& t, const Action& a) {
  const int c = t.cursor();
  std::vector<Loop> loops = t.loops();
  switch (a.op) {
    case Op::Up:
      return with(t, std::move(loops), c - 1);
    case Op::Down:
      return with(t, std::move(loops), c + 1);
    case Op::SwapUp:
      std::swap(loops[c - 1], loops[c]);
      return with(t, std::move(loops), c - 1);
    case Op::SwapDown:
      std::swap(loops[c], loops[c + 1]);
      return with(t, std::move(loops), c + 1);
    case Op::Split: {
      Loop inner = loops[c];
      inner.unroll = false;
      inner.parallel = false;  // the outer loop keeps the mark
      loops[c].step *= a.factor;
      loops.insert(loops.begin() + c + 1, inner);
      return with(t, std::move(loops), c);
    }
    case Op::Merge: {
      loops.erase(loops.begin() + c);
      const int last = static_cast<int>(loops.size()) - 1;
      // the next loop of the merged variable grows: keep "unroll => size <= kMaxUnroll"
      const LoopTree merged = with(t, loops, c < last ? c : last);
      for (int i = 0; i <= last; ++i)
        if (loops[i].unroll && merged.size(i) > kMaxUnroll) loops[i].unroll = false;
      return with(t, std::move(loops), c < last ? c : last);
    }
    case Op::Unroll:
      loops[c].unroll = !loops[c].unroll;
      return with(t, std::move(loops), c);
    case Op::Vectorize:
      loops[c].vectorize = !loops[c].vectorize;
      return with(t, std::move(loops), c);
    case Op::Parallel:
      loops[c].parallel = !loops[c].parallel;
      return with(t, std::move(loops), c);
  }
  throw std::logic_error("unhandled action");
}

LoopTree run(const LoopTree& t, const Action& a) {
  std::string why;
  if (!check(t, a, &why)) throw IllegalActionError(why);
  return perform(t, a);
}

}  // namespace

LoopTree cursor_up(const LoopTree& t) { return run(t, {Op::Up, 0, "up"}); }
LoopTree cursor_down(const LoopTree& t) { return run(t, {Op::Down, 0, "down"}); }
LoopTree swap_up(const LoopTree& t) { return run(t, {Op::SwapUp, 0, "swap_up"}); }
LoopTree swap_down(const LoopTree& t) { return run(t, {Op::SwapDown, 0, "swap_down"}); }
LoopTree merge(const LoopTree& t) { return run(t, {Op::Merge, 0, "merge"}); }
LoopTree toggle_unroll(const LoopTree& t) { return run(t, {Op::Unroll, 0, "unroll"}); }
LoopTree toggle_vectorize(const LoopTree& t) { return run(t, {Op::Vectorize, 0, "vectorize"}); }
LoopTree toggle_parallel(const LoopTree& t) { return run(t, {Op::Parallel, 0, "parallel"}); }

LoopTree split(const LoopTree& t, int64_t factor) {
  if (factor < 1)
    throw std::invalid_argument("split factor must be a positive integer, got " +
                                std::to_string(factor));
  return run(t, {Op::Split, factor, "split_" + std::to_string(factor)});
}

LoopTree apply(const LoopTree& t, const std::string& action) {
  return run(t, parse_action(action));
}

std::optional<LoopTree> try_apply(const LoopTree& t, const std::string& action) {
  Action a = parse_action(action);
  if (!check(t, a, nullptr)) return std::nullopt;
  return perform(t, a);
}

bool is_legal(const LoopTree& t, const std::string& action) {
  return check(t, parse_action(action), nullptr);
}

std::vector<bool> legal_mask(const LoopTree& t, const std::vector<std::string>& actions) {
  std::vector<bool> mask;
  mask.reserve(actions.size());
  for (const std::string& name : actions) mask.push_back(check(t, parse_action(name), nullptr));
  return mask;
}

namespace {

int checked_cap(int max_loops) {
  if (max_loops < 1 || max_loops > kMaxTreeLoops)
    throw std::invalid_argument("max_loops must be in [1, " + std::to_string(kMaxTreeLoops) +
                                "], got " + std::to_string(max_loops));
  return max_loops;
}

}  // namespace

Legality legality(const LoopTree& t, const std::vector<std::string>& actions, int max_loops) {
  const int cap = checked_cap(max_loops);
  Legality out;
  out.mask.reserve(actions.size());
  out.reasons.reserve(actions.size());
  for (const std::string& name : actions) {
    std::string why;
    out.mask.push_back(check(t, parse_action(name), &why, cap));
    out.reasons.push_back(out.mask.back() ? std::string() : why);
  }
  return out;
}

std::optional<LoopTree> try_apply(const LoopTree& t, const std::string& action, int max_loops) {
  Action a = parse_action(action);
  if (!check(t, a, nullptr, checked_cap(max_loops))) return std::nullopt;
  return perform(t, a);
}

void check_action_name(const std::string& action) { parse_action(action); }

}  // namespace looptune
