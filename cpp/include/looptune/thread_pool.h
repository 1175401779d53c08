// The engine's thread pool: persistent workers that share a parallel loop's iterations.
//
// Why our own pool and not OpenMP: looptune lives in one process with PyTorch (which brings its
// own OpenMP runtime, often a different one than the compiler's) and numpy's OpenBLAS threads.
// Two OpenMP runtimes in one process oversubscribe the cores (each spins its own team) and
// libgomp is not fork-safe (a forked child that touches a team hangs). This pool is small
// and predictable instead: workers stay awake for a few hundred microseconds after a job
// (pausing, then yielding the core between looks, so back-to-back kernel calls find them
// awake) and then sleep on a condition variable, so they take no CPU time while PyTorch or
// numpy run; the parts of a job are claimed by whichever thread is free, so a call that finds
// the workers asleep does not wait for them to wake (it pays only for the wake-up call:
// thread_pool.cpp has the measurements); a fork child starts with a fresh, empty
// pool (pthread_atfork); workers block every signal, so Ctrl-C always reaches the caller's
// thread, which polls for it between kernel calls. One job runs at a time: a call that finds
// the pool busy (another Python thread's kernel) or that comes from a worker runs its whole
// range on the calling thread; partitioning never changes results, so that is always correct.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace looptune {

constexpr int kMaxThreads = 256;  // a sane cap for set_num_threads

// The process-wide thread count kernels use (default 1). Throws std::invalid_argument outside
// 1..kMaxThreads.
void set_num_threads(int n);
int num_threads();

namespace detail {
using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void parallel_for_impl(int64_t n, int threads, RangeFn fn, void* ctx);
}  // namespace detail

// Runs f(begin, end) on contiguous parts of [0, n), at most `threads` of them (and at most n),
// the caller running the first; returns when every part is done. f must not throw.
template <class F>
void parallel_for(int64_t n, int threads, F&& f) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) return f(int64_t(0), n);
  using Fn = std::remove_reference_t<F>;
  detail::parallel_for_impl(
      n, threads,
      [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// Part p of [0, n) split into `parts` contiguous, near-equal pieces: [begin, end).
inline std::pair<int64_t, int64_t> partition(int64_t n, int parts, int p) {
  return {n * p / parts, n * (p + 1) / parts};
}

}  // namespace looptune
