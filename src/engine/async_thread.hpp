// The async thread: the library's one thread that runs the handlers of asynchronous acquisitions,
// fires their deadlines and binds them anew.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/export.hpp"

namespace fasteners::detail {
class async_request;
}  // namespace fasteners::detail

namespace fasteners::detail::engine {

class lock_object;
class lock_state;

// Every call is thread-safe and never waits for a lock. The thread starts on demand (every signal
// blocked, cancellation off) and ends once it has had nothing to do for a while (no timer, no
// watched descriptor). It sleeps in poll() over the watched descriptors and a wake-up descriptor
// of its own, until the nearest timer (on Windows, which watches no descriptor, on a condition
// variable). A child of fork() starts with none of it: the parent's acquisitions and watches stay
// the parent's.
namespace async_thread {

#ifndef _WIN32
// What waits for a descriptor's events on the async thread (see watch()).
class fd_watcher {
 public:
  virtual ~fd_watcher() = default;
  // poll() reported `revents` on the watched descriptor. Runs on the async thread, with none of
  // the thread's mutexes held; must not block for long, and must consume what made the
  // descriptor ready (or change or end the watch), else it is called again at once. May be called
  // spuriously.
  virtual void ready(short revents) noexcept = 0;
};
// Watches `fd` for `events` (poll()'s) until unwatch(id): the thread calls `w->ready()` whenever
// poll() reports some. Returns the watch's id (never 0), or 0 if it could not be recorded (no
// memory). The watcher is kept until unwatch(). A descriptor is watched at most once at a time.
FASTENERS_API std::uint64_t watch(int fd, short events, std::shared_ptr<fd_watcher> w) noexcept;
// Changes the events that the watch `id` waits for.
FASTENERS_API void rewatch(std::uint64_t id, short events) noexcept;
// Ends the watch `id` (0: none) and drops its watcher: once this returns, its ready() is not
// called again, besides a call already running on the async thread (not the caller's own).
FASTENERS_API void unwatch(std::uint64_t id) noexcept;
#endif

// Counts an acquisition that is about to begin, whose handler complete() runs later: the thread
// runs (it is started now if need be) until that handler has. Returns the error if no thread
// could be started; nothing is counted then.
std::error_code begin() noexcept;
// Ends what begin() counted, for an acquisition that never began after all.
void end_unused() noexcept;
// Runs the handler of `r`, whose outcome is decided; then its object counts it finished
// (lock_object::async_finished). On the async thread, or on the calling thread itself where a
// collector collects.
void complete(std::shared_ptr<async_request> r) noexcept;

// While it lives, the completions the calling thread makes are its own to run, once it holds no
// mutex (run()): a backend's thread that reports a grant runs its handler itself, saving the
// wake-up of the async thread. What run() did not get to goes to the async thread.
class collector {
 public:
  collector() noexcept;
  ~collector();
  collector(const collector&) = delete;
  collector& operator=(const collector&) = delete;
  // Runs the handlers collected so far, and collects no more. REQUIRES: no mutex held.
  void run() noexcept;

 private:
  std::vector<std::shared_ptr<async_request>>* outer_;
  std::vector<std::shared_ptr<async_request>> mine_;
};
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
