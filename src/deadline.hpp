// When a wait for a lock ends: a steady-clock deadline, with one try and no limit as its ends.
#pragma once

#include <chrono>

namespace fasteners::detail {

// time_point::min() means one try, time_point::max() means no limit.
using deadline = std::chrono::steady_clock::time_point;
inline constexpr deadline try_once = deadline::min();
inline constexpr deadline no_deadline = deadline::max();

// Whether a wait with this deadline may still wait now.
inline bool may_wait(deadline until) {
  return until == no_deadline || (until != try_once && std::chrono::steady_clock::now() < until);
}

}  // namespace fasteners::detail
