// fasteners::postgres_lock across processes, against a real throwaway server (pg_test_support):
// fork(), psql sessions and 50 processes queued on one name (what every backend keeps across
// processes is in tests/contract/backend_contract_test.cpp). Helpers get the conninfo as an
// argument, so that only the test process asks the test support for the server.
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;
namespace pg = fasteners::test::pg;
using fasteners::postgres_key;
using fasteners::postgres_lock;
using fasteners::postgres_reader_writer_lock;

// ---------------------------------------------------------------------------------------------
// Helper processes.

// Helper "pg_turn CONNINFO NAME LOG COUNTER ID": waits for the lock, increments the counter and
// appends ID to LOG under it, lets go.
FASTENERS_TEST_HELPER(pg_turn) {
  postgres_lock lock(args.at(0), args.at(1));
  lock.lock();
  counter_file(path_of(args.at(3))).increment();
  {
    std::ofstream log(path_of(args.at(2)), std::ios::app);
    log << args.at(4) << "\n";
    if (!log.flush()) return fail(2, "cannot append to the log");
  }
  lock.unlock();
  return 0;
}

// Helper "pg_fork CONNINFO NAME plain|try": takes the lock, forks a child that checks its copy of
// the object (it holds nothing; with "try", neither it nor a new object takes the lock) and then
// ends normally, destroying the copy and running exit(). Prints "child-exit CODE"; on the line
// "release" checks that it still holds, releases and prints "released"; ends with stdin.
FASTENERS_TEST_HELPER(pg_fork) {
  const std::string conninfo = args.at(0);
  const std::string name = args.at(1);
  const bool try_in_child = args.at(2) == "try";
  postgres_lock lock(conninfo, name);
  if (!lock.try_lock()) return fail(1, "the parent could not take the lock");
  std::cout.flush();
  std::cerr.flush();
  const pid_t child = ::fork();
  if (child < 0) return fail(2, "fork failed");
  if (child == 0) {
    if (lock.acquired()) return fail(31, "the forked child's copy says it holds the lock");
    if (lock.native_handle() != -1) return fail(32, "the forked child's copy has a handle");
    try {
      lock.release();
      return fail(33, "release in the forked child did not throw");
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::operation_not_permitted) {
        return fail(34, std::string("release in the forked child threw ") + e.what());
      }
    }
    if (try_in_child) {
      if (lock.try_lock()) return fail(35, "the forked child's copy took the parent's lock");
      postgres_lock fresh(conninfo, name);
      if (fresh.try_lock()) return fail(36, "a new object in the forked child took the lock");
    }
    return 0;  // Back through main(): the copy's destructor runs, then exit().
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::cout << "child-exit " << code << std::endl;
  std::string line;
  if (!std::getline(std::cin, line) || line != "release") return fail(3, "no release command");
  if (!lock.acquired()) return fail(4, "the parent's object no longer holds the lock");
  if (!lock.session_alive()) return fail(5, "the parent's session ended with the child");
  try {
    lock.release();
  } catch (const std::exception& e) {
    return fail(6, std::string("release in the parent threw ") + e.what());
  }
  report_and_wait("released");
  return 0;
}

// ---------------------------------------------------------------------------------------------
// fork().

TEST(postgres_fork_test, a_forked_child_holds_nothing_and_leaves_the_parents_session) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  child_process parent = spawn_helper("pg_fork", {pg::conninfo(), name, "plain"});
  ASSERT_EQ(parent.read_line(), std::optional<std::string>("child-exit 0"));
  // A terminate message or a shut-down socket from the child would have ended the session by now.
  std::this_thread::sleep_for(k_quiet);
  EXPECT_EQ(pg::advisory_locks_on(key, true), 1) << "the parent's lock went with the child";
  EXPECT_FALSE(pg::server_try(key)) << "the parent's lock went with the child";
  EXPECT_TRUE(parent.write_line("release"));
  EXPECT_EQ(parent.read_line(), std::optional<std::string>("released"));
  EXPECT_TRUE(pg::server_try(key));
  EXPECT_EQ(parent.finish(), 0);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

TEST(postgres_fork_test, a_forked_child_cannot_take_the_parents_lock) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  child_process parent = spawn_helper("pg_fork", {pg::conninfo(), name, "try"});
  ASSERT_EQ(parent.read_line(), std::optional<std::string>("child-exit 0"));
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(pg::server_try(key));
  EXPECT_TRUE(parent.write_line("release"));
  EXPECT_EQ(parent.read_line(), std::optional<std::string>("released"));
  EXPECT_EQ(parent.finish(), 0);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// ---------------------------------------------------------------------------------------------
// psql sessions.

std::vector<std::string> psql_command(const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {pg::psql_path().string(), "-X", "-q",          "-A", "-t", "-v",
                                   "ON_ERROR_STOP=1",        "-d", pg::conninfo()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Reads lines of `child` until one equals `line`; false if none comes within k_long.
bool read_until(child_process& child, const std::string& line) {
  for (;;) {
    const auto got = child.read_line();
    if (!got) return false;
    if (*got == line) return true;
  }
}

// Has the psql session `psql` run `sql` and then print `marker`, and reads its lines up to that
// one: false if a write fails or the marker does not come within k_long.
bool psql_runs(child_process& psql, const std::string& sql, const std::string& marker) {
  return psql.write_line(sql + ";") && psql.write_line("SELECT '" + marker + "';") &&
         read_until(psql, marker);
}

// What `psql -c SQL` prints (its first line).
std::optional<std::string> psql_says(const std::string& sql) {
  child_process psql(psql_command({"-c", sql}));
  auto line = psql.read_line();
  EXPECT_EQ(psql.finish(), 0) << sql;
  return line;
}

TEST(postgres_psql_test, a_psql_session_and_the_library_exclude_each_other) {
  const std::string name = pg::unique_name();
  const std::string key = pg::key_sql(name);
  {
    child_process psql(psql_command());
    ASSERT_TRUE(psql_runs(psql, "SELECT pg_advisory_lock(" + key + ")", "held"));
    postgres_lock lock(pg::conninfo(), name);
    EXPECT_FALSE(lock.try_lock()) << "the library took a key psql holds";
    postgres_reader_writer_lock rw(pg::conninfo(), name);
    EXPECT_FALSE(rw.try_lock_shared());
    EXPECT_FALSE(rw.try_lock());
    ASSERT_TRUE(psql_runs(psql, "SELECT pg_advisory_unlock(" + key + ")", "released"));
    EXPECT_TRUE(lock.try_lock());
    lock.unlock();
    EXPECT_EQ(psql.finish(), 0);
  }
  postgres_lock lock(pg::conninfo(), name);
  lock.lock();
  EXPECT_EQ(psql_says("SELECT pg_try_advisory_lock(" + key + ")"), std::optional<std::string>("f"))
      << "psql took a key the library holds";
  EXPECT_EQ(psql_says("SELECT pg_try_advisory_lock_shared(" + key + ")"),
            std::optional<std::string>("f"));
  lock.unlock();
  EXPECT_EQ(psql_says("SELECT pg_try_advisory_lock(" + key + ")"), std::optional<std::string>("t"));
}

TEST(postgres_psql_test, a_psql_shared_lock_is_a_read_lock) {
  const std::string name = pg::unique_name();
  const std::string key = pg::key_sql(name);
  child_process psql(psql_command());
  ASSERT_TRUE(psql_runs(psql, "SELECT pg_advisory_lock_shared(" + key + ")", "held"));
  postgres_reader_writer_lock rw(pg::conninfo(), name);
  EXPECT_TRUE(rw.try_lock_shared());
  rw.unlock_shared();
  EXPECT_FALSE(rw.try_lock());
  postgres_lock lock(pg::conninfo(), name);
  EXPECT_FALSE(lock.try_lock());
  rw.lock_shared();
  EXPECT_EQ(psql_says("SELECT pg_try_advisory_lock(" + key + ")"), std::optional<std::string>("f"));
  EXPECT_EQ(psql_says("SELECT pg_try_advisory_lock_shared(" + key + ")"),
            std::optional<std::string>("t"));
  rw.unlock_shared();
  EXPECT_EQ(psql.finish(), 0);
}

// ---------------------------------------------------------------------------------------------
// Scale.

// 50 processes wait on one name at once; each gets it exactly once, one at a time.
TEST(postgres_process_scale, fifty_processes_each_get_the_lock_in_turn) {
  constexpr int processes = 50;
  temp_dir dir;
  const fs::path log = dir.path() / "log";
  const fs::path counter = dir.path() / "counter";
  write_counter(counter, 0);
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  postgres_lock gate(pg::conninfo(), name);
  gate.lock();
  std::vector<child_process> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(spawn_helper(
        "pg_turn", {pg::conninfo(), name, arg_of(log), arg_of(counter), std::to_string(i)}));
  }
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, processes, false, 60s))
      << "not all processes wait on the server: " << pg::advisory_locks_on(key, false);
  EXPECT_EQ(read_counter(counter), 0) << "a process got in past the holder";
  gate.unlock();
  for (auto& child : children) EXPECT_EQ(child.finish(60s), 0);
  EXPECT_EQ(read_counter(counter), processes);
  std::map<std::string, int> turns;
  std::ifstream in(log);
  for (std::string line; std::getline(in, line);) ++turns[line];
  EXPECT_EQ(turns.size(), static_cast<std::size_t>(processes));
  for (int i = 0; i < processes; ++i) {
    EXPECT_EQ(turns[std::to_string(i)], 1) << "process " << i;
  }
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

}  // namespace
}  // namespace fasteners_test
