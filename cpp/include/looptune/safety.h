// Guards around the engine: memory caps checked before allocating, interruption of long loops,
// running an external tool without a shell.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace looptune {

// Buffers that would exceed the memory cap (maps to looptune.BufferTooLargeError, a
// MemoryError and ValueError); thrown before anything is allocated.
class BufferTooLargeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The cap on the bytes of all buffers one kernel needs: the smaller of LOOPTUNE_MAX_BUFFER_GIB
// (default 4 GiB) and half of the memory the kernel reports available (MemAvailable).
int64_t buffer_cap_bytes();

// Throw BufferTooLargeError, naming the figures in GiB, if `bytes` exceeds buffer_cap_bytes().
void check_buffer_bytes(double bytes, const std::string& what);

// A hook that throws (e.g. KeyboardInterrupt) when the user asked to stop; the bindings install
// one that checks Python's signal flags. poll_interrupt() calls it at most every 20 ms.
using InterruptHook = void (*)();
void set_interrupt_hook(InterruptHook hook);
void poll_interrupt();

// Run the program at the absolute path `exe` with `args` (no shell, no PATH lookup) and return
// its standard output; empty if it is missing or fails.
std::string run_program(const std::string& exe, const std::vector<std::string>& args);

}  // namespace looptune
