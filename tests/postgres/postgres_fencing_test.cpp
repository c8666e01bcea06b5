// Fencing tokens on PostgreSQL: strictly increasing over processes, killed holders and a server
// restart; readers see the latest; no token without the option, a hold or a live session; a role
// that may not create the table is told the SQL to run.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/fencing_checks.hpp"
#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"

namespace fasteners_test {
namespace {

namespace pg = fasteners::test::pg;
using fasteners::postgres_lock;
using fasteners::postgres_options;
using fasteners::postgres_reader_writer_lock;

postgres_options fencing() {
  postgres_options options;
  options.fencing = true;
  return options;
}

// Helper "pg_fence_writer CONNINFO NAME N LOG": a postgres_lock and a postgres_reader_writer_lock,
// on two threads, each take NAME N times and append each token to LOG while holding it.
FASTENERS_TEST_HELPER(pg_fence_writer) {
  const int fd = ::open(args.at(3).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return fail(k_error, "cannot open the log");
  const int n = std::stoi(args.at(2));
  std::atomic<int> failures{0};
  auto run = [&](auto& object) {
    try {
      for (int round = 0; round < n; ++round) {
        take_exclusively(object, round);
        if (!append_token(fd, object.fencing_token())) ++failures;
        object.unlock();
      }
    } catch (const std::exception& e) {
      fail(k_error, e.what());
      ++failures;
    }
  };
  postgres_lock a(args.at(0), args.at(1), fencing());
  postgres_reader_writer_lock b(args.at(0), args.at(1), fencing());
  std::thread other([&] { run(b); });
  run(a);
  other.join();
  ::close(fd);
  return failures == 0 ? 0 : k_error;
}

// Helper "pg_fence_victim CONNINFO NAME LOG": takes the lock, logs its token, says "held" and
// waits to be killed.
FASTENERS_TEST_HELPER(pg_fence_victim) {
  const int fd = ::open(args.at(2).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return fail(k_error, "cannot open the log");
  postgres_lock lock(args.at(0), args.at(1), fencing());
  lock.lock();
  if (!append_token(fd, lock.fencing_token())) return fail(k_error, "cannot write the log");
  report_and_wait("held");
  return 0;
}

using postgres_fencing_test = lock_test;

TEST_F(postgres_fencing_test, tokens_strictly_increase_over_processes_and_killed_holders) {
  const std::string name = pg::unique_name();
  const auto log = dir() / "log";
  std::ofstream(log).close();
  constexpr int processes = 4;
  constexpr int per_thread = 60;  // 4 processes x 2 threads x 60 = 480 acquisitions.
  constexpr int victims = 4;
  std::vector<child_process> writers;
  for (int i = 0; i < processes; ++i) {
    writers.push_back(spawn_helper(
        "pg_fence_writer", {pg::conninfo(), name, std::to_string(per_thread), arg_of(log)}));
    writers.back().close_stdin();
  }
  for (int i = 0; i < victims; ++i) {
    child_process victim = spawn_helper("pg_fence_victim", {pg::conninfo(), name, arg_of(log)});
    ASSERT_EQ(victim.read_line(), std::optional<std::string>("held"));
    victim.kill();
    EXPECT_EQ(victim.wait(), k_killed);
  }
  for (auto& w : writers) EXPECT_EQ(w.wait(std::chrono::seconds(150)), 0);
  const auto tokens = read_tokens(log);
  EXPECT_EQ(tokens.size(), static_cast<std::size_t>(processes * 2 * per_thread + victims));
  expect_strictly_increasing(tokens);
  EXPECT_EQ(std::set<std::uint64_t>(tokens.begin(), tokens.end()).size(), tokens.size());
  EXPECT_EQ(pg::query("SELECT token FROM fasteners_fence WHERE key = " +
                      std::to_string(fasteners::postgres_key(name))),
            std::to_string(tokens.back()));
}

TEST_F(postgres_fencing_test, tokens_go_on_across_a_server_restart_and_a_lost_hold_has_none) {
  const std::string name = pg::unique_name();
  postgres_lock first(pg::conninfo(), name, fencing());
  first.lock();
  EXPECT_EQ(first.fencing_token(), 1u);
  first.unlock();
  postgres_lock holder(pg::conninfo(), name, fencing());
  holder.lock();
  const auto before = holder.fencing_token();
  EXPECT_EQ(before, 2u);
  pg::restart_server();
  const auto limit = steady::now() + k_long;
  while (holder.session_alive() && steady::now() < limit) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE(holder.session_alive());
  expect_not_permitted([&] { holder.fencing_token(); });
  EXPECT_THROW(holder.unlock(), std::system_error);  // The lock was lost with the session.
  postgres_lock after(pg::conninfo(), name, fencing());
  after.lock();
  EXPECT_EQ(after.fencing_token(), before + 1);
  after.unlock();
}

TEST_F(postgres_fencing_test, readers_see_the_latest_exclusive_token_and_zero_before_any) {
  const std::string name = pg::unique_name();
  postgres_reader_writer_lock reader(pg::conninfo(), name, fencing());
  reader.lock_shared();
  EXPECT_EQ(reader.fencing_token(), 0u);
  reader.unlock_shared();
  postgres_reader_writer_lock writer(pg::conninfo(), name, fencing());
  for (std::uint64_t round = 1; round <= 2; ++round) {
    writer.lock();
    EXPECT_EQ(writer.fencing_token(), round);
    writer.unlock();
    reader.lock_shared();
    EXPECT_EQ(reader.fencing_token(), round);
    // Another thread joins the object's read lock; another object reads in its own session.
    std::thread([&] {
      ASSERT_TRUE(reader.try_lock_shared());
      EXPECT_EQ(reader.fencing_token(), round);
      reader.unlock_shared();
    }).join();
    std::thread([&] {
      postgres_reader_writer_lock other(pg::conninfo(), name, fencing());
      other.lock_shared();
      EXPECT_EQ(other.fencing_token(), round);
      other.unlock_shared();
    }).join();
    reader.unlock_shared();
  }
}

TEST_F(postgres_fencing_test, without_the_option_or_a_hold_there_is_no_token) {
  const std::string name = pg::unique_name();
  postgres_lock plain(pg::conninfo(), name);
  plain.lock();
  expect_not_permitted([&] { plain.fencing_token(); });
  plain.unlock();
  EXPECT_EQ(pg::query("SELECT count(*) FROM pg_class WHERE relname = 'fasteners_fence'") == "0" ||
                pg::query("SELECT count(*) FROM fasteners_fence WHERE key = " +
                          std::to_string(fasteners::postgres_key(name))) == "0",
            true)
      << "an object without fencing took a token";
  postgres_reader_writer_lock fenced(pg::conninfo(), name, fencing());
  expect_not_permitted([&] { fenced.fencing_token(); });
  fenced.lock();
  EXPECT_EQ(fenced.fencing_token(), 1u);
  fenced.unlock();
  expect_not_permitted([&] { fenced.fencing_token(); });
  fenced.lock_shared();
  EXPECT_EQ(fenced.fencing_token(), 1u);
  fenced.unlock_shared();
  expect_not_permitted([&] { fenced.fencing_token(); });
}

TEST_F(postgres_fencing_test, a_role_that_may_not_create_the_table_is_told_the_sql) {
  // A schema of the test's own, first on the role's search path, where it may not create tables.
  const std::string schema = "fence_" + std::to_string(::getpid());
  pg::query("DROP SCHEMA IF EXISTS " + schema + " CASCADE");
  pg::query("CREATE SCHEMA " + schema);
  pg::login_role role({{"search_path", schema}});
  pg::query("GRANT USAGE ON SCHEMA " + schema + " TO " + role.name());
  pg::query("REVOKE CREATE ON SCHEMA " + schema + " FROM PUBLIC");
  std::string info = pg::conninfo();
  const std::string superuser = "user=fasteners ";
  ASSERT_NE(info.find(superuser), std::string::npos) << info;
  info.replace(info.find(superuser), superuser.size(), "user=" + role.name() + " ");

  const std::string name = pg::unique_name();
  {
    postgres_lock lock(info, name, fencing());
    try {
      lock.lock();
      ADD_FAILURE() << "took a token without a table";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::permission_denied) << e.what();
      EXPECT_NE(std::string(e.what()).find("CREATE TABLE IF NOT EXISTS fasteners_fence (key bigint "
                                           "PRIMARY KEY, token bigint NOT NULL)"),
                std::string::npos)
          << e.what();
    }
    EXPECT_FALSE(lock.acquired());
    EXPECT_TRUE(pg::server_try(fasteners::postgres_key(name))) << "the failed acquire kept it";
    // Readers need no table.
    postgres_reader_writer_lock reader(info, name, fencing());
    reader.lock_shared();
    EXPECT_EQ(reader.fencing_token(), 0u);
    reader.unlock_shared();
  }
  pg::query("GRANT CREATE ON SCHEMA " + schema + " TO " + role.name());
  {
    postgres_lock lock(info, name, fencing());
    lock.lock();
    EXPECT_EQ(lock.fencing_token(), 1u);
    lock.unlock();
  }
  pg::query("DROP SCHEMA " + schema + " CASCADE");
}

}  // namespace
}  // namespace fasteners_test
