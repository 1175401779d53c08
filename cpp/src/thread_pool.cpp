// The thread pool (see thread_pool.h for why it is our own).
//
// A job of `parts` parts is published by bumping a 64-bit word that packs a generation counter
// and the part count. The parts are claimed, not assigned: the caller and every awake worker
// take the next unclaimed part (a CAS on `next_`, which packs the same generation, so a worker
// that saw an old job can never claim a part of a newer one) until none is left. The parts are
// the same contiguous ranges whoever runs them (results never depend on it); what claiming buys
// is that a worker still waking up costs nothing: the caller runs its part too. Measured on the
// 2-core Zen 4 VM (idle): a worker that is spinning joins a job in ~0.5-1 us, one asleep on the
// condition variable in ~80-450 us (the futex wake of a halted vCPU); with fixed assignment a
// 20 us kernel called after an idle spell took 100+ us at 2 threads, with claiming it takes
// about its serial time.
//
// After a job, workers stay awake for a while, so that the next kernel call (the next
// timing run, the next layer of a network) finds them: first pausing (kSpin), then
// yielding the core between looks (up to kYieldSpin), so a runnable thread of another pool
// (PyTorch's OpenMP team, OpenBLAS) on that core runs ahead of them; then they sleep on the
// condition variable and take no CPU time until the next job. Waking a sleeping worker costs
// the caller ~15-40 us here (the futex wake of a halted vCPU), once per idle spell. (Workers
// napping in short sleeps instead, so that no caller pays to wake them, were tried and
// dropped: a worker woken by its timer often did not join the next calls for milliseconds,
// and parallel variants timed as serial.)
#include "looptune/thread_pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include <immintrin.h>

namespace looptune {
namespace {

std::atomic<int> g_threads{1};
thread_local bool t_in_worker = false;

constexpr auto kSpin = std::chrono::microseconds(50);        // pause between looks
constexpr auto kYieldSpin = std::chrono::microseconds(400);  // then yield between looks
constexpr int kPartsBits = 16;
constexpr uint64_t kPartsMask = (uint64_t(1) << kPartsBits) - 1;

class Pool {
 public:
  // Runs a job of `parts` parts (2 <= parts <= kMaxThreads); false when the pool is busy.
  bool run(int64_t n, int parts, detail::RangeFn fn, void* ctx) {
    std::unique_lock<std::mutex> busy(dispatch_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    while (workers_ < parts - 1) start_worker(++workers_);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    pending_.store(parts, std::memory_order_relaxed);
    generation_ += 1;
    const uint64_t tag = generation_ << kPartsBits;
    next_.store(tag, std::memory_order_relaxed);
    word_.store(tag | static_cast<uint64_t>(parts), std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(sleep_mutex_); }
      wake_.notify_all();
    }
    run_parts(tag, parts);
    // Wait for the parts workers claimed: spin, then yield the core (with more threads than
    // cores a worker may need this one).
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 2000) _mm_pause();
      else std::this_thread::yield();
    }
    return true;
  }

 private:
  // Claims and runs parts of the job tagged `tag` until none is left.
  void run_parts(uint64_t tag, int parts) {
    for (;;) {
      uint64_t v = next_.load(std::memory_order_acquire);
      do {
        if ((v & ~kPartsMask) != tag || static_cast<int>(v & kPartsMask) >= parts) return;
      } while (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel,
                                            std::memory_order_acquire));
      const int p = static_cast<int>(v & kPartsMask);
      const auto [b, e] = partition(n_, parts, p);
      fn_(ctx_, b, e);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start_worker(int index) {
    // Workers block every signal (set before the thread starts, so it is born with the mask).
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    std::thread([this, index] { work(index); }).detach();
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  void work(int index) {
    t_in_worker = true;
    uint64_t seen = 0;
    for (;;) {
      const uint64_t word = wait_for_change(seen);
      seen = word;
      const int parts = static_cast<int>(word & kPartsMask);
      if (index >= parts) continue;  // a job with fewer parts than workers: not this one's
      run_parts(word & ~kPartsMask, parts);
    }
  }

  uint64_t wait_for_change(uint64_t seen) {
    const auto now = std::chrono::steady_clock::now();
    const auto pause_until = now + kSpin, yield_until = now + kYieldSpin;
    for (int i = 0;; ++i) {
      const uint64_t w = word_.load(std::memory_order_acquire);
      if (w != seen) return w;
      if ((i & 63) != 63) {
        _mm_pause();
        continue;
      }
      const auto t = std::chrono::steady_clock::now();
      if (t > yield_until) break;
      if (t > pause_until) sched_yield();
    }
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    sleeping_.fetch_add(1, std::memory_order_seq_cst);
    uint64_t w;
    while ((w = word_.load(std::memory_order_seq_cst)) == seen) wake_.wait(lock);
    sleeping_.fetch_sub(1, std::memory_order_relaxed);
    return w;
  }

  std::mutex dispatch_;  // one job at a time
  int workers_ = 0;      // started (never stopped: the pool lives as long as the process)
  uint64_t generation_ = 0;
  // The job: written before word_ is published, read by the threads that claim its parts.
  detail::RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<uint64_t> word_{0};
  std::atomic<uint64_t> next_{0};  // generation << kPartsBits | the next unclaimed part
  std::atomic<int> pending_{0};    // parts not finished yet
  std::atomic<int> sleeping_{0};
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

// The pool is created on first use and never destroyed (workers may still be asleep in it at
// exit). A fork child gets a new, empty pool: its parent's workers do not exist there (the
// parent's pool object is left alone; its locks may have been held at the fork).
std::atomic<Pool*> g_pool{nullptr};

void reset_after_fork() { g_pool.store(nullptr); }

[[maybe_unused]] const bool g_atfork = pthread_atfork(nullptr, nullptr, reset_after_fork) == 0;

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  Pool* fresh = new Pool();
  if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;  // another thread installed one first
  return *p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw std::invalid_argument("the thread count must be in 1.." + std::to_string(kMaxThreads) +
                                ", got " + std::to_string(n));
  g_threads.store(n, std::memory_order_relaxed);
}

int num_threads() { return g_threads.load(std::memory_order_relaxed); }

namespace detail {

void parallel_for_impl(int64_t n, int threads, RangeFn fn, void* ctx) {
  const int parts = static_cast<int>(std::min<int64_t>(std::min(threads, kMaxThreads), n));
  if (parts <= 1 || t_in_worker || !pool().run(n, parts, fn, ctx)) fn(ctx, 0, n);
}

}  // namespace detail
}  // namespace looptune
