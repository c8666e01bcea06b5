// The PostgreSQL backend of semaphores: keys, joining (N), the sessions of waits, fork, and
// fasteners::postgres_semaphore.
#include "postgres/postgres_semaphore.hpp"

#include <poll.h>

#include <algorithm>
#include <map>
#include <new>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "engine/async_thread.hpp"
#include "engine/fork.hpp"
#include "engine/thread_pool.hpp"
#include "platform.hpp"
#include "postgres/connect.hpp"
#include "postgres/session.hpp"

namespace fasteners::detail::postgres {

using semaphore::place;
using semaphore::turnstile;

// A wait in the server for a slot or the turnstile, on a session of its own: the async thread's
// poller watches its socket and calls ready() until the reply is complete. Its fields are guarded
// by the state's mutex; it keeps the state alive until it ends.
class pg_semaphore_state::server_wait final : public engine::async_thread::fd_watcher {
 public:
  server_wait(std::shared_ptr<pg_semaphore_state> of, place waited)
      : state(std::move(of)), p(waited) {}
  void ready(short revents) noexcept override { state->on_ready(*this, revents); }

  const std::shared_ptr<pg_semaphore_state> state;
  const place p;
  std::uint64_t watch = 0;
  short events = POLLIN;
};

// A session to connect off the state's mutex, on a pool thread, for the wait for `p`.
struct pg_semaphore_state::connect_job {
  std::shared_ptr<pg_semaphore_state> state;
  place p;
};

namespace {

// ---- The sessions of semaphores, for fork(). ----

// Every session that semaphores use, so that a forked child disowns them all (the child never
// destroys the parent's states, but nothing it does may reach the parent's sessions).
struct session_list {
  mutex mu{mutex::forever};
  std::vector<session*> sessions FASTENERS_GUARDED_BY(mu);
};

session_list& session_registry() {
  static auto* const r = new session_list;
  return *r;
}

// A new session of a semaphore (connecting, within the connect timeout), listed until destroyed.
std::shared_ptr<session> open_session(const std::string& conninfo, const postgres_options& options,
                                      const std::string& name) {
  auto made = std::make_unique<session>(conninfo, options, name);
  auto& r = session_registry();
  {
    mutex_lock lock(r.mu);
    r.sessions.push_back(made.get());
  }
  return std::shared_ptr<session>(made.release(), [](session* s) {
    {
      auto& list = session_registry();
      mutex_lock lock(list.mu);
      list.sessions.erase(std::find(list.sessions.begin(), list.sessions.end(), s));
    }
    delete s;
  });
}

// ---- The semaphores of this process. ----

struct table_type {
  mutex mu{mutex::forever};
  std::map<semaphore_id, std::weak_ptr<pg_semaphore_state>> states FASTENERS_GUARDED_BY(mu);
};

table_type& table() {
  static auto* const t = new table_type;
  return *t;
}

std::shared_ptr<pg_semaphore_state> lookup(table_type& t, const semaphore_id& id)
    FASTENERS_REQUIRES(t.mu) {
  const auto it = t.states.find(id);
  return it != t.states.end() ? it->second.lock() : nullptr;
}

// fork(): the child forgets the parent's states (its objects leak them, see semaphore_object) and
// disowns the parent's sessions, which it keeps, never used nor closed.
void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  table().mu.lock();
  session_registry().mu.lock();
}
void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  session_registry().mu.unlock();
  table().mu.unlock();
}
void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& r = session_registry();
  for (session* s : r.sessions) s->disown();
  r.sessions.clear();
  auto& t = table();
  // Leaked, not destroyed: the weak references count against the parent's control blocks.
  static_cast<void>(new decltype(t.states)(std::move(t.states)));
  t.states.clear();
  r.mu.unlock();
  t.mu.unlock();
}

void install_fork_handlers() {
  static const bool installed = [] {
    engine::count_forks();
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return true;
  }();
  static_cast<void>(installed);
}

// ---- Keys and joining. ----

constexpr std::string_view slot_suffix = ":semaphore slot ";
constexpr std::string_view turnstile_suffix = ":semaphore turnstile";
constexpr std::string_view slots_prefix = ":semaphore of ";
constexpr std::string_view slots_suffix = " slots";
constexpr std::string_view setup_suffix = ":semaphore setup";

std::string hex_of(const std::string& bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    hex += digits[byte >> 4];
    hex += digits[byte & 15];
  }
  return hex;
}

// Joins the users of semaphore `name` through `s`, which keeps a shared lock on the key of `slots`
// from now on (see the top of postgres_semaphore.hpp). Returns `slots`; or another N that a session
// holds the key of, and then `s` holds nothing. Throws std::system_error as session::lock().
std::size_t join(session& s, const std::string& name, std::size_t slots) {
  const std::int64_t setup = postgres_key(setup_key_name(name));
  s.lock(setup, lock_mode::exclusive, no_deadline);
  // The key of every other N, as fasteners/postgres.hpp computes a key, against the advisory locks
  // granted in this database (pg_locks shows a bigint key's high and low 32 bits).
  const std::string other_n =
      "SELECT coalesce(min(k.n), 0)::text FROM (SELECT n, ('x' || left(encode(sha256(decode('" +
      hex_of(name) + "', 'hex') || convert_to('" + std::string(slots_prefix) + "' || n || '" +
      std::string(slots_suffix) +
      "', 'UTF8')), 'hex'), 16))::bit(64)::bigint AS key FROM generate_series(1, " +
      std::to_string(max_semaphore_slots) + ") AS n WHERE n <> " + std::to_string(slots) +
      ") AS k JOIN (SELECT (classid::bigint << 32) | objid::bigint AS key FROM pg_catalog.pg_locks "
      "WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND database = (SELECT oid FROM "
      "pg_catalog.pg_database WHERE datname = pg_catalog.current_database())) AS l ON k.key = "
      "l.key";
  std::size_t recorded = slots;
  const std::int64_t own = postgres_semaphore_slots_key(name, slots);
  if (!s.lock(own, lock_mode::shared, try_once)) {
    throw_error(std::errc::resource_unavailable_try_again, "join the semaphore", name, s.where(),
                "another session holds the key of its number of slots exclusively");
  }
  const auto row = s.run_own(other_n, "join the semaphore");
  if (!row.empty() && row[0] != "0") recorded = std::stoul(row[0]);
  // Refused: its key goes before the next joiner looks, who must not see this N.
  if (recorded != slots) s.unlock(own, lock_mode::shared);
  s.unlock(setup, lock_mode::exclusive);
  return recorded;
}

std::vector<std::int64_t> keys_of(const std::string& name, std::size_t slots) {
  std::vector<std::int64_t> keys;
  for (std::size_t i = 0; i < slots; ++i) keys.push_back(postgres_semaphore_slot_key(name, i));
  keys.push_back(postgres_semaphore_turnstile_key(name));
  return keys;
}

std::error_code code_of(std::exception_ptr failure) noexcept {
  try {
    std::rethrow_exception(std::move(failure));
  } catch (const std::system_error& e) {
    return e.code();
  } catch (const std::bad_alloc&) {
    return std::make_error_code(std::errc::not_enough_memory);
  } catch (...) {
    return std::make_error_code(std::errc::io_error);
  }
}

}  // namespace

std::string slot_key_name(const std::string& name, std::size_t i) {
  return name + std::string(slot_suffix) + std::to_string(i);
}

std::string turnstile_key_name(const std::string& name) {
  return name + std::string(turnstile_suffix);
}

std::string slots_key_name(const std::string& name, std::size_t slots) {
  return name + std::string(slots_prefix) + std::to_string(slots) + std::string(slots_suffix);
}

std::string setup_key_name(const std::string& name) { return name + std::string(setup_suffix); }

// ---- pg_semaphore_state ----

pg_semaphore_state::pg_semaphore_state(semaphore_id id, std::string conninfo,
                                       const postgres_options& options,
                                       std::shared_ptr<session> main, std::size_t slots)
    : semaphore_state(slots),
      id_(std::move(id)),
      conninfo_(std::move(conninfo)),
      options_(options),
      keys_(keys_of(std::get<2>(id_), slots)),
      main_(std::move(main)),
      through_(slots + 1),
      waits_(slots + 1) {}

pg_semaphore_state::~pg_semaphore_state() {
  if (generation() != engine::fork_generation()) return;
  auto& t = table();
  mutex_lock lock(t.mu);
  const auto it = t.states.find(id_);
  if (it != t.states.end() && it->second.expired()) t.states.erase(it);
}

void pg_semaphore_state::keep_idle(std::shared_ptr<session> s) {
  mutex_lock lock(mu_);
  if (idle_.size() <= slots()) idle_.push_back(std::move(s));
}

std::shared_ptr<pg_semaphore_state> pg_semaphore_state::find_or_join(
    std::shared_ptr<session> s, const std::string& conninfo, const std::string& name,
    std::size_t slots, const postgres_options& options, std::size_t& recorded) {
  install_fork_handlers();
  const semaphore_id id(s->identity().system, s->identity().database, name);
  auto& t = table();
  std::shared_ptr<pg_semaphore_state> found;
  {
    mutex_lock lock(t.mu);
    found = lookup(t, id);
  }
  if (found) {
    found->keep_idle(std::move(s));
    recorded = found->slots();
    return found;
  }
  recorded = join(*s, name, slots);
  if (recorded != slots) return nullptr;
  mutex_lock lock(t.mu);
  // Another thread may have joined meanwhile: its state serves; `s` closes after the mutex.
  if (auto other = lookup(t, id)) return other;
  auto state = std::make_shared<pg_semaphore_state>(id, conninfo, options, std::move(s), slots);
  t.states[id] = state;
  return state;
}

session& pg_semaphore_state::main_session() {
  if (main_->alive()) return *main_;
  // Lost: a slot held through it was lost with it, and its release says so (see let_go()).
  const std::string& name = std::get<2>(id_);
  auto s = open_session(conninfo_, options_, name);
  const std::size_t recorded = join(*s, name, slots());
  if (recorded != slots()) {
    throw_error(std::errc::invalid_argument, "join the semaphore", name, s->where(),
                "it has " + std::to_string(recorded) + " slots, not " + std::to_string(slots()) +
                    " as this process says");
  }
  main_ = std::move(s);
  return *main_;
}

bool pg_semaphore_state::try_take(place p) {
  session& s = main_session();
  if (!s.lock(key_of(p), lock_mode::exclusive, try_once)) return false;
  through_[index_of(p)] = main_;
  return true;
}

void pg_semaphore_state::start_wait(place p) {
  while (!idle_.empty()) {
    std::shared_ptr<session> s = std::move(idle_.back());
    idle_.pop_back();
    if (s->alive()) return send(p, std::move(s));
  }
  // No idle session: one is connected on a pool thread, which then starts the wait.
  auto job = std::make_unique<connect_job>(connect_job{shared_from_this(), p});
  if (const auto error = engine::run_on_pool_thread(&run_connect, job.get())) {
    throw std::system_error(error, "fasteners: no thread could be started to connect for a wait");
  }
  job.release();
}

void pg_semaphore_state::run_connect(void* arg) {
  std::unique_ptr<connect_job> job(static_cast<connect_job*>(arg));
  const platform::cancellation_off no_cancel;
  std::shared_ptr<session> s;
  std::exception_ptr failure;
  try {
    s = open_session(job->state->conninfo_, job->state->options_, std::get<2>(job->state->id_));
  } catch (...) {
    failure = std::current_exception();
  }
  const auto state = std::move(job->state);
  {
    mutex_lock lock(state->mu_);
    if (!failure) {
      try {
        state->send(job->p, std::move(s));
      } catch (...) {
        failure = std::current_exception();
      }
    }
    if (failure) state->wait_ended(job->p, code_of(failure));
  }
  // `state` goes last: it may be the last reference.
}

void pg_semaphore_state::send(place p, std::shared_ptr<session> s) {
  auto w = std::make_shared<server_wait>(shared_from_this(), p);
  // On failure `s` closes: what it sent is unknown.
  w->watch = send_watched_lock(*s, key_of(p), lock_mode::exclusive, w, w->events);
  through_[index_of(p)] = std::move(s);
  waits_[index_of(p)] = std::move(w);
}

void pg_semaphore_state::on_ready(server_wait& w, short revents) noexcept {
  std::shared_ptr<session> gone;  // Closed after the mutex.
  mutex_lock lock(mu_);
  const std::size_t i = index_of(w.p);
  if (waits_[i].get() != &w) return;
  session& s = *through_[i];
  if (!read_watched_reply(s, w.watch, w.events, revents)) return;
  waits_[i].reset();  // The poller's call holds `w` still.
  std::error_code error;
  try {
    s.take_lock_reply();
  } catch (...) {
    error = code_of(std::current_exception());
  }
  if (error) {
    gone = std::move(through_[i]);
    if (!gone->lost() && idle_.size() <= slots()) idle_.push_back(std::move(gone));
  }
  // Granted: held through the wait's session until let go of (perhaps at once).
  wait_ended(w.p, error);
}

std::error_code pg_semaphore_state::let_go(place p) noexcept {
  std::shared_ptr<session> s = std::move(through_[index_of(p)]);
  if (!s) return {};
  std::error_code error;
  try {
    s->unlock(key_of(p), lock_mode::exclusive);
  } catch (...) {
    error = code_of(std::current_exception());
  }
  if (s != main_ && !s->lost() && idle_.size() <= slots()) {
    try {
      idle_.push_back(std::move(s));
    } catch (const std::bad_alloc&) {
      // Closed instead.
    }
  }
  return error;
}

bool pg_semaphore_state::others_in_line() noexcept {
  // None of this process's sessions holds the turnstile when the engine asks.
  try {
    return main_session().held_elsewhere(key_of(turnstile));
  } catch (...) {
    return false;  // The try that follows says what failed.
  }
}

// ---- pg_semaphore_object ----

namespace {

std::string checked_name(std::string name) {
  if (name.empty()) throw std::invalid_argument("fasteners: the semaphore's name is empty");
  if (name.find('\0') != std::string::npos) {
    throw std::invalid_argument(
        "fasteners: a PostgreSQL semaphore name must not contain a NUL byte");
  }
  return name;
}

std::size_t checked_slots(std::size_t slots) {
  if (slots == 0 || slots > max_semaphore_slots) {
    throw std::invalid_argument("fasteners: a PostgreSQL semaphore has 1 to " +
                                std::to_string(max_semaphore_slots) + " slots, not " +
                                std::to_string(slots));
  }
  return slots;
}

}  // namespace

pg_semaphore_object::pg_semaphore_object(std::string conninfo, std::string name, std::size_t slots,
                                         const postgres_options& options)
    : semaphore_object(checked_slots(slots)),
      conninfo_(std::move(conninfo)),
      name_(checked_name(std::move(name))),
      options_(options) {}

pg_semaphore_object::~pg_semaphore_object() {
  const platform::cancellation_off no_cancel;
  release_all();
}

void pg_semaphore_object::fail(std::error_code ec, std::string_view action,
                               std::string_view detail) const {
  std::string why(detail);
  if (why.empty() && ec == std::errc::connection_reset) {
    why = "the session has ended, and the slot was lost with it";
  }
  throw std::system_error(ec, "fasteners: cannot " + std::string(action) + " the semaphore '" +
                                  name_ + "' on " + describe_target(conninfo_) +
                                  (why.empty() ? "" : ": " + why));
}

std::shared_ptr<semaphore::semaphore_state> pg_semaphore_object::find_state() {
  const platform::cancellation_off no_cancel;
  std::size_t recorded = 0;
  auto state = pg_semaphore_state::find_or_join(open_session(conninfo_, options_, name_), conninfo_,
                                                name_, slots(), options_, recorded);
  if (!state) {
    fail(std::make_error_code(std::errc::invalid_argument), "acquire a slot of",
         "it has " + std::to_string(recorded) + " slots, not " + std::to_string(slots()) +
             " as this object says");
  }
  return state;
}

}  // namespace fasteners::detail::postgres

namespace fasteners {

std::int64_t postgres_semaphore_slot_key(std::string_view name, std::size_t slot) {
  return postgres_key(detail::postgres::slot_key_name(std::string(name), slot));
}

std::int64_t postgres_semaphore_turnstile_key(std::string_view name) {
  return postgres_key(detail::postgres::turnstile_key_name(std::string(name)));
}

std::int64_t postgres_semaphore_slots_key(std::string_view name, std::size_t slots) {
  return postgres_key(detail::postgres::slots_key_name(std::string(name), slots));
}

postgres_semaphore::postgres_semaphore(std::string conninfo, std::string name, std::size_t slots,
                                       const postgres_options& options)
    : semaphore_core(std::make_unique<detail::postgres::pg_semaphore_object>(
          std::move(conninfo), std::move(name), slots, options)) {}

const std::string& postgres_semaphore::name() const noexcept {
  static const std::string moved_from;
  const auto* o = static_cast<const detail::postgres::pg_semaphore_object*>(object());
  return o != nullptr ? o->name() : moved_from;
}

}  // namespace fasteners
