// A lock object: binding to its lock's state, acquiring, releasing, and forgetting after fork().
#include "engine/lock_object.hpp"

#include <utility>
#include <vector>

#include "engine/fork.hpp"

namespace fasteners::detail::engine {
namespace {

// Where a child of fork() keeps the states its lock objects were bound to in the parent. They are
// never used or destroyed: another thread of the parent may have held their mutexes.
void keep_parents_state(std::shared_ptr<lock_state> state) {
  static auto* const kept = new std::vector<std::shared_ptr<lock_state>>;
  static object_mutex mu;
  object_lock lock(mu);
  kept->push_back(std::move(state));
}

std::size_t slot(lock_mode mode) { return mode == lock_mode::shared ? 0 : 1; }

}  // namespace

lock_object::~lock_object() = default;

void lock_object::release_all() noexcept {
  const auto state = bound();
  if (state) {
    for (const auto mode : {lock_mode::exclusive, lock_mode::shared}) {
      // An error needs no report: the backend drops the lock with its holder anyway.
      try {
        while (state->release(*this, holder_in(*state), mode).found) {
        }
      } catch (...) {
      }
    }
  }
  {
    object_lock lock(mu_);
    leaving_ = true;
  }
  if (state && state->generation() == fork_generation()) state->leave(*this);
  std::shared_ptr<lock_state> gone;  // Dropped after the lock: it may be the last reference.
  object_lock lock(mu_);
  gone = std::move(bound_);
}

bool lock_object::acquire(lock_mode mode, deadline until) {
  for (;;) {
    const auto state = begin_acquire();
    // The state ends the acquire (lock_state::acquire), so that it stays bound until then.
    switch (state->acquire(*this, holder_in(*state), mode, until)) {
      case outcome::taken:
        return true;
      case outcome::not_taken:
        return false;
      case outcome::start_again:
        break;
    }
  }
}

void lock_object::release(lock_mode mode) {
  const auto state = bound();
  if (state) {
    const auto released = state->release(*this, holder_in(*state), mode);
    if (released.found) {
      if (released.error) fail(released.error, "release", "");
      return;
    }
  }
  bool lost = false;
  {
    object_lock lock(mu_);
    lost = lost_[slot(mode)] > 0;
    if (lost) --lost_[slot(mode)];
  }
  if (lost) fail(std::make_error_code(std::errc::connection_reset), "release", lost_reason());
  fail(std::make_error_code(std::errc::operation_not_permitted), "release",
       mode == lock_mode::shared ? "this object holds no read lock on it"
                                 : "this object does not hold it");
}

bool lock_object::holds(lock_mode mode) {
  const auto state = bound();
  return state && state->holds(*this, mode);
}

std::intptr_t lock_object::native_handle() {
  const auto state = bound();
  return state ? state->native_handle_of(*this, holder_in(*state)) : -1;
}

std::shared_ptr<lock_state> lock_object::end_acquire(const lock_state& state, bool taken) {
  object_lock lock(mu_);
  if (taken) ++holds_;
  --acquiring_;
  if (bound_.get() == &state && unbinds()) return std::move(bound_);
  return nullptr;
}

std::shared_ptr<lock_state> lock_object::end_holds(const lock_state& state, int ended) {
  object_lock lock(mu_);
  holds_ -= ended;
  if (bound_.get() == &state && unbinds()) return std::move(bound_);
  return nullptr;
}

void lock_object::count_lost(int shared, int exclusive) {
  object_lock lock(mu_);
  lost_[0] += shared;
  lost_[1] += exclusive;
  holds_ -= shared + exclusive;
}

const char* lock_object::lost_reason() const noexcept {
  return "the lock was lost while this object held it";
}

std::shared_ptr<lock_state> lock_object::begin_acquire() {
  {
    object_lock lock(mu_);
    forget_if_stale();
    if (bound_) {
      ++acquiring_;
      return bound_;
    }
  }
  auto state = find_state();
  std::shared_ptr<lock_state> extra;  // A second binding, from a race with another thread.
  std::shared_ptr<lock_state> result;
  {
    object_lock lock(mu_);
    forget_if_stale();
    if (bound_) {
      extra = std::move(state);  // Another thread bound this object meanwhile.
    } else {
      bound_ = std::move(state);
    }
    ++acquiring_;
    result = bound_;
  }
  if (extra) extra->detach();
  return result;
}

bool lock_object::unbinds_after(const lock_state& state, int ended) {
  object_lock lock(mu_);
  return bound_.get() == &state && holds_ - ended == 0 && acquiring_ == 0 &&
         (leaving_ || !stays_bound(state));
}

bool lock_object::others_acquiring() {
  object_lock lock(mu_);
  return acquiring_ > 1;
}

std::shared_ptr<lock_state> lock_object::bound() {
  object_lock lock(mu_);
  forget_if_stale();
  return bound_;
}

void lock_object::forget_if_stale() {
  if (!bound_ || bound_->generation() == fork_generation()) return;
  keep_parents_state(std::move(bound_));
  holds_ = 0;
  acquiring_ = 0;
  lost_[0] = lost_[1] = 0;
}

}  // namespace fasteners::detail::engine
