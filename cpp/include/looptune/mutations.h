// Pure schedule mutations: each takes a tree and returns a new one, or throws
// IllegalActionError. try_* variants return std::nullopt instead of throwing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "looptune/loop_tree.h"

namespace looptune {

constexpr int64_t kMaxUnroll = 64;  // turning unroll on needs size(cursor) <= this
// The depth cap of the environments, searches and agents (the LoopTune paper's 10 loops):
// a split that would make a tree deeper than the cap is illegal. At most kMaxTreeLoops.
constexpr int kDefaultMaxLoops = 10;

// Legality of a whole action list under a depth cap, in one call: mask[i] is true when
// actions[i] is legal, else reasons[i] says why ("" for legal ones).
struct Legality {
  std::vector<bool> mask;
  std::vector<std::string> reasons;
};
Legality legality(const LoopTree& t, const std::vector<std::string>& actions, int max_loops);
// Like try_apply, with splits beyond `max_loops` loops illegal.
std::optional<LoopTree> try_apply(const LoopTree& t, const std::string& action, int max_loops);
// Throws std::invalid_argument unless `action` is a well-formed action name.
void check_action_name(const std::string& action);

LoopTree cursor_up(const LoopTree& t);
LoopTree cursor_down(const LoopTree& t);
LoopTree swap_up(const LoopTree& t);    // swap cursor loop with the one above; cursor follows
LoopTree swap_down(const LoopTree& t);  // swap cursor loop with the one below; cursor follows
LoopTree split(const LoopTree& t, int64_t factor);  // 2 <= factor <= size(cursor)
LoopTree merge(const LoopTree& t);  // fold the cursor loop into the next same-var loop below
LoopTree toggle_unroll(const LoopTree& t);
LoopTree toggle_vectorize(const LoopTree& t);
// Marks the cursor loop parallel, or serial again when it is (see loop_tree.h for the rule).
// The mark stays with its loop through swaps (a swap that would make it the innermost loop is
// illegal); a split keeps it on the outer loop; merging a parallel loop away drops it.
LoopTree toggle_parallel(const LoopTree& t);

// Named actions, as used by the environments: "up", "down", "swap_up", "swap_down",
// "split_<N>", "merge", "unroll", "vectorize", "parallel".
LoopTree apply(const LoopTree& t, const std::string& action);  // throws on illegal/unknown
std::optional<LoopTree> try_apply(const LoopTree& t, const std::string& action);
bool is_legal(const LoopTree& t, const std::string& action);
std::vector<bool> legal_mask(const LoopTree& t, const std::vector<std::string>& actions);

}  // namespace looptune
