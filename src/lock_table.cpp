// The process-wide table of open lock files, and what fork() does to it.
#include "lock_table.hpp"

#include <cassert>
#include <condition_variable>
#include <map>
#include <new>
#include <optional>
#include <utility>

#include "error.hpp"
#include "inode_state.hpp"
#include "os_file.hpp"
#include "thread_pool.hpp"

namespace fasteners::detail {

mutex table_mutex(mutex::forever);

namespace {

using entry_map = std::map<platform::file_identity, std::weak_ptr<inode_state>>;

// Guarded by table_mutex. Never destroyed: lock objects may outlive static destruction.
entry_map& entries() {
  static auto* const map = new entry_map;
  return *map;
}

// Where locks belong to the process (classic fcntl), closing any handle of a file drops every
// lock the process holds on it, and two states of one file would not exclude each other. So from
// the moment a state is unlisted until its handles are closed, its file is "retiring", and no new
// state of that file is made meanwhile (see find_or_open()). Guarded by table_mutex.
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
// closes the handles, lock objects drop their stale bindings, see lock_object) and starts anew.
void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  os_file::prepare_fork();
  table_mutex.lock();
  pool_prepare_fork();
}

void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  pool_parent_after_fork();
  table_mutex.unlock();
  os_file::parent_after_fork();
}

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The parent's states stay allocated (lock objects may still point at them) but unlisted.
  entries().clear();
  retiring().clear();
  new (&retired()) std::condition_variable();
  pool_child_after_fork();
  table_mutex.unlock();
  os_file::child_after_fork();
}

void install_fork_handlers() {
  static const bool installed = [] {
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return true;
  }();
  static_cast<void>(installed);
}

// Whether a new state of the file `id` must wait: the file is retiring, or its state is going
// (expired, and not yet forgotten).
bool must_wait_to_open(const platform::file_identity& id) FASTENERS_REQUIRES(table_mutex) {
  if (platform::handles_own_locks()) return false;
  if (retiring().count(id) != 0) return true;
  const auto it = entries().find(id);
  return it != entries().end() && it->second.expired();
}

// The listed state of `id`, or nothing (an expired one is not listed any more).
std::shared_ptr<inode_state> lookup(const platform::file_identity& id)
    FASTENERS_REQUIRES(table_mutex) {
  const auto it = entries().find(id);
  if (it == entries().end()) return nullptr;
  // A state in the map is listed (unlist() and forget() take it out), so a reference made here
  // is returned, never dropped while the mutex is held, where it could be the last.
  auto found = it->second.lock();
  assert(!found || found->listed);
  return found;
}

}  // namespace

std::shared_ptr<inode_state> lock_table::find_or_open(const std::filesystem::path& path,
                                                      const lock_options& options) {
  if (path.empty()) throw_error(std::errc::invalid_argument, "lock", path, "the path is empty");
  if (path.native().find(std::filesystem::path::value_type()) != path.native().npos) {
    throw_error(std::errc::invalid_argument, "lock", path, "the path contains a NUL character");
  }
  install_fork_handlers();
  // With files open already, look for this one before opening it again: a second open and close
  // of a file would drop the classic fcntl locks this process holds on it.
  bool any_open;
  {
    mutex_lock lock(table_mutex);
    any_open = !entries().empty();
  }
  if (any_open) {
    if (const auto id = platform::identify(path, options.follow_symlinks)) {
      mutex_lock lock(table_mutex);
      if (auto found = lookup(*id)) return found;
    }
  }
  platform::open_file info;
  os_file file = os_file::open(path, options.follow_symlinks, info);
  std::shared_ptr<inode_state> existing;
  {
    mutex_lock lock(table_mutex);
    while (must_wait_to_open(info.id)) table_mutex.wait(retired());
    existing = lookup(info.id);
    if (!existing) {
      auto inode = std::make_shared<inode_state>(std::move(file), info);
      entries()[info.id] = inode;
      return inode;
    }
  }
  // Another object opened the same file meanwhile.
  existing->keep_spare(std::move(file));
  return existing;
}

void lock_table::unlist(inode_state& inode) {
  if (!inode.listed) return;
  inode.listed = false;
  if (!platform::handles_own_locks()) ++retiring()[inode.id()];
  const auto it = entries().find(inode.id());
  const auto self = inode.weak_from_this();
  if (it != entries().end() && !it->second.owner_before(self) && !self.owner_before(it->second)) {
    entries().erase(it);
  }
}

void lock_table::forget(inode_state& inode) {
  if (inode.generation() != os_file::generation()) return;  // The parent's, before fork().
  mutex_lock lock(table_mutex);
  if (!inode.listed) return;
  inode.listed = false;
  if (!platform::handles_own_locks()) ++retiring()[inode.id()];
  const auto it = entries().find(inode.id());
  if (it != entries().end() && it->second.expired()) entries().erase(it);
}

void lock_table::closed(inode_state& inode) {
  if (platform::handles_own_locks() || inode.generation() != os_file::generation()) return;
  mutex_lock lock(table_mutex);
  const auto it = retiring().find(inode.id());
  if (it != retiring().end() && --it->second == 0) retiring().erase(it);
  retired().notify_all();
}

}  // namespace fasteners::detail
