// One asynchronous acquisition: what it asks for, where it waits, and its outcome.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <system_error>
#include <thread>

#include "deadline.hpp"
#include "engine/fork.hpp"
#include "engine/object_mutex.hpp"
#include "fasteners/async.hpp"
#include "fasteners/detail/lock_core.hpp"

namespace fasteners::detail {

namespace engine {
class lock_object;
class lock_state;
struct holder;
}  // namespace engine

// An asynchronous acquisition. It waits in the queue of the state its object is bound to
// (lock_state), moves to another state when the lock must be bound anew, and once its outcome is
// decided, its handler runs on the async thread (async_thread.hpp). The outcome is decided once,
// by whoever wins decide(): the engine (granted, timed out, failed) or cancel().
class async_request : public std::enable_shared_from_this<async_request> {
 public:
  async_request(engine::lock_object& asking, lock_mode wanted, deadline limit, async_handler then)
      : owner(asking), mode(wanted), until(limit), handler(std::move(then)) {}

  // Decides the outcome, unless it was decided already; returns whether this call did.
  bool decide(std::error_code ec) noexcept {
    int expected = open;
    if (!phase_.compare_exchange_strong(expected, deciding, std::memory_order_acq_rel)) {
      return false;
    }
    result_ = ec;
    phase_.store(settled, std::memory_order_release);
    return true;
  }
  bool decided() const noexcept { return phase_.load(std::memory_order_acquire) != open; }
  // The outcome. REQUIRES: decided(); waits out the few instructions of a decide() under way.
  std::error_code result() const noexcept {
    while (phase_.load(std::memory_order_acquire) != settled) std::this_thread::yield();
    return result_;
  }

  // The state whose queue holds the request, if any.
  std::shared_ptr<engine::lock_state> where() noexcept {
    engine::object_lock lock(mu_);
    return state_;
  }
  void move_to(std::shared_ptr<engine::lock_state> state) noexcept {
    engine::object_lock lock(mu_);
    state_ = std::move(state);
  }

  engine::lock_object& owner;
  // The fork generation it was made in: a child of fork() never touches its parent's requests.
  const std::uint64_t generation = engine::fork_generation();
  const lock_mode mode;
  const deadline until;
  async_handler handler;

  // ---- Guarded by the mutex of the state whose queue holds the request. ----
  engine::holder* holder = nullptr;  // The owner's holder there.
  bool in_backend = false;           // The backend waits for it (start_wait()),
  bool settling = false;             // or settles the wait it gave up (stop_wait()).
  bool counts_writer = false;        // It counts among the state's waiting writers.
  bool in_step = false;              // pump() runs a step for it, perhaps without the mutex.
  // The owner's binding, if the request ended it: dropped on the async thread, outside every
  // mutex (it may be the last reference to the state).
  std::shared_ptr<engine::lock_state> unbound;

 private:
  enum { open, deciding, settled };
  std::atomic<int> phase_{open};
  std::error_code result_;  // Written once, by the decide() that won.
  engine::object_mutex mu_;
  std::shared_ptr<engine::lock_state> state_ FASTENERS_GUARDED_BY(mu_);
};

}  // namespace fasteners::detail
