// platform::parker on Linux: a futex.
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "platform.hpp"

namespace fasteners::detail::platform {

// park() moves state_ from 0 to -1 and sleeps while it stays -1; unpark() sets it to 1, waking a
// sleeper. The steady clock is CLOCK_MONOTONIC, which FUTEX_WAIT_BITSET's absolute timeouts use.
bool parker::park(std::chrono::steady_clock::time_point until) noexcept {
  if (state_.fetch_sub(1, std::memory_order_acquire) == 1) return true;  // 1 -> 0: consumed.
  timespec at{};
  const bool limited = until != std::chrono::steady_clock::time_point::max();
  if (limited) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until.time_since_epoch());
    at.tv_sec = static_cast<time_t>(ns.count() / 1000000000);
    at.tv_nsec = static_cast<long>(ns.count() % 1000000000);
  }
  // A direct system call, so not a cancellation point. Interrupted or woken, it returns; either
  // way the state says whether unpark() came.
  ::syscall(SYS_futex, reinterpret_cast<int*>(&state_), FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, -1,
            limited ? &at : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
  return state_.exchange(0, std::memory_order_acquire) == 1;
}

void parker::unpark() noexcept {
  if (state_.exchange(1, std::memory_order_release) == -1) {
    ::syscall(SYS_futex, reinterpret_cast<int*>(&state_), FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1);
  }
}

}  // namespace fasteners::detail::platform
