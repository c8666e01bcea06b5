// The two ways `fasteners run` locks a file: this library's locks, or flock(2) as flock(1) does.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>

namespace fasteners::tool {

// A lock call on a descriptor failed (such as ENOLCK), as opposed to opening the lock file:
// flock(1) tells the two apart in its exit status.
class lock_call_error : public std::system_error {
 public:
  using std::system_error::system_error;
};

// One lock on one file, shared or exclusive, taken at most once. Destroying it releases the lock
// unless a program started with its descriptor still holds it. Not thread-safe.
class lock_backend {
 public:
  virtual ~lock_backend() = default;
  // Tries once to take the lock; returns whether it did. Throws std::system_error naming the
  // file when it cannot be opened, lock_call_error when it cannot be locked.
  virtual bool try_acquire() = 0;
  // Waits for the lock, at most `timeout` if given (zero: one try); returns whether it took it.
  // Throws as try_acquire().
  virtual bool acquire(std::optional<std::chrono::duration<double>> timeout) = 0;
  // The descriptor through which the lock is held, to hand to a child; -1 while not held.
  virtual std::intptr_t native_handle() const = 0;
};

// The library's lock (fcntl open-file-description locks on Linux, as python-fasteners' fcntl
// locks see them). The file must be a regular file; it is created if missing.
std::unique_ptr<lock_backend> make_library_lock(const std::filesystem::path& path, bool shared);

// Whether make_flock_lock() works here: false where flock(2) does not exist (Windows).
bool flock_supported();

// A flock(2) lock, as util-linux flock(1) takes it, on a file (created if missing) or a
// directory. Throws std::system_error with std::errc::function_not_supported where flock(2)
// does not exist.
std::unique_ptr<lock_backend> make_flock_lock(const std::filesystem::path& path, bool shared);

// Whether make_descriptor_lock() works here with these locks: POSIX only, and for fcntl locks
// only where open-file-description locks exist (Linux), since a classic fcntl lock would end with
// this process.
bool descriptor_locks_supported(bool use_flock);

// A lock on the open file of descriptor `fd`, which this process inherited (`fasteners run FD`):
// a flock(2) lock with `use_flock`, else an open-file-description fcntl lock on the whole file,
// which conflicts with this library's locks and python-fasteners' in both directions. Either
// belongs to the open file, so it stays held after this process ends, for as long as a
// descriptor of that open file (the shell's) stays open. The descriptor is never closed. Throws
// tool_error (65, as flock(1)) when `fd` is not open, or when an fcntl lock cannot be taken
// through it: a shared one needs it open for reading, an exclusive one for writing.
std::unique_ptr<lock_backend> make_descriptor_lock(int fd, bool shared, bool use_flock);

// Releases the lock of `fd`'s open file (`fasteners run -u FD`): its flock(2) lock with
// `use_flock`, else its fcntl locks on the whole file. Throws tool_error (65) when `fd` is not
// open, lock_call_error when the unlock fails.
void unlock_descriptor(int fd, bool use_flock);

// A path that names descriptor `fd`'s file (/proc/self/fd/FD on Linux), for holders(); empty
// where there is none.
std::filesystem::path descriptor_path(int fd);

// "descriptor 9 ('/var/lock/job.lock')", or "descriptor 9" where the file's name is unknown, for
// messages.
std::string descriptor_name(int fd);

}  // namespace fasteners::tool
