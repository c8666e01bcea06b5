// The PostgreSQL backend: the server's calls under the engine's rules, sessions, loss and fork.
#include "postgres/postgres_object.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <new>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "engine/fork.hpp"
#include "engine/state_registry.hpp"
#include "platform.hpp"
#include "postgres/connect.hpp"
#include "postgres/session.hpp"

namespace fasteners::detail::postgres {
namespace {

using engine::outcome;
using registry = engine::state_registry<key_id, key_state>;

// The key states of the process by (server, database, key). Never destroyed.
registry& states() {
  static auto* const r = new registry;
  return *r;
}

struct process_sessions {
  std::vector<postgres_object*> objects FASTENERS_GUARDED_BY(sessions_mu);
  // Notified when an object's connection ends. Made anew in a forked child, where the parent's
  // waiters on it do not exist.
  std::condition_variable connected FASTENERS_GUARDED_BY(sessions_mu);
};

process_sessions& sessions() {
  static auto* const s = [] {
    engine::count_forks();
    platform::at_fork(&postgres_object::prepare_fork, &postgres_object::parent_after_fork,
                      &postgres_object::child_after_fork);
    return new process_sessions;
  }();
  return *s;
}

postgres_object& object_of(engine::lock_object& owner) {
  return static_cast<postgres_object&>(owner);
}

std::string checked_name(std::string name) {
  if (name.find('\0') != std::string::npos) {
    throw std::invalid_argument("fasteners: a PostgreSQL lock name must not contain a NUL byte");
  }
  return name;
}

// The state of `id`, listed, with a binding counted there for the caller.
std::shared_ptr<key_state> attach_state(const key_id& id) {
  auto& r = states();
  for (;;) {
    if (auto found = r.attach(id)) return found;
    mutex_lock lock(r.mu);
    if (!r.lookup(id)) {
      auto made = std::make_shared<key_state>(id);
      r.put(id, made);
      return made;
    }
  }
}

// Runs `call` on the session without `mu` and thread cancellation; a failure marks `h` lost if
// the session is gone, and goes on.
template <class Call>
auto call_server(mutex& mu, engine::holder& h, session& s, Call call) FASTENERS_REQUIRES(mu) {
  std::exception_ptr failure;
  decltype(call()) result{};
  {
    const mutex_unlock unlocked(mu);
    const platform::cancellation_off no_cancel;
    try {
      result = call();
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (s.lost()) h.lost = true;
  if (failure) std::rethrow_exception(failure);
  return result;
}

}  // namespace

mutex sessions_mu(mutex::forever);

// ---- key_state ----

key_state::key_state(key_id id) : id_(std::move(id)) {
  bind();  // For the object that made it.
}

template <class Call>
bool key_state::use_holder(engine::holder& h, Call call) {
  mutex_lock lock(mu_);
  while (h.busy == engine::holder::use::brief) sleep(no_deadline);
  if (h.lost) return false;
  if (h.busy == engine::holder::use::waiting) return true;  // In use: it answers meanwhile.
  h.busy = engine::holder::use::brief;
  bool result = false;
  {
    const mutex_unlock unlocked(mu_);
    result = call();
  }
  h.busy = engine::holder::use::idle;
  if (!result) h.lost = true;
  notify();
  return result;
}

void key_state::settle(engine::holder& h, bool reset) {
  if (generation() != engine::fork_generation()) {
    if (reset) h = engine::holder{};  // The parent's state: none of its threads runs here.
    return;
  }
  mutex_lock lock(mu_);
  while (h.busy != engine::holder::use::idle) sleep(no_deadline);
  if (reset) h = engine::holder{};
}

outcome key_state::request(engine::holder& h, lock_mode mode, deadline until,
                           engine::lock_object& owner) {
  session& s = object_of(owner).current_session();
  const bool taken = call_server(mu_, h, s, [&] { return s.lock(std::get<2>(id_), mode, until); });
  return taken ? outcome::taken : outcome::not_taken;
}

outcome key_state::try_lock(engine::holder& h, lock_mode mode, engine::lock_object& owner) {
  return request(h, mode, try_once, owner);
}

outcome key_state::wait_lock(engine::holder& h, lock_mode mode, deadline until,
                             engine::lock_object& owner) {
  return request(h, mode, until, owner);
}

std::exception_ptr key_state::unlock(engine::holder& h, lock_mode mode, engine::lock_object& owner,
                                     bool unbinding) {
  static_cast<void>(unbinding);  // A session ends after the release (see unbound()).
  session& s = object_of(owner).current_session();
  try {
    call_server(mu_, h, s, [&] {
      s.unlock(std::get<2>(id_), mode);
      return true;
    });
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

bool key_state::writer_waiting_elsewhere(engine::holder& h, const engine::lock_object& owner) {
  session& s = object_of(const_cast<engine::lock_object&>(owner)).current_session();
  return call_server(mu_, h, s, [&] { return s.writer_waiting(std::get<2>(id_)); });
}

std::intptr_t key_state::handle_of(engine::holder& h, const engine::lock_object& owner) {
  if (h.lost) return -1;
  return object_of(const_cast<engine::lock_object&>(owner)).current_session().socket();
}

void key_state::on_unbind() {
  if (bindings() > 0) return;
  mark_replaced();
  auto& r = states();
  mutex_lock lock(r.mu);
  r.erase(id_, *this);
}

// ---- postgres_object ----

postgres_object::postgres_object(std::string conninfo, std::string name,
                                 const postgres_options& options)
    : conninfo_(std::move(conninfo)),
      name_(checked_name(std::move(name))),
      key_(postgres_key(name_)),
      options_(options) {
  auto& s = sessions();
  mutex_lock lock(sessions_mu);
  s.objects.push_back(this);
}

postgres_object::~postgres_object() {
  const platform::cancellation_off no_cancel;
  release_all();
  std::unique_ptr<session> gone;  // Closed after the mutex.
  auto& s = sessions();
  mutex_lock lock(sessions_mu);
  s.objects.erase(std::find(s.objects.begin(), s.objects.end(), this));
  gone = std::move(session_);
  state_.reset();
}

std::shared_ptr<engine::lock_state> postgres_object::find_state() {
  const platform::cancellation_off no_cancel;
  mutex_lock lock(sessions_mu);
  while (connecting_) sessions_mu.wait(sessions().connected);
  // A release that ended the binding may still use the session: it ends first.
  if (state_) state_->settle(holder_, false);
  if (!session_ || session_->lost()) return connect();
  auto state = attach_state(state_->id());
  if (state != state_) {
    state_->settle(holder_, true);
    state_ = state;
  }
  return state;
}

std::shared_ptr<key_state> postgres_object::connect() {
  if (state_) state_->settle(holder_, true);
  std::unique_ptr<session> old = std::move(session_);
  std::unique_ptr<session> made;
  std::exception_ptr failure;
  connecting_ = true;
  {
    const mutex_unlock unlocked(sessions_mu);
    old.reset();
    try {
      made = std::make_unique<session>(conninfo_, options_, name_);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  connecting_ = false;
  sessions().connected.notify_all();
  if (failure) std::rethrow_exception(failure);
  const auto& id = made->identity();
  session_ = std::move(made);
  state_ = attach_state(key_id(id.system, id.database, key_));
  return state_;
}

engine::holder& postgres_object::holder_in(engine::lock_state&) { return holder_; }

bool postgres_object::stays_bound(const engine::lock_state&) const {
  // The holder's own fields, read under the bound state's mutex, where the engine asks.
  return !options_.close_on_release && !holder_.lost;
}

const char* postgres_object::lost_reason() const noexcept {
  return "the session ended while holding it: the lock was lost";
}

session& postgres_object::current_session() noexcept FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // Set while the object is bound, and replaced only by find_state() and unbound(), which run
  // while it is not.
  return *session_;
}

void postgres_object::unbound() noexcept {
  if (!options_.close_on_release) return;
  std::unique_ptr<session> gone;  // Closed after the mutex.
  mutex_lock lock(sessions_mu);
  // Another thread may have bound the object again meanwhile, with this session.
  if (connecting_ || is_bound() || !state_) return;
  state_->settle(holder_, true);
  gone = std::move(session_);
  state_.reset();
}

bool postgres_object::session_alive() noexcept {
  const platform::cancellation_off no_cancel;
  std::shared_ptr<key_state> state;
  {
    mutex_lock lock(sessions_mu);
    if (!session_ || connecting_) return false;
    state = state_;
  }
  if (state->generation() != engine::fork_generation()) return false;
  return state->use_holder(holder_, [this] { return current_session().alive(); });
}

std::string postgres_object::where() const { return describe_target(conninfo_); }

void postgres_object::fail(std::error_code ec, std::string_view action,
                           std::string_view detail) const {
  std::string why(detail);
  if (why.empty() && ec == std::errc::connection_reset) {
    why = "the session has ended, and the lock was lost with it";
  }
  std::string message = "fasteners: cannot " + std::string(action) + " lock '" + name_ + "' on " +
                        where() + (why.empty() ? "" : ": " + why);
  throw std::system_error(ec, message);
}

void postgres_object::prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  sessions_mu.lock();
  states().mu.lock();
}

void postgres_object::parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  states().mu.unlock();
  sessions_mu.unlock();
}

void postgres_object::child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The sessions are the parent's: nothing this process does (exit included) may reach them. The
  // objects' states are the parent's too; lock objects forget them (see engine::lock_object).
  auto& s = sessions();
  for (postgres_object* o : s.objects) {
    if (o->session_) o->session_->disown();
    o->connecting_ = false;
  }
  // In the same place, without destroying the parent's one (whose waiters are not here).
  new (&s.connected) std::condition_variable;
  states().clear();
  states().mu.unlock();
  sessions_mu.unlock();
}

}  // namespace fasteners::detail::postgres
