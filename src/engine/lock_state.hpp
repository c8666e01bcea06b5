// The engine: one lock's state in this process, the rules every backend shares, and the small
// interface a backend implements under them.
//
// A lock (a lock file, a PostgreSQL lock name) that this process uses has one lock_state. Lock
// objects bind to it (lock_object.hpp) and hold the lock through a holder: the means by which
// this process holds the lock in the backend. A lock file has one holder per process (its handles:
// every object's locks are one OS lock); PostgreSQL has one per object (its session). The backend
// alone excludes holders from each other; the engine excludes this process's threads and objects,
// which the backend cannot tell apart within one holder:
//   - A reader joins the shared lock its holder already holds, unless the backend says that a
//     writer waits elsewhere, which closes the holder's gate: readers stop joining until its
//     shared lock drops, so that a writer of another process is not starved.
//   - While a writer of this process waits, new readers of this process wait behind it.
//   - A writer waits in memory while its holder holds anything.
//   - A thread that holds the lock (through any object) and would wait for it again throws
//     resource_deadlock_would_occur: the wait could never end.
//   - One thread at a time calls the backend on a holder; the others wait in memory, except that a
//     try never waits for another thread's wait (it fails) and a release waits for a brief call.
//
// Mutex rules: mu_ guards every field of the state and of its holders, the counts of the lock
// objects bound to it, and whatever the backend's own fields say. It is taken before a lock
// object's own mutex and before any process-wide table's mutex. The backend's calls run with mu_
// held (a lock file's tries, opens and closes) or let go of it meanwhile (every wait, and every
// call that crosses a network), with the holder marked busy, so that nobody else uses it.
// Lifetime: bindings_ counts the objects bound to the state and the backend's own users of it
// (a lock file's queued kernel waits); the state is retired when it drops to zero.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <list>
#include <memory>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/lock_core.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail {
class async_request;
}  // namespace fasteners::detail

namespace fasteners::detail::engine {

class lock_object;

// Names the calling thread for the whole life of the process. std::thread::id values are reused
// once a thread ends, and a thread that took a lock may end while the lock stays held by its
// object: a new thread with the old id must not be taken for the holder.
FASTENERS_API std::uint64_t this_thread_token() noexcept;

// Through what this process holds the lock in the backend, and what it holds there.
struct holder {
  enum class use { idle, brief, waiting };
  int readers = 0;           // Read holdings through it, sharing its one shared lock.
  bool writer = false;       // It holds the exclusive lock, for one holding.
  use busy = use::idle;      // A thread calls the backend on it, perhaps without mu_.
  bool gate_closed = false;  // A writer waits elsewhere: readers stop joining.
  // A writer of this process waits behind its readers, and the backend keeps new readers of
  // other processes out meanwhile (hold_back_readers()).
  bool readers_held_back = false;
  bool lost = false;  // The backend lost what it held (a session that ended).
  // The fencing token of what it holds (see fence()), once a fencing object asked the backend:
  // the exclusive acquisition's own, or the latest exclusive one's while it holds the lock shared
  // (no writer can take the lock anywhere meanwhile, so readers that join share it).
  std::uint64_t fence = 0;
  bool fence_known = false;
  // The asynchronous acquisition the backend waits for through it (start_wait()), if any; it is
  // busy (waiting) meanwhile; or that the backend settles after stop_wait() (busy, brief).
  async_request* async_wait = nullptr;
  bool holds_any() const { return writer || readers > 0; }
};

// A lock held in this process: by which object, taken by which thread.
struct holding {
  std::uint64_t thread = 0;
  const lock_object* owner = nullptr;
  lock_mode mode = lock_mode::shared;
};

// The locks held through one state, without allocating for the first four.
class holding_list {
 public:
  holding* begin() { return heap_.empty() ? inline_.data() : heap_.data(); }
  holding* end() { return begin() + size_; }
  const holding* begin() const { return heap_.empty() ? inline_.data() : heap_.data(); }
  const holding* end() const { return begin() + size_; }
  std::size_t size() const { return size_; }
  void push_back(const holding& h);
  void erase(holding* it);

 private:
  std::array<holding, 4> inline_{};
  std::vector<holding> heap_;  // All of them, once there were more than fit inline.
  std::size_t size_ = 0;
};

enum class outcome {
  taken,
  not_taken,
  // The state does not stand for the lock any more (its file was deleted or replaced, its
  // session was lost): bind anew and ask again.
  start_again,
};

// One lock in this process. Thread-safe; see the top of this file.
class FASTENERS_API lock_state {
 public:
  lock_state();
  virtual ~lock_state();
  lock_state(const lock_state&) = delete;
  lock_state& operator=(const lock_state&) = delete;

  // Waits until `until` for a lock of `mode` for `owner` through `h`, and records it.
  // REQUIRES: `owner` is bound here and counts an acquire under way (lock_object::begin_acquire),
  // which this call ends. If that ends the owner's binding, `unbound` receives it, to be dropped
  // by the caller (it may be the last reference to this state). Throws std::system_error with
  // resource_deadlock_would_occur if the calling thread holds the lock and `until` allows
  // waiting, and whatever the backend throws.
  outcome acquire(lock_object& owner, holder& h, lock_mode mode, deadline until,
                  std::shared_ptr<lock_state>& unbound) FASTENERS_EXCLUDES(mu_);

  struct released {
    bool found = false;  // Whether `owner` held a lock of that mode.
    // The failure of letting go in the backend, if any (the lock is gone anyway).
    std::exception_ptr failure;
    // The owner's binding, if the release ended it: for the caller to drop (it may be the last
    // reference to this state).
    std::shared_ptr<lock_state> unbound;
  };
  // Releases one lock of `mode` held by `owner` through `h`, preferring one the calling thread
  // took. REQUIRES: the owner pinned its binding (lock_object::pin), which this call ends.
  released release(lock_object& owner, holder& h, lock_mode mode) FASTENERS_EXCLUDES(mu_);

  // Counts a binding of an object here, unless the state stands for the lock no more (then
  // returns false); detach() ends one.
  bool attach() FASTENERS_EXCLUDES(mu_);
  void detach() FASTENERS_EXCLUDES(mu_);
  // Ends `owner`'s binding as it is destroyed, after it released what it held (see released).
  std::shared_ptr<lock_state> leave(lock_object& owner) FASTENERS_EXCLUDES(mu_);
  // Whether the state still stands for the lock: false once its file was deleted or replaced.
  // Read without the mutex.
  bool is_current() const noexcept { return current_.load(std::memory_order_acquire); }

  // Whether `owner` holds a lock of `mode` through `h`, which is not known to be lost.
  bool holds(const lock_object& owner, const holder& h, lock_mode mode) const
      FASTENERS_EXCLUDES(mu_);
  bool holds_any(const lock_object& owner) const FASTENERS_EXCLUDES(mu_);
  // The OS handle through which `owner` holds the lock, or -1.
  std::intptr_t native_handle_of(const lock_object& owner, holder& h) FASTENERS_EXCLUDES(mu_);
  // The fencing token of what `owner` (a fencing object) holds through `h`: its exclusive
  // acquisition's, or the latest exclusive acquisition's while it holds the lock shared. Throws
  // std::system_error(operation_not_permitted) if it holds nothing, or lost what it held.
  std::uint64_t fencing_token_of(const lock_object& owner, holder& h) FASTENERS_EXCLUDES(mu_);

  // ---- Asynchronous acquisitions (async_request.hpp). ----
  // Queues `r`, an acquisition of `r->owner` through `h`. REQUIRES: the owner is bound here and
  // counts an acquire under way for `r` (lock_object::begin_acquire), which the request ends.
  // The request waits in the queue, in the backend (start_wait()), or where the backend polls, on
  // the async thread's timers, until its outcome is decided; its handler then runs on the async
  // thread. Requests of the same holder are served in order, under the rules of the blocking calls.
  void enqueue_async(const std::shared_ptr<async_request>& r, holder& h) noexcept
      FASTENERS_EXCLUDES(mu_);
  // `r` was decided elsewhere (cancelled): takes it out of the queue and the backend, if there.
  void withdraw(const std::shared_ptr<async_request>& r) noexcept FASTENERS_EXCLUDES(mu_);
  // Times `r` out if it is queued here and its deadline has passed (else asks again later).
  void expire(const std::shared_ptr<async_request>& r) noexcept FASTENERS_EXCLUDES(mu_);
  // Serves the queue again (a backend that polls asks again).
  void pump_async() noexcept FASTENERS_EXCLUDES(mu_);

  // The fork generation the state was made in (see fork.hpp).
  std::uint64_t generation() const noexcept { return generation_; }

 protected:
  // ---- The backend: what a backend implements, under the rules above. ----
  // Each is called with mu_ held and `h` marked busy; it may let go of mu_ meanwhile (see
  // unlocked) but returns with it held. `owner` is the object that asks.

  // Throws if a lock of `mode` can never be had here (a write lock on a read-only file).
  virtual void check_mode(lock_mode mode, const lock_object& owner) FASTENERS_REQUIRES(mu_);
  // One try that never waits for the lock.
  virtual outcome try_lock(holder& h, lock_mode mode, lock_object& owner)
      FASTENERS_REQUIRES(mu_) = 0;
  // Waits for the lock until `until` (no_deadline: as long as it takes), after a failed try.
  virtual outcome wait_lock(holder& h, lock_mode mode, deadline until, lock_object& owner)
      FASTENERS_REQUIRES(mu_) = 0;
  // Lets go of what `h` holds (`mode`, its last holding); `unbinding` says that `owner` unbound
  // with this release, so the backend may end what only it used. Returns the failure, which the
  // release throws, if any; the lock counts as let go anyway.
  virtual std::exception_ptr unlock(holder& h, lock_mode mode, lock_object& owner, bool unbinding)
      FASTENERS_REQUIRES(mu_) = 0;
  // Whether a writer waits for the lock elsewhere, while `h` holds it shared. Best effort.
  virtual bool writer_waiting_elsewhere(holder& h, const lock_object& owner)
      FASTENERS_REQUIRES(mu_) = 0;
  // A writer of this process waits behind the readers that hold the lock through `h`: keeps new
  // readers of other processes out until let_readers_in() or the release, where the backend's own
  // queue does not do it already. Returns whether it does. Best effort; must not let go of mu_.
  virtual bool hold_back_readers(holder& h) FASTENERS_REQUIRES(mu_);
  // No writer of this process waits any more, while readers still hold the lock through `h`.
  virtual void let_readers_in(holder& h) noexcept FASTENERS_REQUIRES(mu_);
  // Called only for a fencing object (lock_object::fencing()), once `h` has just taken the lock
  // of `mode` for it: for exclusive, takes the lock's next fencing token (larger than every one
  // taken before by any process, durably) and returns it; for shared, returns the latest one
  // taken (0 if none). One call per exclusive acquisition, and per shared lock of the holder.
  // Throws on failure; the engine then lets go of the lock. The default throws
  // operation_not_supported.
  virtual std::uint64_t fence(holder& h, lock_mode mode, lock_object& owner)
      FASTENERS_REQUIRES(mu_);
  // The OS handle through which `h` holds the lock, for native_handle(); -1 if none.
  virtual std::intptr_t handle_of(holder& h, const lock_object& owner) FASTENERS_REQUIRES(mu_) = 0;
  // Called whenever a binding ended (bindings() says how many remain): at zero, the backend ends
  // what it keeps for the state, which is destroyed once the last reference goes.
  virtual void on_unbind() FASTENERS_REQUIRES(mu_) {}
  // Whether the backend waits without a thread per wait (start_wait()); if not, an asynchronous
  // acquisition tries again at intervals from the async thread.
  virtual bool waits_async() const { return false; }
  // Starts waiting for the lock for `h.async_wait` after a failed try, without blocking the
  // calling thread; the outcome comes later through wait_ended(), from any thread. Returns
  // not_taken (under way) or start_again (nothing started: bind anew). `h` is busy until then.
  // Must not let go of mu_.
  virtual outcome start_wait(holder& h, lock_mode mode, lock_object& owner) FASTENERS_REQUIRES(mu_);
  // The engine gave up the wait started for `h`: the backend must not report it any more, and lets
  // go of a grant that comes anyway. Must not let go of mu_, nor block. Returns whether the backend
  // goes on using `h` to settle what it started (a statement in flight on a session, whose end it
  // must read before anything else is sent there): `h` then stays busy (brief, as for a call of
  // another thread) and h.async_wait stays set until the backend calls settled(h), from any
  // thread; the acquisition is finished (its handler runs) only then.
  virtual bool stop_wait(holder& h, lock_object& owner) noexcept FASTENERS_REQUIRES(mu_);

  // ---- What the engine offers a backend. ----
  // Waits for a change until `until`, letting go of mu_ meanwhile.
  void sleep(deadline until) FASTENERS_REQUIRES(mu_);
  // Wakes the threads that sleep().
  void notify() FASTENERS_REQUIRES(mu_);
  // Whether threads sleep(), to wake them with wake_sleepers() after letting go of mu_.
  bool has_sleepers() const FASTENERS_REQUIRES(mu_) { return sleepers_ > 0; }
  void wake_sleepers() noexcept { changed_.notify_all(); }
  // The state stands for the lock no more (its file was deleted or replaced): objects bind anew.
  void mark_replaced() FASTENERS_REQUIRES(mu_);
  // Counts a user of the state besides the bound objects (see bindings_); unbind() may retire.
  void bind() FASTENERS_REQUIRES(mu_) { ++bindings_; }
  void unbind() FASTENERS_REQUIRES(mu_);
  int bindings() const FASTENERS_REQUIRES(mu_) { return bindings_; }
  // The locks of `mode` held here, by every object.
  int holdings_of(lock_mode mode) const FASTENERS_REQUIRES(mu_);
  // A wait that start_wait() began for `h` ended: taken (the backend holds the lock for it),
  // start_again, or failed with `failure`.
  void wait_ended(holder& h, outcome result, std::exception_ptr failure) FASTENERS_REQUIRES(mu_);
  // The backend is done with `h` after a stop_wait() that returned true: it is idle again (the
  // backend set h.lost first if the holder was lost meanwhile), and the acquisition it settled
  // is finished with the outcome decided before.
  void settled(holder& h) FASTENERS_REQUIRES(mu_);
  // Asserts, in debug builds, the backend's invariants besides the engine's.
  virtual void check_backend() const FASTENERS_REQUIRES(mu_) {}
  // `h` may be idle and holding now: a backend call on it ended, or a lock was recorded through
  // it. A backend that watches its idle holders (a PostgreSQL session, for a loss) starts here,
  // and ends the watch at its next call on `h`. Must not let go of mu_, nor block.
  virtual void holder_at_rest(holder& h) noexcept FASTENERS_REQUIRES(mu_) { static_cast<void>(h); }

  mutable mutex mu_;

 private:
  // Marks a holder busy for a backend call, and idle again however the call ends, waking the
  // threads that wait for that.
  class busy_scope {
   public:
    busy_scope(lock_state& state, holder& h, holder::use how) FASTENERS_REQUIRES(state.mu_);
    ~busy_scope();
    busy_scope(const busy_scope&) = delete;
    busy_scope& operator=(const busy_scope&) = delete;

   private:
    lock_state& state_;
    holder& h_;
  };

  // Counts a writer that may wait (writers_waiting_) for the scope of its acquire; the last one
  // to go lets readers of other processes in again.
  class writer_count {
   public:
    writer_count(lock_state& state, holder& h, bool counts) FASTENERS_REQUIRES(state.mu_);
    ~writer_count();
    writer_count(const writer_count&) = delete;
    writer_count& operator=(const writer_count&) = delete;

   private:
    lock_state& state_;
    holder& h_;
    const bool counts_;
  };

  // Ends the writers' count of a writer that may have waited through `h`.
  void writer_left(holder& h) FASTENERS_REQUIRES(mu_);

  // ---- Asynchronous acquisitions. ----
  using request_list = std::list<std::shared_ptr<async_request>>;
  // Serves the queue in order; may let go of mu_ during backend calls. Re-entered calls make the
  // running one go round again.
  void pump() FASTENERS_REQUIRES(mu_);
  // One step for a queued request; returns whether it leaves the queue.
  bool advance(async_request& r) FASTENERS_REQUIRES(mu_);
  // The backend took the lock for `r`: records it, or lets go if `r` was decided meanwhile.
  void took(async_request& r, holder& h) FASTENERS_REQUIRES(mu_);
  // Ends the queued life of `r` here (decided: runs its handler; else: binds it anew).
  void finish(async_request& r, bool taken) FASTENERS_REQUIRES(mu_);
  void restart(async_request& r) FASTENERS_REQUIRES(mu_);
  // What both share: the writers' count and the acquire under way end, the request is nowhere.
  void leave_queue(async_request& r, bool taken) FASTENERS_REQUIRES(mu_);
  // Stops the backend's wait for `r`, if one runs. Returns true if the backend settles it first:
  // `r` then stays queued until settled() finishes it.
  bool stop_backend(async_request& r) noexcept FASTENERS_REQUIRES(mu_);
  request_list::iterator find(const async_request& r) FASTENERS_REQUIRES(mu_);
  void take_out(async_request& r) FASTENERS_REQUIRES(mu_);

  enum class step { join, request, wait };
  outcome take(lock_object& owner, holder& h, lock_mode mode, deadline until)
      FASTENERS_REQUIRES(mu_);
  step next_step(holder& h, lock_mode mode, const lock_object& owner) FASTENERS_REQUIRES(mu_);
  // Asks the backend, with `h` busy: a try, then a wait if `until` allows.
  outcome request(lock_object& owner, holder& h, lock_mode mode, deadline until)
      FASTENERS_REQUIRES(mu_);
  // Whether readers may join `h`'s shared lock: asks the backend until a writer waits elsewhere.
  bool gate_open(holder& h, const lock_object& owner) FASTENERS_REQUIRES(mu_);
  bool held_by_thread(std::uint64_t thread) const FASTENERS_REQUIRES(mu_);
  bool owned_by(const lock_object& owner) const FASTENERS_REQUIRES(mu_);
  // Records a lock of `mode` held by `owner` through `h`, taken by `thread` (0: asynchronously).
  void record(holder& h, const lock_object& owner, lock_mode mode, std::uint64_t thread)
      FASTENERS_REQUIRES(mu_);
  // Ends one of `owner`'s holdings of `mode`, preferring the one taken by `thread` (by default the
  // calling thread's); false if none.
  bool forget_holding(const lock_object& owner, holder& h, lock_mode mode) FASTENERS_REQUIRES(mu_) {
    return forget_holding(owner, h, mode, this_thread_token());
  }
  bool forget_holding(const lock_object& owner, holder& h, lock_mode mode, std::uint64_t thread)
      FASTENERS_REQUIRES(mu_);
  // For a fencing owner that has just recorded a lock of `mode` taken by `thread` through `h`:
  // asks the backend for its token (fence()). If that fails, forgets the holding, lets go of the
  // lock if nothing else holds it through `h`, and rethrows.
  void take_fence(lock_object& owner, holder& h, lock_mode mode, std::uint64_t thread)
      FASTENERS_REQUIRES(mu_);
  // Ends the holdings of `owner`, whose holder `h` was lost: they count as lost for it.
  void forget_lost(lock_object& owner, holder& h) FASTENERS_REQUIRES(mu_);
  // Ends an acquire of `owner`; returns its binding if that ends too.
  std::shared_ptr<lock_state> end_acquire(lock_object& owner, bool taken) FASTENERS_REQUIRES(mu_);
  void check_invariants(const holder& h) const FASTENERS_REQUIRES(mu_);

  const std::uint64_t generation_;
  std::atomic<bool> current_{true};
  std::condition_variable changed_;             // Notified whenever anything here changes.
  int sleepers_ FASTENERS_GUARDED_BY(mu_) = 0;  // Threads waiting on `changed_`.
  holding_list holdings_ FASTENERS_GUARDED_BY(mu_);
  // Writer threads of this process in acquire() that may wait: new readers here queue behind them.
  int writers_waiting_ FASTENERS_GUARDED_BY(mu_) = 0;
  int bindings_ FASTENERS_GUARDED_BY(mu_) = 0;
  // Asynchronous acquisitions, in their order of arrival.
  request_list queue_ FASTENERS_GUARDED_BY(mu_);
  bool pumping_ FASTENERS_GUARDED_BY(mu_) = false;
  bool pump_again_ FASTENERS_GUARDED_BY(mu_) = false;
  // Where the backend polls (no waits_async()): the holders whose try failed in this round of
  // pump(), whether a retry is due from the async thread, and its pause, growing to 25 ms.
  std::vector<const holder*> tried_ FASTENERS_GUARDED_BY(mu_);
  bool retry_due_ FASTENERS_GUARDED_BY(mu_) = false;
  int retry_ms_ FASTENERS_GUARDED_BY(mu_) = 0;
};

}  // namespace fasteners::detail::engine
