// Kernel waits: a lock file's timed waits, blocking in the kernel in a thread of the library's own.
#pragma once

#include <filesystem>
#include <memory>
#include <system_error>

#include "fasteners/detail/lock_core.hpp"
#include "file/os_file.hpp"
#include "platform.hpp"

namespace fasteners::detail::file {

class inode_state;

// The thread that waits for the outcome of a kernel_wait: the caller that started or adopted it.
// It sleeps on its parker, which the kernel wait's thread wakes once it has set the outcome.
struct wanter {
  enum class state { waiting, granted, failed, start_again };
  state outcome = state::waiting;
  std::error_code error;  // Why, when failed.
  platform::parker parker;
};

// How a kernel wait ended.
enum class wait_end {
  granted,
  failed,
  unwanted,  // A writer got the gate after every caller gave up.
  replaced,  // The path names another file now.
};

// A wait in the kernel by a thread of the library's own (see inode_state), until it is granted.
// Its fields are guarded by the owning inode_state's mutex, except that `file` and `main_file`
// belong to its thread until it reports.
struct kernel_wait {
  lock_mode mode = lock_mode::exclusive;
  std::filesystem::path path;  // For errors and for opening the file again.
  bool follow_symlinks = true;
  // Waits for and holds the gate (writers), and waits for the main region unless the platform
  // needs `main_file` for that (platform::blocked_handle_is_busy()).
  os_file file;
  os_file main_file;
  bool gate_held = false;
  bool waiting_for_main = false;       // A writer past the gate.
  wanter* wanted_by = nullptr;         // Nobody once the caller gave up.
  std::shared_ptr<inode_state> inode;  // Kept alive by the waiting thread.
};

// Runs `w` on a thread of the library's own (thread_pool.hpp): waits in the kernel, then reports
// to `w.inode` (inode_state::complete), which forgets it. Returns the error if no thread could
// be started; `w` is untouched then.
std::error_code run_kernel_wait(kernel_wait& w) noexcept;

}  // namespace fasteners::detail::file
