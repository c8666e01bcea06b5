// The PostgreSQL tests' support: the throwaway server of the CTest fixture postgres_server
// (scripts/postgres-server.sh), a superuser side channel to it, lock names, pg_locks counts.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
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
// The key of `name` as the server computes it with the SQL expression of fasteners/postgres.hpp.
std::int64_t server_key(const std::string& name);
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

}  // namespace fasteners::test::pg
