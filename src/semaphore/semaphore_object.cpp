// A semaphore object: binding, the slots it holds, and the public semaphores' entry into them.
#include "semaphore/semaphore_object.hpp"

#include <string>

#include "engine/fork.hpp"
#include "fasteners/detail/semaphore_core.hpp"

namespace fasteners::detail {
namespace semaphore {

bool semaphore_object::acquire(deadline until) {
  const auto state = bound();
  if (state->slots() != slots_) {
    fail(std::make_error_code(std::errc::invalid_argument), "acquire a slot of",
         "it has " + std::to_string(state->slots()) + " slots, not " + std::to_string(slots_) +
             " as this object says");
  }
  const auto slot = state->acquire(*this, until);
  if (!slot) return false;
  mutex_lock lock(mu_);
  held_.push_back(*slot);
  return true;
}

void semaphore_object::release() {
  std::shared_ptr<semaphore_state> state;
  std::size_t slot = 0;
  if (!take_last(state, slot)) {
    fail(std::make_error_code(std::errc::operation_not_permitted), "release a slot of",
         "this object holds none");
  }
  if (const auto error = state->release(slot)) fail(error, "release a slot of", {});
}

std::size_t semaphore_object::held() const noexcept {
  mutex_lock lock(mu_);
  if (state_ && state_->generation() != engine::fork_generation()) return 0;
  return held_.size();
}

void semaphore_object::release_all() noexcept {
  std::shared_ptr<semaphore_state> state;
  std::size_t slot = 0;
  // A failure to let go leaves nothing held here; the OS frees the slot with the file anyway.
  while (take_last(state, slot)) state->release(slot);
}

bool semaphore_object::take_last(std::shared_ptr<semaphore_state>& state, std::size_t& slot) {
  mutex_lock lock(mu_);
  forget_if_stale();
  if (held_.empty()) return false;
  slot = held_.back();
  held_.pop_back();
  state = state_;
  return true;
}

std::shared_ptr<semaphore_state> semaphore_object::bound() {
  {
    mutex_lock lock(mu_);
    forget_if_stale();
    if (state_) return state_;
  }
  auto found = find_state();
  mutex_lock lock(mu_);
  forget_if_stale();
  if (!state_) state_ = std::move(found);
  return state_;
}

void semaphore_object::forget_if_stale() {
  if (!state_ || state_->generation() == engine::fork_generation()) return;
  // The parent's state: a child never destroys it (another thread of the parent may have held
  // its mutex at the fork), and the slots held there are the parent's.
  static_cast<void>(new std::shared_ptr<semaphore_state>(std::move(state_)));
  held_.clear();
}

}  // namespace semaphore

semaphore_core::semaphore_core(std::unique_ptr<semaphore::semaphore_object> object) noexcept
    : object_(std::move(object)), slots_(object_->slots()) {}

semaphore_core::~semaphore_core() = default;

semaphore_core::semaphore_core(semaphore_core&& other) noexcept = default;

semaphore_core& semaphore_core::operator=(semaphore_core&& other) noexcept = default;

void semaphore_core::acquire() { object_of(object_).acquire(no_deadline); }

bool semaphore_core::try_acquire() { return object_of(object_).acquire(try_once); }

bool semaphore_core::acquire_until(std::chrono::steady_clock::time_point until) {
  return object_of(object_).acquire(until);
}

void semaphore_core::release() { object_of(object_).release(); }

std::size_t semaphore_core::held() const noexcept { return object_ ? object_->held() : 0; }

}  // namespace fasteners::detail
