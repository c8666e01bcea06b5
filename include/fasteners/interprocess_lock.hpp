// fasteners::interprocess_lock: an exclusive lock on a lock file, shared by processes and threads.
#pragma once

#include <filesystem>
#include <utility>

#include "fasteners/detail/file_lock.hpp"
#include "fasteners/detail/lock_members.hpp"
#include "fasteners/lock_options.hpp"

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
// Members (detail::exclusive_lock): acquire, release, acquired, native_handle, and the standard
// TimedLockable ones (lock, try_lock, try_lock_for, try_lock_until, unlock). Besides what they
// say, acquires throw std::system_error naming the path for OS failures, for a path that is not a
// regular file, and for a timed wait that no thread can be started for (EAGAIN when the process
// may start no more). native_handle() is the descriptor (HANDLE on Windows) through which this
// process holds the file's lock: on POSIX a child process that inherits a duplicate shares the
// lock; on Windows a lock belongs to the process that took it, and a child given the handle
// neither holds nor can release it.
class interprocess_lock : public detail::exclusive_lock<detail::file_lock> {
 public:
  // Does not touch the file system.
  explicit interprocess_lock(std::filesystem::path path, const lock_options& options = {})
      : exclusive_lock(detail::file_lock(std::move(path), options)) {}

  const std::filesystem::path& path() const noexcept { return core_.path(); }
};

}  // namespace fasteners
