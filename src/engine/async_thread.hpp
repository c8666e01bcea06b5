// The async thread: the library's one thread that runs the handlers of asynchronous acquisitions,
// fires their deadlines and binds them anew.
#pragma once

#include <atomic>
#include <memory>

#include "deadline.hpp"

namespace fasteners::detail {
class async_request;
}  // namespace fasteners::detail

namespace fasteners::detail::engine {

class lock_object;
class lock_state;

// Every call is thread-safe and never waits for a lock. The thread starts on demand (every signal
// blocked, cancellation off) and ends once it has had nothing to do for a while. A child of fork()
// starts with none of it: the parent's acquisitions stay the parent's.
namespace async_thread {

// Runs the handler of `r`, whose outcome is decided; then its object counts it finished
// (lock_object::async_finished).
void complete(std::shared_ptr<async_request> r) noexcept;
// Binds `r` anew, on the thread (lock_object::restart_async): its lock moved.
void restart(std::shared_ptr<async_request> r) noexcept;
// Asks `r`'s state to time it out at `until` (lock_state::expire).
void expire_at(const std::shared_ptr<async_request>& r, deadline until) noexcept;
// Calls `state`'s pump_async() at `when`: a backend that polls tries again then.
void pump_at(const std::shared_ptr<lock_state>& state, deadline when) noexcept;
// Waits until `live` (the count of `owner`'s acquisitions whose handlers have not finished) is
// zero; on the async thread itself, runs the handlers queued for `owner` first, and does not wait
// for a handler of `owner` that is running there (its caller).
void wait_finished(const lock_object& owner, std::atomic<int>& live) noexcept;

}  // namespace async_thread
}  // namespace fasteners::detail::engine
