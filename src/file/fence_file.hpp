// A lock file's fencing counter: the file beside it that holds the latest exclusive token.
#pragma once

#include <cstdint>
#include <filesystem>

#include "fasteners/lock_options.hpp"
#include "file/os_file.hpp"

namespace fasteners::detail::file {

// The counter file "<lock path>.fence" of a lock file, kept open once opened.
//
// Why a file of its own, beside the lock file: the lock file's bytes stay as python-fasteners
// expects them (it never writes them), and the library never deletes the counter file, so the
// count survives remove_on_release deleting and re-creating the lock file, and a holder killed at
// any moment (a write of 21 bytes at offset 0 is done whole or not at all as far as the death of
// the writing process goes). Beside the lock file, it lives where the lock file's users may
// create files already. A machine that loses power may lose the last write (nothing is synced).
//
// Format: the latest exclusive token as 20 decimal digits and a newline, always written whole at
// offset 0, so no shorter number is ever left behind and nothing is truncated; a missing or empty
// file means 0. It is created as the lock file is (platform::open: missing parent directories
// too, mode 0666 less the umask on POSIX, close-on-exec), so whoever may create the lock file may
// create it; only an exclusive acquisition creates it.
//
// Not thread-safe: the lock state's mutex guards it, and each call is made while this process
// holds the lock on the lock file, which is what orders the calls of all processes.
class fence_file {
 public:
  // The latest token: 0 if the file does not exist yet or is empty. Throws std::system_error
  // naming the file if it cannot be read or holds something else than a token.
  std::uint64_t latest(const std::filesystem::path& lock_path, const lock_options& options);
  // Takes the next token: writes the latest one plus one and returns it. Throws
  // std::system_error naming the file, with permission_denied when it can only be read.
  std::uint64_t advance(const std::filesystem::path& lock_path, const lock_options& options);

 private:
  // Opens the file unless it is open; without `create`, returns false if it does not exist.
  bool open(const std::filesystem::path& lock_path, const lock_options& options, bool create);
  std::uint64_t read() const;

  std::filesystem::path path_;
  os_file file_;
  bool writable_ = false;
};

}  // namespace fasteners::detail::file
