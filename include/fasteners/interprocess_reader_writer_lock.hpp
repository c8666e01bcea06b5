// fasteners::interprocess_reader_writer_lock: shared (read) and exclusive (write) locks on a file.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>

#include "fasteners/detail/file_lock.hpp"

namespace fasteners {

// Holds a read or write lock of an interprocess_reader_writer_lock until destroyed.
using read_guard = detail::basic_guard<detail::lock_mode::shared>;
using write_guard = detail::basic_guard<detail::lock_mode::exclusive>;

// A reader-writer lock on a lock file: any number of readers at once, or one writer alone, among
// all lock objects on that file in this process (any thread) and in every other process,
// python-fasteners included. One object may hold several read locks at once (one per reading
// thread). Released by the OS if the holding process dies. The locks belong to this object, not
// to a thread. Not reentrant and not upgradeable: a thread that holds any lock on the file must
// release it before it waits for another. While a thread of this process waits for the write
// lock, new readers from this process wait behind it. Movable, not copyable; destruction releases
// everything the object holds and never throws. Thread-safe.
//
// The lock file and its missing parent directories are created on first acquire; the file is
// never truncated, written or deleted. If it can only be opened for reading, read locks work and
// write locks fail with std::errc::permission_denied. Timed waits, errors and cancellation are as
// for interprocess_lock.
//
// Satisfies the standard SharedTimedLockable requirements (std::shared_lock for reading,
// std::unique_lock and std::lock_guard for writing).
class interprocess_reader_writer_lock {
 public:
  // Does not touch the file system.
  explicit interprocess_reader_writer_lock(std::filesystem::path path,
                                           const lock_options& options = {})
      : lock_(std::move(path), options) {}

  // Take a read (shared) or write (exclusive) lock; parameters, results and exceptions as
  // interprocess_lock::acquire.
  bool acquire_read_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::shared, blocking, timeout);
  }
  bool acquire_write_lock(bool blocking = true, timeout_type timeout = std::nullopt) {
    return lock_.acquire(detail::lock_mode::exclusive, blocking, timeout);
  }
  // Release one read lock or the write lock of this object. Throw std::system_error with
  // std::errc::operation_not_permitted if this object holds none.
  void release_read_lock() { lock_.release(detail::lock_mode::shared); }
  void release_write_lock() { lock_.release(detail::lock_mode::exclusive); }

  // Wait for a read or write lock and return a guard that releases it when destroyed.
  read_guard read_lock() {
    acquire_read_lock();
    return read_guard(lock_);
  }
  write_guard write_lock() {
    acquire_write_lock();
    return write_guard(lock_);
  }

  // Whether this object holds a read lock, or the write lock.
  bool read_acquired() const noexcept { return lock_.holds(detail::lock_mode::shared); }
  bool write_acquired() const noexcept { return lock_.holds(detail::lock_mode::exclusive); }
  const std::filesystem::path& path() const noexcept { return lock_.path(); }
  // The descriptor (HANDLE on Windows) through which this process holds the file's lock while
  // this object holds a lock; -1 otherwise. The library owns it: never close it. On POSIX a child
  // process that inherits a duplicate shares the lock; on Windows a lock belongs to the process
  // that took it, and a child given the handle neither holds nor can release it.
  std::intptr_t native_handle() const noexcept { return lock_.native_handle(); }

  // SharedTimedLockable, exclusive side (as interprocess_lock's).
  void lock() { acquire_write_lock(); }
  bool try_lock() { return acquire_write_lock(false); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::exclusive, detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::exclusive, t);
  }
  void unlock() { release_write_lock(); }

  // SharedTimedLockable, shared side.
  void lock_shared() { acquire_read_lock(); }
  bool try_lock_shared() { return acquire_read_lock(false); }
  template <class Rep, class Period>
  bool try_lock_shared_for(const std::chrono::duration<Rep, Period>& d) {
    return lock_.acquire_until(detail::lock_mode::shared, detail::deadline_after(d));
  }
  template <class Clock, class Duration>
  bool try_lock_shared_until(const std::chrono::time_point<Clock, Duration>& t) {
    return lock_.acquire_until(detail::lock_mode::shared, t);
  }
  void unlock_shared() { release_read_lock(); }

 private:
  detail::file_lock lock_;
};

}  // namespace fasteners
