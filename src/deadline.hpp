// When a wait for a lock ends: a steady-clock deadline, with one try and no limit as its ends;
// and the checks the public lock types share.
#pragma once

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include "fasteners/detail/lock_core.hpp"
#include "fasteners/timeout.hpp"

namespace fasteners::detail {

// time_point::min() means one try, time_point::max() means no limit.
using deadline = std::chrono::steady_clock::time_point;
inline constexpr deadline try_once = deadline::min();
inline constexpr deadline no_deadline = deadline::max();

// Whether a wait with this deadline may still wait now.
inline bool may_wait(deadline until) {
  return until == no_deadline || (until != try_once && std::chrono::steady_clock::now() < until);
}

// The deadline of python-fasteners' acquire(blocking, timeout): one try, no limit, or `timeout`
// from now. Throws std::invalid_argument for a negative or NaN timeout.
inline deadline deadline_of(bool blocking, const timeout_type& timeout) {
  if (timeout && !(timeout->count() >= 0)) {
    throw std::invalid_argument("fasteners: the timeout must not be negative or NaN, but it is " +
                                std::to_string(timeout->count()) + " s");
  }
  if (!blocking) return try_once;
  if (!timeout) return no_deadline;
  return deadline_after(*timeout);
}

// The implementation behind a public lock object; throws std::system_error
// (operation_not_permitted) for one that was moved from.
template <class T>
T& object_of(const std::unique_ptr<T>& impl) {
  if (!impl) {
    throw std::system_error(std::make_error_code(std::errc::operation_not_permitted),
                            "fasteners: the lock object was moved from");
  }
  return *impl;
}

}  // namespace fasteners::detail
