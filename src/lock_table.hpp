// The process-wide table of open lock files: one inode_state per (device, inode), and fork().
#pragma once

#include <filesystem>
#include <memory>

#include "fasteners/lock_options.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail {

class inode_state;

// Guards the table and every lock object's binding to an inode_state. Held only briefly: never
// across a system call or a wait. Taken inside an inode_state's mutex, never the other way round.
extern mutex table_mutex;

class lock_table {
 public:
  // The state of the lock file at `path`, opening the file if this process has no state for it.
  // Throws std::system_error naming the path (see platform::open), with invalid_argument for an
  // empty path or one with a NUL character.
  static std::shared_ptr<inode_state> find_or_open(const std::filesystem::path& path,
                                                   const lock_options& options)
      FASTENERS_EXCLUDES(table_mutex);

  // Stops listing `inode`, so that the next lookup of its path opens the file anew (it was
  // deleted or replaced). Its holders keep it.
  static void unlist(inode_state& inode) FASTENERS_REQUIRES(table_mutex);
  // Called by the last reference to `inode` as it goes, before it closes its handles, and after.
  static void forget(inode_state& inode) FASTENERS_EXCLUDES(table_mutex);
  static void closed(inode_state& inode) FASTENERS_EXCLUDES(table_mutex);
};

}  // namespace fasteners::detail
