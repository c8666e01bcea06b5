// The in-process layer of the PostgreSQL locks: sessions per object, exclusion of this process's
// threads per key, loss of a session, and fork.
#include "postgres/postgres_object.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <vector>

#include "platform.hpp"
#include "postgres/session.hpp"

namespace fasteners::detail {
namespace postgres {

// Constant-initialized (constexpr constructor): ready before any static initializer runs.
mutex registry_mu(mutex::forever);

// A lock held in this process on a key: taken by which thread, through which object.
struct key_holding {
  std::uint64_t thread;
  const postgres_object* owner;
  lock_mode mode;
};

// One key on one server and database, as this process uses it.
struct key_state {
  std::vector<key_holding> holdings FASTENERS_GUARDED_BY(registry_mu);
  // Threads of this process that wait for the write lock: new readers here wait behind them.
  int writers_waiting FASTENERS_GUARDED_BY(registry_mu) = 0;
  int objects FASTENERS_GUARDED_BY(registry_mu) = 0;  // Bound to this state.
};

namespace {

using key_id = std::tuple<std::string, std::string, std::int64_t>;

// Everything process-wide, made once and never destroyed (objects may outlive static destruction).
struct registry {
  std::map<key_id, key_state> keys FASTENERS_GUARDED_BY(registry_mu);
  std::vector<postgres_object*> objects FASTENERS_GUARDED_BY(registry_mu);
  // Notified whenever a holding, a wait or a session's use changes. Replaced in a forked child,
  // where the parent's waiters on it do not exist.
  std::condition_variable* changed FASTENERS_GUARDED_BY(registry_mu) = new std::condition_variable;
  std::vector<std::condition_variable*> retired FASTENERS_GUARDED_BY(registry_mu);
};

registry& the_registry();

void before_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { registry_mu.lock(); }
void after_fork_in_parent() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { registry_mu.unlock(); }
void after_fork_in_child() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  registry& r = the_registry();
  for (postgres_object* o : r.objects) o->forget_after_fork();
  r.keys.clear();
  r.retired.push_back(r.changed);  // Left as it is: destroying it with waiters is undefined.
  r.changed = new std::condition_variable;
  registry_mu.unlock();
}

registry& the_registry() {
  static registry* const r = [] {
    platform::at_fork(before_fork, after_fork_in_parent, after_fork_in_child);
    return new registry;
  }();
  return *r;
}

// Names the calling thread for the whole life of the process (std::thread::id values are reused).
std::uint64_t this_thread_token() noexcept {
  static std::atomic<std::uint64_t> next{1};
  thread_local std::uint64_t token = 0;
  if (token == 0) token = next.fetch_add(1, std::memory_order_relaxed);
  return token;
}

bool holds_key(const key_state& k, std::uint64_t thread) FASTENERS_REQUIRES(registry_mu) {
  return std::any_of(k.holdings.begin(), k.holdings.end(),
                     [&](const key_holding& h) { return h.thread == thread; });
}

std::string checked_name(std::string name) {
  if (name.find('\0') != std::string::npos) {
    throw std::invalid_argument("fasteners: a PostgreSQL lock name must not contain a NUL byte");
  }
  return name;
}

}  // namespace
}  // namespace postgres

using postgres::registry_mu;

postgres_object::postgres_object(std::string conninfo, std::string name,
                                 const postgres_options& options)
    : conninfo_(std::move(conninfo)),
      name_(postgres::checked_name(std::move(name))),
      key_(postgres_key(name_)),
      options_(options) {
  postgres::registry& r = postgres::the_registry();
  mutex_lock lock(registry_mu);
  r.objects.push_back(this);
}

postgres_object::~postgres_object() {
  const platform::cancellation_off no_cancel;
  std::unique_ptr<postgres::session> doomed;
  bool held = false;
  {
    postgres::registry& r = postgres::the_registry();
    mutex_lock lock(registry_mu);
    held = holds_any();
    if (state_ != nullptr) {
      auto& hs = state_->holdings;
      hs.erase(std::remove_if(hs.begin(), hs.end(),
                              [&](const postgres::key_holding& h) { return h.owner == this; }),
               hs.end());
    }
    exclusive_held_ = false;
    shared_held_ = 0;
    unbind();
    doomed = std::move(session_);
    r.objects.erase(std::find(r.objects.begin(), r.objects.end(), this));
    r.changed->notify_all();
  }
  // Closing the session releases its locks too, but the server lets go only once its process has
  // ended: an explicit unlock makes the lock free when destruction returns.
  if (doomed && held && doomed->alive()) {
    try {
      doomed->unlock_all();
    } catch (...) {
      // The session is gone, and its locks with it.
    }
  }
}

bool postgres_object::sleep(deadline until) {
  postgres::registry& r = postgres::the_registry();
  if (until == no_deadline) {
    registry_mu.wait(*r.changed);
    return true;
  }
  if (until == try_once || std::chrono::steady_clock::now() >= until) return false;
  registry_mu.wait_until(*r.changed, until);
  return true;
}

void postgres_object::unbind() {
  if (state_ == nullptr) return;
  postgres::registry& r = postgres::the_registry();
  --state_->objects;
  if (state_->objects == 0 && state_->holdings.empty() && state_->writers_waiting == 0) {
    for (auto it = r.keys.begin(); it != r.keys.end(); ++it) {
      if (&it->second == state_) {
        r.keys.erase(it);
        break;
      }
    }
  }
  state_ = nullptr;
}

void postgres_object::connect() {
  postgres::registry& r = postgres::the_registry();
  use_ = use::brief;
  std::unique_ptr<postgres::session> s;
  std::exception_ptr error;
  registry_mu.unlock();
  try {
    s = std::make_unique<postgres::session>(conninfo_, options_, name_);
  } catch (...) {
    error = std::current_exception();
  }
  registry_mu.lock();
  use_ = use::idle;
  r.changed->notify_all();
  if (error) std::rethrow_exception(error);
  session_ = std::move(s);
  const auto& id = session_->identity();
  state_ = &r.keys[postgres::key_id(id.system, id.database, key_)];
  ++state_->objects;
}

std::unique_ptr<postgres::session> postgres_object::drop_session() {
  if (state_ != nullptr) {
    auto& hs = state_->holdings;
    hs.erase(std::remove_if(hs.begin(), hs.end(),
                            [&](const postgres::key_holding& h) { return h.owner == this; }),
             hs.end());
  }
  lost_exclusive_ += exclusive_held_ ? 1 : 0;
  lost_shared_ += shared_held_;
  exclusive_held_ = false;
  shared_held_ = 0;
  gate_closed_ = false;
  unbind();
  postgres::the_registry().changed->notify_all();
  return std::move(session_);
}

void postgres_object::record(lock_mode mode) {
  state_->holdings.push_back({postgres::this_thread_token(), this, mode});
  if (mode == lock_mode::exclusive) {
    exclusive_held_ = true;
  } else {
    ++shared_held_;
  }
}

void postgres_object::forget_holding(lock_mode mode) {
  auto& hs = state_->holdings;
  const std::uint64_t me = postgres::this_thread_token();
  auto it = std::find_if(hs.begin(), hs.end(), [&](const postgres::key_holding& h) {
    return h.owner == this && h.mode == mode && h.thread == me;
  });
  if (it == hs.end()) {
    it = std::find_if(hs.begin(), hs.end(), [&](const postgres::key_holding& h) {
      return h.owner == this && h.mode == mode;
    });
  }
  if (it != hs.end()) hs.erase(it);
}

void postgres_object::stop_counting(bool& counted_writer) {
  if (counted_writer) {
    --state_->writers_waiting;
    counted_writer = false;
    postgres::the_registry().changed->notify_all();
  }
}

template <class Call>
bool postgres_object::use_session(use how, Call call, std::unique_ptr<postgres::session>& doomed,
                                  bool* counted_writer) {
  postgres::session& s = *session_;
  use_ = how;
  bool result = false;
  std::exception_ptr error;
  registry_mu.unlock();
  try {
    result = call(s);
  } catch (...) {
    error = std::current_exception();
  }
  registry_mu.lock();
  use_ = use::idle;
  if (counted_writer != nullptr) stop_counting(*counted_writer);
  postgres::the_registry().changed->notify_all();
  if (error) {
    if (s.lost()) doomed = drop_session();
    std::rethrow_exception(error);
  }
  return result;
}

bool postgres_object::acquire(lock_mode mode, deadline until) {
  const platform::cancellation_off no_cancel;
  if (!may_wait(until)) until = try_once;
  std::unique_ptr<postgres::session> doomed;  // Closed after the mutex is let go.
  mutex_lock lock(registry_mu);
  bool counted_writer = false;  // In state_->writers_waiting.
  for (;;) {
    if (use_ != use::idle) {
      // Another thread uses this object's session; a try does not wait for a wait.
      if (use_ == use::waiting && until == try_once) return false;
      if (!sleep(until)) return false;
      continue;
    }
    if (session_ && session_->lost()) {
      stop_counting(counted_writer);
      doomed = drop_session();
    }
    if (!session_) {
      connect();
      continue;
    }
    if (until != try_once && postgres::holds_key(*state_, postgres::this_thread_token())) {
      stop_counting(counted_writer);
      postgres::throw_error(std::errc::resource_deadlock_would_occur, "wait for the", name_,
                            session_->where(),
                            "the calling thread already holds this name in this process");
    }
    bool admitted = mode == lock_mode::exclusive
                        ? !holds_any()
                        : !exclusive_held_ && !gate_closed_ && state_->writers_waiting == 0;
    if (admitted && mode == lock_mode::shared && shared_held_ > 0) {
      // Joining the session's read lock asks the server nothing, so ask whether a writer waits
      // anywhere: if one does, readers here stop joining until the read lock drops, and then
      // queue behind it in the server.
      const bool waiting = use_session(
          use::brief, [&](postgres::session& s) { return s.writer_waiting(key_); }, doomed);
      if (waiting && shared_held_ > 0) gate_closed_ = true;
      if (shared_held_ == 0) continue;  // The read lock dropped meanwhile: ask for one.
      admitted = !waiting;
    }
    if (!admitted) {
      if (until == try_once) return false;
      if (mode == lock_mode::exclusive && !counted_writer) {
        ++state_->writers_waiting;
        counted_writer = true;
      }
      if (!sleep(until)) {
        stop_counting(counted_writer);
        return false;
      }
      continue;
    }
    if (mode == lock_mode::shared && shared_held_ > 0) {
      record(mode);  // Shares the read lock the session holds.
      return true;
    }
    // Ask the server, with the session to this thread alone.
    if (mode == lock_mode::exclusive && until != try_once && !counted_writer) {
      ++state_->writers_waiting;
      counted_writer = true;
    }
    const bool granted = use_session(
        until == try_once ? use::brief : use::waiting,
        [&](postgres::session& s) { return s.lock(key_, mode, until); }, doomed, &counted_writer);
    if (granted) record(mode);
    return granted;
  }
}

void postgres_object::release(lock_mode mode) {
  const platform::cancellation_off no_cancel;
  postgres::registry& r = postgres::the_registry();
  std::unique_ptr<postgres::session> doomed;
  mutex_lock lock(registry_mu);
  // While the object holds anything its session runs only brief calls (see the top of the
  // header): wait for them.
  while (use_ == use::brief) registry_mu.wait(*r.changed);
  const bool held = mode == lock_mode::exclusive ? exclusive_held_ : shared_held_ > 0;
  if (!held) {
    int& lost = mode == lock_mode::exclusive ? lost_exclusive_ : lost_shared_;
    if (lost > 0) {
      --lost;
      postgres::throw_error(std::errc::connection_reset, "release the", name_,
                            postgres::describe_target(conninfo_),
                            "the session ended while holding it: the lock was lost");
    }
    throw std::system_error(
        std::make_error_code(std::errc::operation_not_permitted),
        "fasteners: cannot release lock '" + name_ + "': this object does not hold it");
  }
  forget_holding(mode);
  if (mode == lock_mode::shared && shared_held_ > 1) {
    --shared_held_;  // Other threads of this object still read through the session's lock.
    r.changed->notify_all();
    return;
  }
  if (mode == lock_mode::exclusive) {
    exclusive_held_ = false;
  } else {
    shared_held_ = 0;
    gate_closed_ = false;
  }
  use_session(
      use::brief,
      [&](postgres::session& s) {
        s.unlock(key_, mode);
        return true;
      },
      doomed);
  if (options_.close_on_release && !holds_any()) {
    unbind();
    doomed = std::move(session_);
  }
}

bool postgres_object::holds(lock_mode mode) noexcept {
  mutex_lock lock(registry_mu);
  if (session_ && session_->lost()) return false;  // Known lost; release() will say so.
  return mode == lock_mode::exclusive ? exclusive_held_ : shared_held_ > 0;
}

bool postgres_object::session_alive() noexcept {
  const platform::cancellation_off no_cancel;
  mutex_lock lock(registry_mu);
  if (!session_) return false;
  if (use_ != use::idle) return !session_->lost();  // In use: it answered a moment ago.
  std::unique_ptr<postgres::session> doomed;        // alive() never throws: stays empty.
  return use_session(
      use::brief, [](postgres::session& s) { return s.alive(); }, doomed);
}

std::intptr_t postgres_object::native_handle() noexcept {
  mutex_lock lock(registry_mu);
  return holds_any() && session_ ? session_->socket() : -1;
}

void postgres_object::forget_after_fork() noexcept FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  if (session_) session_->disown();
  state_ = nullptr;
  use_ = use::idle;
  exclusive_held_ = false;
  shared_held_ = 0;
  gate_closed_ = false;
  lost_exclusive_ = 0;
  lost_shared_ = 0;
}

}  // namespace fasteners::detail
