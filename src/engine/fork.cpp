// Counts the forks this process went through as a child.
#include "engine/fork.hpp"

#include "platform.hpp"

namespace fasteners::detail::engine {

std::atomic<std::uint64_t> fork_generation_counter{0};

void count_forks() {
  static const bool counting = [] {
    platform::at_fork(nullptr, nullptr,
                      [] { fork_generation_counter.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  static_cast<void>(counting);
}

}  // namespace fasteners::detail::engine
