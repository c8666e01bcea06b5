// One lock file's state in this process: who holds its lock, who waits, and the handles behind it.
//
// Each lock file that this process uses has one inode_state (one per (device, inode), see
// lock_table), and the OS lock taken through its handles stands for everything this process holds
// there: shared while only readers hold it, exclusive while a writer does, released when the last
// holder leaves. Threads and lock objects of the process are excluded from each other here, in
// memory, so the OS lock never has to tell them apart, and a close() elsewhere in the process
// cannot drop a lock whose handle this state still owns.
//
// Waits. A thread that must wait without a deadline blocks in the kernel itself. A timed wait
// hands the kernel wait to a thread of its own (a kernel_wait) and waits on a condition variable
// until its deadline; no signal and no timer is involved. A caller that gives up leaves the kernel
// wait queued, since nothing but the grant can end it: the writer's gate is let go of at once, so
// an abandoned wait never holds readers back (they and every try ask through handles of their
// own), and a later timed or blocking acquire of the same mode in this process adopts the queued
// wait instead of starting another, so there is at most one per file and mode. A grant that
// nobody wants any more is released at once. Where locks belong to the process (classic fcntl),
// a second handle could not ask apart from the queued wait, so timed waits poll instead.
//
// Lock order: an inode_state's mutex, then the lock table's mutex (lock_table.hpp), which is held
// only briefly. Neither is held while waiting for a lock; an inode_state's mutex is held across the
// non-blocking lock calls of its own file only.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "lock_table.hpp"
#include "os_file.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail {

class lock_object;

// Names the calling thread for the whole life of the process. std::thread::id values are reused
// once a thread ends, and a thread that took a lock may end while the lock stays held by its
// object: a new thread with the old id must not be taken for the holder.
std::uint64_t this_thread_token() noexcept;

// A lock held in this process: by which object, taken by which thread.
struct holding {
  std::uint64_t thread;
  lock_object* owner;
  lock_mode mode;
};

// The locks held on one file in this process, without allocating for the first four.
class holding_list {
 public:
  holding* begin() { return heap_.empty() ? inline_.data() : heap_.data(); }
  holding* end() { return begin() + size_; }
  const holding* begin() const { return heap_.empty() ? inline_.data() : heap_.data(); }
  const holding* end() const { return begin() + size_; }
  void push_back(const holding& h) {
    if (heap_.empty() && size_ < inline_.size()) {
      inline_[size_++] = h;
      return;
    }
    if (heap_.empty()) heap_.assign(inline_.begin(), inline_.end());
    heap_.push_back(h);
    ++size_;
  }
  void erase(holding* it) {
    std::copy(it + 1, end(), it);
    --size_;
    if (!heap_.empty()) heap_.pop_back();
  }

 private:
  std::array<holding, 4> inline_{};
  std::vector<holding> heap_;  // All of them, once there were more than fit inline.
  std::size_t size_ = 0;
};

// An acquire: the object that asks, for what, and how to find its file again.
struct lock_request {
  lock_object& owner;
  lock_mode mode;
  const std::filesystem::path& path;
  bool follow_symlinks;
};

enum class take_result {
  taken,
  not_taken,
  // The file at the path is not this one any more (deleted or replaced); look the path up again.
  start_again,
};

// A thread waiting for the outcome of a kernel_wait: a caller that started it or adopted it.
struct wanter {
  enum class state { waiting, granted, failed, start_again };
  holding wants{};  // What the grant records for this thread.
  state outcome = state::waiting;
  std::error_code error;  // Why, when failed.
};

// A wait in the kernel by a thread of the library's own (see inode_state), until it is granted.
// Its fields are guarded by the owning inode_state's mutex.
struct kernel_wait {
  lock_mode mode;
  std::filesystem::path path;  // For errors and for opening the file again.
  bool follow_symlinks;
  // Waits for and holds the gate (writers), and waits for the main region unless the platform
  // needs `main_file` for that (platform::blocked_handle_is_busy()).
  os_file file;
  os_file main_file;
  bool gate_held = false;
  bool waiting_for_main = false;       // A writer past the gate.
  std::vector<wanter*> wanters;        // Empty once every caller gave up.
  std::shared_ptr<inode_state> inode;  // Kept alive by the waiting thread.
};

// The state of one lock file in this process. Thread-safe; see the top of this file.
class inode_state : public std::enable_shared_from_this<inode_state> {
 public:
  inode_state(os_file file, const platform::open_file& info);
  // Closes the file's handles, releasing any OS lock still held through them (the last close is
  // the release when the lock table says so, see drop()).
  ~inode_state();
  inode_state(const inode_state&) = delete;
  inode_state& operator=(const inode_state&) = delete;

  // Waits until `until` for a lock of `r.mode` for `r.owner`, and records it. Throws
  // std::system_error with resource_deadlock_would_occur if the calling thread already holds a
  // lock on this file in this process and `until` allows waiting, permission_denied for a write
  // lock on a file open only for reading, and OS failures naming `r.path`.
  take_result take(const lock_request& r, deadline until) FASTENERS_EXCLUDES(mu_);

  struct dropped {
    bool found = false;                    // Whether `owner` held a lock of that mode.
    std::error_code error;                 // Of unlocking, if any; the lock is gone anyway.
    std::shared_ptr<inode_state> unbound;  // The owner's binding, ended: drop it last.
  };
  // Releases one lock of `mode` held by `owner`, preferring one the calling thread took. With
  // `remove`, the last release in this process runs the removal protocol first. `users` is the
  // number of references the caller holds besides the owner's binding.
  dropped drop(lock_object& owner, lock_mode mode, bool remove, const std::filesystem::path& path,
               long users) FASTENERS_EXCLUDES(mu_);

  bool holds(const lock_object& owner, lock_mode mode) FASTENERS_EXCLUDES(mu_);
  // Whether `owner` holds any lock here.
  bool holds_any(const lock_object& owner) FASTENERS_EXCLUDES(mu_);
  // The handle through which this process holds the lock while `owner` holds one.
  platform::native_handle handle_of(const lock_object& owner) FASTENERS_EXCLUDES(mu_);

  const platform::file_identity& id() const noexcept { return id_; }
  std::uint64_t generation() const noexcept { return generation_; }

  // Closes the idle handle if only the caller's `users` references and queued waits keep this
  // state alive, so that queued waits are all that keeps the file open.
  void close_idle_if_unused(long users) FASTENERS_EXCLUDES(mu_);

  // Keeps another handle of this file open as long as this state lives (see lock_table).
  void keep_spare(os_file file) FASTENERS_EXCLUDES(mu_);

  // Whether the lock table lists this state under its file's identity. Changed under the table's
  // mutex; read anywhere.
  std::atomic<bool> listed{true};

 private:
  enum class step { join, request, adopt, wait };
  // What a thread that wants `mode` may do now.
  step next_step(lock_mode mode, deadline until) FASTENERS_REQUIRES(mu_);
  bool held_by_thread(std::uint64_t thread) const FASTENERS_REQUIRES(mu_);
  // An abandoned queued wait whose grant (released at once) may have made a try of `mode` fail.
  const kernel_wait* queued_grant_in_the_way(lock_mode mode) FASTENERS_REQUIRES(mu_);
  void record(const holding& h) FASTENERS_REQUIRES(mu_);
  void sleep(deadline until) FASTENERS_REQUIRES(mu_);
  void notify() FASTENERS_REQUIRES(mu_);

  // The steps of take(), each called with the mutex held.
  take_result request(const lock_request& r, deadline until) FASTENERS_REQUIRES(mu_);
  // Waits in the calling thread, outside the mutex: without a deadline, or with one where locks
  // belong to the process.
  take_result wait_here(const lock_request& r, os_file file, deadline until)
      FASTENERS_REQUIRES(mu_);
  take_result start_wait(const lock_request& r, os_file file, deadline until)
      FASTENERS_REQUIRES(mu_);
  take_result adopt(const lock_request& r, kernel_wait& w, deadline until) FASTENERS_REQUIRES(mu_);
  take_result await(const lock_request& r, kernel_wait& w, wanter& me, deadline until)
      FASTENERS_REQUIRES(mu_);
  void give_up(kernel_wait& w, const wanter& me) FASTENERS_REQUIRES(mu_);

  // A handle for a new lock request: the idle one, or the file opened again while the idle one
  // waits in the kernel. Empty if the path names another file now.
  os_file borrow_handle(const std::filesystem::path& path, bool follow_symlinks)
      FASTENERS_REQUIRES(mu_);
  void give_back(os_file file) FASTENERS_REQUIRES(mu_);
  std::error_code release_held() FASTENERS_REQUIRES(mu_);

  // The body of a kernel_wait's thread, and how its outcome is handed over.
  static void run_wait(void* arg);
  std::unique_ptr<kernel_wait> wait_in_kernel(kernel_wait& w) FASTENERS_EXCLUDES(mu_);
  std::unique_ptr<kernel_wait> complete(kernel_wait& w, std::error_code error, bool granted)
      FASTENERS_REQUIRES(mu_);
  void hand_over(kernel_wait& w) FASTENERS_REQUIRES(mu_);

  // Asserts, in debug builds, what the fields below promise of each other.
  void check_invariants() const FASTENERS_REQUIRES(mu_);

  static std::size_t slot(lock_mode mode) { return mode == lock_mode::shared ? 0 : 1; }
  long queued_waits() const FASTENERS_REQUIRES(mu_) {
    return (pending_[0] ? 1 : 0) + (pending_[1] ? 1 : 0);
  }

  const platform::file_identity id_;
  const bool writable_;
  const std::uint64_t generation_;  // os_file::generation() when opened.

  mutex mu_ FASTENERS_ACQUIRED_AFTER(table_mutex);
  std::condition_variable changed_;             // Notified whenever anything below changes.
  int sleepers_ FASTENERS_GUARDED_BY(mu_) = 0;  // Threads waiting on `changed_`.

  // The handle for the next lock request. Empty while it serves a request or holds the lock.
  os_file idle_ FASTENERS_GUARDED_BY(mu_);
  // The handle through which this process holds the lock; empty while nobody here holds it. A
  // writer that waited also holds the gate there, or through `held_gate_` when the platform
  // needed a separate handle for its wait.
  os_file held_ FASTENERS_GUARDED_BY(mu_);
  os_file held_gate_ FASTENERS_GUARDED_BY(mu_);
  // Handles opened by lock objects that raced to open this file first; kept open, since closing
  // one would drop classic fcntl locks of this process.
  std::vector<os_file> spares_ FASTENERS_GUARDED_BY(mu_);

  // The locks held in this process. readers_ > 0 or writer_ exactly when `held_` holds the OS lock.
  holding_list holdings_ FASTENERS_GUARDED_BY(mu_);
  int readers_ FASTENERS_GUARDED_BY(mu_) = 0;
  bool writer_ FASTENERS_GUARDED_BY(mu_) = false;

  // Writer threads of this process in take() that may wait: new readers here queue behind them.
  int writers_waiting_ FASTENERS_GUARDED_BY(mu_) = 0;
  // A writer elsewhere waits at the gate: readers here stop joining the shared lock, so that it
  // runs out. Reset when the last reader leaves.
  bool gate_closed_ FASTENERS_GUARDED_BY(mu_) = false;
  // A caller thread blocks in the kernel (or tries) with the idle handle; others wait here.
  bool os_busy_ FASTENERS_GUARDED_BY(mu_) = false;
  // The queued kernel waits, by mode (see slot()).
  std::array<std::unique_ptr<kernel_wait>, 2> pending_ FASTENERS_GUARDED_BY(mu_);
};

}  // namespace fasteners::detail
