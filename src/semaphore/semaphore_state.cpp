// The semaphore engine: slots, the line of waiters, and the turnstile.
#include "semaphore/semaphore_state.hpp"

#include <cassert>
#include <chrono>
#include <new>

#include "engine/fork.hpp"
#include "semaphore/semaphore_object.hpp"

namespace fasteners::detail::semaphore {

semaphore_state::semaphore_state(std::size_t slots)
    : generation_(engine::fork_generation()), count_(slots), slots_(slots) {}

semaphore_state::~semaphore_state() = default;

std::optional<std::size_t> semaphore_state::acquire(const semaphore_object& owner, deadline until) {
  mutex_lock lock(mu_);
  if (!may_wait(until)) return try_free_slot();
  // Nobody waits in line, here or elsewhere: a free slot may be taken at once.
  if (line_.empty() && !turnstile_held_ && !turnstile_waiting_ && !others_in_line()) {
    if (auto i = try_free_slot()) return i;
  }
  waiter me;
  const auto place_in_line = line_.insert(line_.end(), &me);
  pump();
  while (!me.done) {
    if (until == no_deadline) {
      mu_.wait(me.woken);
      continue;
    }
    if (std::chrono::steady_clock::now() >= until) {
      line_.erase(place_in_line);
      pump();
      return std::nullopt;
    }
    mu_.wait_until(me.woken, until);
  }
  if (me.failure) std::rethrow_exception(me.failure);
  if (me.error) owner.fail(me.error, "acquire a slot of", {});
  return me.slot;
}

std::error_code semaphore_state::release(std::size_t i) {
  mutex_lock lock(mu_);
  assert(i < slots_.size() && slots_[i].held && !slots_[i].waiting);
  next_ = i;
  // This process is first in line: the slot goes to its first waiter without a word to the backend.
  if (turnstile_held_ && !line_.empty()) {
    grant(i);
    pump();
    return {};
  }
  slots_[i].held = false;
  return let_go(i);
}

void semaphore_state::wait_ended(place p, std::error_code error) {
  if (p == turnstile) {
    turnstile_waiting_ = false;
    if (!error) {
      turnstile_held_ = true;
    } else if (!line_.empty()) {
      fail_first(error);
    }
  } else {
    slots_[p].waiting = false;
    if (error) {
      if (turnstile_held_ && !line_.empty()) fail_first(error);
    } else if (turnstile_held_ && !line_.empty()) {
      slots_[p].held = true;
      grant(p);
    } else {
      // Nobody here wants it, or this process is not first in line: it goes to whoever is.
      let_go(p);
    }
  }
  pump();
}

void semaphore_state::pump() noexcept {
  while (!line_.empty()) {
    try {
      if (!turnstile_held_) {
        if (turnstile_waiting_) return;
        if (others_in_line() || !try_take(turnstile)) {
          start_wait(turnstile);
          turnstile_waiting_ = true;
          return;
        }
        turnstile_held_ = true;
      }
      if (const auto i = try_free_slot()) {
        grant(*i);
        continue;
      }
      // Every slot is taken: wait for each one that nobody here holds or waits for already.
      for (std::size_t i = 0; i < slots_.size(); ++i) {
        if (slots_[i].held || slots_[i].waiting) continue;
        start_wait(i);
        slots_[i].waiting = true;
      }
      return;
    } catch (const std::system_error& e) {
      fail_first(e.code(), std::current_exception());
    } catch (const std::bad_alloc&) {
      fail_first(std::make_error_code(std::errc::not_enough_memory), std::current_exception());
    }
  }
  let_go_of_turnstile();
}

std::optional<std::size_t> semaphore_state::try_free_slot() {
  const std::size_t n = slots_.size();
  for (std::size_t k = 0; k < n; ++k) {
    const std::size_t i = (next_ + k) % n;
    if (slots_[i].held || slots_[i].waiting) continue;
    if (try_take(i)) {
      slots_[i].held = true;
      next_ = (i + 1) % n;
      return i;
    }
  }
  return std::nullopt;
}

void semaphore_state::grant(std::size_t i) {
  slots_[i].held = true;
  waiter& first = *line_.front();
  first.slot = i;
  finish_first(first);
  let_go_of_turnstile();
}

void semaphore_state::fail_first(std::error_code error, std::exception_ptr failure) {
  waiter& first = *line_.front();
  first.error = error;
  first.failure = std::move(failure);
  finish_first(first);
  let_go_of_turnstile();
}

void semaphore_state::finish_first(waiter& w) {
  line_.pop_front();
  w.done = true;
  w.woken.notify_one();
}

void semaphore_state::let_go_of_turnstile() {
  if (!turnstile_held_) return;
  turnstile_held_ = false;
  let_go(turnstile);
}

}  // namespace fasteners::detail::semaphore
