// The state of one public lock object: its path, its options and the lock file it is bound to.
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/file_lock.hpp"
#include "fasteners/lock_options.hpp"
#include "inode_state.hpp"
#include "lock_table.hpp"
#include "object_mutex.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail {

// One lock object. Bound to the inode_state of its file while it holds a lock there, while one
// of its acquires is under way, and from its first acquire on with keep_open; the locks it holds
// are recorded there. Thread-safe.
class lock_object {
 public:
  lock_object(std::filesystem::path path, const lock_options& options)
      : path_(std::move(path)), options_(options) {}
  ~lock_object();  // Releases everything the object holds; never throws.
  lock_object(const lock_object&) = delete;
  lock_object& operator=(const lock_object&) = delete;

  // Waits for a lock of `mode` until `until` (try_once and no_deadline included). Returns whether
  // it was taken. Throws std::system_error as the public API says.
  bool acquire(lock_mode mode, deadline until) FASTENERS_EXCLUDES(mu_);
  // Releases one lock of `mode` held by this object, preferring one the calling thread took.
  void release(lock_mode mode) FASTENERS_EXCLUDES(mu_);
  bool holds(lock_mode mode) FASTENERS_EXCLUDES(mu_);
  platform::native_handle native_handle() FASTENERS_EXCLUDES(mu_);
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  friend class inode_state;

  // The state to acquire on, binding this object to it; counts an acquire under way, which keeps
  // the state alive until end_acquire() (and longer if a lock is taken).
  inode_state* begin_acquire() FASTENERS_EXCLUDES(mu_);
  // Ends an acquire begun with begin_acquire(); counts the lock if it was `taken`.
  void end_acquire(inode_state* inode, bool taken) FASTENERS_EXCLUDES(mu_);
  // The bound state, if any (forgetting one of the parent's after fork()).
  std::shared_ptr<inode_state> bound() FASTENERS_EXCLUDES(mu_);
  // Whether the binding may end now: nothing held, no acquire under way, no keep_open.
  bool unbinds() const FASTENERS_REQUIRES(mu_) {
    return holds_ == 0 && acquiring_ == 0 && !options_.keep_open;
  }
  void forget_if_stale() FASTENERS_REQUIRES(mu_);
  // Whether the path still names the file of `inode` (remove_on_release checks after the grant).
  bool still_at_path(const inode_state& inode) const;

  const std::filesystem::path path_;
  const lock_options options_;
  // Taken inside an inode_state's mutex, never the other way round; the lock table's mutex may be
  // taken inside it.
  object_mutex mu_;
  std::shared_ptr<inode_state> bound_ FASTENERS_GUARDED_BY(mu_);
  // Locks held through bound_, counted once their acquire ends (and briefly below zero when
  // another thread of the object releases one before that).
  int holds_ FASTENERS_GUARDED_BY(mu_) = 0;
  int acquiring_ FASTENERS_GUARDED_BY(mu_) = 0;  // Acquires under way on this object.
  // Former bindings that acquires under way may still use; dropped when the last one ends.
  std::vector<std::shared_ptr<inode_state>> retired_ FASTENERS_GUARDED_BY(mu_);
};

}  // namespace fasteners::detail
