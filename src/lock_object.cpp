// A lock object: binding to its file's state, acquiring, releasing, and forgetting after fork().
#include "lock_object.hpp"

#include <utility>
#include <vector>

#include "error.hpp"
#include "os_file.hpp"

namespace fasteners::detail {
namespace {

[[noreturn]] void not_held(const std::filesystem::path& path, lock_mode mode) {
  throw_error(std::errc::operation_not_permitted, "release", path,
              mode == lock_mode::shared ? "this object holds no read lock on it"
                                        : "this object does not hold the lock");
}

// Where a child of fork() keeps the states its lock objects were bound to in the parent. They are
// never used or destroyed: another thread of the parent may have held their mutexes.
std::vector<std::shared_ptr<inode_state>>& parent_states() FASTENERS_REQUIRES(table_mutex) {
  static auto* const kept = new std::vector<std::shared_ptr<inode_state>>;
  return *kept;
}

}  // namespace

lock_object::~lock_object() {
  const auto inode = bound();
  if (inode) {
    for (const auto mode : {lock_mode::exclusive, lock_mode::shared}) {
      // An unlock error needs no report: closing the file drops the lock.
      while (inode->drop(*this, mode, options_.remove_on_release, path_, 1).found) {
      }
    }
  }
  std::shared_ptr<inode_state> unbound;  // Dropped after the lock: it may be the last reference.
  object_lock lock(mu_);
  unbound = std::move(bound_);
}

bool lock_object::acquire(lock_mode mode, deadline until) {
  for (;;) {
    inode_state* const inode = begin_acquire();
    auto result = take_result::not_taken;
    try {
      result = inode->take({*this, mode, path_, options_.follow_symlinks}, until);
    } catch (...) {
      end_acquire(inode, false);
      throw;
    }
    // While the acquire is under way, its count keeps the state alive; after it, another thread
    // of this object may already have released the lock and with it the state.
    if (result == take_result::taken && options_.remove_on_release && !still_at_path(*inode)) {
      // The holder deleted the file while this process waited for it: a lock on a file that
      // nobody can find any more excludes nobody.
      {
        mutex_lock table(table_mutex);
        lock_table::unlist(*inode);
      }
      inode->drop(*this, mode, false, path_, 0);
      end_acquire(inode, true);  // Counts the lock that the drop has just let go of.
      continue;
    }
    end_acquire(inode, result == take_result::taken);
    if (result == take_result::taken) return true;
    if (result == take_result::not_taken) return false;
  }
}

void lock_object::release(lock_mode mode) {
  auto inode = bound();
  if (!inode) not_held(path_, mode);
  auto dropped = inode->drop(*this, mode, options_.remove_on_release, path_, 1);
  if (!dropped.found) not_held(path_, mode);
  // Last: when these are the last references, dropping them closes the file, which releases the
  // lock and wakes a waiter elsewhere.
  dropped.unbound.reset();
  inode.reset();
  if (dropped.error) throw_error(dropped.error, "unlock", path_);
}

bool lock_object::holds(lock_mode mode) {
  const auto inode = bound();
  return inode && inode->holds(*this, mode);
}

platform::native_handle lock_object::native_handle() {
  const auto inode = bound();
  return inode ? inode->handle_of(*this) : platform::invalid_handle;
}

inode_state* lock_object::begin_acquire() {
  std::shared_ptr<inode_state> gone;  // Dropped after the lock.
  {
    object_lock lock(mu_);
    forget_if_stale();
    // A binding kept (keep_open) to a file that was deleted or replaced since is given up; acquires
    // under way may still use it, so it stays alive until they end.
    if (bound_ && !bound_->listed.load(std::memory_order_acquire) && holds_ == 0) {
      if (acquiring_ > 0) {
        retired_.push_back(std::move(bound_));
      } else {
        gone = std::move(bound_);
      }
    }
    if (bound_) {
      ++acquiring_;
      return bound_.get();
    }
  }
  auto inode = lock_table::find_or_open(path_, options_);
  object_lock lock(mu_);
  if (!bound_) bound_ = std::move(inode);  // Otherwise another thread bound this object meanwhile.
  ++acquiring_;
  return bound_.get();
}

void lock_object::end_acquire(inode_state* inode, bool taken) {
  std::shared_ptr<inode_state> unbound;  // Dropped last: it may close the file.
  std::vector<std::shared_ptr<inode_state>> retired;
  {
    object_lock lock(mu_);
    if (taken) ++holds_;
    if (--acquiring_ == 0) retired.swap(retired_);
    if (unbinds()) unbound = std::move(bound_);
  }
  // A failed acquire may leave a wait queued (see inode_state); then only it keeps the file open.
  if (unbound.get() == inode) inode->close_idle_if_unused(1);
}

std::shared_ptr<inode_state> lock_object::bound() {
  object_lock lock(mu_);
  forget_if_stale();
  return bound_;
}

void lock_object::forget_if_stale() {
  if (!bound_ || bound_->generation() == os_file::generation()) return;
  mutex_lock table(table_mutex);
  parent_states().push_back(std::move(bound_));
  holds_ = 0;
  acquiring_ = 0;
}

bool lock_object::still_at_path(const inode_state& inode) const {
  try {
    const auto id = platform::identify(path_, options_.follow_symlinks);
    return id && *id == inode.id();
  } catch (...) {
    return false;  // Something else is at the path now; the next lookup reports it.
  }
}

}  // namespace fasteners::detail
