// The engine's rules: in-process exclusion, writers waiting, the join check, self-deadlock.
#include "engine/lock_state.hpp"

#include <atomic>
#include <cassert>
#include <new>
#include <utility>

#include "engine/async_request.hpp"
#include "engine/async_thread.hpp"
#include "engine/fork.hpp"
#include "engine/lock_object.hpp"

namespace fasteners::detail::engine {
namespace {

std::size_t slot(lock_mode mode) { return mode == lock_mode::shared ? 0 : 1; }

}  // namespace

std::uint64_t this_thread_token() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local std::uint64_t token = 0;  // Zero-initialized: no guard on each call.
  if (token == 0) token = next.fetch_add(1, std::memory_order_relaxed);
  return token;
}

void holding_list::push_back(const holding& h) {
  if (heap_.empty() && size_ < inline_.size()) {
    inline_[size_++] = h;
    return;
  }
  if (heap_.empty()) heap_.assign(inline_.begin(), inline_.begin() + size_);
  heap_.push_back(h);
  ++size_;
}

void holding_list::erase(holding* it) {
  std::copy(it + 1, end(), it);
  --size_;
  if (!heap_.empty()) heap_.pop_back();
}

lock_state::busy_scope::busy_scope(lock_state& state, holder& h, holder::use how)
    : state_(state), h_(h) {
  h_.busy = how;
}

lock_state::busy_scope::~busy_scope() {
  h_.busy = holder::use::idle;
  // Threads that waited for the call, while the backend let go of the mutex, go on now.
  state_.notify();
  state_.holder_at_rest(h_);
}

lock_state::writer_count::writer_count(lock_state& state, holder& h, bool counts)
    : state_(state), h_(h), counts_(counts) {
  if (counts_) ++state_.writers_waiting_;
}

lock_state::writer_count::~writer_count() {
  if (counts_) state_.writer_left(h_);
}

void lock_state::writer_left(holder& h) {
  if (--writers_waiting_ == 0 && h.readers_held_back) {
    h.readers_held_back = false;
    let_readers_in(h);
  }
}

lock_state::lock_state() : generation_(fork_generation()) {}

lock_state::~lock_state() = default;

void lock_state::check_mode(lock_mode, const lock_object&) {}

bool lock_state::hold_back_readers(holder&) { return false; }

void lock_state::let_readers_in(holder&) noexcept {}

outcome lock_state::start_wait(holder&, lock_mode, lock_object&) {
  assert(false && "start_wait() is only called where waits_async()");
  return outcome::start_again;
}

bool lock_state::stop_wait(holder&, lock_object&) noexcept { return false; }

std::uint64_t lock_state::fence(holder&, lock_mode, lock_object& owner) {
  std::rethrow_exception(owner.failure(std::make_error_code(std::errc::operation_not_supported),
                                       "take a fencing token of",
                                       "this kind of lock has no fencing tokens"));
}

outcome lock_state::acquire(lock_object& owner, holder& h, lock_mode mode, deadline until,
                            std::shared_ptr<lock_state>& unbound) {
  // A deadline already passed means one try, as try_once does.
  if (until != no_deadline && until != try_once && std::chrono::steady_clock::now() >= until) {
    until = try_once;
  }
  mutex_lock lock(mu_);
  auto result = outcome::not_taken;
  try {
    result = take(owner, h, mode, until);
  } catch (...) {
    notify();
    unbound = end_acquire(owner, false);
    pump();
    throw;
  }
  notify();
  unbound = end_acquire(owner, result == outcome::taken);
  pump();
  check_invariants(h);
  return result;
}

outcome lock_state::take(lock_object& owner, holder& h, lock_mode mode, deadline until) {
  check_mode(mode, owner);
  // A writer that may wait holds back the readers of this process from its start (see
  // next_step()), so that they cannot starve it.
  const writer_count counted(*this, h, mode == lock_mode::exclusive && until != try_once);
  for (;;) {
    if (h.lost) {
      forget_lost(owner, h);
      return outcome::start_again;  // The holder is gone: bind anew.
    }
    if (held_by_thread(this_thread_token())) {
      if (until == try_once) return outcome::not_taken;
      owner.fail(std::make_error_code(std::errc::resource_deadlock_would_occur), "wait for",
                 "the calling thread already holds it in this process");
    }
    // The lock is elsewhere now (its file was deleted or replaced): bind anew, unless the object
    // still holds a lock here, which it must release first.
    if (!is_current() && !owned_by(owner)) return outcome::start_again;
    switch (next_step(h, mode, owner)) {
      case step::join:
        record(h, owner, mode, this_thread_token());
        take_fence(owner, h, mode, this_thread_token());
        return outcome::taken;
      case step::request:
        return request(owner, h, mode, until);
      case step::wait:
        break;
    }
    // A try does not wait for another thread's wait: the lock is taken, or about to be.
    if (!may_wait(until) && (until != try_once || h.busy != holder::use::brief)) {
      return outcome::not_taken;
    }
    // A writer behind readers of this process holds back readers of others too, as it would
    // once it waited in the backend.
    if (mode == lock_mode::exclusive && h.readers > 0 && h.busy == holder::use::idle &&
        !h.readers_held_back) {
      h.readers_held_back = hold_back_readers(h);
    }
    sleep(until == try_once ? no_deadline : until);
  }
}

lock_state::step lock_state::next_step(holder& h, lock_mode mode, const lock_object& owner) {
  if (h.busy == holder::use::brief) return step::wait;
  if (mode == lock_mode::exclusive) {
    return h.holds_any() || h.busy != holder::use::idle ? step::wait : step::request;
  }
  if (h.writer || writers_waiting_ > 0) return step::wait;
  if (h.readers > 0) return gate_open(h, owner) ? step::join : step::wait;
  return h.busy == holder::use::idle ? step::request : step::wait;
}

bool lock_state::gate_open(holder& h, const lock_object& owner) {
  if (h.gate_closed) return false;
  // Joining the shared lock this process holds must not overtake a writer elsewhere.
  bool waiting = false;
  {
    const busy_scope busy(*this, h, holder::use::brief);
    waiting = writer_waiting_elsewhere(h, owner);
  }
  if (h.readers == 0) return false;  // The shared lock dropped meanwhile: ask anew.
  if (waiting) h.gate_closed = true;
  return !waiting;
}

outcome lock_state::request(lock_object& owner, holder& h, lock_mode mode, deadline until) {
  assert(!h.holds_any() && h.busy == holder::use::idle);
  auto result = outcome::not_taken;
  try {
    {
      const busy_scope busy(*this, h, holder::use::brief);
      result = try_lock(h, mode, owner);
    }
    if (result == outcome::not_taken && may_wait(until)) {
      const busy_scope busy(*this, h, holder::use::waiting);
      result = wait_lock(h, mode, until, owner);
    }
  } catch (...) {
    if (h.lost) forget_lost(owner, h);
    throw;
  }
  if (result != outcome::taken) return result;
  record(h, owner, mode, this_thread_token());
  if (!is_current() && !owner.bound_to(*this)) {
    // Granted after the state stopped standing for the lock and the object moved on (another of
    // its threads bound it anew, see lock_object::begin_acquire): let go, and ask there.
    forget_holding(owner, h, mode);
    if (!h.holds_any()) {
      const busy_scope busy(*this, h, holder::use::brief);  // The backend may let go of mu_.
      unlock(h, mode, owner, false);
    }
    return outcome::start_again;
  }
  take_fence(owner, h, mode, this_thread_token());
  return outcome::taken;
}

lock_state::released lock_state::release(lock_object& owner, holder& h, lock_mode mode) {
  released result;
  mutex_lock lock(mu_);
  // A brief backend call (another thread's release, a join check) must end first.
  while (h.busy == holder::use::brief) sleep(no_deadline);
  if (h.lost) {
    forget_lost(owner, h);
  } else {
    result.found = forget_holding(owner, h, mode);
  }
  result.unbound = owner.end_holds(*this, result.found ? 1 : 0);
  if (result.found && !h.holds_any()) {
    h.gate_closed = false;
    h.readers_held_back = false;  // Let go of with the lock.
    const busy_scope busy(*this, h, holder::use::brief);
    result.failure = unlock(h, mode, owner, result.unbound != nullptr);
  }
  if (result.unbound) unbind();
  notify();
  pump();
  check_invariants(h);
  return result;
}

void lock_state::enqueue_async(const std::shared_ptr<async_request>& r, holder& h) noexcept {
  mutex_lock lock(mu_);
  r->holder = &h;
  try {
    queue_.push_back(r);
  } catch (const std::bad_alloc&) {
    r->decide(std::make_error_code(std::errc::not_enough_memory));
    finish(*r, false);
    return;
  }
  // A writer that may wait holds back the readers of this process, as a blocking one does.
  r->counts_writer = r->mode == lock_mode::exclusive && r->until != try_once;
  if (r->counts_writer) ++writers_waiting_;
  if (r->until != try_once && r->until != no_deadline) async_thread::expire_at(r, r->until);
  pump();
  check_invariants(h);
}

void lock_state::withdraw(const std::shared_ptr<async_request>& r) noexcept {
  mutex_lock lock(mu_);
  // A request in a step (see pump()) is finished by its step.
  if (find(*r) == queue_.end() || r->in_step) return;
  if (stop_backend(*r)) return;  // Finished once the backend has settled (see settled()).
  take_out(*r);
  finish(*r, false);
  pump();
}

void lock_state::expire(const std::shared_ptr<async_request>& r) noexcept {
  mutex_lock lock(mu_);
  if (find(*r) == queue_.end()) return;
  if (std::chrono::steady_clock::now() < r->until) {
    async_thread::expire_at(r, r->until);  // Never early: the clock said so.
    return;
  }
  // A step under way decides when it ends: its try may have taken the lock.
  if (r->in_step || !r->decide(std::make_error_code(std::errc::timed_out))) return;
  if (stop_backend(*r)) return;  // Finished once the backend has settled (see settled()).
  take_out(*r);
  finish(*r, false);
  pump();
}

void lock_state::pump_async() noexcept {
  mutex_lock lock(mu_);
  retry_due_ = false;
  pump();
}

void lock_state::pump() {
  if (queue_.empty()) return;
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    tried_.clear();
    for (auto it = queue_.begin(); it != queue_.end();) {
      // Requests stay in place while in a step (withdraw() leaves them), so `it` stays valid.
      async_request& r = **it;
      // Where the backend polls, the requests of a holder whose try failed in this round stay as
      // they are (a cancel or a deadline takes them out by itself: withdraw(), expire()).
      const bool polled =
          !tried_.empty() && std::find(tried_.begin(), tried_.end(), r.holder) != tried_.end();
      if (r.in_backend || polled) {
        ++it;
        continue;
      }
      r.in_step = true;
      if (advance(r)) {
        // It left in its step (leave_queue() ended the step): it may be another state's already
        // (restart()), so nothing of it is written here any more.
        it = queue_.erase(it);
      } else {
        r.in_step = false;
        ++it;
      }
    }
  } while (pump_again_);
  pumping_ = false;
}

bool lock_state::advance(async_request& r) {
  holder& h = *r.holder;
  lock_object& owner = r.owner;
  if (r.decided()) {                    // Cancelled, or timed out during a step.
    if (stop_backend(r)) return false;  // Finished once the backend has settled.
    finish(r, false);
    return true;
  }
  try {
    if (h.lost) {
      forget_lost(owner, h);
      restart(r);
      return true;
    }
    // The lock is elsewhere now: bind anew (as take() does).
    if (!is_current() && !owned_by(owner)) {
      restart(r);
      return true;
    }
    check_mode(r.mode, owner);
    switch (next_step(h, r.mode, owner)) {
      case step::join:
        took(r, h);
        return true;
      case step::request: {
        // Where the backend polls, one failed try per holder and round is enough.
        if (std::find(tried_.begin(), tried_.end(), &h) != tried_.end()) {
          if (!may_wait(r.until)) break;
          return false;
        }
        auto result = outcome::not_taken;
        {
          const busy_scope busy(*this, h, holder::use::brief);
          result = try_lock(h, r.mode, owner);
        }
        if (result == outcome::taken) {
          took(r, h);
          return true;
        }
        if (result == outcome::start_again) {
          restart(r);
          return true;
        }
        if (r.decided() || !may_wait(r.until)) break;
        if (waits_async()) {
          h.busy = holder::use::waiting;
          h.async_wait = &r;
          r.in_backend = true;
          outcome started = outcome::not_taken;
          try {
            started = start_wait(h, r.mode, owner);
          } catch (...) {
            h.busy = holder::use::idle;
            h.async_wait = nullptr;
            r.in_backend = false;
            notify();
            throw;
          }
          if (started == outcome::start_again) {
            h.busy = holder::use::idle;
            h.async_wait = nullptr;
            r.in_backend = false;
            notify();
            restart(r);
            return true;
          }
          return false;
        }
        // The backend cannot wait without a thread: ask again soon, from the async thread, once
        // for the whole queue.
        tried_.push_back(&h);
        if (!retry_due_) {
          retry_due_ = true;
          retry_ms_ = std::min(std::max(1, retry_ms_ * 2), 25);
          async_thread::pump_at(
              r.where(), std::chrono::steady_clock::now() + std::chrono::milliseconds(retry_ms_));
        }
        return false;
      }
      case step::wait:
        // A try does not wait for another thread's wait, only for a brief call.
        if (!may_wait(r.until) && (r.until != try_once || h.busy != holder::use::brief)) break;
        if (r.mode == lock_mode::exclusive && h.readers > 0 && h.busy == holder::use::idle &&
            !h.readers_held_back) {
          h.readers_held_back = hold_back_readers(h);
        }
        return false;
    }
  } catch (const std::system_error& e) {
    if (h.lost) forget_lost(owner, h);
    r.decide(e.code());
    finish(r, false);
    return true;
  } catch (const std::bad_alloc&) {
    r.decide(std::make_error_code(std::errc::not_enough_memory));
    finish(r, false);
    return true;
  } catch (...) {
    r.decide(std::make_error_code(std::errc::invalid_argument));
    finish(r, false);
    return true;
  }
  r.decide(std::make_error_code(std::errc::timed_out));
  finish(r, false);
  return true;
}

void lock_state::took(async_request& r, holder& h) {
  retry_ms_ = 0;
  if (r.owner.fencing() && !r.decided()) {
    // The token is taken before the outcome is decided, so that the handler runs with it (the
    // backend may let go of mu_ meanwhile: the request is in a step or out of the queue, where
    // neither a cancel nor its deadline finishes it).
    record(h, r.owner, r.mode, 0);
    try {
      take_fence(r.owner, h, r.mode, 0);
    } catch (const std::system_error& e) {
      r.decide(e.code());
      finish(r, false);
      return;
    } catch (...) {
      r.decide(std::make_error_code(std::errc::not_enough_memory));
      finish(r, false);
      return;
    }
    if (r.decide({})) {
      finish(r, true);
      return;
    }
    // Cancelled while the token was taken: let go, as below.
    forget_holding(r.owner, h, r.mode, 0);
    if (!h.holds_any() && !h.lost) {
      const busy_scope busy(*this, h, holder::use::brief);
      unlock(h, r.mode, r.owner, false);
    }
    finish(r, false);
    return;
  }
  if (r.decide({})) {
    record(h, r.owner, r.mode, 0);
    finish(r, true);
    return;
  }
  // Cancelled as it was granted: let go at once, unless others of this process share it. The
  // backend may let go of mu_ meanwhile: the holder is busy until then.
  if (!h.holds_any()) {
    const busy_scope busy(*this, h, holder::use::brief);
    unlock(h, r.mode, r.owner, false);
  }
  finish(r, false);
}

void lock_state::finish(async_request& r, bool taken) {
  leave_queue(r, taken);
  async_thread::complete(r.shared_from_this());
}

void lock_state::restart(async_request& r) {
  leave_queue(r, false);
  async_thread::restart(r.shared_from_this());
}

void lock_state::leave_queue(async_request& r, bool taken) {
  if (r.counts_writer) {
    r.counts_writer = false;
    writer_left(*r.holder);
  }
  r.unbound = end_acquire(r.owner, taken);
  r.in_step = false;  // Before restart() or the handler hands it on.
  notify();
  r.move_to(nullptr);
}

bool lock_state::stop_backend(async_request& r) noexcept {
  if (!r.in_backend) return false;
  holder& h = *r.holder;
  if (stop_wait(h, r.owner)) {
    // The backend settles the wait first: the request stays queued (in_backend, so that pump()
    // passes it by), its holder busy, until settled() finishes it, so that its handler runs once
    // the holder is usable again and nothing granted meanwhile is held any more.
    h.busy = holder::use::brief;
    r.settling = true;
    notify();
    return true;
  }
  r.in_backend = false;
  h.async_wait = nullptr;
  h.busy = holder::use::idle;
  notify();
  return false;
}

void lock_state::settled(holder& h) {
  async_request* const waited = h.async_wait;
  assert(h.busy == holder::use::brief && waited != nullptr && waited->settling);
  h.async_wait = nullptr;
  h.busy = holder::use::idle;
  notify();
  const auto it = find(*waited);
  assert(it != queue_.end());
  const std::shared_ptr<async_request> r = *it;
  queue_.erase(it);
  r->in_backend = false;
  r->settling = false;
  check_invariants(h);
  finish(*r, false);
  pump();
}

lock_state::request_list::iterator lock_state::find(const async_request& r) {
  return std::find_if(queue_.begin(), queue_.end(),
                      [&](const std::shared_ptr<async_request>& x) { return x.get() == &r; });
}

void lock_state::take_out(async_request& r) {
  const auto it = find(r);
  if (it != queue_.end()) queue_.erase(it);
}

void lock_state::wait_ended(holder& h, outcome result, std::exception_ptr failure) {
  async_request* const waited = h.async_wait;
  assert(waited != nullptr && h.busy == holder::use::waiting);
  h.async_wait = nullptr;
  h.busy = holder::use::idle;
  notify();
  const auto it = find(*waited);
  assert(it != queue_.end());
  const std::shared_ptr<async_request> r = *it;
  r->in_backend = false;
  queue_.erase(it);
  if (failure) {
    if (h.lost) forget_lost(r->owner, h);
    try {
      std::rethrow_exception(failure);
    } catch (const std::system_error& e) {
      r->decide(e.code());
    } catch (...) {
      r->decide(std::make_error_code(std::errc::not_enough_memory));
    }
    finish(*r, false);
  } else if (result == outcome::taken) {
    took(*r, h);
  } else if (result == outcome::start_again) {
    restart(*r);
  } else {
    queue_.push_front(r);  // Not granted after all: it asks again first.
  }
  pump();
}

bool lock_state::forget_holding(const lock_object& owner, holder& h, lock_mode mode,
                                std::uint64_t self) {
  // One of the owner's locks of `mode`, the one `self` took if any.
  holding* it = nullptr;
  for (auto& x : holdings_) {
    if (x.owner != &owner || x.mode != mode) continue;
    it = &x;
    if (x.thread == self) break;
  }
  if (it == nullptr) return false;
  holdings_.erase(it);
  if (mode == lock_mode::shared) {
    --h.readers;
  } else {
    h.writer = false;
  }
  if (!h.holds_any()) h.fence_known = false;
  return true;
}

void lock_state::take_fence(lock_object& owner, holder& h, lock_mode mode, std::uint64_t thread) {
  if (!owner.fencing()) return;
  // Readers that join a shared lock share its token: no writer took the lock meanwhile.
  if (mode == lock_mode::shared && h.fence_known) return;
  h.fence_known = false;
  try {
    std::uint64_t token = 0;
    {
      const busy_scope busy(*this, h, holder::use::brief);  // The backend may let go of mu_.
      token = fence(h, mode, owner);
    }
    h.fence = token;
    h.fence_known = true;
  } catch (...) {
    forget_holding(owner, h, mode, thread);
    if (h.lost) {
      forget_lost(owner, h);
    } else if (!h.holds_any()) {
      const busy_scope busy(*this, h, holder::use::brief);
      unlock(h, mode, owner, false);
    }
    throw;
  }
}

std::uint64_t lock_state::fencing_token_of(const lock_object& owner, holder& h) {
  mutex_lock lock(mu_);
  // A brief backend call (a token being taken, a release) ends first.
  while (h.busy == holder::use::brief) sleep(no_deadline);
  if (h.lost || !owned_by(owner) || !h.fence_known) {
    owner.fail(std::make_error_code(std::errc::operation_not_permitted),
               "read the fencing token of", "the object does not hold it");
  }
  return h.fence;
}

bool lock_state::holds(const lock_object& owner, const holder& h, lock_mode mode) const {
  mutex_lock lock(mu_);
  return !h.lost && std::any_of(holdings_.begin(), holdings_.end(), [&](const holding& x) {
    return x.owner == &owner && x.mode == mode;
  });
}

bool lock_state::holds_any(const lock_object& owner) const {
  mutex_lock lock(mu_);
  return owned_by(owner);
}

std::intptr_t lock_state::native_handle_of(const lock_object& owner, holder& h) {
  mutex_lock lock(mu_);
  return owned_by(owner) ? handle_of(h, owner) : -1;
}

bool lock_state::attach() {
  mutex_lock lock(mu_);
  if (!is_current()) return false;
  ++bindings_;
  return true;
}

void lock_state::detach() {
  mutex_lock lock(mu_);
  unbind();
}

void lock_state::mark_replaced() {
  current_.store(false, std::memory_order_release);
  notify();
}

std::shared_ptr<lock_state> lock_state::leave(lock_object& owner) {
  mutex_lock lock(mu_);
  auto unbound = owner.end_holds(*this, 0);
  if (unbound) unbind();
  notify();
  pump();
  return unbound;
}

int lock_state::holdings_of(lock_mode mode) const {
  return static_cast<int>(std::count_if(holdings_.begin(), holdings_.end(),
                                        [&](const holding& x) { return x.mode == mode; }));
}

void lock_state::sleep(deadline until) {
  ++sleepers_;
  if (until == no_deadline) {
    mu_.wait(changed_);
  } else {
    mu_.wait_until(changed_, until);
  }
  --sleepers_;
}

void lock_state::notify() {
  if (sleepers_ > 0) changed_.notify_all();
}

void lock_state::unbind() {
  assert(bindings_ > 0);
  --bindings_;
  on_unbind();
}

bool lock_state::held_by_thread(std::uint64_t thread) const {
  return std::any_of(holdings_.begin(), holdings_.end(),
                     [&](const holding& x) { return x.thread == thread; });
}

bool lock_state::owned_by(const lock_object& owner) const {
  return std::any_of(holdings_.begin(), holdings_.end(),
                     [&](const holding& x) { return x.owner == &owner; });
}

void lock_state::record(holder& h, const lock_object& owner, lock_mode mode, std::uint64_t thread) {
  holdings_.push_back({thread, &owner, mode});
  if (mode == lock_mode::shared) {
    ++h.readers;
  } else {
    assert(!h.holds_any());
    h.writer = true;
  }
  holder_at_rest(h);
}

void lock_state::forget_lost(lock_object& owner, holder& h) {
  int lost[2] = {0, 0};
  for (auto* it = holdings_.begin(); it != holdings_.end();) {
    if (it->owner == &owner) {
      ++lost[slot(it->mode)];
      holdings_.erase(it);
    } else {
      ++it;
    }
  }
  h.readers = 0;
  h.writer = false;
  h.fence_known = false;
  h.gate_closed = false;
  h.readers_held_back = false;
  owner.count_lost(lost[0], lost[1]);
}

std::shared_ptr<lock_state> lock_state::end_acquire(lock_object& owner, bool taken) {
  auto unbound = owner.end_acquire(*this, taken);
  if (unbound) unbind();
  return unbound;
}

void lock_state::check_invariants(const holder& h) const {
#ifndef NDEBUG
  // A holder's locks are among the state's (where one holder serves the whole state, as for a
  // lock file, the backend asserts that they are all of them).
  assert(h.readers >= 0 && h.readers <= holdings_of(lock_mode::shared));
  assert(!h.writer || holdings_of(lock_mode::exclusive) == 1);
  assert(!(h.readers > 0 && h.writer));
  assert(!h.readers_held_back || (h.readers > 0 && writers_waiting_ > 0));
  assert(h.busy != holder::use::waiting || !h.holds_any());
  assert(writers_waiting_ >= 0 && sleepers_ >= 0 && bindings_ >= 0);
  assert(!h.gate_closed || h.readers > 0);
  check_backend();
#else
  static_cast<void>(h);
#endif
}

}  // namespace fasteners::detail::engine
