// fasteners::interprocess_reader_writer_lock: shared (read) and exclusive (write) locks on a file.
#pragma once

#include <filesystem>
#include <utility>

#include "fasteners/detail/file_lock.hpp"
#include "fasteners/detail/lock_members.hpp"
#include "fasteners/lock_options.hpp"

namespace fasteners {

// Holds a read or write lock of an interprocess_reader_writer_lock until destroyed.
using read_guard = detail::basic_guard<detail::lock_mode::shared, detail::file_lock>;
using write_guard = detail::basic_guard<detail::lock_mode::exclusive, detail::file_lock>;

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
// write locks fail with std::errc::permission_denied. Timed waits, errors, native_handle() and
// cancellation are as for interprocess_lock.
//
// Members (detail::reader_writer_lock): acquire_read_lock, acquire_write_lock, release_read_lock,
// release_write_lock, read_lock, write_lock, read_acquired, write_acquired, native_handle, and
// the standard SharedTimedLockable ones (std::shared_lock for reading, std::unique_lock and
// std::lock_guard for writing).
class interprocess_reader_writer_lock : public detail::reader_writer_lock<detail::file_lock> {
 public:
  // Does not touch the file system.
  explicit interprocess_reader_writer_lock(std::filesystem::path path,
                                           const lock_options& options = {})
      : reader_writer_lock(detail::file_lock(std::move(path), options)) {}

  const std::filesystem::path& path() const noexcept { return core_.path(); }
};

}  // namespace fasteners
