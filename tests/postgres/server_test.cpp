// Tests of the PostgreSQL test harness: the fixture's server, the side channel, restarts, pg_locks
// counts and the key expression that fasteners/postgres.hpp documents.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "posix/posix_support.hpp"
#include "postgres/pg_test_support.hpp"

namespace fasteners::test::pg {
namespace {

namespace fs = std::filesystem;
using fasteners_test::child_process;
using fasteners_test::fail;

// Helper "query_unprivileged": drops to an unprivileged user, then asks the server. The conninfo
// is read first: the state file that names the server sits in the build tree, which that user
// may not reach (a clone in root's home).
FASTENERS_TEST_HELPER(query_unprivileged) {
  const std::string info = conninfo();
  if (!fasteners_test::drop_privileges()) return fail(2, "could not run as an unprivileged user");
  const std::string answer = connection(info).query("SELECT 6 * 7");
  if (answer != "42") return fail(3, "the server answered " + answer);
  return 0;
}

TEST(server_test, answers_select_1) {
  EXPECT_EQ(query("SELECT 1"), "1");
  EXPECT_NE(conninfo().find("host=" + (server_dir() / "socket").string()), std::string::npos)
      << conninfo();
  EXPECT_EQ(query("SELECT current_user"), "fasteners");
  EXPECT_EQ(query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"), "t");
  EXPECT_EQ(query("SELECT current_database()"), "fasteners");
  EXPECT_EQ(query("SHOW max_connections"), "300");
}

TEST(server_test, query_reports_the_servers_message) {
  try {
    query("SELECT 1 / 0");
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("division by zero"), std::string::npos) << e.what();
  }
  EXPECT_THROW(query_rows("SELEKT 1"), std::runtime_error);
  EXPECT_THROW(connection("host=/nonexistent port=1 user=fasteners dbname=fasteners"),
               std::runtime_error);
}

TEST(server_test, query_rows_returns_every_row_as_text) {
  const std::vector<std::vector<std::string>> expected = {{"1", "2"}, {"2", "4"}, {"3", "6"}};
  EXPECT_EQ(query_rows("SELECT g, g * 2 FROM generate_series(1, 3) AS g"), expected);
  EXPECT_EQ(query("SELECT NULL"), "");
  EXPECT_EQ(query("SELECT 1 WHERE false"), "");
  EXPECT_TRUE(query_rows("SELECT 1 WHERE false").empty());
  EXPECT_EQ(query("SELECT " + literal("it's")), "it's");
}

TEST(server_test, restart_ends_sessions_and_the_server_answers_again) {
  connection before;
  ASSERT_EQ(before.query("SELECT 1"), "1");
  const auto start = std::chrono::steady_clock::now();
  restart_server();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(30));
  EXPECT_EQ(query("SELECT 1"), "1");
  EXPECT_THROW(before.query("SELECT 1"), std::runtime_error);
  connection after;
  EXPECT_EQ(after.query("SELECT 1"), "1");
}

TEST(server_test, the_key_expression_of_the_header_runs) {
  // The first 8 bytes of SHA-256 big-endian: sha256("abc") = ba7816bf 8f01cfea ...
  EXPECT_EQ(server_key("abc"), -5010229573455851542);
  EXPECT_EQ(server_key(""), -2039914840885289964);
  EXPECT_EQ(server_key("fasteners"), 862214967823740897);
  EXPECT_EQ(server_key("\xc3\xbcn\xc3\xaf"
                       "code \xe2\x98\x83"),
            -1698747317810351342);
  for (const std::string name : {"abc", "", "it's",
                                 "\xc3\xbcn\xc3\xaf"
                                 "code \xe2\x98\x83"}) {
    EXPECT_EQ(server_key(name), fasteners::postgres_key(name)) << name;
  }
}

TEST(server_test, advisory_locks_are_counted_by_key) {
  // A negative key and a positive one: classid and objid are the key's unsigned halves.
  const std::int64_t base = server_key(unique_name());
  for (const std::int64_t key : {base | INT64_MIN, base & INT64_MAX}) {
    const std::string k = std::to_string(key);
    connection holder;
    holder.query("SELECT pg_advisory_lock(" + k + ")");
    EXPECT_EQ(advisory_locks_on(key), 1) << key;
    EXPECT_EQ(advisory_locks_on(key, false), 0) << key;
    EXPECT_EQ(advisory_locks_on(key ^ 1), 0) << key;

    std::thread waiter([&k] {
      connection session;
      session.query("SELECT pg_advisory_lock(" + k + ")");
      session.query("SELECT pg_advisory_unlock(" + k + ")");
    });
    EXPECT_TRUE(wait_for_advisory_locks(key, 1, false)) << key;
    holder.query("SELECT pg_advisory_unlock(" + k + ")");
    waiter.join();
    EXPECT_TRUE(wait_for_advisory_locks(key, 0, true)) << key;
  }
}

TEST(server_test, terminate_sessions_on_ends_the_holder) {
  const std::int64_t key = server_key(unique_name());
  connection holder;
  holder.query("SELECT pg_advisory_lock(" + std::to_string(key) + ")");
  ASSERT_EQ(advisory_locks_on(key), 1);
  EXPECT_EQ(terminate_sessions_on(key), 1);
  EXPECT_TRUE(wait_for_advisory_locks(key, 0, true));
  EXPECT_THROW(holder.query("SELECT 1"), std::runtime_error);
}

TEST(server_test, an_unprivileged_user_reaches_the_server) {
  EXPECT_EQ(fasteners_test::run_helper("query_unprivileged"), 0);
  connection plain(unprivileged_conninfo());
  EXPECT_EQ(plain.query("SELECT current_user"), "fasteners_unprivileged");
  EXPECT_EQ(plain.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"), "f");
}

TEST(server_test, psql_runs) {
  ASSERT_TRUE(fs::exists(psql_path())) << psql_path();
  child_process psql({psql_path().string(), "-X", "-A", "-t", "-c", "SELECT 40 + 2", conninfo()});
  EXPECT_EQ(psql.read_line(), "42");
  EXPECT_EQ(psql.finish(), 0);
}

TEST(server_test, unique_names_differ_and_name_the_test) {
  const std::string a = unique_name();
  const std::string b = unique_name("x");
  EXPECT_NE(a, b);
  EXPECT_NE(a.find("server_test.unique_names_differ_and_name_the_test"), std::string::npos) << a;
  EXPECT_EQ(b.substr(b.size() - 2), "/x");
}

}  // namespace
}  // namespace fasteners::test::pg
