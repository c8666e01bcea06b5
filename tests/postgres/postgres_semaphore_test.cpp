// Tests of fasteners::postgres_semaphore with real processes against the throwaway server
// (pg_test_support): at most N, a killed holder, N enforced, timeouts, a waiter served by another
// process, fork, psql sessions on the documented keys, and a waiter's CPU. Helpers get the
// conninfo as an argument, so that only the test process asks the test support for the server.
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"
#include "posix/posix_support.hpp"
#include "posix/semaphore_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;
namespace pg = fasteners::test::pg;
using fasteners::postgres_key;
using fasteners::postgres_semaphore;

// The names of the keys, as fasteners/postgres.hpp documents them.
std::string slot_key_name(const std::string& name, int i) {
  return name + ":semaphore slot " + std::to_string(i);
}
std::int64_t slot_key(const std::string& name, int i) {
  return postgres_key(slot_key_name(name, i));
}

// ---------------------------------------------------------------------------------------------
// Helper processes.

// Helper "pgsem_hold CONNINFO NAME N K": takes K slots, prints "held", and gives them back when
// stdin ends.
FASTENERS_TEST_HELPER(pgsem_hold) {
  postgres_semaphore sem(args.at(0), args.at(1), to_size(args.at(2)));
  return hold_until_stdin_ends(sem, to_size(args.at(3)));
}

// Helper "pgsem_churn CONNINFO NAME N SHM SECONDS THREADS": THREADS threads take a slot, stay
// inside for a moment, give it back, again and again for SECONDS; each counts itself in SHM while
// inside.
FASTENERS_TEST_HELPER(pgsem_churn) {
  postgres_semaphore sem(args.at(0), args.at(1), to_size(args.at(2)));
  return churn(sem, path_of(args.at(3)), std::stod(args.at(4)), std::stoi(args.at(5)));
}

// Checks that every acquire of `sem` throws invalid_argument naming the semaphore and both
// numbers; 0 if so.
int expect_other_n(postgres_semaphore& sem, const std::string& recorded) {
  const std::string both = recorded + " slots, not " + std::to_string(sem.slots());
  return expect_wrong_n(sem, [&](const std::system_error& e) {
    const std::string what = e.what();
    return what.find(both) != std::string::npos && what.find(sem.name()) != std::string::npos;
  });
}

// Helper "pgsem_expect_wrong_n CONNINFO NAME N RECORDED": every acquire must throw
// invalid_argument naming RECORDED and N.
FASTENERS_TEST_HELPER(pgsem_expect_wrong_n) {
  postgres_semaphore sem(args.at(0), args.at(1), to_size(args.at(2)));
  return expect_other_n(sem, args.at(3));
}

// Helper "pgsem_expect_busy CONNINFO NAME N": k_acquired if a try takes a slot, k_busy if not.
FASTENERS_TEST_HELPER(pgsem_expect_busy) {
  postgres_semaphore sem(args.at(0), args.at(1), to_size(args.at(2)));
  return sem.try_acquire() ? k_acquired : k_busy;
}

// Helper "pgsem_wait_cpu CONNINFO NAME N": prints "waiting", waits for a slot, then prints the
// CPU seconds and the wall seconds the wait took.
FASTENERS_TEST_HELPER(pgsem_wait_cpu) {
  postgres_semaphore sem(args.at(0), args.at(1), to_size(args.at(2)));
  if (sem.try_acquire()) return fail(1, "a slot was free");
  return wait_reporting_cpu(sem);
}

// ---------------------------------------------------------------------------------------------
// psql sessions.

std::vector<std::string> psql_command() {
  return {pg::psql_path().string(), "-X", "-q",          "-A", "-t", "-v",
          "ON_ERROR_STOP=1",        "-d", pg::conninfo()};
}

// Has the psql session `psql` run `sql` and print `marker`, and reads its lines up to that one:
// the lines before it, or nothing if a write fails or the marker does not come within k_long.
std::optional<std::vector<std::string>> psql_runs(child_process& psql, const std::string& sql,
                                                  const std::string& marker) {
  if (!psql.write_line(sql + ";") || !psql.write_line("SELECT '" + marker + "';")) {
    return std::nullopt;
  }
  std::vector<std::string> lines;
  for (;;) {
    const auto got = psql.read_line();
    if (!got) return std::nullopt;
    if (*got == marker) return lines;
    lines.push_back(*got);
  }
}

// The documented statement that takes slot `i` of `name` in psql, if it is free: prints t or f.
std::string psql_try_slot(const std::string& name, int i) {
  return "SELECT pg_try_advisory_lock(('x' || left(encode(sha256(convert_to(" + pg::literal(name) +
         " || ':semaphore slot ' || " + std::to_string(i) +
         ", 'UTF8')), 'hex'), 16))::bit(64)::bigint)";
}

// ---------------------------------------------------------------------------------------------
// Tests.

TEST(postgres_semaphore_test, the_constructor_checks_its_arguments_and_does_not_connect) {
  const std::string name = pg::unique_name();
  EXPECT_THROW(postgres_semaphore(pg::conninfo(), name, 0), std::invalid_argument);
  EXPECT_THROW(postgres_semaphore(pg::conninfo(), name, 65), std::invalid_argument);
  EXPECT_THROW(postgres_semaphore(pg::conninfo(), "", 2), std::invalid_argument);
  EXPECT_THROW(postgres_semaphore(pg::conninfo(), std::string("a\0b", 3), 2),
               std::invalid_argument);
  // Nothing listens there: only an acquire would find out.
  postgres_semaphore sem("host=/nonexistent-fasteners-dir port=1 connect_timeout=1", name, 64);
  EXPECT_EQ(sem.slots(), 64u);
  EXPECT_EQ(sem.held(), 0u);
  EXPECT_EQ(sem.name(), name);
  try {
    sem.try_acquire();
    ADD_FAILURE() << "an acquire without a server did not throw";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(postgres_semaphore_test, the_key_functions_give_the_documented_keys) {
  const std::string name = "jobs \xc3\xa9";  // UTF-8 bytes as they are.
  for (const int i : {0, 1, 10, 63}) {
    EXPECT_EQ(fasteners::postgres_semaphore_slot_key(name, static_cast<std::size_t>(i)),
              slot_key(name, i));
  }
  EXPECT_EQ(fasteners::postgres_semaphore_turnstile_key(name),
            postgres_key(name + ":semaphore turnstile"));
  EXPECT_EQ(fasteners::postgres_semaphore_slots_key(name, 3),
            postgres_key(name + ":semaphore of 3 slots"));
  EXPECT_NE(fasteners::postgres_semaphore_slot_key(name, 0), postgres_key(name));
  EXPECT_EQ(fasteners::postgres_semaphore_max_slots, 64u);
}

TEST(postgres_semaphore_test, one_object_takes_up_to_n_slots_on_their_keys_and_gives_them_back) {
  const std::string name = pg::unique_name();
  postgres_semaphore sem(pg::conninfo(), name, 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(sem.held(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(pg::advisory_locks_on(slot_key(name, i)), 1) << "slot " << i;
    EXPECT_EQ(pg::server_key(slot_key_name(name, i)), slot_key(name, i));
  }
  // Not postgres_lock's key of the name, nor a 4th slot.
  EXPECT_EQ(pg::advisory_locks_on(postgres_key(name)), 0);
  EXPECT_EQ(pg::advisory_locks_on(slot_key(name, 3)), 0);
  EXPECT_EQ(pg::advisory_locks_on(postgres_key(name + ":semaphore of 3 slots")), 1);
  EXPECT_EQ(pg::advisory_locks_on(fasteners::postgres_semaphore_slots_key(name, 3)), 1);
  postgres_semaphore other(pg::conninfo(), name, 3);
  expect_slots_to_pass_between_objects(sem, other, [&](const std::system_error& e) {
    return std::string(e.what()).find(name) != std::string::npos;
  });
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(pg::server_shows_nothing(slot_key(name, i)));
}

TEST(postgres_semaphore_test, timed_waits_return_false_no_sooner_than_their_time) {
  const std::string name = pg::unique_name();
  postgres_semaphore sem(pg::conninfo(), name, 2);
  ASSERT_TRUE(sem.try_acquire());
  ASSERT_TRUE(sem.try_acquire());
  postgres_semaphore other(pg::conninfo(), name, 2);
  for (int round = 0; round < 3; ++round) {
    auto start = steady::now();
    EXPECT_FALSE(other.try_acquire_for(k_short));
    EXPECT_GE(steady::now() - start, k_short);
    EXPECT_LT(steady::now() - start, k_upper);
    start = steady::now();
    EXPECT_FALSE(other.try_acquire_until(std::chrono::system_clock::now() + k_short));
    EXPECT_GE(steady::now() - start, k_short - 20ms);  // Another clock's deadline.
    EXPECT_LT(steady::now() - start, k_upper);
  }
  // Another process's timed waits, while this one holds every slot.
  EXPECT_EQ(run_helper("pgsem_expect_busy", {pg::conninfo(), name, "2"}), k_busy);
  sem.release();
  EXPECT_TRUE(other.try_acquire_for(k_short));
  EXPECT_EQ(other.held(), 1u);
}

TEST(postgres_semaphore_test, a_waiter_gets_a_slot_when_another_process_gives_one_back) {
  const std::string name = pg::unique_name();
  child_process holder = spawn_helper("pgsem_hold", {pg::conninfo(), name, "3", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
  postgres_semaphore sem(pg::conninfo(), name, 3);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire_for(k_short));
  std::thread give_back([&] {
    std::this_thread::sleep_for(k_short);
    holder.close_stdin();
  });
  const auto start = steady::now();
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  EXPECT_GE(steady::now() - start, k_short);
  EXPECT_TRUE(sem.try_acquire_for(k_long)) << "the holder gave back two slots";
  give_back.join();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(sem.held(), 3u);
  EXPECT_FALSE(sem.try_acquire());
}

TEST(postgres_semaphore_test, a_killed_holder_frees_its_slots) {
  const std::string name = pg::unique_name();
  child_process holder = spawn_helper("pgsem_hold", {pg::conninfo(), name, "2", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
  postgres_semaphore sem(pg::conninfo(), name, 2);
  EXPECT_FALSE(sem.try_acquire());
  std::thread killer([&] {
    std::this_thread::sleep_for(k_short);
    holder.kill();
  });
  // Waits in the server: the server ends the killed process's session, which frees both slots.
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  killer.join();
  EXPECT_EQ(holder.wait(), k_killed);
  EXPECT_EQ(sem.held(), 2u);
}

TEST(postgres_semaphore_test, another_n_fails_at_the_first_acquire_naming_both_in_other_processes) {
  const std::string name = pg::unique_name();
  postgres_semaphore sem(pg::conninfo(), name, 3);
  ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(run_helper("pgsem_expect_wrong_n", {pg::conninfo(), name, "4", "3"}), 0);
  EXPECT_EQ(run_helper("pgsem_expect_wrong_n", {pg::conninfo(), name, "1", "3"}), 0);
  // Even holding nothing, this process's objects keep the record.
  sem.release();
  EXPECT_EQ(run_helper("pgsem_expect_wrong_n", {pg::conninfo(), name, "2", "3"}), 0);
  EXPECT_EQ(run_helper("pgsem_expect_busy", {pg::conninfo(), name, "3"}), k_acquired);
}

TEST(postgres_semaphore_test, another_n_fails_in_this_process_too) {
  const std::string name = pg::unique_name();
  {
    // Recorded by another process only.
    child_process holder = spawn_helper("pgsem_hold", {pg::conninfo(), name, "3", "1"});
    ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
    postgres_semaphore wrong(pg::conninfo(), name, 5);
    EXPECT_EQ(expect_other_n(wrong, "3"), 0);
    holder.close_stdin();
    EXPECT_EQ(holder.finish(), 0);
  }
  // Nobody uses it any more: the record went with the last user, and any N may start anew.
  postgres_semaphore sem(pg::conninfo(), name, 2);
  ASSERT_TRUE(sem.try_acquire());
  // Recorded by this process's own state.
  postgres_semaphore wrong(pg::conninfo(), name, 4);
  EXPECT_EQ(expect_other_n(wrong, "2"), 0);
  EXPECT_EQ(run_helper("pgsem_expect_wrong_n", {pg::conninfo(), name, "3", "2"}), 0);
  sem.release();
}

TEST(postgres_semaphore_test, at_most_n_holders_among_processes_and_threads_and_n_is_reached) {
  const std::string name = pg::unique_name();
  temp_dir dir;
  const fs::path shm_path = dir.path() / "shm";
  shared_memory shm(shm_path, true);
  std::vector<child_process> churners;
  for (int i = 0; i < 6; ++i) {
    churners.push_back(
        spawn_helper("pgsem_churn", {pg::conninfo(), name, "3", arg_of(shm_path), "4", "2"}));
  }
  for (auto& child : churners) EXPECT_EQ(child.finish(60s), 0);
  EXPECT_EQ(shm->inside.load(), 0);
  EXPECT_EQ(shm->most.load(), 3) << "more than 3 holders at once, or never 3";
  EXPECT_GT(shm->entries.load(), 100);
  std::cout << "entries: " << shm->entries.load() << "\n";
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(pg::server_shows_nothing(slot_key(name, i)));
}

TEST(postgres_semaphore_test, a_forked_child_holds_nothing_and_leaves_the_parents_slots) {
  const std::string name = pg::unique_name();
  postgres_semaphore sem(pg::conninfo(), name, 1);
  ASSERT_TRUE(sem.try_acquire());
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 0;
    if (sem.held() != 0) code = 31;
    try {
      sem.release();
      code = 32;
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::operation_not_permitted) code = 33;
    }
    try {
      if (code == 0 && sem.try_acquire()) code = 34;  // The parent holds the one slot.
      postgres_semaphore fresh(pg::conninfo(), name, 1);
      if (code == 0 && fresh.try_acquire()) code = 35;
    } catch (const std::exception&) {
      code = 36;
    }
    ::_exit(code);  // The copy of the parent's object and sessions stay as they are.
  }
  ASSERT_GT(pid, 0);
  EXPECT_EQ(wait_for_pid(pid), 0);
  std::this_thread::sleep_for(k_quiet);
  EXPECT_EQ(sem.held(), 1u);
  EXPECT_FALSE(pg::server_try(slot_key(name, 0))) << "the parent's slot went with the child";
  EXPECT_EQ(run_helper("pgsem_expect_busy", {pg::conninfo(), name, "1"}), k_busy);
  sem.release();
  EXPECT_EQ(run_helper("pgsem_expect_busy", {pg::conninfo(), name, "1"}), k_acquired);
}

TEST(postgres_semaphore_test, a_psql_session_holding_a_slot_key_holds_that_slot) {
  const std::string name = pg::unique_name();
  child_process psql(psql_command());
  // The documented statement, for both slots.
  EXPECT_EQ(psql_runs(psql, psql_try_slot(name, 0), "one"), std::vector<std::string>{"t"});
  EXPECT_EQ(psql_runs(psql, psql_try_slot(name, 1), "two"), std::vector<std::string>{"t"});
  postgres_semaphore sem(pg::conninfo(), name, 2);
  EXPECT_FALSE(sem.try_acquire()) << "the library took a slot psql holds";
  EXPECT_FALSE(sem.try_acquire_for(k_short));
  // A waiter gets the slot psql gives back.
  std::thread give_back([&] {
    std::this_thread::sleep_for(k_short);
    EXPECT_TRUE(psql_runs(psql,
                          "SELECT pg_advisory_unlock(" + pg::key_sql(slot_key_name(name, 1)) + ")",
                          "released"));
  });
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  give_back.join();
  EXPECT_FALSE(sem.try_acquire());
  // And psql finds both slots taken.
  EXPECT_EQ(psql_runs(psql, psql_try_slot(name, 1), "again"), std::vector<std::string>{"f"});
  sem.release();
  EXPECT_EQ(psql_runs(psql, psql_try_slot(name, 1), "free"), std::vector<std::string>{"t"});
  psql.close_stdin();
  EXPECT_EQ(psql.finish(), 0);
  EXPECT_TRUE(sem.try_acquire_for(k_long)) << "psql's session ended, and its slots with it";
  EXPECT_TRUE(sem.try_acquire_for(k_long));
}

TEST(postgres_semaphore_test, a_waiter_waits_in_the_server_without_polling) {
  const std::string name = pg::unique_name();
  child_process holder = spawn_helper("pgsem_hold", {pg::conninfo(), name, "2", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
  child_process waiter = spawn_helper("pgsem_wait_cpu", {pg::conninfo(), name, "2"});
  ASSERT_EQ(waiter.read_line(), std::optional<std::string>("waiting"));
  // The first in line waits in the server for each slot.
  EXPECT_TRUE(pg::wait_for_advisory_locks(slot_key(name, 0), 1, false));
  EXPECT_TRUE(pg::wait_for_advisory_locks(slot_key(name, 1), 1, false));
  // Its sessions: the one that took the turnstile by a try, and one per slot waited for.
  const std::string sessions =
      pg::query("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'fasteners " +
                std::to_string(waiter.id()) + "@%'");
  EXPECT_EQ(sessions, "3") << "the waiting process's connections";
  expect_a_cheap_wait(holder, waiter, 0.02);
}

TEST(postgres_semaphore_test, a_slot_lost_with_its_session_fails_its_release) {
  const std::string name = pg::unique_name();
  postgres_semaphore sem(pg::conninfo(), name, 1);
  ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(pg::terminate_sessions_on(slot_key(name, 0)), 1);
  EXPECT_TRUE(pg::server_shows_nothing(slot_key(name, 0)));
  try {
    sem.release();
    ADD_FAILURE() << "the release of a lost slot did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
  EXPECT_EQ(sem.held(), 0u);
  // The object goes on, on a new session.
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  EXPECT_EQ(pg::advisory_locks_on(slot_key(name, 0)), 1);
  EXPECT_EQ(run_helper("pgsem_expect_wrong_n", {pg::conninfo(), name, "2", "1"}), 0);
  sem.release();
}

}  // namespace
}  // namespace fasteners_test
