// The members of the public lock types, written once over their core (a detail::lock_core).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

#include "fasteners/detail/lock_core.hpp"
#include "fasteners/timeout.hpp"

namespace fasteners::detail {

// The members of an exclusive lock: python-fasteners' acquire and release, and the standard
// TimedLockable requirements (std::lock_guard, std::unique_lock, std::scoped_lock, std::lock).
// Each lock type says what else its calls throw (the OS's failures on a lock file, a lost
// session on PostgreSQL). Thread-safe; the lock belongs to the object, not to a thread.
template <class Core>
class exclusive_lock {
 public:
  // Takes the lock. With `blocking` and no timeout it waits as long as needed; with
  // `blocking == false` it tries once; with a timeout it waits at most that long. Returns whether
  // the lock was taken. Throws std::invalid_argument for a negative or NaN timeout, and
  // std::system_error with std::errc::resource_deadlock_would_occur if the calling thread already
  // holds this lock in this process (through this object or another) and would wait. Not a
  // cancellation point: a thread cancelled meanwhile is cancelled after the call returns.
  bool acquire(bool blocking = true, timeout_type timeout = std::nullopt) {
    return core_.acquire(lock_mode::exclusive, blocking, timeout);
  }
  // Releases the lock. Throws std::system_error with std::errc::operation_not_permitted if this
  // object does not hold it.
  void release() { core_.release(lock_mode::exclusive); }
  // Whether this object holds the lock.
  bool acquired() const noexcept { return core_.holds(lock_mode::exclusive); }
  // The OS handle through which this process holds the lock while this object holds it (see the
  // lock type); -1 otherwise. The library owns it: never close it.
  std::intptr_t native_handle() const noexcept { return core_.native_handle(); }
  // With the fencing option (lock_options::fencing, postgres_options::fencing): the fencing token
  // of this object's hold, for the resource it guards to refuse writes of older holders. While it
  // holds the exclusive lock, the token of that acquisition, larger than every token this lock
  // gave before in any process; while it holds a shared lock, the latest exclusive acquisition's
  // (0 if none). Throws std::system_error with std::errc::operation_not_permitted without the
  // option, while the object holds nothing, or once its hold was lost.
  std::uint64_t fencing_token() const { return core_.fencing_token(); }

  // Waits as long as needed; throws as acquire() does.
  void lock() { acquire(true); }
  // Tries once; throws only for failures other than finding the lock taken.
  bool try_lock() { return acquire(false); }
  // Waits at most `d` (zero or less: one try; NaN throws std::invalid_argument).
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return core_.acquire_for(lock_mode::exclusive, d);
  }
  // Waits until `t` on `Clock` (a past time: one try; NaN throws std::invalid_argument). A clock
  // that jumps never shortens the wait.
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return core_.acquire_until(lock_mode::exclusive, t);
  }
  void unlock() { release(); }

  // Asynchronous forms of lock(), try_lock_for() and try_lock_until(): they return at once, and
  // `handler` (a move-only callable taking std::error_code) runs once, on a thread of the library,
  // with the outcome (see async_acquisition). Exclusion, writer preference and deadlines are as
  // for the blocking calls, which a process may mix with these; an object that holds the lock and
  // asks again waits until it releases. A NaN time throws std::invalid_argument, and
  // std::system_error (resource_unavailable_try_again) comes at the call if the library's thread
  // for asynchronous acquisitions cannot be started (the process may start no more threads).
  template <class Handler>
  async_acquisition async_lock(Handler&& handler) {
    return core_.acquire_async(lock_mode::exclusive, std::chrono::steady_clock::time_point::max(),
                               async_handler(std::forward<Handler>(handler)));
  }
  template <class Rep, class Period, class Handler>
  async_acquisition async_try_lock_for(const std::chrono::duration<Rep, Period>& d,
                                       Handler&& handler) {
    return core_.acquire_async(lock_mode::exclusive, deadline_after(d),
                               async_handler(std::forward<Handler>(handler)));
  }
  template <class Clock, class Duration, class Handler>
  async_acquisition async_try_lock_until(const std::chrono::time_point<Clock, Duration>& t,
                                         Handler&& handler) {
    return core_.acquire_async_until(lock_mode::exclusive, t,
                                     async_handler(std::forward<Handler>(handler)));
  }

 protected:
  explicit exclusive_lock(Core core) noexcept : core_(std::move(core)) {}
  Core core_;
};

// The members of a reader-writer lock: any number of readers at once, or one writer alone.
// python-fasteners' acquire_read_lock and friends, and the standard SharedTimedLockable
// requirements (std::shared_lock for reading, std::unique_lock and std::lock_guard for writing).
// One object may hold several read locks at once (one per reading thread). Not reentrant and not
// upgradeable. While a thread of this process waits for the write lock, new readers from this
// process wait behind it.
template <class Core>
class reader_writer_lock : private exclusive_lock<Core> {
  using write_side = exclusive_lock<Core>;

 public:
  // Take a read (shared) or write (exclusive) lock; parameters, results and exceptions as
  // exclusive_lock::acquire.
  bool acquire_read_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return this->core_.acquire(lock_mode::shared, blocking, timeout);
  }
  bool acquire_write_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return write_side::acquire(blocking, timeout);
  }
  // Release one read lock or the write lock of this object. Throw std::system_error with
  // std::errc::operation_not_permitted if this object holds none.
  void release_read_lock() { this->core_.release(lock_mode::shared); }
  void release_write_lock() { write_side::release(); }

  // Wait for a read or write lock and return a guard that releases it when destroyed.
  basic_guard<lock_mode::shared, Core> read_lock() {
    acquire_read_lock();
    return basic_guard<lock_mode::shared, Core>(this->core_);
  }
  basic_guard<lock_mode::exclusive, Core> write_lock() {
    acquire_write_lock();
    return basic_guard<lock_mode::exclusive, Core>(this->core_);
  }

  // Whether this object holds a read lock, or the write lock.
  bool read_acquired() const noexcept { return this->core_.holds(lock_mode::shared); }
  bool write_acquired() const noexcept { return write_side::acquired(); }
  using write_side::fencing_token;
  using write_side::native_handle;

  // SharedTimedLockable, exclusive side (as exclusive_lock's).
  using write_side::lock;
  using write_side::try_lock;
  using write_side::try_lock_for;
  using write_side::try_lock_until;
  using write_side::unlock;

  // SharedTimedLockable, shared side.
  void lock_shared() { acquire_read_lock(); }
  bool try_lock_shared() { return acquire_read_lock(false); }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& d) {
    return this->core_.acquire_for(lock_mode::shared, d);
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t) {
    return this->core_.acquire_until(lock_mode::shared, t);
  }
  void unlock_shared() { release_read_lock(); }

  // Asynchronous acquisitions of the write lock (as exclusive_lock's) and of a read lock.
  using write_side::async_lock;
  using write_side::async_try_lock_for;
  using write_side::async_try_lock_until;
  template <class Handler>
  async_acquisition async_lock_shared(Handler&& handler) {
    return this->core_.acquire_async(lock_mode::shared,
                                     std::chrono::steady_clock::time_point::max(),
                                     async_handler(std::forward<Handler>(handler)));
  }
  template <class Rep, class Period, class Handler>
  async_acquisition async_try_lock_shared_for(const std::chrono::duration<Rep, Period>& d,
                                              Handler&& handler) {
    return this->core_.acquire_async(lock_mode::shared, deadline_after(d),
                                     async_handler(std::forward<Handler>(handler)));
  }
  template <class Clock, class Duration, class Handler>
  async_acquisition async_try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t,
                                                Handler&& handler) {
    return this->core_.acquire_async_until(lock_mode::shared, t,
                                           async_handler(std::forward<Handler>(handler)));
  }

 protected:
  explicit reader_writer_lock(Core core) noexcept : write_side(std::move(core)) {}
  using write_side::core_;
};

}  // namespace fasteners::detail
