// The PostgreSQL tests' support: the throwaway server of the CTest fixture postgres_server
// (scripts/postgres-server.sh), a superuser side channel to it, lock names, pg_locks counts, what
// the server says of a key, and servers of a test's own.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"

struct pg_conn;  // libpq's PGconn

namespace fasteners::test::pg {

// The conninfo of the throwaway test server: a superuser role, Unix socket. Throws if the server
// is not running (checked at the first call in a process).
std::string conninfo();
// The conninfo of a role without superuser rights (fasteners_unprivileged) on the same database.
std::string unprivileged_conninfo();
// The server's state directory (the DIR given to scripts/postgres-server.sh): the first line of
// the file that $FASTENERS_TEST_POSTGRES_STATE names (by default the one the fixture writes in
// the build tree). Throws std::runtime_error if there is none.
std::filesystem::path server_dir();
// Runs `sql` on a fresh connection of its own (as the superuser) and returns the first column of
// the first row as text ("" when no row or NULL); throws std::runtime_error with the server's
// message on failure.
std::string query(const std::string& sql);
// All rows of `sql`, each as its columns' text.
std::vector<std::vector<std::string>> query_rows(const std::string& sql);
// Restarts the server (fast shutdown), returning once it accepts connections again. Every session
// ends: a test program that calls it must be registered SERIAL (CMakeLists.txt).
void restart_server();
// The psql program of the server's installation.
std::filesystem::path psql_path();
// A lock name unique to the calling test (test suite + test name + process id + a counter), so
// that tests never share names.
std::string unique_name(const std::string& suffix = "");
// The number of advisory locks in pg_locks on `key` (bigint form: classid = high 32 bits, objid =
// low 32 bits, objsubid = 1) with granted = `granted`, in the test database.
int advisory_locks_on(std::int64_t key, bool granted = true);
// Waits until advisory_locks_on(key, granted) == count; false if that has not happened within
// `timeout`. For a test that must know a waiter is queued in the server.
bool wait_for_advisory_locks(std::int64_t key, int count, bool granted,
                             std::chrono::milliseconds timeout = fasteners_test::k_long);
// Ends the server sessions that hold or wait for an advisory lock on `key`
// (pg_terminate_backend), as an administrator or a dropped connection would; returns how many.
int terminate_sessions_on(std::int64_t key);
// Waits until the peer of the socket `handle` (a lock's native_handle()) has closed the connection,
// which then is known to this process's kernel; false if that has not happened within `timeout`.
bool wait_for_hangup(std::intptr_t handle,
                     std::chrono::milliseconds timeout = fasteners_test::k_long);
// `bytes` as the hex digits of a bytea literal ('\x...'): two lower-case digits a byte.
std::string hex_of(const std::string& bytes);
// The SQL expression of fasteners/postgres.hpp (a bigint) for the key of `name`, the name given
// as text built from its UTF-8 bytes, so that no client encoding or quoting stands between the
// test and the server.
std::string key_sql(const std::string& name);
// The key of `name` as the server computes it (SELECT key_sql(name)).
std::int64_t server_key(const std::string& name);
// One try on `key` by a session of the server's own (the shared lock if `shared`), which lets go
// again in the same statement, so that nothing lingers once it returns. True if the try got the
// lock.
bool server_try(std::int64_t key, bool shared = false);
// Whether the server shows no lock and no wait on `key`. Waits end asynchronously after a
// timed-out statement, so the wait rows get up to 5 s to go.
bool server_shows_nothing(std::int64_t key);
// `text` as an SQL string literal: in single quotes, which it doubles.
std::string literal(const std::string& text);

// A database session of its own, open until destruction: for a test that acts as another client
// of the server (holding advisory locks as psql would). Not thread-safe. Throws
// std::runtime_error with the server's message when it cannot connect or a query fails.
class connection {
 public:
  explicit connection(const std::string& info = conninfo());
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // As the free functions, on this session.
  std::string query(const std::string& sql);
  std::vector<std::vector<std::string>> query_rows(const std::string& sql);
  // The process id of this session's server process (pg_backend_pid()).
  int backend_pid() const;

 private:
  pg_conn* conn_;
};

// A throwaway server of a test's own beside the fixture's (scripts/postgres-server.sh in a fresh
// directory under /tmp): on a Unix socket and, if `listen` names one address, on TCP there, where
// it trusts the clients of the network `trust` (address/bits). Stopped, and its directory removed,
// on destruction. Throws std::runtime_error if it does not start.
class private_server {
 public:
  explicit private_server(const std::string& listen = "", const std::string& trust = "");
  ~private_server();
  private_server(const private_server&) = delete;
  private_server& operator=(const private_server&) = delete;

  // The superuser's conninfo over the Unix socket, and over TCP at the listen address.
  const std::string& conninfo() const { return conninfo_; }
  std::string tcp_conninfo() const;
  // Stops the server at once (immediate shutdown), as a crash would; every session ends.
  void stop();

 private:
  std::filesystem::path dir_;
  std::string listen_;
  int port_ = 0;
  std::string conninfo_;
  bool running_ = false;
};

// A login role of the test's own (fasteners_role_<pid>_<n>) on the test server, with the role
// defaults `settings` (name, value), as ALTER ROLE ... SET gives them. Dropped on destruction,
// its sessions ended first.
class login_role {
 public:
  explicit login_role(const std::vector<std::pair<std::string, std::string>>& settings);
  ~login_role();
  login_role(const login_role&) = delete;
  login_role& operator=(const login_role&) = delete;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// A TCP port of `address` that nothing uses now (the system's choice).
int free_tcp_port(const std::string& address);

}  // namespace fasteners::test::pg
