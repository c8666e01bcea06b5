// The lock of one lock object's few fields: a spin lock that a child of fork() finds free.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "engine/fork.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::engine {

// Held for a handful of instructions at a time, never across a system call or a wait, so a
// waiting thread spins (yielding after a while) instead of sleeping. The lock word records the
// fork generation of its holder: a child of fork() finds a lock that a thread of its parent held
// free, since that thread does not exist there. Not recursive.
class FASTENERS_CAPABILITY("mutex") object_mutex {
 public:
  void lock() FASTENERS_ACQUIRE() {
    const std::uint64_t generation = fork_generation();
    const std::uint64_t held = generation << 1 | 1;
    for (int tries = 0;; ++tries) {
      std::uint64_t seen = word_.load(std::memory_order_relaxed);
      const bool free = (seen & 1) == 0 || (seen >> 1) != generation;
      if (free && word_.compare_exchange_weak(seen, held, std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
        return;
      }
      if (tries >= 100) std::this_thread::yield();
    }
  }
  void unlock() FASTENERS_RELEASE() {
    word_.store(fork_generation() << 1, std::memory_order_release);
  }

 private:
  std::atomic<std::uint64_t> word_{0};
};

// Holds an object_mutex for its scope.
class FASTENERS_SCOPED_CAPABILITY object_lock {
 public:
  explicit object_lock(object_mutex& m) FASTENERS_ACQUIRE(m) : mutex_(m) { mutex_.lock(); }
  ~object_lock() FASTENERS_RELEASE() { mutex_.unlock(); }
  object_lock(const object_lock&) = delete;
  object_lock& operator=(const object_lock&) = delete;

 private:
  object_mutex& mutex_;
};

}  // namespace fasteners::detail::engine
