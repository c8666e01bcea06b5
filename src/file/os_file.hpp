// The lock-file handles the library owns: each one closed once, and all closed in a forked child.
#pragma once

#include <cstdint>
#include <filesystem>

#include "engine/fork.hpp"
#include "platform.hpp"

namespace fasteners::detail::file {

// Owns one handle of a lock file. Every handle the library opens is registered while it is open,
// and fork() waits for opens and closes under way, so a child made by fork() at any moment can
// close every one (child_after_fork()): a child never keeps a lock file of its parent open, and so
// never keeps its parent's open-file-description locks alive. Not thread-safe; move-only.
class os_file {
 public:
  os_file() noexcept = default;
  // Opens the lock file at `path` (see platform::open) and describes it in `info`. Throws as
  // platform::open does.
  static os_file open(const std::filesystem::path& path, bool follow_symlinks,
                      platform::open_file& info);
  ~os_file() { reset(); }
  os_file(os_file&& other) noexcept;
  os_file& operator=(os_file&& other) noexcept;
  os_file(const os_file&) = delete;
  os_file& operator=(const os_file&) = delete;

  platform::native_handle get() const noexcept { return handle_; }
  explicit operator bool() const noexcept { return handle_ != platform::invalid_handle; }
  // Closes the handle, if there is one and this process opened it (not a parent before fork()).
  void reset() noexcept {
    if (handle_ != platform::invalid_handle) close();
  }

  // The fork() hooks, run by the lock table's: prepare waits for opens and closes under way and
  // holds them off; the child closes every registered handle.
  static void prepare_fork();
  static void parent_after_fork();
  static void child_after_fork();

 private:
  void close() noexcept;

  platform::native_handle handle_ = platform::invalid_handle;
  std::uint64_t generation_ = 0;
};

}  // namespace fasteners::detail::file
