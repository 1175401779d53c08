// The thread pool (see thread_pool.h for why it is our own).
//
// A job is published by bumping a 64-bit word that packs a generation counter and the number
// of parts; worker w (1-based) runs part w when w < parts and then counts down `pending_`.
// Workers that do not take part read only the word, so a later job can never race with them.
#include "looptune/thread_pool.h"

#include <pthread.h>
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

constexpr auto kSpin = std::chrono::microseconds(50);  // awake after a job, then sleep
constexpr int kPartsBits = 16;

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
    pending_.store(parts - 1, std::memory_order_relaxed);
    generation_ += 1;
    word_.store((generation_ << kPartsBits) | static_cast<uint64_t>(parts),
                std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(sleep_mutex_); }
      wake_.notify_all();
    }
    const auto [b, e] = partition(n, parts, 0);
    fn(ctx, b, e);
    // Wait for the other parts: spin, then yield the core (with more threads than cores a
    // worker may need this one).
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 2000) _mm_pause();
      else std::this_thread::yield();
    }
    return true;
  }

 private:
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
      const int parts = static_cast<int>(word & ((uint64_t(1) << kPartsBits) - 1));
      if (index >= parts) continue;
      const auto [b, e] = partition(n_, parts, index);
      fn_(ctx_, b, e);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  uint64_t wait_for_change(uint64_t seen) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    for (int i = 0;; ++i) {
      const uint64_t w = word_.load(std::memory_order_acquire);
      if (w != seen) return w;
      _mm_pause();
      if ((i & 63) == 63 && std::chrono::steady_clock::now() > until) break;
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
  // The job: written before word_ is published, read by its participants only.
  detail::RangeFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  std::atomic<uint64_t> word_{0};
  std::atomic<int> pending_{0};
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
