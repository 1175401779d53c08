#include "looptune/safety.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace looptune {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kDefaultCapGiB = 4.0;

double read_available_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  double kb = 0;
  while (in >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024.0;
    in.ignore(256, '\n');
  }
  return -1;  // unknown: only the configured cap applies
}

// MemAvailable, read at most every 100 ms per thread: every kernel checks its buffers, and
// reading /proc/meminfo costs more than compiling a small kernel.
double available_bytes() {
  using Clock = std::chrono::steady_clock;
  thread_local Clock::time_point last{};
  thread_local double cached = -1;
  const auto now = Clock::now();
  if (last == Clock::time_point{} || now - last > std::chrono::milliseconds(100)) {
    cached = read_available_bytes();
    last = now;
  }
  return cached;
}

InterruptHook g_hook = nullptr;
thread_local std::chrono::steady_clock::time_point g_last_poll{};

}  // namespace

int64_t buffer_cap_bytes() {
  double cap = kDefaultCapGiB * kGiB;
  if (const char* v = std::getenv("LOOPTUNE_MAX_BUFFER_GIB")) {
    char* end = nullptr;
    const double gib = std::strtod(v, &end);
    if (end != v && std::isfinite(gib) && gib > 0) cap = gib * kGiB;
  }
  const double avail = available_bytes();
  if (avail > 0) cap = std::min(cap, avail / 2);
  return static_cast<int64_t>(cap);
}

void check_buffer_bytes(double bytes, const std::string& what) {
  const double cap = static_cast<double>(buffer_cap_bytes());
  if (bytes <= cap) return;
  char msg[512];
  std::snprintf(msg, sizeof msg,
                "%s needs %.2f GiB of buffers, more than the cap of %.2f GiB (the smaller of "
                "LOOPTUNE_MAX_BUFFER_GIB, default %.0f GiB, and half the available memory)",
                what.c_str(), bytes / kGiB, cap / kGiB, kDefaultCapGiB);
  throw BufferTooLargeError(msg);
}

void set_interrupt_hook(InterruptHook hook) { g_hook = hook; }

void poll_interrupt() {
  if (!g_hook) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - g_last_poll < std::chrono::milliseconds(20)) return;
  g_last_poll = now;
  g_hook();
}

std::string run_program(const std::string& exe, const std::vector<std::string>& args) {
  if (exe.empty() || exe[0] != '/' || access(exe.c_str(), X_OK) != 0) return {};
  int fds[2];
  if (pipe(fds) != 0) return {};
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return {};
  }
  if (pid == 0) {  // child: stdout to the pipe, stderr discarded, exec without a shell
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    if (FILE* null = std::fopen("/dev/null", "w")) dup2(fileno(null), 2);
    char* const envp[] = {nullptr};
    execve(exe.c_str(), argv.data(), envp);
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t got;
  while ((got = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : std::string();
}

}  // namespace looptune
