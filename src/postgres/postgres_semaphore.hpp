// The PostgreSQL backend of semaphores: the keys of a semaphore's name, how its users agree on N,
// and its state in this process (semaphore/semaphore_state.hpp runs the line of waiters).
//
// Keys. Each is postgres_key() of the name followed by a suffix, so that psql users can compute it
// with the SQL of fasteners/postgres.hpp, and none is the key of a postgres_lock of the same name:
//   slot i (0 <= i < N):  NAME ":semaphore slot " i
//   the turnstile:        NAME ":semaphore turnstile"
//   N, for N = 1, 2, ...: NAME ":semaphore of " N " slots"
//   the setup:            NAME ":semaphore setup"
// A slot or the turnstile is held by an exclusive session-level advisory lock on its key, so the
// server frees whatever a session held when it ends (its process died, its machine went away, an
// administrator ended it): nothing is left to clean up.
//
// N. Every session through which a process uses the semaphore (the state's main session, below)
// holds a shared lock on the key of its N for as long as it lasts. A process joins under the
// setup key's exclusive lock, held for a few round trips: it takes the shared lock on its N key,
// then looks in pg_locks for a granted lock on the key of any other N (1 to max_slots), computed by
// the server. Joiners one at a time, each sees every earlier one, so two users of different Ns
// never both join: the later fails with invalid_argument naming both numbers. The record lasts as
// long as some session uses the semaphore, and goes with the last one.
//
// Sessions. A state's main session holds the N key, takes slots and the turnstile by a try, and
// asks whether another session holds the turnstile. Each wait (for the turnstile, or the first
// waiter's wait for each slot) runs on a session of its own, taken from the state's idle sessions
// or connected for it on a thread of the library's own (engine/thread_pool.hpp), off the state's
// mutex: the wait statement is sent without waiting for its reply (session::send_lock()), and the
// async thread's poller watches the session's socket; the reply ends the wait. What a wait is
// granted stays held through its session until let go of; the session then goes back to the idle
// ones. So a process uses one connection while it holds or tries, two while its first waiter waits
// for the turnstile, and 1 + N while it waits first in line for the N slots. At most N + 2 are in
// use (the main session, the turnstile's wait, and a session per slot waited for or held through
// its wait), and at most N + 1 idle ones stay open for reuse until the state goes. A main session
// found lost (the server restarted) is replaced at the next try, connecting and joining again under
// the state's mutex: bounded by the connect timeout (postgres_options::connect_timeout).
//
// Mutex rules: a state's mutex (the engine's mu_) is taken before the table's, which is taken
// before the registry's (the list of sessions that a forked child disowns).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "fasteners/postgres.hpp"
#include "semaphore/semaphore_object.hpp"
#include "semaphore/semaphore_state.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::postgres {

class session;

// The most slots a PostgreSQL semaphore may have: its first waiter in line holds a connection per
// slot it waits for, and a server allows 100 connections by default.
inline constexpr std::size_t max_semaphore_slots = postgres_semaphore_max_slots;

// The names whose postgres_key() is the key of slot `i`, of the turnstile, of N, and of the setup.
std::string slot_key_name(const std::string& name, std::size_t i);
std::string turnstile_key_name(const std::string& name);
std::string slots_key_name(const std::string& name, std::size_t slots);
std::string setup_key_name(const std::string& name);

// A semaphore on one server and database: (system identifier, database oid, name).
using semaphore_id = std::tuple<std::string, std::string, std::string>;

// One PostgreSQL semaphore's state in this process. Thread-safe.
class pg_semaphore_state final : public semaphore::semaphore_state,
                                 public std::enable_shared_from_this<pg_semaphore_state> {
 public:
  // `main` has joined the semaphore with `slots` (see join()).
  pg_semaphore_state(semaphore_id id, std::string conninfo, const postgres_options& options,
                     std::shared_ptr<session> main, std::size_t slots);
  // Leaves the table.
  ~pg_semaphore_state() override;

  const semaphore_id& id() const noexcept { return id_; }
  // Keeps `s`, a connected session on the same database, among the idle ones (if few are idle).
  void keep_idle(std::shared_ptr<session> s) FASTENERS_EXCLUDES(mu_);

  // The state of the semaphore that `s` (connected, holding nothing) reaches, joining it if this
  // process has none; `s` becomes its main session or one of its idle ones. Returns N as the
  // server records it instead if another N is in use there (and makes no state).
  static std::shared_ptr<pg_semaphore_state> find_or_join(
      std::shared_ptr<session> s, const std::string& conninfo, const std::string& name,
      std::size_t slots, const postgres_options& options, std::size_t& recorded);

 protected:
  bool try_take(semaphore::place p) override FASTENERS_REQUIRES(mu_);
  void start_wait(semaphore::place p) override FASTENERS_REQUIRES(mu_);
  std::error_code let_go(semaphore::place p) noexcept override FASTENERS_REQUIRES(mu_);
  bool others_in_line() noexcept override FASTENERS_REQUIRES(mu_);

 private:
  class server_wait;
  struct connect_job;
  static void run_connect(void* job);

  std::size_t index_of(semaphore::place p) const { return p == semaphore::turnstile ? slots() : p; }
  std::int64_t key_of(semaphore::place p) const { return keys_[index_of(p)]; }
  // The main session, connected and joined anew if it was lost. Throws.
  session& main_session() FASTENERS_REQUIRES(mu_);
  // Starts the wait for `p` on `s`, which holds nothing.
  void send(semaphore::place p, std::shared_ptr<session> s) FASTENERS_REQUIRES(mu_);
  // The socket of the wait `w` is ready: reads its reply, and reports the wait ended once complete.
  void on_ready(server_wait& w, short revents) noexcept FASTENERS_EXCLUDES(mu_);

  const semaphore_id id_;
  const std::string conninfo_;
  const postgres_options options_;
  // The keys of the slots, then of the turnstile.
  const std::vector<std::int64_t> keys_;
  std::shared_ptr<session> main_ FASTENERS_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<session>> idle_ FASTENERS_GUARDED_BY(mu_);
  // By slot, then the turnstile: the session through which this process holds or waits for it.
  std::vector<std::shared_ptr<session>> through_ FASTENERS_GUARDED_BY(mu_);
  // By slot, then the turnstile: the wait in the server, while there is one.
  std::vector<std::shared_ptr<server_wait>> waits_ FASTENERS_GUARDED_BY(mu_);
};

// A semaphore object on a PostgreSQL database.
class pg_semaphore_object final : public semaphore::semaphore_object {
 public:
  // Throws std::invalid_argument for slots out of 1..max_semaphore_slots, an empty name or one
  // with a NUL byte. Does not connect.
  pg_semaphore_object(std::string conninfo, std::string name, std::size_t slots,
                      const postgres_options& options);
  ~pg_semaphore_object() override;

  const std::string& name() const noexcept { return name_; }
  [[noreturn]] void fail(std::error_code ec, std::string_view action,
                         std::string_view detail) const override;

 protected:
  std::shared_ptr<semaphore::semaphore_state> find_state() override;

 private:
  const std::string conninfo_;
  const std::string name_;
  const postgres_options options_;
};

}  // namespace fasteners::detail::postgres
