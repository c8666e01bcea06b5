// The small interface each platform implements: files, byte-range locks, threads and fork.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>
#include <tuple>

#include "fasteners/detail/export.hpp"
#include "fasteners/detail/lock_core.hpp"

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
  friend bool operator!=(const file_identity& a, const file_identity& b) { return !(a == b); }
};

struct open_file {
  native_handle handle = invalid_handle;
  file_identity id;
  bool writable = false;  // Opened for writing, so exclusive locks are possible.
};

// ---- Files (open_file.cpp) ----

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

// Deletes `path` if it still names the file `id` open as `handle`, and that file has no other
// name (a hard link elsewhere would keep it alive and locked under that name). A symbolic link at
// `path` is never deleted. Returns whether it deleted; failures leave the file in place.
bool remove_sole_name(native_handle handle, const file_identity& id,
                      const std::filesystem::path& path) noexcept;

// Reads up to `size` bytes from the start of the file open as `handle` into `buffer`; returns how
// many it read. Writes `size` bytes from `data` at the start of the file. Both throw
// std::system_error naming `path` on failure.
std::size_t read_start(native_handle handle, char* buffer, std::size_t size,
                       const std::filesystem::path& path);
void write_start(native_handle handle, const char* data, std::size_t size,
                 const std::filesystem::path& path);

// ---- Byte-range locks (byte_range_lock.cpp) ----

// The parts of a lock file the lock protocol locks (gate_protocol.hpp says how): the main region,
// which every holder locks, and the gate, one byte far beyond any content that a writer holds
// while it waits. Each platform maps them to byte ranges.
enum class region { main, gate, main_and_gate };

// The offset of the gate byte, on every platform and in the holder lookup.
inline constexpr std::uint64_t gate_offset = std::uint64_t{1} << 62;

// Whether locks belong to the handle that took them (open-file-description locks, Windows), so
// that two handles of one process exclude each other; false for classic process-owned fcntl locks.
bool handles_own_locks() noexcept;

// Whether an unlock must name exactly a region that was locked (Windows), rather than any range,
// splitting what it covers (POSIX).
bool unlocks_exact_regions() noexcept;

// Whether a call on a handle waits while another thread blocks in a lock call on that handle
// (Windows serializes the calls on a synchronous handle), so a blocked handle must be left alone.
bool blocked_handle_is_busy() noexcept;

// A span of bytes to lock: a region of the lock protocol (span_of()), or a byte beside them (a
// semaphore's, see semaphore/file_semaphore.hpp, beyond the gate). `length` is at least 1.
struct byte_span {
  std::uint64_t start = 0;
  std::uint64_t length = 1;
};

// The bytes of region `r` on this platform.
byte_span span_of(region r) noexcept;

// Takes `s` in `mode` through `handle` if no other owner holds a conflicting lock; returns
// whether it did. Replaces what the same owner held there. Throws std::system_error naming `path`
// for failures other than contention.
bool try_lock(native_handle handle, lock_mode mode, byte_span s, const std::filesystem::path& path);

// Takes `s` in `mode`, waiting in the kernel as long as it takes. Signals do not end the wait.
// Throws std::system_error naming `path` on failure.
void wait_lock(native_handle handle, lock_mode mode, byte_span s,
               const std::filesystem::path& path);

// Releases `s`, which `handle` holds.
std::error_code unlock(native_handle handle, byte_span s) noexcept;

// Whether another owner holds a lock on `s` that conflicts with `mode`. Best effort: false
// when it cannot be told.
bool locked_elsewhere(native_handle handle, lock_mode mode, byte_span s) noexcept;

// Releases everything `handle` holds: the main region and the gate.
std::error_code unlock_all(native_handle handle) noexcept;

// The calls above on a region of the lock protocol.
inline bool try_lock(native_handle handle, lock_mode mode, region r,
                     const std::filesystem::path& path) {
  return try_lock(handle, mode, span_of(r), path);
}
inline void wait_lock(native_handle handle, lock_mode mode, region r,
                      const std::filesystem::path& path) {
  wait_lock(handle, mode, span_of(r), path);
}
inline std::error_code unlock(native_handle handle, region r) noexcept {
  return unlock(handle, span_of(r));
}
inline bool locked_elsewhere(native_handle handle, lock_mode mode, region r) noexcept {
  return locked_elsewhere(handle, mode, span_of(r));
}

// ---- Threads and processes (thread.cpp) ----

// Starts `run(arg)` on a new detached thread with a small stack and every signal blocked. Returns
// the error if the thread could not be started.
std::error_code start_thread(void (*run)(void*), void* arg) noexcept;

// Turns thread cancellation off for the calling thread during its scope, and restores the
// thread's previous state afterwards: a cancel requested meanwhile acts at the thread's next
// cancellation point after the scope. Nothing where threads cannot be cancelled.
class FASTENERS_API cancellation_off {
 public:
  cancellation_off() noexcept;
  ~cancellation_off();
  cancellation_off(const cancellation_off&) = delete;
  cancellation_off& operator=(const cancellation_off&) = delete;

 private:
  int saved_ = 0;
};

// One thread's place to sleep until another thread wakes it: a futex on Linux, a condition
// variable elsewhere. No signal and no thread cancellation ends a sleep for good.
class FASTENERS_API parker {
 public:
  parker() noexcept = default;
  parker(const parker&) = delete;
  parker& operator=(const parker&) = delete;

  // Sleeps until unpark() is called, or until `until` (a time_point::max() means no limit),
  // unless unpark() was called already since the last park() that it woke. Returns whether an
  // unpark() woke it (and was consumed); false at the deadline, and now and then spuriously.
  // Only the thread that owns the parker calls it.
  bool park(std::chrono::steady_clock::time_point until) noexcept;
  // Wakes the owner's park(), or the next one. Any thread; the parker must outlive the call, but
  // its owner may destroy it as soon as a park() that returned true shows it was called.
  void unpark() noexcept;

 private:
  std::atomic<int> state_{0};  // 1: unparked, 0: neither, -1: parked (Linux).
  std::mutex mu_;              // Elsewhere, with cv_.
  std::condition_variable cv_;
};

// Whether processes can fork(), so that the library must keep its handles out of children.
bool forks() noexcept;

// Runs `prepare` before a fork, `parent` after it in the parent and `child` in the child; nothing
// where fork() does not exist.
FASTENERS_API void at_fork(void (*prepare)(), void (*parent)(), void (*child)());

}  // namespace fasteners::detail::platform
