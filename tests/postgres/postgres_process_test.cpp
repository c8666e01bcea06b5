// fasteners::postgres_lock and postgres_reader_writer_lock across processes, against a real
// throwaway server (pg_test_support): the conflict matrix, the server's writer-preferring queue,
// timed waits against other processes, lost updates, killed holders, fork(), psql sessions and 50
// processes queued on one name. Helpers get the conninfo as an argument, so that only the test
// process asks the test support for the server.
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

// Helper "pg_hold KIND CONNINFO NAME": takes the lock (waiting as needed), prints "held", releases
// when stdin ends.
FASTENERS_TEST_HELPER(pg_hold) {
  pg::kind_lock lock(parse_kind(args.at(0)), args.at(1), args.at(2));
  if (!lock.acquire()) return fail(1, "blocking acquire returned false");
  report_and_wait("held");
  lock.release();
  return 0;
}

// Helper "pg_try KIND CONNINFO NAME": tries once; exits k_acquired (after releasing) or k_busy.
FASTENERS_TEST_HELPER(pg_try) {
  pg::kind_lock lock(parse_kind(args.at(0)), args.at(1), args.at(2));
  if (!lock.acquire(false)) return k_busy;
  lock.release();
  return k_acquired;
}

// Helper "pg_count CONNINFO NAME COUNTER THREADS ITERATIONS shared|own": each thread increments
// the counter ITERATIONS times under the lock, with its own object or the process's one.
FASTENERS_TEST_HELPER(pg_count) {
  const std::string conninfo = args.at(0);
  const std::string name = args.at(1);
  const fs::path counter = path_of(args.at(2));
  const int threads = std::stoi(args.at(3));
  const int iterations = std::stoi(args.at(4));
  const bool shared = args.at(5) == "shared";
  postgres_lock shared_lock(conninfo, name);
  std::atomic<int> errors{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      try {
        std::optional<postgres_lock> own;
        if (!shared) own.emplace(conninfo, name);
        postgres_lock& lock = shared ? shared_lock : *own;
        counter_file file(counter);
        for (int i = 0; i < iterations; ++i) {
          lock.lock();
          file.increment();
          lock.unlock();
        }
      } catch (const std::exception& e) {
        ++errors;
        std::cerr << "pg_count helper: " << e.what() << std::endl;
      }
    });
  }
  for (auto& w : workers) w.join();
  return errors == 0 ? 0 : 1;
}

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

// Helper "pg_toggle CONNINFO NAME": on each line "lock" takes the lock and prints "locked", on
// each line "unlock" releases it and prints "unlocked"; ends with stdin.
FASTENERS_TEST_HELPER(pg_toggle) {
  postgres_lock lock(args.at(0), args.at(1));
  for (std::string line; std::getline(std::cin, line);) {
    if (line == "lock") {
      lock.lock();
      std::cout << "locked" << std::endl;
    } else if (line == "unlock") {
      lock.unlock();
      std::cout << "unlocked" << std::endl;
    }
  }
  return 0;
}

// Helper "pg_overlapping_readers CONNINFO NAME THREADS": THREADS threads take and release read
// locks through one object in a loop, each holding 20 ms, so that the object holds the read lock
// without a break. Prints "reading" once the first read lock is held; runs until killed.
FASTENERS_TEST_HELPER(pg_overlapping_readers) {
  postgres_reader_writer_lock lock(args.at(0), args.at(1));
  const int threads = std::stoi(args.at(2));
  latch first(1);
  auto read_forever = [&] {
    for (;;) {
      lock.lock_shared();
      first.count_down();
      std::this_thread::sleep_for(20ms);
      lock.unlock_shared();
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(read_forever);
  if (!first.wait_for()) return fail(2, "no read lock");
  std::cout << "reading" << std::endl;
  for (auto& t : pool) t.join();  // Never returns: the test kills this process.
  return 0;
}

child_process hold_pg(kind k, const std::string& name) {
  child_process child = spawn_helper("pg_hold", {to_string(k), pg::conninfo(), name});
  EXPECT_EQ(child.read_line(), std::optional<std::string>("held"))
      << "the helper did not report holding a " << to_string(k) << " lock on " << name;
  return child;
}

int try_pg(kind k, const std::string& name) {
  return run_helper("pg_try", {to_string(k), pg::conninfo(), name});
}

// ---------------------------------------------------------------------------------------------
// Exclusion between processes.

class postgres_process_pair_test : public ::testing::TestWithParam<std::tuple<kind, kind>> {};

// Another process holds the first kind; this one and a third want the second.
TEST_P(postgres_process_pair_test, conflict_matrix_between_processes) {
  const auto [first, second] = GetParam();
  const bool conflict = conflicts(first, second);
  const std::string name = pg::unique_name();
  child_process holder = hold_pg(first, name);
  EXPECT_EQ(try_pg(second, name), conflict ? k_busy : k_acquired);
  pg::kind_lock here(second, pg::conninfo(), name);
  EXPECT_EQ(here.acquire(false), !conflict);
  if (here.held()) {
    here.release();
  } else {
    EXPECT_FALSE(here.try_for(k_short));
  }
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(try_pg(second, name), k_acquired);
  EXPECT_TRUE(here.acquire(false));
  here.release();
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

INSTANTIATE_TEST_SUITE_P(pairs, postgres_process_pair_test, ::testing::ValuesIn(all_kind_pairs()),
                         pair_name);

// ---------------------------------------------------------------------------------------------
// Writer preference: the server's lock queue.

TEST(postgres_process_writer_preference, a_waiting_writer_holds_back_new_readers_of_every_process) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  child_process reader = hold_pg(kind::read, name);
  EXPECT_EQ(try_pg(kind::read, name), k_acquired) << "readers do not share";
  child_process writer = spawn_helper("pg_hold", {"write", pg::conninfo(), name});
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false))
      << "the writer does not wait on the server";
  EXPECT_EQ(writer.read_line(10ms), std::nullopt) << "the writer got in past a reader";
  EXPECT_EQ(try_pg(kind::read, name), k_busy) << "a reader of another process got in";
  EXPECT_FALSE(pg::server_try(key, true)) << "a plain session got a shared lock past the writer";
  postgres_reader_writer_lock here(pg::conninfo(), name);
  EXPECT_FALSE(here.try_lock_shared());
  const auto start = steady::now();
  EXPECT_FALSE(here.try_lock_shared_for(k_short));
  EXPECT_GE(seconds_since(start), 0.2);
  child_process late = spawn_helper("pg_hold", {"read", pg::conninfo(), name});
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, 2, false));
  EXPECT_EQ(late.read_line(k_quiet), std::nullopt) << "a blocking reader got in past the writer";
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(late.read_line(k_quiet), std::nullopt) << "a reader got in while the writer writes";
  EXPECT_FALSE(here.try_lock_shared());
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_EQ(late.read_line(), std::optional<std::string>("held"));
  EXPECT_TRUE(here.try_lock_shared());
  here.unlock_shared();
  EXPECT_EQ(late.finish(), 0);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

TEST(postgres_process_writer_preference, a_writer_waiting_here_holds_back_readers_elsewhere) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  child_process reader = hold_pg(kind::read, name);
  postgres_reader_writer_lock writer(pg::conninfo(), name);
  thread_holder writing([&] { return writer.acquire_write_lock(); },
                        [&] { writer.release_write_lock(); });
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_EQ(try_pg(kind::read, name), k_busy);
  EXPECT_FALSE(writing.done_acquiring());
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_TRUE(writing.wait_held());
  EXPECT_EQ(try_pg(kind::read, name), k_busy);
  EXPECT_TRUE(writing.release());
  EXPECT_EQ(try_pg(kind::read, name), k_acquired);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// A writer of another process waiting on the server holds back a thread that would join the read
// lock its object already holds (the server grants a session's second request of a lock it holds
// without queueing it, so the library must not rely on the server here).
TEST(postgres_process_writer_preference, readers_do_not_join_their_objects_lock_past_a_writer) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  postgres_reader_writer_lock reader(pg::conninfo(), name);
  thread_holder reading([&] { return reader.acquire_read_lock(); },
                        [&] { reader.release_read_lock(); });
  ASSERT_TRUE(reading.wait_held());
  const auto join = [&] {
    return on_other_thread([&] {
      const bool got = reader.try_lock_shared();
      if (got) reader.unlock_shared();
      return got;
    });
  };
  EXPECT_TRUE(join()) << "before a writer waits, a thread joins its object's read lock";
  child_process writer = spawn_helper("pg_hold", {"write", pg::conninfo(), name});
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_FALSE(join()) << "a thread joined its object's read lock past a writer waiting elsewhere";
  EXPECT_TRUE(reading.release());
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// The property for the server's queue: 2 processes whose 2 threads each keep one object's
// read lock continuously held, and a writer still gets in within a few seconds, again and again.
TEST(postgres_process_writer_preference, a_writer_gets_in_among_readers_sharing_objects) {
  const std::string name = pg::unique_name();
  std::vector<child_process> readers;
  for (int i = 0; i < 2; ++i) {
    readers.push_back(spawn_helper("pg_overlapping_readers", {pg::conninfo(), name, "2"}));
  }
  for (auto& reader : readers) ASSERT_EQ(reader.read_line(), std::optional<std::string>("reading"));
  postgres_reader_writer_lock writer(pg::conninfo(), name);
  EXPECT_FALSE(writer.try_lock()) << "the readers do not hold the lock";
  for (int round = 0; round < 3; ++round) {
    const auto start = steady::now();
    ASSERT_TRUE(writer.try_lock_for(3s)) << "round " << round << ": the writer starved";
    std::this_thread::sleep_for(5ms);
    writer.unlock();
    std::cout << "writer waited " << seconds_since(start) * 1000 << " ms\n";
    std::this_thread::sleep_for(50ms);  // The readers take over again.
  }
  for (auto& reader : readers) reader.kill();
}

// Reader processes overlap: all hold the read lock at once.
TEST(postgres_process_writer_preference, reader_processes_hold_at_once) {
  const std::string name = pg::unique_name();
  std::vector<child_process> readers;
  for (int i = 0; i < 4; ++i) readers.push_back(hold_pg(kind::read, name));
  EXPECT_EQ(pg::advisory_locks_on(postgres_key(name), true), 4);
  EXPECT_EQ(try_pg(kind::write, name), k_busy);
  for (auto& reader : readers) EXPECT_EQ(reader.finish(), 0);
  EXPECT_EQ(try_pg(kind::write, name), k_acquired);
}

// ---------------------------------------------------------------------------------------------
// Timed waits against other processes.

TEST(postgres_process_timeouts, timed_waits_time_out_never_early_and_leave_nothing) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const std::string name = pg::unique_name(to_string(k));
    const std::int64_t key = postgres_key(name);
    child_process holder = hold_pg(kind::write, name);
    pg::kind_lock waiter(k, pg::conninfo(), name);
    const auto check = [&](const std::function<bool()>& wait, double seconds, const char* form) {
      const auto start = steady::now();
      EXPECT_FALSE(wait()) << form;
      const double elapsed = seconds_since(start);
      std::cout << to_string(k) << " " << form << ": " << elapsed * 1000 << " ms\n";
      EXPECT_GE(elapsed, seconds) << form << " returned early";
      EXPECT_LT(elapsed, seconds + 5.0) << form << " returned absurdly late";
      EXPECT_FALSE(waiter.held()) << form;
    };
    check([&] { return waiter.try_for(500ms); }, 0.5, "try_for(500ms)");
    check([&] { return waiter.acquire(true, std::chrono::duration<double>(0.3)); }, 0.3,
          "acquire(true, 0.3)");
    check([&] { return waiter.acquire(true, std::chrono::duration<double>(0)); }, 0,
          "acquire(true, 0): one try");
    check([&] { return waiter.try_for(0ms); }, 0, "try_for(0ms): one try");
    // Only the holder holds, and the waits are gone from the server's queue.
    EXPECT_EQ(pg::advisory_locks_on(key, true), 1);
    EXPECT_TRUE(pg::wait_for_advisory_locks(key, 0, false, 5s))
        << "a timed-out wait is still queued on the server";
    EXPECT_EQ(holder.finish(), 0);
    // Nothing the waiter queued is granted once the holder is gone.
    std::this_thread::sleep_for(k_quiet);
    EXPECT_EQ(pg::advisory_locks_on(key, true), 0) << "a timed-out wait took the lock";
    EXPECT_TRUE(pg::server_try(key));
    EXPECT_TRUE(waiter.acquire(true, std::chrono::duration<double>(0)));
    waiter.release();
    EXPECT_TRUE(pg::server_shows_nothing(key));
  }
}

TEST(postgres_process_timeouts, a_timed_wait_succeeds_when_the_holder_process_lets_go) {
  const std::string name = pg::unique_name();
  child_process holder = hold_pg(kind::lock, name);
  postgres_lock waiter(pg::conninfo(), name);
  const auto start = steady::now();
  thread_holder waiting([&] { return waiter.try_lock_for(20s); }, [&] { waiter.unlock(); });
  EXPECT_FALSE(waiting.wait_held(k_quiet));
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(waiting.wait_held());
  const double elapsed = seconds_since(start);
  EXPECT_LT(elapsed, 15.0) << "the waiter was not woken by the release";
  EXPECT_EQ(try_pg(kind::lock, name), k_busy);
  EXPECT_TRUE(waiting.release());
  EXPECT_EQ(try_pg(kind::lock, name), k_acquired);
}

// A holder in another process lets go right at a waiter's deadline: whatever the waiter answers
// is true of the lock, and its session never keeps a hold the object does not know of (the
// server may grant the lock just as the wait times out).
TEST(postgres_process_timeouts, a_release_racing_the_deadline_gives_a_truthful_answer) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  child_process holder = spawn_helper("pg_toggle", {pg::conninfo(), name});
  postgres_lock waiter(pg::conninfo(), name);
  int taken_count = 0;
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(holder.write_line("lock"));
    ASSERT_EQ(holder.read_line(), std::optional<std::string>("locked"));
    const auto wait = std::chrono::milliseconds(5 + round % 10);
    bool taken = false;
    std::thread t([&] { taken = waiter.try_lock_for(wait); });
    std::this_thread::sleep_for(wait);
    ASSERT_TRUE(holder.write_line("unlock"));
    t.join();
    ASSERT_EQ(holder.read_line(), std::optional<std::string>("unlocked"));
    taken_count += taken;
    EXPECT_EQ(waiter.acquired(), taken);
    ASSERT_TRUE(pg::wait_for_advisory_locks(key, 0, false));
    ASSERT_EQ(pg::advisory_locks_on(key, true), taken ? 1 : 0)
        << "the waiter answered " << taken << " after a " << wait.count() << " ms wait";
    if (taken) waiter.unlock();
  }
  std::cout << "the waiter got the lock in " << taken_count << " of 40 rounds\n";
  EXPECT_EQ(holder.finish(), 0);
}

// ---------------------------------------------------------------------------------------------
// Lost updates.

TEST(postgres_process_counter, no_lost_updates_among_processes) {
  temp_dir dir;
  const fs::path counter = dir.path() / "counter";
  write_counter(counter, 0);
  const std::string name = pg::unique_name();
  constexpr int processes = 4;
  constexpr int iterations = 200;
  std::vector<child_process> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(spawn_helper("pg_count", {pg::conninfo(), name, arg_of(counter), "1",
                                                 std::to_string(iterations), "own"}));
  }
  for (auto& child : children) EXPECT_EQ(child.finish(120s), 0);
  EXPECT_EQ(read_counter(counter), processes * iterations);
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

TEST(postgres_process_counter, no_lost_updates_among_threads_sharing_objects_in_processes) {
  temp_dir dir;
  const fs::path counter = dir.path() / "counter";
  write_counter(counter, 0);
  const std::string name = pg::unique_name();
  std::vector<child_process> children;
  for (int i = 0; i < 2; ++i) {
    children.push_back(
        spawn_helper("pg_count", {pg::conninfo(), name, arg_of(counter), "3", "50", "shared"}));
  }
  for (auto& child : children) EXPECT_EQ(child.finish(120s), 0);
  EXPECT_EQ(read_counter(counter), 2 * 3 * 50);
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

// ---------------------------------------------------------------------------------------------
// Killed processes.

TEST(postgres_process_kill, a_killed_holder_hands_over_at_once) {
  for (const auto& [held, wanted] :
       {std::pair{kind::lock, kind::lock}, std::pair{kind::write, kind::read}}) {
    SCOPED_TRACE(std::string(to_string(held)) + " then " + to_string(wanted));
    const std::string name = pg::unique_name(to_string(held));
    child_process holder = hold_pg(held, name);
    pg::kind_lock waiter(wanted, pg::conninfo(), name);
    thread_holder waiting([&] { return waiter.acquire(); }, [&] { waiter.release(); });
    EXPECT_FALSE(waiting.wait_held(k_quiet));
    ASSERT_TRUE(pg::wait_for_advisory_locks(postgres_key(name), 1, false));
    const auto start = steady::now();
    holder.kill();
    EXPECT_TRUE(waiting.wait_held());
    const double elapsed = seconds_since(start);
    std::cout << "the waiter got the lock " << elapsed * 1000 << " ms after the kill\n";
    EXPECT_LT(elapsed, 5.0);
    EXPECT_EQ(holder.wait(), k_killed);
    EXPECT_TRUE(waiting.release());
    EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
  }
}

TEST(postgres_process_kill, a_killed_waiter_leaves_no_wait_behind) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  postgres_lock holder(pg::conninfo(), name);
  holder.lock();
  child_process waiter = spawn_helper("pg_hold", {"lock", pg::conninfo(), name});
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  waiter.kill();
  EXPECT_EQ(waiter.wait(), k_killed);
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, 0, false));
  holder.unlock();
  std::this_thread::sleep_for(k_quiet);
  EXPECT_EQ(pg::advisory_locks_on(key, true), 0) << "the killed waiter's session took the lock";
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
