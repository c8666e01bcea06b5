// A lock object: binding to its lock's state, acquiring, releasing, and forgetting after fork().
#include "engine/lock_object.hpp"

#include <algorithm>
#include <chrono>
#include <new>
#include <utility>
#include <vector>

#include "engine/async_thread.hpp"
#include "engine/fork.hpp"
#include "engine/thread_pool.hpp"

namespace fasteners::detail::engine {
namespace {

// Where a child of fork() keeps the states its lock objects were bound to in the parent. They are
// never used or destroyed: another thread of the parent may have held their mutexes.
void keep_parents_state(std::shared_ptr<lock_state> state) {
  static auto* const kept = new std::vector<std::shared_ptr<lock_state>>;
  static object_mutex mu;
  object_lock lock(mu);
  kept->push_back(std::move(state));
}

std::size_t slot(lock_mode mode) { return mode == lock_mode::shared ? 0 : 1; }

}  // namespace

lock_object::~lock_object() = default;

void lock_object::release_all() noexcept {
  end_async();
  for (const auto mode : {lock_mode::exclusive, lock_mode::shared}) {
    // An error needs no report: the backend drops the lock with its holder anyway.
    try {
      while (release_pinned(mode).found) {
      }
    } catch (...) {
    }
  }
  if (lock_state* const state = pin()) state->leave(*this);
  std::vector<std::shared_ptr<lock_state>> gone;  // Dropped after the lock.
  object_lock lock(mu_);
  gone.swap(retired_);
}

bool lock_object::acquire(lock_mode mode, deadline until) {
  for (;;) {
    lock_state* const state = begin_acquire();
    // The state ends the acquire, and with it perhaps the binding, which the caller drops: it may
    // be the last reference to the state.
    std::shared_ptr<lock_state> unbound;
    const auto result = state->acquire(*this, holder_in(*state), mode, until, unbound);
    if (unbound) {
      unbound.reset();
      this->unbound();
    }
    if (result != outcome::start_again) return result == outcome::taken;
  }
}

async_acquisition lock_object::acquire_async(lock_mode mode, deadline until,
                                             async_handler handler) {
  // A deadline already passed means one try, as for the blocking calls.
  if (until != no_deadline && until != try_once && std::chrono::steady_clock::now() >= until) {
    until = try_once;
  }
  // The thread that runs the handler must exist before anything is under way.
  if (const auto error = async_thread::begin()) {
    fail(error, "start an asynchronous acquisition of",
         "the library's thread for asynchronous acquisitions could not be started");
  }
  std::shared_ptr<async_request> r;
  try {
    r = std::make_shared<async_request>(*this, mode, until, std::move(handler));
  } catch (...) {
    async_thread::end_unused();
    throw;
  }
  bool leaving = false;
  {
    object_lock lock(mu_);
    forget_if_stale();
    if (async_generation_ != fork_generation()) {
      async_generation_ = fork_generation();
      async_.clear();
      live_async_.store(0, std::memory_order_relaxed);
    }
    leaving = leaving_;
    // Forgets the acquisitions decided since, so that the list does not grow.
    async_.erase(std::remove_if(async_.begin(), async_.end(),
                                [](const std::weak_ptr<async_request>& w) {
                                  const auto x = w.lock();
                                  return !x || x->decided();
                                }),
                 async_.end());
    if (!leaving) async_.push_back(r);
  }
  live_async_.fetch_add(1, std::memory_order_acq_rel);
  async_acquisition result(r);
  if (leaving) {
    r->decide(std::make_error_code(std::errc::operation_canceled));
    async_thread::complete(r);
  } else {
    start_async(r);
  }
  return result;
}

void lock_object::start_async(const std::shared_ptr<async_request>& r) noexcept {
  if (!is_bound() && binding_may_block()) {
    auto* job = new (std::nothrow) std::shared_ptr<async_request>(r);
    const auto run = [](void* arg) {
      const std::unique_ptr<std::shared_ptr<async_request>> mine(
          static_cast<std::shared_ptr<async_request>*>(arg));
      (*mine)->owner.bind_async(*mine);
    };
    if (job != nullptr && !run_on_pool_thread(run, job)) return;
    delete job;  // No thread: bind here after all.
  }
  bind_async(r);
}

void lock_object::bind_async(const std::shared_ptr<async_request>& r) noexcept {
  lock_state* state = nullptr;
  try {
    state = begin_acquire();
  } catch (const std::system_error& e) {
    r->decide(e.code());
  } catch (...) {
    r->decide(std::make_error_code(std::errc::not_enough_memory));
  }
  if (state == nullptr) {
    async_thread::complete(r);
    return;
  }
  std::shared_ptr<lock_state> shared;
  {
    object_lock lock(mu_);
    shared = bound_;  // begin_acquire() bound it; the acquire under way keeps it so.
  }
  r->move_to(shared);
  state->enqueue_async(r, holder_in(*state));
}

void lock_object::restart_async(const std::shared_ptr<async_request>& r) noexcept {
  start_async(r);
}

void lock_object::after_async(async_request& r) noexcept {
  if (!r.unbound) return;
  r.unbound.reset();
  unbound();
}

bool lock_object::cancel_async(const std::shared_ptr<async_request>& r) noexcept {
  if (r->generation != fork_generation()) return false;  // The parent's: not this process's.
  if (!r->decide(std::make_error_code(std::errc::operation_canceled))) return false;
  // Queued: the state takes it out. Otherwise it is on its way to the async thread, which runs
  // its handler (or binding anew), and finds it decided.
  if (auto state = r->where()) state->withdraw(r);
  return true;
}

void lock_object::end_async() noexcept {
  std::vector<std::shared_ptr<async_request>> pending;
  {
    object_lock lock(mu_);
    leaving_ = true;
    if (async_generation_ != fork_generation()) {
      // Every acquisition was the parent's.
      async_.clear();
      live_async_.store(0, std::memory_order_relaxed);
    }
    for (const auto& w : async_) {
      if (auto r = w.lock()) pending.push_back(std::move(r));
    }
    async_.clear();
  }
  for (const auto& r : pending) cancel_async(r);
  pending.clear();
  if (live_async_.load(std::memory_order_acquire) > 0) {
    async_thread::wait_finished(*this, live_async_);
  }
}

lock_state::released lock_object::release_pinned(lock_mode mode) {
  lock_state* const state = pin();
  if (state == nullptr) return {};
  return state->release(*this, holder_in(*state), mode);
}

void lock_object::release(lock_mode mode) {
  auto released = release_pinned(mode);
  // When this is the last reference to the state, dropping it closes the file, which releases
  // the lock and wakes a waiter elsewhere.
  if (released.unbound) {
    released.unbound.reset();
    unbound();
  }
  if (released.found) {
    if (released.failure) std::rethrow_exception(released.failure);
    return;
  }
  bool lost = false;
  {
    object_lock lock(mu_);
    lost = lost_[slot(mode)] > 0;
    if (lost) --lost_[slot(mode)];
  }
  if (lost) fail(std::make_error_code(std::errc::connection_reset), "release", lost_reason());
  fail(std::make_error_code(std::errc::operation_not_permitted), "release",
       mode == lock_mode::shared ? "this object holds no read lock on it"
                                 : "this object does not hold it");
}

bool lock_object::holds(lock_mode mode) {
  const auto state = bound();
  return state && state->holds(*this, holder_in(*state), mode);
}

std::uint64_t lock_object::fencing_token() {
  const auto not_permitted = std::make_error_code(std::errc::operation_not_permitted);
  if (!fencing_) {
    fail(not_permitted, "read the fencing token of", "the object was made without fencing");
  }
  const auto state = bound();
  // A lost hold has no token: a session known to have ended is marked lost first.
  if (!state || !holder_alive()) {
    fail(not_permitted, "read the fencing token of", "the object does not hold it");
  }
  return state->fencing_token_of(*this, holder_in(*state));
}

bool lock_object::is_bound() {
  object_lock lock(mu_);
  forget_if_stale();
  return bound_ != nullptr;
}

bool lock_object::is_bound_or_binding() {
  object_lock lock(mu_);
  forget_if_stale();
  return bound_ != nullptr || binding_ > 0;
}

std::intptr_t lock_object::native_handle() {
  const auto state = bound();
  return state ? state->native_handle_of(*this, holder_in(*state)) : -1;
}

std::shared_ptr<lock_state> lock_object::end_acquire(const lock_state& state, bool taken) {
  object_lock lock(mu_);
  if (taken) ++holds_;
  --acquiring_;
  if (bound_.get() == &state && unbinds()) return std::move(bound_);
  return nullptr;
}

std::shared_ptr<lock_state> lock_object::end_holds(const lock_state& state, int ended) {
  object_lock lock(mu_);
  holds_ -= ended;
  --pins_;
  if (bound_.get() == &state && unbinds()) return std::move(bound_);
  return nullptr;
}

void lock_object::count_lost(int shared, int exclusive) {
  object_lock lock(mu_);
  lost_[0] += shared;
  lost_[1] += exclusive;
  holds_ -= shared + exclusive;
}

std::exception_ptr lock_object::failure(std::error_code ec, std::string_view action,
                                        std::string_view detail) const noexcept {
  try {
    fail(ec, action, detail);
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;  // Not reached: fail() throws.
}

const char* lock_object::lost_reason() const noexcept {
  return "the lock was lost while this object held it";
}

lock_state* lock_object::begin_acquire() {
  for (;;) {
    std::vector<std::shared_ptr<lock_state>> gone;  // Dropped after the lock.
    std::shared_ptr<lock_state> replaced;           // Detached and dropped after the lock.
    {
      object_lock lock(mu_);
      forget_if_stale();
      if (acquiring_ == 0) gone.swap(retired_);
      replaced = give_up_replaced();
      if (bound_) {
        ++acquiring_;
        return bound_.get();
      }
      ++binding_;
    }
    if (replaced) replaced->detach();
    std::shared_ptr<lock_state> state;
    try {
      state = find_state();
    } catch (...) {
      object_lock lock(mu_);
      --binding_;
      throw;
    }
    std::shared_ptr<lock_state> extra;  // A second binding, from a race with another thread.
    lock_state* result = nullptr;
    {
      object_lock lock(mu_);
      --binding_;
      forget_if_stale();
      if (bound_) {
        extra = std::move(state);  // Another thread bound this object meanwhile.
      } else if (state) {
        bound_ = std::move(state);
      }
      if (bound_) {
        ++acquiring_;
        result = bound_.get();
      }
    }
    if (extra) extra->detach();
    if (result != nullptr) return result;
    // The binding that find_state() saw ended meanwhile: bind anew.
  }
}

std::shared_ptr<lock_state> lock_object::give_up_replaced() {
  if (!bound_ || bound_->is_current() || holds_ != 0 || pins_ != 0) return nullptr;
  if (acquiring_ > 0) retired_.push_back(bound_);
  return std::move(bound_);
}

lock_state* lock_object::pin() {
  object_lock lock(mu_);
  forget_if_stale();
  if (!bound_) return nullptr;
  ++pins_;
  return bound_.get();
}

bool lock_object::bound_to(const lock_state& state) {
  object_lock lock(mu_);
  return bound_.get() == &state;
}

std::shared_ptr<lock_state> lock_object::bound() {
  object_lock lock(mu_);
  forget_if_stale();
  return bound_;
}

void lock_object::forget_if_stale() {
  if (!bound_ || bound_->generation() == fork_generation()) return;
  keep_parents_state(std::move(bound_));
  holds_ = 0;
  acquiring_ = 0;
  pins_ = 0;
  lost_[0] = lost_[1] = 0;
  binding_ = 0;
}

}  // namespace fasteners::detail::engine
