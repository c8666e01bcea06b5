// The fork generation: how a child of fork() tells its own state from what it copied of its parent.
#pragma once

#include <atomic>
#include <cstdint>

#include "fasteners/detail/export.hpp"

namespace fasteners::detail::engine {

// How many times this process went through fork() as a child; read without a lock.
extern FASTENERS_API std::atomic<std::uint64_t> fork_generation_counter;

// State made in an earlier generation than this one was the parent's. A child never uses or
// destroys such state: another thread of the parent may have held its mutexes at the fork.
inline std::uint64_t fork_generation() noexcept {
  return fork_generation_counter.load(std::memory_order_relaxed);
}

// Starts counting forks. Every state of the engine is made after a call; cheap after the first.
FASTENERS_API void count_forks();

}  // namespace fasteners::detail::engine
