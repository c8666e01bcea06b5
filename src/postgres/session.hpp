// One database session of a PostgreSQL lock object, and the advisory-lock statements it runs.
//
// Every wait blocks in the kernel (libpq's poll on the session's socket) until the server answers;
// a timed wait sets the server's lock_timeout for that one statement, so the server ends the wait
// at the deadline and decides the race between grant and timeout itself: no cancel request, no
// polling. An asynchronous wait (send_lock()) is sent without a deadline and read when the socket
// is ready; the caller ends it with a cancel request when nobody wants it any more
// (settle_lock()). The other timeouts (statement_timeout, idle timeouts) are off for the session,
// set in its startup packet (connect.hpp), so that no server or role default can end a wait, a held
// lock or the session's own setup.
//
// A session holds its server process to itself: every lock statement runs only there (its WHERE
// compares pg_backend_pid()), and a transaction pooler, which hands server processes out per
// transaction, is refused at connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/lock_core.hpp"
#include "fasteners/postgres.hpp"
#include "postgres/connect.hpp"

struct pg_conn;
struct pg_result;

namespace fasteners::detail::engine::async_thread {
class fd_watcher;
}  // namespace fasteners::detail::engine::async_thread

namespace fasteners::detail::postgres {

// What makes two sessions' advisory locks the same: the server (its system identifier) and the
// database (its oid); keys are per database.
struct server_identity {
  std::string system;
  std::string database;
  friend bool operator<(const server_identity& a, const server_identity& b) {
    return std::tie(a.system, a.database) < std::tie(b.system, b.database);
  }
};

// A connected session. Not thread-safe: its owner (postgres_object) lets one thread at a time use
// it. Every call that talks to the server throws std::system_error naming the lock and the server:
// connection_reset when the session is gone (and then `lost()` is true), protocol_error when a
// statement reached another server process than the session's (a transaction pooler; then the
// session is lost too, and if it held locks it has ended its own server process, which frees
// them), resource_deadlock_would_occur when the server found a deadlock.
class session {
 public:
  // Connects within the options' connect timeout and prepares the session (see the top of this
  // file). `name` is for messages. Throws as connector::connect(), and protocol_error behind a
  // transaction pooler.
  session(const std::string& conninfo, const postgres_options& options, const std::string& name);
  // Ends the session, which releases anything it still holds (in a forked child, only this
  // process's copy: see disown()).
  ~session();
  session(const session&) = delete;
  session& operator=(const session&) = delete;

  // Takes one hold of `key` in `mode`: one try (try_once), a wait without limit (no_deadline), or
  // a wait until `until`. Returns whether it did.
  bool lock(std::int64_t key, lock_mode mode, deadline until);
  // Lets go of one hold of `key` in `mode`. Throws connection_reset if the server did not hold it.
  void unlock(std::int64_t key, lock_mode mode);
  // Whether a session (of any client) waits for the exclusive lock on `key`.
  bool writer_waiting(std::int64_t key);
  // Whether another session (of any client) holds the exclusive lock on `key`.
  bool held_elsewhere(std::int64_t key);
  // Runs `sql`, a query of the caller's own that takes and lets go of no session lock, and returns
  // its first row, each column as text. Throws as lock().
  std::vector<std::string> run_own(const std::string& sql, std::string_view action);
  // Lets go of every advisory lock of the session.
  void unlock_all();
  // While the session holds `key` exclusively: takes the key's next fencing token in the table
  // fasteners_fence (creating the table if it is missing), committed, and returns it. While it
  // holds `key` shared: returns the latest token (0 if none). One round trip (the first exclusive
  // one on a server without the table: three). Throws as lock(), and permission_denied naming the
  // SQL that an administrator runs when the role may not create or write the table.
  std::uint64_t fence(std::int64_t key, lock_mode mode);

  // ---- A wait that does not block the calling thread (key_state::start_wait). ----
  // One at a time, and no other call on the session from send_lock() until take_lock_reply() or
  // settle_lock(): the statement is in flight meanwhile.
  // Sends the statement that waits for `key` in `mode` without limit (the caller ends it, see
  // settle_lock()), in libpq's non-blocking mode; returns the events of socket() to wait for, as
  // poll() names them. Throws as lock().
  short send_lock(std::int64_t key, lock_mode mode);
  // Reads what came (poll() reported `revents`) without blocking. Returns whether the reply is
  // complete (then take_lock_reply()), else sets `events` to wait for.
  bool read_lock_reply(short revents, short& events) noexcept;
  // The complete reply: true, the session holds the lock. Throws as lock() otherwise.
  bool take_lock_reply() { return take_reply(false); }
  // Ends the wait in flight that nobody wants any more, blocking the calling thread: cancels the
  // statement unless its reply came, reads the reply, and lets go of the lock if the server
  // granted it all the same. If anything fails, the session counts as lost, so that it is closed
  // (which lets go of everything it holds) and never used again.
  void settle_lock() noexcept;

  // Whether the server may still have the session, asked without a round trip: false once the
  // server has told it is ending the session (or closed it), or a call found it gone.
  bool alive() noexcept;
  bool lost() const noexcept { return lost_ || disowned_; }
  // Gives the session up: it counts as lost, and is never used again (closing it lets go of
  // whatever it holds on the server).
  void abandon() noexcept { lost_ = true; }

  // After fork(), in the child: the session belongs to the parent. Points its socket at
  // /dev/null so that nothing this process does (exit included) can reach the parent's session.
  // Async-signal-safe.
  void disown() noexcept;

  const server_identity& identity() const noexcept { return identity_; }
  const std::string& where() const noexcept { return where_; }
  int socket() const noexcept;

 private:
  // Learns the session's server process and server, and prepares its statements; behind a
  // pooler, refuses transaction pooling and sets the settings the startup packet could not carry.
  void set_up(connector& connect);
  // Whether the pooler between this client and the server lends server processes per transaction
  // (see session.cpp). `connect` opens the probe's connection.
  bool pooled_per_transaction(connector& connect);
  // Runs the statements of `sql` and returns the first row of the first that returns rows, each
  // column as text; throws as described above, at the first statement that fails. A failure with
  // SQLSTATE `tolerated` sets `*hit`, if given, instead (a division by zero: see set_up).
  std::vector<std::string> run_script(const std::string& sql, std::string_view action,
                                      std::string_view tolerated = {}, bool* hit = nullptr);
  // Runs `sql` and returns the first row's columns 0 and 1 ("" if none); throws as described above.
  std::pair<std::string, std::string> run(const std::string& sql, std::string_view action);
  // Runs one of the session's prepared statements with `params` (at most three).
  std::pair<std::string, std::string> run_prepared(const char* statement,
                                                   const std::vector<std::string>& params,
                                                   std::string_view action);
  // Takes `result` (of run or run_prepared), clears it and returns its first row.
  std::pair<std::string, std::string> finish(pg_result* result, std::string_view action);
  [[noreturn]] void fail(std::string_view action, std::string_view detail, const char* sqlstate);
  // A statement reached another server process than the session's (`why` says how): the session
  // is lost; if it holds locks, its own process is ended. Throws protocol_error.
  [[noreturn]] void moved(std::string_view action, std::string_view why);
  // Ends the session's own server process, whose locks the pooler would keep lending to other
  // clients; says how that went, for the error.
  std::string end_own_process();
  // What the server's end of the session cost: "the session has ended" and whether locks went.
  std::string ended() const;
  // libpq's notice receiver: a FATAL or PANIC message while idle tells that the server is ending
  // the session.
  static void on_notice(void* self, const pg_result* notice);
  // The reply of send_lock(), as take_lock_reply(); with `cancelled`, a statement that the server
  // cancelled (query_canceled) returns false instead of throwing.
  bool take_reply(bool cancelled);
  // Whether the session holds `key` in `mode` (counted in held_ if so).
  bool holds(std::int64_t key, lock_mode mode);

  pg_conn* conn_ = nullptr;
  std::string name_;
  std::string where_;
  server_identity identity_;
  std::string backend_pid_;
  int held_ = 0;         // Advisory locks the session holds on the server.
  bool ending_ = false;  // The server said it ends the session.
  bool lost_ = false;
  bool disowned_ = false;
  // The wait in flight (send_lock()): its key and mode, whether libpq still has some of it to
  // send, and the first result of its reply once read.
  bool in_flight_ = false;
  bool flushing_ = false;
  std::int64_t wait_key_ = 0;
  lock_mode wait_mode_ = lock_mode::exclusive;
  pg_result* reply_ = nullptr;
};

// ---- A wait of send_lock() whose reply the async thread's poller awaits (async_thread.hpp). ----
// Watches the socket of `s` with `w`, then sends the wait for `key` in `mode`. Returns the watch,
// and sets `events` to what it waits for. Throws as send_lock(), with the watch ended, or
// not_enough_memory if no watch could be recorded. The caller holds the mutex that `w`'s ready()
// takes, until it has recorded the wait.
std::uint64_t send_watched_lock(session& s, std::int64_t key, lock_mode mode,
                                std::shared_ptr<engine::async_thread::fd_watcher> w, short& events);
// The socket of `s`, watched as `watch` for `events`, reported `revents`: reads what came. Returns
// whether the reply is complete, and then has ended the watch (`watch` is 0; take_lock_reply()
// follows); else points the watch at what to wait for next.
bool read_watched_reply(session& s, std::uint64_t& watch, short& events, short revents) noexcept;

}  // namespace fasteners::detail::postgres
