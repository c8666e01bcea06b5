// The lock-file backend: one lock file's state in this process, its handles and its kernel waits.
//
// Each lock file that this process uses has one inode_state (one per (device, inode), see
// lock_table), and the OS lock taken through its handles stands for everything this process holds
// there: shared while only readers hold it, exclusive while a writer does, released when the last
// holder leaves. So the file has one holder in the engine's terms (engine/lock_state.hpp), and a
// close() elsewhere in the process cannot drop a lock whose handle this state owns.
//
// Waits. A wait without a deadline blocks in the kernel in the calling thread. A timed wait hands
// the kernel wait to a thread of the library's own (kernel_wait.hpp) and waits only until its
// deadline; no signal and no timer is involved. A caller that gives up leaves the kernel wait
// queued, since nothing but the grant can end it: the writer's gate is let go of at once, so an
// abandoned wait never holds readers back (they and every try ask through handles of their own),
// and the next timed wait of the same mode adopts the queued wait instead of starting another, so
// there is at most one per file and mode. A grant that nobody wants any more is released at once.
// Where locks belong to the process (classic fcntl), a second handle could not ask apart from a
// queued wait, so timed waits poll in the calling thread instead.
//
// Mutex rules: the engine's mu_ guards every field below and kernel waits' fields, and is held
// across the non-blocking calls on the file: opens, tries, unlocks, unlinks and closes (a close
// that is the release happens when the state is destroyed, after every mutex). It is let go only
// while a thread blocks in the kernel or waits for a kernel wait's outcome. It is taken before the
// lock table's mutex (lock_table.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <system_error>
#include <vector>

#include "engine/lock_state.hpp"
#include "file/fence_file.hpp"
#include "file/kernel_wait.hpp"
#include "file/os_file.hpp"
#include "platform.hpp"

namespace fasteners::detail::file {

class file_object;

// The state of one lock file in this process. Thread-safe; see the top of this file.
class inode_state final : public engine::lock_state,
                          public std::enable_shared_from_this<inode_state> {
 public:
  // A state for the file opened as `file`, bound once (for the object that opened it).
  inode_state(os_file file, const platform::open_file& info);
  // Closes the file's handles, releasing any OS lock still held through them (the last close is
  // the release where unlock() said so).
  ~inode_state() override;

  // The file's one holder in this process.
  engine::holder& holder() noexcept { return holder_; }
  const platform::file_identity& id() const noexcept { return id_; }
  // Keeps another handle of this file open as long as this state lives (see lock_table).
  void keep_spare(os_file file) FASTENERS_EXCLUDES(mu_);

  // ---- For kernel_wait, with the mutex held. ----
  // A kernel wait ended: hands a grant to its wanter, or releases it, and forgets the wait.
  // Returns the wait, to be destroyed outside the mutex (closing handles is a system call), and
  // the wanter told the outcome, to be woken after that.
  struct completed {
    std::unique_ptr<kernel_wait> wait;
    wanter* told = nullptr;
  };
  completed complete(kernel_wait& w, wait_end end, std::error_code error) FASTENERS_REQUIRES(mu_);
  // A kernel wait holds the gate now; returns false if nobody wants it any more.
  bool gate_taken(kernel_wait& w) FASTENERS_REQUIRES(mu_);
  // Keeps the handle a writer's kernel wait waits on for the main region.
  void keep_main_handle(kernel_wait& w, os_file file) FASTENERS_REQUIRES(mu_);
  mutex& state_mutex() FASTENERS_RETURN_CAPABILITY(mu_) { return mu_; }
  // Whether threads wait for an outcome, to be woken by wake_waiters() outside the mutex.
  bool waiters_sleep() const FASTENERS_REQUIRES(mu_) { return has_sleepers(); }
  void wake_waiters() noexcept { wake_sleepers(); }

 protected:
  void check_mode(lock_mode mode, const engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  engine::outcome try_lock(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  engine::outcome wait_lock(engine::holder& h, lock_mode mode, deadline until,
                            engine::lock_object& owner) override FASTENERS_REQUIRES(mu_);
  std::exception_ptr unlock(engine::holder& h, lock_mode mode, engine::lock_object& owner,
                            bool unbinding) override FASTENERS_REQUIRES(mu_);
  bool writer_waiting_elsewhere(engine::holder& h, const engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  bool hold_back_readers(engine::holder& h) override FASTENERS_REQUIRES(mu_);
  void let_readers_in(engine::holder& h) noexcept override FASTENERS_REQUIRES(mu_);
  std::intptr_t handle_of(engine::holder& h, const engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  void on_unbind() override FASTENERS_REQUIRES(mu_);
  // Asynchronous acquisitions wait through the same queued kernel waits as timed waits do, where
  // handles own their locks; a kernel wait then reports to the engine instead of waking a caller.
  bool waits_async() const override { return platform::handles_own_locks(); }
  engine::outcome start_wait(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  bool stop_wait(engine::holder& h, engine::lock_object& owner) noexcept override
      FASTENERS_REQUIRES(mu_);
  // The counter file beside the lock file (see fence_file.hpp), read and, for an exclusive
  // acquisition, advanced while this process holds the lock; kept open with the state.
  std::uint64_t fence(engine::holder& h, lock_mode mode, engine::lock_object& owner) override
      FASTENERS_REQUIRES(mu_);
  void check_backend() const override FASTENERS_REQUIRES(mu_);

 private:
  // The file is deleted or replaced at its path: objects bind anew.
  void replaced() FASTENERS_REQUIRES(mu_);
  // A lock of `mode` was just taken through held_: with remove_on_release, it counts only if the
  // path still names this file (its holder may have deleted it meanwhile).
  engine::outcome confirm(const file_object& owner) FASTENERS_REQUIRES(mu_);
  // An abandoned queued wait whose grant (released at once) may have made a try of `mode` fail.
  const kernel_wait* queued_grant_in_the_way(lock_mode mode) FASTENERS_REQUIRES(mu_);
  // Waits in the calling thread, outside the mutex: without a deadline, or with one where locks
  // belong to the process.
  engine::outcome wait_here(lock_mode mode, deadline until, const file_object& owner)
      FASTENERS_REQUIRES(mu_);
  // A timed wait through a kernel wait of the library's own: adopted, or started.
  engine::outcome wait_timed(lock_mode mode, deadline until, const file_object& owner)
      FASTENERS_REQUIRES(mu_);
  kernel_wait& start_kernel_wait(lock_mode mode, os_file file, const file_object& owner)
      FASTENERS_REQUIRES(mu_);
  void adopt(kernel_wait& w, wanter& me) FASTENERS_REQUIRES(mu_);
  engine::outcome await(kernel_wait& w, wanter& me, deadline until, const file_object& owner)
      FASTENERS_REQUIRES(mu_);
  void give_up(kernel_wait& w) FASTENERS_REQUIRES(mu_);
  void hand_over(kernel_wait& w) FASTENERS_REQUIRES(mu_);

  // A handle for a new lock request: the idle one, or the file opened again while the idle one
  // waits in the kernel. Empty if the path names another file now.
  os_file borrow_handle(const file_object& owner) FASTENERS_REQUIRES(mu_);
  void give_back(os_file file) FASTENERS_REQUIRES(mu_);
  std::error_code release_held() FASTENERS_REQUIRES(mu_);
  long queued_waits() const FASTENERS_REQUIRES(mu_) {
    return (pending_[0] ? 1 : 0) + (pending_[1] ? 1 : 0);
  }

  const platform::file_identity id_;
  const bool writable_;

  engine::holder holder_ FASTENERS_GUARDED_BY(mu_);
  // The handle for the next lock request. Empty while it serves a request or holds the lock.
  os_file idle_ FASTENERS_GUARDED_BY(mu_);
  // The handle through which this process holds the lock; empty while nobody here holds it. A
  // writer that waited also holds the gate there, or through `held_gate_` when the platform
  // needed a separate handle for its wait; so do readers while a writer of this process waits
  // behind them (hold_back_readers()).
  os_file held_ FASTENERS_GUARDED_BY(mu_);
  os_file held_gate_ FASTENERS_GUARDED_BY(mu_);
  // Handles opened by lock objects that raced to open this file first; kept open, since closing
  // one would drop classic fcntl locks of this process.
  std::vector<os_file> spares_ FASTENERS_GUARDED_BY(mu_);
  // The queued kernel waits, by mode (shared, exclusive).
  std::array<std::unique_ptr<kernel_wait>, 2> pending_ FASTENERS_GUARDED_BY(mu_);
  // The wanter of the asynchronous acquisition that a kernel wait serves, its wait, and its
  // object (see start_wait()).
  wanter async_wanter_ FASTENERS_GUARDED_BY(mu_);
  kernel_wait* async_wait_ FASTENERS_GUARDED_BY(mu_) = nullptr;
  const file_object* async_owner_ FASTENERS_GUARDED_BY(mu_) = nullptr;
  // The fencing counter file, once a fencing object took the lock (see fence()).
  fence_file fence_ FASTENERS_GUARDED_BY(mu_);
};

}  // namespace fasteners::detail::file
