// One database session of a PostgreSQL lock object, and the advisory-lock statements it runs.
//
// Every wait blocks in the kernel (libpq's poll on the session's socket) until the server answers;
// a timed wait sets the server's lock_timeout for that one statement, so the server ends the wait
// at the deadline and decides the race between grant and timeout itself: no cancel request, no
// polling. The statement's other settings (statement_timeout, idle timeouts) are turned off for the
// session, so that a server or role default cannot end a wait or a held lock.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "deadline.hpp"
#include "fasteners/detail/file_lock.hpp"
#include "fasteners/postgres.hpp"

struct pg_conn;
struct pg_result;

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

// Where a conninfo points, for messages: "host H port P database D" with what it sets (never a
// password); libpq's defaults fill in the rest.
std::string describe_target(const std::string& conninfo);

// Throws std::system_error(e) with "fasteners: cannot <action> lock '<name>' on <where>: <detail>".
[[noreturn]] void throw_error(std::errc e, std::string_view action, const std::string& name,
                              const std::string& where, std::string_view detail);

// A connected session. Not thread-safe: its owner (postgres_object) lets one thread at a time use
// it. Every call that talks to the server throws std::system_error naming the lock and the server:
// connection_reset when the session is gone (and then `lost()` is true), protocol_error when its
// server process changed (a transaction pooler), resource_deadlock_would_occur when the server
// found a deadlock.
class session {
 public:
  // Connects within the options' connect timeout and prepares the session (see the top of this
  // file). `name` is for messages.
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
  // Lets go of every advisory lock of the session.
  void unlock_all();

  // Whether the server may still have the session, asked without a round trip: false once the
  // server has closed it or a call found it gone.
  bool alive() noexcept;
  bool lost() const noexcept { return lost_ || disowned_; }

  // After fork(), in the child: the session belongs to the parent. Points its socket at
  // /dev/null so that nothing this process does (exit included) can reach the parent's session.
  // Async-signal-safe.
  void disown() noexcept;

  const server_identity& identity() const noexcept { return identity_; }
  const std::string& where() const noexcept { return where_; }
  int socket() const noexcept;

 private:
  // Runs `sql` and returns the first row's columns 0 and 1 ("" if none); throws as described above.
  std::pair<std::string, std::string> run(const std::string& sql, std::string_view action);
  // Runs one of the session's prepared statements with `params` (at most two).
  std::pair<std::string, std::string> run_prepared(const char* statement,
                                                   const std::vector<std::string>& params,
                                                   std::string_view action);
  // Takes `result` (of run or run_prepared), clears it and returns its first row.
  std::pair<std::string, std::string> finish(pg_result* result, std::string_view action);
  [[noreturn]] void fail(std::string_view action, std::string_view detail, const char* sqlstate);

  pg_conn* conn_ = nullptr;
  std::string name_;
  std::string where_;
  server_identity identity_;
  std::string backend_pid_;
  bool lost_ = false;
  bool disowned_ = false;
};

}  // namespace fasteners::detail::postgres
