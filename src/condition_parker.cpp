// platform::parker where there is no futex: a condition variable.
#include "platform.hpp"

namespace fasteners::detail::platform {

bool parker::park(std::chrono::steady_clock::time_point until) noexcept {
  const cancellation_off no_cancel;
  std::unique_lock<std::mutex> lock(mu_);
  if (state_.load(std::memory_order_relaxed) == 0) {
    if (until == std::chrono::steady_clock::time_point::max()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, until);
    }
  }
  return state_.exchange(0, std::memory_order_relaxed) == 1;
}

void parker::unpark() noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  state_.store(1, std::memory_order_relaxed);
  cv_.notify_one();
}

}  // namespace fasteners::detail::platform
