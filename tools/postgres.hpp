// `--postgres`: PostgreSQL advisory locks for `fasteners run` and `fasteners status`.
// The lock is fasteners::postgres_reader_writer_lock (fasteners::postgres), or with --slots a slot
// of fasteners::postgres_semaphore; holders are listed with libpq from pg_locks and
// pg_stat_activity. In a build without fasteners::postgres (the compile definition
// FASTENERS_TOOL_POSTGRES unset) every function here but postgres_supported() throws tool_error
// with exit_unavailable.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fasteners::tool {

// Whether this build has `--postgres`.
bool postgres_supported();

// The error of a build without it, for `subcommand` ("run" or "status").
std::string postgres_unsupported_message(const std::string& subcommand);

// Throws a usage error (exit_usage) naming `subcommand` if libpq cannot parse `conninfo` (a
// connection string or URI; empty means libpq's defaults). The message never holds a password.
void check_conninfo(const std::string& subcommand, const std::string& conninfo);

// `text` as one line, with every password of `conninfo` (password, sslpassword, and the URI's
// user:password@ part as written) replaced by "***": for messages from libpq or the library.
std::string scrub(const std::string& text, const std::string& conninfo);

// One session's lock (or wait for it) on the name's advisory key, from pg_locks joined with
// pg_stat_activity.
struct postgres_holder {
  long long backend_pid = 0;  // The server process of the session (pg_locks.pid).
  bool waiting = false;       // Not granted: queued for the lock.
  bool exclusive = true;      // ExclusiveLock; false: ShareLock.
  std::string mode;           // pg_locks.mode as it is.
  std::string application_name;
  // From an application_name of the form "fasteners <pid>@<host> <program>", which this
  // library's sessions set: the client process, its host, its program (empty if cut off by the
  // server's 63-byte limit). client_pid is 0 when application_name has another form.
  long long client_pid = 0;
  std::string client_host;
  std::string program;
  // Where the session comes from as the server sees it: "local" (a Unix-domain socket), the
  // client's host name or address; empty if the server does not tell this user.
  std::string client;
  std::string user;      // The session's role; empty if not shown.
  std::string since;     // UTC, "2024-05-01T12:00:00Z": the wait's start, else the session's last
                         // state change (or its start); empty if not shown.
  std::int64_t key = 0;  // The advisory key it holds or waits for.
};

// What the sessions using a fasteners::postgres_semaphore tell of it: who holds its slots, and
// who waits first in line (holds its turnstile).
struct postgres_semaphore_state {
  std::size_t slots = 0;                 // N, as the semaphore's users record it.
  std::vector<postgres_holder> holding;  // The sessions that hold a slot, by slot.
  std::vector<std::size_t> slot_of;      // The slot of each of `holding`.
  std::vector<postgres_holder> waiting;  // The holder of the turnstile, if any.
  std::size_t held() const;              // How many slots are held.
};

// What `fasteners status --postgres` reports: every session holding or waiting for the key.
struct postgres_lock_state {
  std::int64_t key = 0;                  // fasteners::postgres_key(name).
  std::string database;                  // The database the name was looked up in.
  std::vector<postgres_holder> holders;  // Holders first, then waiters, oldest first.
  // With postgres_status(), when the name is that of a semaphore in use (a session holds the key
  // of its N): its state, and `holders` is empty.
  std::optional<postgres_semaphore_state> semaphore;
};

// Connects once (a session of its own that takes no lock) and lists the sessions that hold or
// wait for `name`'s key in the conninfo's database. Throws tool_error: exit_unavailable when the
// server cannot be reached, refuses the login or fails the query; the message names
// `subcommand` and never holds a password.
postgres_lock_state postgres_holders(const std::string& subcommand, const std::string& conninfo,
                                     const std::string& name);

// As postgres_holders(), but first looks whether `name` is that of a semaphore in use (which of
// the keys of its N, 1 to postgres_semaphore_max_slots, a session holds), and if so tells of its
// slots instead; over one connection. For `fasteners status --postgres`.
postgres_lock_state postgres_status(const std::string& subcommand, const std::string& conninfo,
                                    const std::string& name);

// The holders of the slots of semaphore `name` with `slots` slots, and its first waiter; errors
// as postgres_holders(). For -v of `fasteners run --slots N --postgres`.
postgres_semaphore_state postgres_semaphore_holders(const std::string& subcommand,
                                                    const std::string& conninfo,
                                                    const std::string& name, std::size_t slots);

// Whether `h` is a session of this very process (by its application_name).
bool is_this_process(const postgres_holder& h);

// "pid 1234 on host1 (fasteners)" or, for a session of another kind, "session 5678 (psql, from
// local)": a holder for messages.
std::string describe_postgres_holder(const postgres_holder& h);

}  // namespace fasteners::tool
