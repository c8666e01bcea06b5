// One public lock object, of any backend: its binding to the state of its lock, and what it holds.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "engine/async_request.hpp"
#include "engine/lock_state.hpp"
#include "engine/object_mutex.hpp"
#include "fasteners/detail/lock_core.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::engine {

// A lock object. It is bound to the lock_state of its lock while it holds a lock there, while one
// of its acquires or releases is under way, and while the backend wants it to stay bound (a lock
// file kept open, a live session); the locks it holds are recorded there. Its binding keeps the
// state alive. Thread-safe: any thread may call any member, except that destruction must not race
// with other calls.
//
// Mutex rules: mu_ (a spin lock) guards the binding and the counts below. It is taken inside the
// bound state's mutex, never the other way round, and never held across a system call.
class FASTENERS_API lock_object {
 public:
  lock_object(const lock_object&) = delete;
  lock_object& operator=(const lock_object&) = delete;
  virtual ~lock_object();

  // Waits for a lock of `mode` until `until` (try_once and no_deadline included). Returns whether
  // it was taken. Throws as the public API says.
  bool acquire(lock_mode mode, deadline until) FASTENERS_EXCLUDES(mu_);
  // Releases one lock of `mode` held by this object, preferring one the calling thread took.
  // Throws operation_not_permitted if it holds none, and the backend's error for a lost lock.
  void release(lock_mode mode) FASTENERS_EXCLUDES(mu_);
  bool holds(lock_mode mode) FASTENERS_EXCLUDES(mu_);
  std::intptr_t native_handle() FASTENERS_EXCLUDES(mu_);
  // Whether the object was made with the fencing option: its acquisitions take fencing tokens.
  bool fencing() const noexcept { return fencing_; }
  // The token of what the object holds (lock_state::fencing_token_of). Throws
  // std::system_error(operation_not_permitted) without the fencing option or while it holds
  // nothing.
  std::uint64_t fencing_token() FASTENERS_EXCLUDES(mu_);
  // Starts an asynchronous acquisition of `mode` until `until` (see async_acquisition). Never
  // waits for the lock; a lock file is opened here if the object is not bound yet.
  async_acquisition acquire_async(lock_mode mode, deadline until, async_handler handler)
      FASTENERS_EXCLUDES(mu_);
  // Cancels `r` (async_acquisition::cancel()).
  static bool cancel_async(const std::shared_ptr<async_request>& r) noexcept;

  // ---- Called by the async thread, outside every mutex. ----
  // Binds `r` anew and queues it there (its lock moved, or its session was lost).
  void restart_async(const std::shared_ptr<async_request>& r) noexcept FASTENERS_EXCLUDES(mu_);
  // Before `r`'s handler runs or `r` binds anew: drops the binding that `r` ended, if any.
  void after_async(async_request& r) noexcept;
  // `r`'s handler has run (called with the async thread's mutex held).
  void async_finished() noexcept { live_async_.fetch_sub(1, std::memory_order_acq_rel); }

  // ---- Called by the bound state, with its mutex held. ----
  // An acquire on `state` ends; counts the lock if `taken`. Returns the binding if the object
  // unbinds, for the caller of the state's acquire() to drop.
  std::shared_ptr<lock_state> end_acquire(const lock_state& state, bool taken)
      FASTENERS_EXCLUDES(mu_);
  // A pinned call on `state` (see pin()) ends, after `ended` of the object's locks there were
  // released (zero: none was, the object leaves, or its holder was lost). Returns the binding if
  // the object unbinds, as end_acquire().
  std::shared_ptr<lock_state> end_holds(const lock_state& state, int ended) FASTENERS_EXCLUDES(mu_);
  // Locks that the object held were lost with their holder: its releases of them throw the
  // backend's error for lost locks.
  void count_lost(int shared, int exclusive) FASTENERS_EXCLUDES(mu_);
  // Whether the object is bound to `state`.
  bool bound_to(const lock_state& state) FASTENERS_EXCLUDES(mu_);
  // Throws std::system_error(ec) with "fasteners: cannot <action> <this lock>: <detail>".
  [[noreturn]] virtual void fail(std::error_code ec, std::string_view action,
                                 std::string_view detail) const = 0;
  // The error fail() throws, to throw later.
  std::exception_ptr failure(std::error_code ec, std::string_view action,
                             std::string_view detail) const noexcept;

 protected:
  // `fencing`: whether acquisitions take fencing tokens (lock_state::fence()).
  explicit lock_object(bool fencing = false) noexcept : fencing_(fencing) {}
  // Releases everything the object holds and ends its binding; never throws. A backend's
  // destructor calls it first, while the backend's members still exist.
  void release_all() noexcept FASTENERS_EXCLUDES(mu_);

  // ---- The backend's part. ----
  // The state of the lock, found or made (opening a lock file, connecting a session), with a
  // binding counted there for this object (lock_state::attach); or nullptr when it found that
  // another thread's acquire bound the object meanwhile, to look at the binding again. Throws.
  virtual std::shared_ptr<lock_state> find_state() = 0;
  // The holder through which this object holds the lock in `state`.
  virtual holder& holder_in(lock_state& state) = 0;
  // Whether the object stays bound to `state` while it holds nothing there.
  virtual bool stays_bound(const lock_state& state) const = 0;
  // Why a lock that the object held was lost with its holder, for the error of its release.
  virtual const char* lost_reason() const noexcept;
  // Called outside every mutex after an acquire or a release ended the object's binding.
  virtual void unbound() noexcept {}
  // Whether find_state() may wait on a network now (a session to connect): an asynchronous
  // acquisition then binds on a thread of the library's own, not in the initiating call.
  virtual bool binding_may_block() const noexcept { return false; }
  // Whether the object's holder may still hold what it took, as far as this process can tell
  // without a round trip (false once a session is known to have ended, which marks it lost).
  virtual bool holder_alive() noexcept { return true; }
  // Whether the object is bound to a state now.
  bool is_bound() FASTENERS_EXCLUDES(mu_);
  // Whether it is bound, or a thread of it is in find_state(), whose result it will bind to.
  bool is_bound_or_binding() FASTENERS_EXCLUDES(mu_);

 private:
  // The state to acquire on, binding this object to it; counts an acquire under way, which keeps
  // the object bound (and so the state alive) until the state's acquire() ends it.
  lock_state* begin_acquire() FASTENERS_EXCLUDES(mu_);
  // The bound state, pinned: the object stays bound until the state's release() or leave() ends
  // the pin with end_holds(). Nothing if it is not bound.
  lock_state* pin() FASTENERS_EXCLUDES(mu_);
  // Gives up a binding to a state that stands for the lock no more, while the object holds
  // nothing there: acquires under way finish there, and it is kept in retired_ meanwhile. Returns
  // it, to be detached outside the mutex.
  std::shared_ptr<lock_state> give_up_replaced() FASTENERS_REQUIRES(mu_);
  // Releases one lock of `mode` through the bound state, if any.
  lock_state::released release_pinned(lock_mode mode);
  // The bound state, if any (forgetting one of the parent's after fork()).
  std::shared_ptr<lock_state> bound() FASTENERS_EXCLUDES(mu_);
  // Whether the binding may end now.
  bool unbinds() const FASTENERS_REQUIRES(mu_) {
    return holds_ == 0 && acquiring_ == 0 && pins_ == 0 && (leaving_ || !stays_bound(*bound_));
  }
  void forget_if_stale() FASTENERS_REQUIRES(mu_);
  // Binds and queues `r`; decides it with the error if that fails. Where binding may block, it
  // does so on a thread of the library's own.
  void start_async(const std::shared_ptr<async_request>& r) noexcept FASTENERS_EXCLUDES(mu_);
  void bind_async(const std::shared_ptr<async_request>& r) noexcept FASTENERS_EXCLUDES(mu_);
  // Cancels every pending acquisition of the object and waits for their handlers.
  void end_async() noexcept FASTENERS_EXCLUDES(mu_);

  const bool fencing_;
  object_mutex mu_;
  std::shared_ptr<lock_state> bound_ FASTENERS_GUARDED_BY(mu_);
  // Locks held through bound_, counted once their acquire ends (and briefly below zero when
  // another thread of the object releases one before that).
  int holds_ FASTENERS_GUARDED_BY(mu_) = 0;
  int acquiring_ FASTENERS_GUARDED_BY(mu_) = 0;  // Acquires under way on this object.
  int pins_ FASTENERS_GUARDED_BY(mu_) = 0;       // Releases under way (see pin()).
  int binding_ FASTENERS_GUARDED_BY(mu_) = 0;    // Threads in find_state() (begin_acquire()).
  // Former bindings, given up while acquires were under way there; dropped once none is.
  std::vector<std::shared_ptr<lock_state>> retired_ FASTENERS_GUARDED_BY(mu_);
  // Locks lost with their holder and not released yet: shared, exclusive.
  int lost_[2] FASTENERS_GUARDED_BY(mu_) = {0, 0};
  bool leaving_ FASTENERS_GUARDED_BY(mu_) = false;  // The object is being destroyed.
  // The asynchronous acquisitions not decided yet (some may be), for destruction to cancel.
  std::vector<std::weak_ptr<async_request>> async_ FASTENERS_GUARDED_BY(mu_);
  // Acquisitions whose handlers have not finished, in the fork generation async_generation_.
  std::atomic<int> live_async_{0};
  std::uint64_t async_generation_ FASTENERS_GUARDED_BY(mu_) = 0;
};

}  // namespace fasteners::detail::engine
