// The PostgreSQL backend: the server's calls under the engine's rules, sessions, loss and fork.
#include "postgres/postgres_object.hpp"

#include <poll.h>

#include <algorithm>
#include <cassert>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <new>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "engine/async_thread.hpp"
#include "engine/fork.hpp"
#include "engine/state_registry.hpp"
#include "engine/thread_pool.hpp"
#include "platform.hpp"
#include "postgres/connect.hpp"
#include "postgres/session.hpp"

namespace fasteners::detail::postgres {

// A wait in the server for an asynchronous acquisition (key_state::start_wait()): the wait
// statement in flight on an object's session. While it waits, the async thread's poller watches
// the session's socket for its reply; once the engine gives it up, a drain thread settles it. The
// fields are guarded by the state's mutex; the object and its session outlive the wait (the
// object's destruction waits until its holder is idle).
class server_wait final : public engine::async_thread::fd_watcher {
 public:
  enum class phase { waiting, draining, done };

  server_wait(std::shared_ptr<key_state> of, postgres_object& by, lock_mode wanted)
      : state(std::move(of)), object(by), mode(wanted) {}
  void ready(short revents) noexcept override { state->on_ready(*this, revents); }

  const std::shared_ptr<key_state> state;  // Kept alive for the poller's and the drain's calls.
  postgres_object& object;
  const lock_mode mode;
  phase step = phase::waiting;
  std::uint64_t watch = 0;  // The poller's watch, while waiting.
  short events = 0;         // What the watch waits for.
};

// The watch for a loss of what a holding, idle session holds (postgres_options::on_lost): the
// async thread's poller watches the session's socket while the object holds and no call uses the
// session. Its fields are guarded by the state's mutex; the holder's `loss` points at it while it
// watches. The object outlives the watch: its destruction ends the watch under the state's mutex,
// and a poller's call that was under way then finds it ended before it looks at the holder.
class loss_watch final : public engine::async_thread::fd_watcher {
 public:
  loss_watch(std::shared_ptr<key_state> of, session_holder& h, std::shared_ptr<loss_gate> g)
      : state(std::move(of)), holder(h), gate(std::move(g)) {}
  void ready(short revents) noexcept override { state->on_loss_ready(*this, revents); }

  const std::shared_ptr<key_state> state;  // Kept alive for the poller's calls.
  session_holder& holder;
  const std::shared_ptr<loss_gate> gate;
  std::uint64_t watch = 0;
  bool watching = true;  // Until ended (stop_loss_watch()).
};

bool loss_gate::begin() noexcept {
  mutex_lock lock(mu_);
  if (closed_) return false;
  ++running_;
  return true;
}

void loss_gate::call() noexcept {
  {
    mutex_lock lock(mu_);
    caller_ = std::this_thread::get_id();
  }
  handler_(name_);
  mutex_lock lock(mu_);
  caller_ = std::thread::id();
  --running_;
  done_.notify_all();
}

void loss_gate::close() noexcept {
  mutex_lock lock(mu_);
  closed_ = true;
  while (running_ > 0 && caller_ != std::this_thread::get_id()) mu_.wait(done_);
}

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

// The waits that the engine gave up, to settle off every mutex (session::settle_lock() blocks),
// and the drain threads (pool threads) that settle them in turn. Never destroyed.
struct drain_queue {
  mutex mu{mutex::forever};
  std::deque<std::shared_ptr<server_wait>> waits FASTENERS_GUARDED_BY(mu);
  int threads FASTENERS_GUARDED_BY(mu) = 0;
};

// At most this many drain threads at once: a server that answers slowly holds up no more.
constexpr int max_drain_threads = 4;

drain_queue& drains() {
  static auto* const q = new drain_queue;
  return *q;
}

void drain_thread(void*) {
  auto& q = drains();
  for (;;) {
    std::shared_ptr<server_wait> w;
    {
      mutex_lock lock(q.mu);
      if (q.waits.empty()) {
        --q.threads;
        return;
      }
      w = std::move(q.waits.front());
      q.waits.pop_front();
    }
    w->state->drain(*w);
  }
}

// Queues `w` for a drain thread; false if no thread will take it (none runs, none could start).
bool queue_drain(const std::shared_ptr<server_wait>& w) noexcept {
  auto& q = drains();
  {
    mutex_lock lock(q.mu);
    try {
      q.waits.push_back(w);
    } catch (const std::bad_alloc&) {
      return false;
    }
    if (q.threads >= max_drain_threads) return true;
    ++q.threads;
  }
  // Started without the queue's mutex, which fork() takes before the pool's.
  if (!engine::run_on_pool_thread(&drain_thread, nullptr)) return true;
  mutex_lock lock(q.mu);
  --q.threads;
  const auto it = std::find(q.waits.begin(), q.waits.end(), w);
  if (q.threads > 0 || it == q.waits.end()) return true;  // A thread that runs takes it.
  q.waits.erase(it);
  return false;
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
  stop_loss_watch(h);
  h.busy = engine::holder::use::brief;
  bool result = false;
  {
    const mutex_unlock unlocked(mu_);
    result = call();
  }
  h.busy = engine::holder::use::idle;
  if (!result) h.lost = true;
  notify();
  holder_at_rest(h);
  return result;
}

bool key_state::settle(session_holder& h, bool reset) {
  if (generation() != engine::fork_generation()) {
    // The parent's state: none of its threads runs here, and its wait is the parent's (kept, see
    // postgres_object::child_after_fork()).
    if (reset) static_cast<engine::holder&>(h) = engine::holder{};
    return true;
  }
  mutex_lock lock(mu_);
  while (h.busy != engine::holder::use::idle) {
    // A wait under way is an acquire of the object's, which keeps it bound, perhaps until another
    // acquire of it ends: the caller uses that binding instead of waiting here.
    if (h.busy == engine::holder::use::waiting) return false;
    sleep(no_deadline);
  }
  if (reset) static_cast<engine::holder&>(h) = engine::holder{};
  return true;
}

outcome key_state::start_wait(engine::holder& h, lock_mode mode, engine::lock_object& owner) {
  auto& object = object_of(owner);
  auto& held = static_cast<session_holder&>(h);
  session& s = object.current_session();
  assert(object.current_state().get() == this && !held.wait);
  auto w = std::make_shared<server_wait>(object.current_state(), object, mode);
  stop_loss_watch(h);
  try {
    w->watch = send_watched_lock(s, std::get<2>(id_), mode, w, w->events);
  } catch (...) {
    if (s.lost()) h.lost = true;
    throw;
  }
  held.wait = std::move(w);
  return outcome::not_taken;
}

bool key_state::stop_wait(engine::holder& h, engine::lock_object& owner) noexcept {
  static_cast<void>(owner);
  auto& held = static_cast<session_holder&>(h);
  const std::shared_ptr<server_wait> w = held.wait;
  if (!w || w->step != server_wait::phase::waiting) return false;
  engine::async_thread::unwatch(w->watch);
  w->watch = 0;
  w->step = server_wait::phase::draining;
  if (queue_drain(w)) return true;  // The holder stays busy until drain() lets it go.
  // Nobody can settle the statement: the session is given up (closed, it lets go of everything),
  // and the object starts another.
  w->step = server_wait::phase::done;
  held.wait.reset();
  w->object.current_session().abandon();
  h.lost = true;
  return false;
}

void key_state::on_ready(server_wait& w, short revents) noexcept {
  mutex_lock lock(mu_);
  // Once the engine gave the wait up, the session is the drain's.
  if (w.step != server_wait::phase::waiting) return;
  session& s = w.object.current_session();
  if (!read_watched_reply(s, w.watch, w.events, revents)) return;
  w.step = server_wait::phase::done;
  session_holder& h = w.object.holder();
  const std::shared_ptr<server_wait> keep = std::move(h.wait);  // The caller holds `w` too.
  bool taken = false;
  std::exception_ptr failure;
  try {
    taken = s.take_lock_reply();
  } catch (...) {
    failure = std::current_exception();
  }
  if (s.lost()) h.lost = true;
  wait_ended(h, taken ? outcome::taken : outcome::not_taken, failure);
}

void key_state::drain(server_wait& w) noexcept {
  // The holder is busy: the session is this thread's until settled().
  session& s = w.object.current_session();
  {
    const platform::cancellation_off no_cancel;
    s.settle_lock();
  }
  mutex_lock lock(mu_);
  session_holder& h = w.object.holder();
  assert(w.step == server_wait::phase::draining && h.wait.get() == &w);
  w.step = server_wait::phase::done;
  const std::shared_ptr<server_wait> keep = std::move(h.wait);  // The drain thread holds `w`.
  if (s.lost()) h.lost = true;
  settled(h);
}

outcome key_state::request(engine::holder& h, lock_mode mode, deadline until,
                           engine::lock_object& owner) {
  stop_loss_watch(h);
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
  stop_loss_watch(h);
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

std::uint64_t key_state::fence(engine::holder& h, lock_mode mode, engine::lock_object& owner) {
  stop_loss_watch(h);
  session& s = object_of(owner).current_session();
  return call_server(mu_, h, s, [&] { return s.fence(std::get<2>(id_), mode); });
}

bool key_state::writer_waiting_elsewhere(engine::holder& h, const engine::lock_object& owner) {
  stop_loss_watch(h);
  session& s = object_of(const_cast<engine::lock_object&>(owner)).current_session();
  return call_server(mu_, h, s, [&] { return s.writer_waiting(std::get<2>(id_)); });
}

std::intptr_t key_state::handle_of(engine::holder& h, const engine::lock_object& owner) {
  if (h.lost) return -1;
  return object_of(const_cast<engine::lock_object&>(owner)).current_session().socket();
}

void key_state::holder_at_rest(engine::holder& h) noexcept {
  auto& held = static_cast<session_holder&>(h);
  if (held.loss || held.object == nullptr || !held.object->lost_gate() || h.lost ||
      h.busy != engine::holder::use::idle || !h.holds_any() ||
      generation() != engine::fork_generation()) {
    return;
  }
  postgres_object& object = *held.object;
  session& s = object.current_session();
  if (s.lost()) return;
  std::shared_ptr<loss_watch> w;
  try {
    w = std::make_shared<loss_watch>(object.current_state(), held, object.lost_gate());
  } catch (const std::bad_alloc&) {
    return;  // Best effort: the loss is then noticed at the next call, as without a handler.
  }
  assert(w->state.get() == this);
  w->watch = engine::async_thread::watch(s.socket(), POLLIN, w);
  if (w->watch != 0) held.loss = std::move(w);
}

void key_state::stop_loss_watch(engine::holder& h) noexcept {
  auto& held = static_cast<session_holder&>(h);
  if (!held.loss) return;
  engine::async_thread::unwatch(held.loss->watch);
  held.loss->watching = false;
  held.loss.reset();
}

void key_state::end_loss_watch(session_holder& h) noexcept {
  mutex_lock lock(mu_);
  stop_loss_watch(h);
}

void key_state::on_loss_ready(loss_watch& w, short revents) noexcept {
  std::shared_ptr<loss_gate> gate;
  {
    mutex_lock lock(mu_);
    // Ended meanwhile: a call uses the session now, or the object let go (and may be gone).
    if (!w.watching) return;
    session_holder& h = w.holder;
    assert(h.loss.get() == &w);
    assert(h.busy == engine::holder::use::idle && !h.lost);
    // A notice or a changed parameter ends nothing; the server's FATAL message, the end of the
    // connection or an error on it (keepalives unanswered) does.
    session& s = w.holder.object->current_session();
    const bool failed = (revents & (POLLERR | POLLHUP | POLLNVAL)) != 0;
    if (failed) s.abandon();
    if (!failed && s.alive()) return;
    h.lost = true;
    stop_loss_watch(h);
    notify();
    if (!w.gate->begin()) return;
    gate = w.gate;
  }
  // Acquisitions queued behind the holder bind anew now.
  pump_async();
  gate->call();
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
    : engine::lock_object(options.fencing),
      conninfo_(std::move(conninfo)),
      name_(checked_name(std::move(name))),
      key_(postgres_key(name_)),
      options_(options) {
  holder_.object = this;
  if (options_.on_lost) loss_gate_ = std::make_shared<loss_gate>(options_.on_lost, name_);
  auto& s = sessions();
  mutex_lock lock(sessions_mu);
  s.objects.push_back(this);
}

postgres_object::~postgres_object() {
  const platform::cancellation_off no_cancel;
  // No handler runs from now on (besides this thread's own, which called this).
  if (loss_gate_) loss_gate_->close();
  release_all();
  std::unique_ptr<session> gone;  // Closed after the mutex.
  auto& s = sessions();
  mutex_lock lock(sessions_mu);
  s.objects.erase(std::find(s.objects.begin(), s.objects.end(), this));
  // A wait given up as the object's acquisitions were cancelled may still be settled by a drain
  // thread, on the session. None is under way any more.
  if (state_) static_cast<void>(state_->settle(holder_, false));
  if (state_ && state_->generation() == engine::fork_generation()) {
    state_->end_loss_watch(holder_);
  }
  gone = std::move(session_);
  state_.reset();
}

std::shared_ptr<engine::lock_state> postgres_object::find_state() {
  const platform::cancellation_off no_cancel;
  mutex_lock lock(sessions_mu);
  while (connecting_) sessions_mu.wait(sessions().connected);
  // A release that ended the binding may still use the session: it ends first. An acquire that
  // another thread started on the object meanwhile bound it: the engine looks again.
  if (state_ && !state_->settle(holder_, false)) return nullptr;
  if (!session_ || session_->lost()) return connect();
  auto state = attach_state(state_->id());
  if (state != state_) {
    if (!state_->settle(holder_, true)) {
      state->detach();
      return nullptr;
    }
    state_ = state;
  }
  return state;
}

std::shared_ptr<key_state> postgres_object::connect() {
  if (state_ && !state_->settle(holder_, true)) return nullptr;
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

bool postgres_object::binding_may_block() const noexcept {
  mutex_lock lock(sessions_mu);
  return !session_ || session_->lost();
}

bool postgres_object::stays_bound(const engine::lock_state&) const {
  // The holder's own fields, read under the bound state's mutex, where the engine asks.
  return !options_.close_on_release && !holder_.lost;
}

const char* postgres_object::lost_reason() const noexcept {
  return "the session ended while holding it: the lock was lost";
}

session& postgres_object::current_session() noexcept FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // Set while the object is bound, and replaced only by find_state() and unbound(), which run
  // while it is not, and wait until its holder is idle.
  return *session_;
}

std::shared_ptr<key_state> postgres_object::current_state() noexcept
    FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  return state_;  // As current_session().
}

void postgres_object::unbound() noexcept {
  if (!options_.close_on_release) return;
  std::unique_ptr<session> gone;  // Closed after the mutex.
  mutex_lock lock(sessions_mu);
  // Another thread may have bound the object again meanwhile, with this session, or be about to
  // (its find_state() returned this state).
  if (connecting_ || is_bound_or_binding() || !state_ || !state_->settle(holder_, true)) return;
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
  drains().mu.lock();
}

void postgres_object::parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  drains().mu.unlock();
  states().mu.unlock();
  sessions_mu.unlock();
}

void postgres_object::child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The sessions are the parent's: nothing this process does (exit included) may reach them. The
  // objects' states are the parent's too; lock objects forget them (see engine::lock_object).
  auto& s = sessions();
  // What is the parent's is kept here, never used nor destroyed.
  static auto* const parents_waits = new std::vector<std::shared_ptr<server_wait>>;
  static auto* const parents_losses = new std::vector<std::shared_ptr<void>>;
  for (postgres_object* o : s.objects) {
    if (o->session_) o->session_->disown();
    o->connecting_ = false;
    // A wait in the server is the parent's, as is the state it keeps.
    if (o->holder_.wait) parents_waits->push_back(std::move(o->holder_.wait));
    // So are the watch for a loss (the poller that calls it is the parent's) and the handler's
    // gate, which a call running in the parent may have counted: the child's handler starts anew.
    if (o->holder_.loss) parents_losses->push_back(std::move(o->holder_.loss));
    if (o->loss_gate_) {
      auto fresh = std::make_shared<loss_gate>(o->loss_gate_->handler(), o->name_);
      parents_losses->push_back(std::move(o->loss_gate_));
      o->loss_gate_ = std::move(fresh);
    }
  }
  // The drain threads and what they have to do are the parent's too.
  auto& q = drains();
  for (auto& w : q.waits) parents_waits->push_back(std::move(w));
  q.waits.clear();
  q.threads = 0;
  q.mu.unlock();
  // In the same place, without destroying the parent's one (whose waiters are not here).
  new (&s.connected) std::condition_variable;
  states().clear();
  states().mu.unlock();
  sessions_mu.unlock();
}

}  // namespace fasteners::detail::postgres
