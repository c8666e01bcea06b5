// fasteners::interprocess_lock: an exclusive lock on a lock file, shared by processes and threads.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

#include "fasteners/detail/file_lock.hpp"

namespace fasteners {

// An exclusive lock on a lock file: at most one holder at a time among all lock objects on that
// file, in this process (any thread) and in every other process, python-fasteners included.
// The OS releases it if the holding process dies. The lock belongs to this object, not to a
// thread: any thread may release what another thread took through the same object. Not
// reentrant. Movable, not copyable; destruction releases and never throws. Thread-safe.
//
// The lock file and its missing parent directories are created on first acquire; the file is
// never truncated, written or deleted. It is held open only while the lock is held, and after a
// timed wait that gave up, until the holder it waited for lets go (see the README).
//
// Satisfies the standard TimedLockable requirements (std::lock_guard, std::unique_lock,
// std::scoped_lock, std::lock).
class interprocess_lock {
 public:
  // Does not touch the file system.
  explicit interprocess_lock(std::filesystem::path path, const lock_options& options = {})
      : lock_(std::move(path), options) {}

  // Takes the lock. With `blocking` and no timeout it waits as long as needed; with
  // `blocking == false` it tries once; with a timeout it waits at most that long. Returns whether
  // the lock was taken.
  // Throws std::invalid_argument for a negative or NaN timeout; std::system_error naming the path
  // for OS failures, a path that is not a regular file, when waiting, with
  // std::errc::resource_deadlock_would_occur if the calling thread already holds a lock on this
  // file in this process (through this object or another), and for a timed wait that no thread
  // can be started for (EAGAIN when the process may start no more). Not a cancellation point: a
  // thread cancelled meanwhile is cancelled after the call returns.
  bool acquire(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::exclusive, blocking, timeout);
  }
  // Releases the lock. Throws std::system_error with std::errc::operation_not_permitted if this
  // object does not hold it.
  void release() { lock_.release(detail::lock_mode::exclusive); }
  // Whether this object holds the lock.
  bool acquired() const noexcept { return lock_.holds(detail::lock_mode::exclusive); }
  const std::filesystem::path& path() const noexcept { return lock_.path(); }
  // The descriptor (HANDLE on Windows) through which this process holds the file's lock while
  // this object holds the lock; -1 otherwise. The library owns it: never close it. On POSIX a child
  // process that inherits a duplicate shares the lock; on Windows a lock belongs to the process
  // that took it, and a child given the handle neither holds nor can release it.
  std::intptr_t native_handle() const noexcept { return lock_.native_handle(); }

  // Waits as long as needed; throws as acquire() does.
  void lock() { acquire(true); }
  // Tries once; throws only for OS failures.
  bool try_lock() { return acquire(false); }
  // Waits at most `d` (a duration of zero or less means one try; NaN throws
  // std::invalid_argument).
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::exclusive, detail::deadline_after(d));
  }
  // Waits until `t` on `Clock` (a past time means one try; NaN throws std::invalid_argument).
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::exclusive, t);
  }
  void unlock() { release(); }

 private:
  detail::file_lock lock_;
};

}  // namespace fasteners
