// The two ways `fasteners run` locks a file: this library's locks, or flock(2) as flock(1) does.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>

namespace fasteners::tool {

// One lock on one file, shared or exclusive, taken at most once. Destroying it releases the lock
// unless a program started with its descriptor still holds it. Not thread-safe.
class lock_backend {
 public:
  virtual ~lock_backend() = default;
  // Tries once to take the lock; returns whether it did. Throws std::system_error naming the
  // file when it cannot be opened or locked.
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

}  // namespace fasteners::tool
