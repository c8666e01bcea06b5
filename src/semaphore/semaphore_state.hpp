// The semaphore engine: one semaphore's slots in this process, its line of waiters, and the small
// interface a backend implements under them.
//
// A semaphore that this process uses has one semaphore_state; semaphore objects bind to it
// (semaphore_object.hpp). The backend offers N+1 exclusive locks: the slots, and the turnstile. A
// slot is held by at most one object of one process, which is what keeps the holders at N. The
// turnstile orders the waiters of every process: only its holder, the first in line, waits for a
// slot, and it waits for all of them at once; everyone else waits for the turnstile. So a process
// that gives a slot back and asks again at once queues behind the waiters instead of taking it
// back, and waiters are served roughly in arrival order.
//
// In this process: acquires wait in memory in arrival order. The first of them takes the
// turnstile for the process, tries every slot that nobody here holds, and if none is free starts a
// wait in the backend on each of them (the backend waits without blocking the engine: a thread of
// the library's own blocks in the kernel, or a database session of its own waits in the server
// while the async thread watches its socket). The first slot granted goes to the first in line,
// which then lets go of the turnstile. A slot given back while this process holds the turnstile
// goes to its first waiter directly. Backend waits cannot be called off; one whose waiter gave up
// stays queued, and its grant is let go of at once unless this process holds the turnstile and a
// waiter wants a slot.
//
// A one-time try (try_acquire) takes any free slot without queueing: it never waits, so it cannot
// hold anyone back.
//
// Mutex rules: mu_ guards every field, and is held across the backend's calls (tries, unlocks,
// starting a wait), which never wait for a lock: they may take a round trip to a server
// (PostgreSQL), but no longer. It is taken before the semaphore table's mutex.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <list>
#include <optional>
#include <system_error>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/export.hpp"
#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::semaphore {

class semaphore_object;

// What the backend locks: slot i (0 <= i < N), or the turnstile.
using place = std::size_t;
inline constexpr place turnstile = static_cast<place>(-1);

// One semaphore in this process. Thread-safe; see the top of this file.
class FASTENERS_API semaphore_state {
 public:
  explicit semaphore_state(std::size_t slots);
  virtual ~semaphore_state();
  semaphore_state(const semaphore_state&) = delete;
  semaphore_state& operator=(const semaphore_state&) = delete;

  // N, as the backend records it.
  std::size_t slots() const noexcept { return count_; }
  // The fork generation the state was made in (see engine/fork.hpp).
  std::uint64_t generation() const noexcept { return generation_; }

  // Takes a free slot for `owner`, waiting until `until` (try_once: no wait, no queueing);
  // returns its index, or nothing at the deadline. Throws what the backend throws, through
  // owner.fail().
  std::optional<std::size_t> acquire(const semaphore_object& owner, deadline until)
      FASTENERS_EXCLUDES(mu_);
  // Gives back slot `i`, which an object bound here holds. Returns the failure of letting go in
  // the backend, if any (the slot counts as given back anyway).
  std::error_code release(std::size_t i) FASTENERS_EXCLUDES(mu_);

 protected:
  // ---- The backend: called with mu_ held. None of them may wait for a lock; each may take a
  // round trip to a server (PostgreSQL), but no more (a backend that must connect says so). ----
  // One try at `p`; throws std::system_error on failures other than contention.
  virtual bool try_take(place p) FASTENERS_REQUIRES(mu_) = 0;
  // Starts waiting for `p` without blocking; the outcome comes through wait_ended(), from any
  // thread. Throws std::system_error if the wait cannot be started.
  virtual void start_wait(place p) FASTENERS_REQUIRES(mu_) = 0;
  // Lets go of `p`, which this process holds.
  virtual std::error_code let_go(place p) noexcept FASTENERS_REQUIRES(mu_) = 0;
  // Whether another process is in line: holds the turnstile, or waits for it where the backend can
  // tell (a backend whose own queue serves waiters in order may tell only the former). Best effort.
  virtual bool others_in_line() noexcept FASTENERS_REQUIRES(mu_) = 0;

  // ---- What the engine offers a backend. ----
  // A wait that start_wait() began for `p` ended: granted unless `error`.
  void wait_ended(place p, std::error_code error) FASTENERS_REQUIRES(mu_);

  mutable mutex mu_;

 private:
  struct waiter {
    std::optional<std::size_t> slot;
    std::error_code error;       // A wait in the backend failed.
    std::exception_ptr failure;  // A backend call threw.
    bool done = false;
    std::condition_variable woken;
  };
  struct slot {
    bool held = false;     // An object of this process holds it.
    bool waiting = false;  // The backend waits for it.
  };

  // Serves the line: takes the turnstile, free slots, or starts waits for them.
  void pump() noexcept FASTENERS_REQUIRES(mu_);
  // Takes a slot that nobody here holds or waits for, if one is free; throws what try_take does.
  std::optional<std::size_t> try_free_slot() FASTENERS_REQUIRES(mu_);
  // Gives slot `i`, held here now, to the first in line, whose turn ends: the turnstile goes.
  void grant(std::size_t i) FASTENERS_REQUIRES(mu_);
  // Ends the first in line's turn with `error`, or with what a backend call threw.
  void fail_first(std::error_code error, std::exception_ptr failure = nullptr)
      FASTENERS_REQUIRES(mu_);
  void finish_first(waiter& w) FASTENERS_REQUIRES(mu_);
  void let_go_of_turnstile() FASTENERS_REQUIRES(mu_);

  const std::uint64_t generation_;
  const std::size_t count_;
  std::vector<slot> slots_ FASTENERS_GUARDED_BY(mu_);
  std::list<waiter*> line_ FASTENERS_GUARDED_BY(mu_);
  bool turnstile_held_ FASTENERS_GUARDED_BY(mu_) = false;
  bool turnstile_waiting_ FASTENERS_GUARDED_BY(mu_) = false;
  // Where the next search for a free slot starts: after the last slot taken here.
  std::size_t next_ FASTENERS_GUARDED_BY(mu_) = 0;
};

}  // namespace fasteners::detail::semaphore
