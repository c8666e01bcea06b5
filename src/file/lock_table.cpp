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
#include "error.hpp"
#include "file/inode_state.hpp"
#include "file/os_file.hpp"

namespace fasteners::detail::file {
namespace {

// Guards the table (entries(), retiring(), retired()). Never destroyed: lock objects may outlive
// static destruction.
mutex table_mutex(mutex::forever);

// The listed states by file identity. A process has few lock files open at once, so a vector
// searched from the front costs less than a tree and does not allocate once it has grown.
class entry_map {
 public:
  struct entry {
    platform::file_identity first;
    std::weak_ptr<inode_state> second;
    const inode_state* state;  // What `second` points to, to compare without a reference.
  };
  using iterator = std::vector<entry>::iterator;

  iterator begin() { return entries_.begin(); }
  iterator end() { return entries_.end(); }
  iterator find(const platform::file_identity& id) {
    return std::find_if(entries_.begin(), entries_.end(),
                        [&](const entry& e) { return e.first == id; });
  }
  // Lists `state` under `id`.
  void put(const platform::file_identity& id, const std::shared_ptr<inode_state>& state) {
    const auto it = find(id);
    if (it != end()) {
      it->second = state;
      it->state = state.get();
    } else {
      entries_.push_back({id, state, state.get()});
      size_.store(entries_.size(), std::memory_order_relaxed);
    }
  }
  void erase(iterator it) {
    *it = std::move(entries_.back());
    entries_.pop_back();
    size_.store(entries_.size(), std::memory_order_relaxed);
  }
  void clear() {
    entries_.clear();
    size_.store(0, std::memory_order_relaxed);
  }
  // Read without the mutex: whether any file is listed, as a hint.
  bool empty_hint() const { return size_.load(std::memory_order_relaxed) == 0; }

 private:
  std::vector<entry> entries_;
  std::atomic<std::size_t> size_{0};
};

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
// closes the handles, lock objects drop their stale bindings, see engine::lock_object) and starts
// anew.
void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  os_file::prepare_fork();
  table_mutex.lock();
}

void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  table_mutex.unlock();
  os_file::parent_after_fork();
}

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The parent's states stay allocated (lock objects may still point at them) but unlisted.
  entries().clear();
  retiring().clear();
  new (&retired()) std::condition_variable();
  table_mutex.unlock();
  os_file::child_after_fork();
}

void install_fork_handlers() {
  static const bool installed = [] {
    engine::count_forks();
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return true;
  }();
  static_cast<void>(installed);
}

// Whether a new state of the file `id` must wait: the file is retiring.
bool must_wait_to_open(const platform::file_identity& id) FASTENERS_REQUIRES(table_mutex) {
  return !platform::handles_own_locks() && retiring().count(id) != 0;
}

// The listed state of `id`, or nothing.
std::shared_ptr<inode_state> lookup(const platform::file_identity& id)
    FASTENERS_REQUIRES(table_mutex) {
  const auto it = entries().find(id);
  if (it == entries().end()) return nullptr;
  // Every state is unlisted before it goes (once nothing binds it), so a reference made here is
  // returned, never dropped while the mutex is held, where it could be the last.
  return it->second.lock();
}

// The listed state of `id` with a binding counted there, or nothing. A state that stops standing
// for its file is unlisted under its own mutex, which attach() waits for: once attach() fails,
// the state is not listed any more.
std::shared_ptr<inode_state> attach_listed(const platform::file_identity& id)
    FASTENERS_EXCLUDES(table_mutex) {
  std::shared_ptr<inode_state> found;
  {
    mutex_lock lock(table_mutex);
    found = lookup(id);
  }
  if (found && found->attach()) return found;
  return nullptr;
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
  if (!entries().empty_hint()) {
    if (const auto id = platform::identify(path, options.follow_symlinks)) {
      if (auto found = attach_listed(*id)) return found;
    }
  }
  platform::open_file info;
  os_file file = os_file::open(path, options.follow_symlinks, info);
  for (;;) {
    std::shared_ptr<inode_state> existing;
    {
      mutex_lock lock(table_mutex);
      while (must_wait_to_open(info.id)) table_mutex.wait(retired());
      existing = lookup(info.id);
      if (!existing) {
        auto inode = std::make_shared<inode_state>(std::move(file), info);
        entries().put(info.id, inode);
        return inode;
      }
    }
    // Another object opened the same file meanwhile. A state that stopped standing for it is
    // unlisted by now (see attach_listed()): look again.
    if (existing->attach()) {
      existing->keep_spare(std::move(file));
      return existing;
    }
  }
}

void lock_table::unlist(const inode_state& inode) {
  mutex_lock lock(table_mutex);
  const auto it = entries().find(inode.id());
  if (it == entries().end() || it->state != &inode) return;
  entries().erase(it);
  if (!platform::handles_own_locks()) ++retiring()[inode.id()];
}

void lock_table::closed(const inode_state& inode) {
  if (platform::handles_own_locks() || inode.generation() != engine::fork_generation()) return;
  mutex_lock lock(table_mutex);
  const auto it = retiring().find(inode.id());
  if (it != retiring().end() && --it->second == 0) retiring().erase(it);
  retired().notify_all();
}

}  // namespace fasteners::detail::file
