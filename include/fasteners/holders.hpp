// fasteners::holders(): which processes hold locks on a file, as the operating system reports it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fasteners/detail/export.hpp"

namespace fasteners {

// Whether a lock lets others read along (shared) or keeps everyone else out (exclusive).
enum class lock_kind { shared, exclusive };

// The OS mechanism behind a lock. fcntl_ofd: open-file-description locks (this library on Linux);
// fcntl_posix: classic process-owned fcntl/lockf locks (python-fasteners, this library built with
// FASTENERS_CLASSIC_FCNTL, SQLite); flock: flock(2) (util-linux flock(1)); other: leases and the
// like. fcntl locks of both kinds conflict with each other; flock(2) locks only with flock(2).
enum class lock_mechanism { fcntl_ofd, fcntl_posix, flock, other };

constexpr std::string_view to_string(lock_kind kind) noexcept {
  return kind == lock_kind::shared ? "shared" : "exclusive";
}

constexpr std::string_view to_string(lock_mechanism mechanism) noexcept {
  switch (mechanism) {
    case lock_mechanism::fcntl_ofd:
      return "fcntl_ofd";
    case lock_mechanism::fcntl_posix:
      return "fcntl_posix";
    case lock_mechanism::flock:
      return "flock";
    case lock_mechanism::other:
      break;
  }
  return "other";
}

// One process that holds (or, when `inspectable` is false, may hold) a lock on a file.
struct lock_holder {
  // The process; -1 when no process could be named (for example, it lives in another PID
  // namespace, or it ended while the holders were being looked up).
  int pid = -1;
  // Its command line, arguments separated by spaces ("[name]" for kernel threads); empty when it
  // could not be read.
  std::string command;
  lock_kind kind = lock_kind::exclusive;
  lock_mechanism mechanism = lock_mechanism::other;
  // The locked byte range: from `first_byte` to `last_byte`, or to the end of the file (however
  // long it grows) when `last_byte` is empty.
  std::uint64_t first_byte = 0;
  std::optional<std::uint64_t> last_byte;
  // Whether the lock covers all of the file's content, however long it grows: true for this
  // library's locks (which end far beyond any real file), python-fasteners' and flock(2)'s.
  bool whole_file = true;
  // True for a writer of this library that waits for the lock: it holds only a marker byte far
  // beyond the end of the file (the gate), which makes new readers queue behind it. It does not
  // hold the lock, but whole-file lockers such as python-fasteners wait for it too.
  bool waiting = false;
  // When the lock was taken, where the operating system tells; Linux does not.
  std::optional<std::chrono::system_clock::time_point> since;
  // True when the OS names this process as a holder. False when a lock's holder could not be
  // found because some processes could not be inspected (no permission to read their descriptor
  // tables, typically processes of other users): each such process is then listed with
  // inspectable == false as a possible holder of that lock, or, if there is none, one entry with
  // pid == -1 stands for the unknown holder.
  bool inspectable = true;
};

// The processes that hold locks on the file at `path`, one entry per process and lock, sorted by
// pid; empty if the file is free or does not exist. Covers fcntl locks (open-file-description and
// classic, so this library and python-fasteners), flock(2) locks and leases, taken by any
// process of the system (the calling one included). A lock held through an open file shared by
// several processes (inherited over fork, passed to a child) lists each of them. Writers of this
// library that wait at the gate are listed with `waiting`; other waiters are not listed.
//
// It only looks: it never opens, creates or locks the file, and takes no lock. The answer is a
// snapshot that may be stale by the time it returns. Thread-safe.
//
// Linux only (it reads /proc/locks and /proc/PID/fdinfo). Throws std::system_error naming the path
// when the path cannot be inspected (other than being absent) or /proc cannot be read, and with
// std::errc::function_not_supported on other platforms.
FASTENERS_API std::vector<lock_holder> holders(const std::filesystem::path& path);

// As above, but reports failures through `ec` (cleared on success) instead of throwing
// std::system_error; may still throw std::bad_alloc.
FASTENERS_API std::vector<lock_holder> holders(const std::filesystem::path& path,
                                               std::error_code& ec);

}  // namespace fasteners
