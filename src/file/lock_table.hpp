// The process-wide table of open lock files: one inode_state per (device, inode), and fork().
#pragma once

#include <filesystem>
#include <memory>

#include "fasteners/lock_options.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::file {

class inode_state;

// The table's state lives in lock_table.cpp, guarded by a mutex of its own that is held only
// briefly: never across a system call or a wait. It is taken inside an inode_state's mutex, never
// the other way round.
class lock_table {
 public:
  // The state of the lock file at `path`, opening the file if this process has no state for it,
  // with a binding counted there for the caller (engine::lock_state::attach). Throws
  // std::system_error naming the path (see platform::open), with invalid_argument for an empty
  // path or one with a NUL character.
  static std::shared_ptr<inode_state> find_or_open(const std::filesystem::path& path,
                                                   const lock_options& options);

  // Installs the fork() hooks that close every os_file in a child (see os_file.hpp), for users of
  // os_file besides the table (semaphore files). Cheap after the first call.
  static void install_fork_handlers();

  // Stops listing `inode`, so that the next lookup of its path opens the file anew (it was
  // deleted or replaced, or nobody is bound to it any more). Its holders keep it. Does nothing
  // for a state that is not listed.
  static void unlist(const inode_state& inode);
  // Called by an inode_state as it is destroyed, after it closed its handles.
  static void closed(const inode_state& inode);
};

}  // namespace fasteners::detail::file
