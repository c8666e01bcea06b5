// The process-wide table of open lock files, and what fork() does to it.
#include "file/lock_table.hpp"

#include <algorithm>
#include <atomic>
#include <cassert>
#include <condition_variable>
#include <map>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "engine/fork.hpp"
#include "engine/state_registry.hpp"
#include "error.hpp"
#include "file/inode_state.hpp"
#include "file/os_file.hpp"

namespace fasteners::detail::file {
namespace {

using registry = engine::state_registry<platform::file_identity, inode_state>;

// The listed states by file identity; its mutex also guards retiring() and retired().
registry& table() {
  static auto* const t = new registry;
  return *t;
}

// Where locks belong to the process (classic fcntl), closing any handle of a file drops every
// lock the process holds on it, and two states of one file would not exclude each other. So from
// the moment a state is unlisted until its handles are closed, its file is "retiring", and no new
// state of that file is made meanwhile (see find_or_open()). Guarded by table().mu.
std::map<platform::file_identity, int>& retiring() {
  static auto* const map = new std::map<platform::file_identity, int>;
  return *map;
}

// Notified when a file stops retiring. Never destroyed.
std::condition_variable& retired() {
  static auto* const cv = new std::condition_variable;
  return *cv;
}

// fork() copies the table and the open handles into the child, which must neither use nor keep
// them: an open-file-description lock lives as long as any copy of its descriptor, so a child
// that kept one would keep its parent's lock alive. The child forgets every state (os_file
// closes the handles, lock objects drop their stale bindings, see engine::lock_object) and starts
// anew.
void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  os_file::prepare_fork();
  table().mu.lock();
}

void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  table().mu.unlock();
  os_file::parent_after_fork();
}

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The parent's states stay allocated (lock objects may still point at them) but unlisted.
  table().clear();
  retiring().clear();
  new (&retired()) std::condition_variable();
  table().mu.unlock();
  os_file::child_after_fork();
}

void install_handlers() {
  static const bool installed = [] {
    engine::count_forks();
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return true;
  }();
  static_cast<void>(installed);
}

// Whether a new state of the file `id` must wait: the file is retiring.
bool must_wait_to_open(registry& t, const platform::file_identity& id) FASTENERS_REQUIRES(t.mu) {
  static_cast<void>(t);
  return !platform::handles_own_locks() && retiring().count(id) != 0;
}

}  // namespace

std::shared_ptr<inode_state> lock_table::find_or_open(const std::filesystem::path& path,
                                                      const lock_options& options) {
  if (path.empty()) throw_error(std::errc::invalid_argument, "lock", path, "the path is empty");
  if (path.native().find(std::filesystem::path::value_type()) != path.native().npos) {
    throw_error(std::errc::invalid_argument, "lock", path, "the path contains a NUL character");
  }
  install_handlers();
  // With files open already, look for this one before opening it again: a second open and close
  // of a file would drop the classic fcntl locks this process holds on it.
  if (!table().empty_hint()) {
    if (const auto id = platform::identify(path, options.follow_symlinks)) {
      if (auto found = table().attach(*id)) return found;
    }
  }
  platform::open_file info;
  os_file file = os_file::open(path, options.follow_symlinks, info);
  for (;;) {
    std::shared_ptr<inode_state> existing;
    {
      auto& t = table();
      mutex_lock lock(t.mu);
      while (must_wait_to_open(t, info.id)) t.mu.wait(retired());
      existing = t.lookup(info.id);
      if (!existing) {
        auto inode = std::make_shared<inode_state>(std::move(file), info);
        t.put(info.id, inode);
        return inode;
      }
    }
    // Another object opened the same file meanwhile. A state that stopped standing for it is
    // unlisted by now (see state_registry::attach()): look again.
    if (existing->attach()) {
      existing->keep_spare(std::move(file));
      return existing;
    }
  }
}

void lock_table::install_fork_handlers() { install_handlers(); }

void lock_table::unlist(const inode_state& inode) {
  auto& t = table();
  mutex_lock lock(t.mu);
  if (t.erase(inode.id(), inode) && !platform::handles_own_locks()) ++retiring()[inode.id()];
}

void lock_table::closed(const inode_state& inode) {
  if (platform::handles_own_locks() || inode.generation() != engine::fork_generation()) return;
  mutex_lock lock(table().mu);
  const auto it = retiring().find(inode.id());
  if (it != retiring().end() && --it->second == 0) retiring().erase(it);
  retired().notify_all();
}

}  // namespace fasteners::detail::file
