// The small interface each platform implements: open a lock file, lock and unlock it, fork hooks.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <system_error>
#include <tuple>

#include "fasteners/detail/file_lock.hpp"

namespace fasteners::detail::platform {

// A file descriptor on POSIX, a HANDLE on Windows.
using native_handle = std::intptr_t;
inline constexpr native_handle invalid_handle = -1;

// What makes two paths the same file: (device, inode) on POSIX, (volume, file index) on Windows.
struct file_identity {
  std::uint64_t device = 0;
  std::uint64_t file = 0;
  friend bool operator<(const file_identity& a, const file_identity& b) {
    return std::tie(a.device, a.file) < std::tie(b.device, b.file);
  }
  friend bool operator==(const file_identity& a, const file_identity& b) {
    return a.device == b.device && a.file == b.file;
  }
};

struct open_file {
  native_handle handle = invalid_handle;
  file_identity id;
  bool writable = false;  // Opened for writing, so exclusive locks are possible.
};

// The byte of the lock file that a writer holds while it waits, far beyond any real content; new
// readers must pass it, so they queue behind a waiting writer (see lock()). Every platform and the
// holder lookup use the same offset.
inline constexpr std::uint64_t gate_offset = std::uint64_t{1} << 62;

// When a wait ends: time_point::min() means one try, time_point::max() means no limit.
using deadline = std::chrono::steady_clock::time_point;
inline constexpr deadline try_once = deadline::min();
inline constexpr deadline no_deadline = deadline::max();

// The identity of the regular file at `path`, or nothing if no file is there. Throws
// std::system_error naming the path if something other than a regular file is there (a symbolic
// link counts as such unless `follow_symlinks`), or the OS fails.
std::optional<file_identity> identify(const std::filesystem::path& path, bool follow_symlinks);

// Opens the lock file at `path` for locking, creating it and its missing parent directories. The
// handle is not inherited by executed programs; the file is never truncated. Falls back to a
// read-only handle when the file cannot be opened for writing. Throws std::system_error naming
// the path, also for a symbolic link when not `follow_symlinks`.
open_file open(const std::filesystem::path& path, bool follow_symlinks);

// Closes a handle from open(). Never fails.
void close(native_handle handle) noexcept;

// Whether closing the process's last handle of a file releases its locks there at once (POSIX),
// so that unlocking first would be a wasted call; Windows releases them only eventually.
bool closing_releases_locks() noexcept;

// Takes the OS lock of `mode` through `handle`, which holds no lock yet. It conflicts with
// whole-file locks of other programs, and once a writer waits for it, new readers wait behind
// that writer. Waits until `until` (see deadline). Returns false if the lock was not taken by
// then. Signals do not end the wait early. Throws std::system_error naming `path` for OS failures.
bool lock(native_handle handle, lock_mode mode, deadline until, const std::filesystem::path& path);

// Whether a writer of another process or handle waits for the lock that `handle` holds shared,
// so that new readers must queue behind it. Best effort: false when it cannot be told.
bool writer_waiting(native_handle handle) noexcept;

// Releases the OS lock held through `handle`.
std::error_code unlock(native_handle handle) noexcept;

// Called while `handle` holds the OS lock in `held` mode: if no other handle anywhere holds or
// waits for the lock, and `path` still names the file `id`, deletes the path (the lock stays
// held until unlock()). Returns whether it did. Best effort: failures leave the file in place.
bool remove_if_unused(native_handle handle, lock_mode held, const file_identity& id,
                      const std::filesystem::path& path) noexcept;

// The signal that ends timed waits in the kernel (0: none; see fasteners::set_timed_wait_signal).
void set_timed_wait_signal(int signal_number);
int timed_wait_signal() noexcept;

// Runs `prepare` before a fork, `parent` after it in the parent and `child` in the child; nothing
// where fork() does not exist.
void at_fork(void (*prepare)(), void (*parent)(), void (*child)());

}  // namespace fasteners::detail::platform
