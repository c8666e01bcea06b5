// fasteners::postgres_lock and postgres_reader_writer_lock within one process, against a real
// throwaway server (pg_test_support): the key, misuse, the server's view, lost sessions, connection
// errors, a role's settings, scale, wrappers and guards. The promises every backend keeps are in
// tests/contract/backend_contract_test.cpp (postgres_contract_test); other processes' in
// postgres_process_test.cpp.
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
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

namespace pg = fasteners::test::pg;
using fasteners::postgres_key;
using fasteners::postgres_lock;
using fasteners::postgres_options;
using fasteners::postgres_reader_writer_lock;

// ---------------------------------------------------------------------------------------------
// What the server says, asked on connections of its own (never the library's).

// The condition of pg_locks rows on the advisory lock of a bigint key.
std::string advisory_rows(std::int64_t key) {
  return "locktype = 'advisory' AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
         "WHERE datname = current_database()) AND ((classid::bigint << 32) | objid::bigint) = " +
         std::to_string(key);
}

// The server process ids of the sessions that hold `key`.
std::vector<std::string> holder_pids(std::int64_t key) {
  std::vector<std::string> pids;
  for (const auto& row : pg::query_rows("SELECT pid FROM pg_locks WHERE granted AND " +
                                        advisory_rows(key) + " ORDER BY pid")) {
    pids.push_back(row.at(0));
  }
  return pids;
}

bool backend_exists(const std::string& pid) {
  return pg::query("SELECT count(*) FROM pg_stat_activity WHERE pid = " + pid) != "0";
}

// Whether `condition` holds within `timeout`, asked every 10 ms.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (steady::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

// Expects `f` to throw std::system_error with `code`; returns its message ("" if it did not).
std::string expect_system_error(const std::function<void()>& f, std::errc code,
                                const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), code) << what << ": " << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw something else than std::system_error: " << e.what();
  }
  return "";
}

void expect_not_permitted(const std::function<void()>& f, const std::string& what) {
  expect_system_error(f, std::errc::operation_not_permitted, what);
}

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// `conninfo` with one more keyword (the last value of a keyword wins), or one more URI parameter.
std::string with_param(const std::string& conninfo, const std::string& keyword,
                       const std::string& value) {
  if (conninfo.rfind("postgres://", 0) == 0 || conninfo.rfind("postgresql://", 0) == 0) {
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + keyword + "=" + value;
  }
  return conninfo + " " + keyword + "='" + value + "'";
}

// ---------------------------------------------------------------------------------------------
// The key.

TEST(postgres_key, matches_the_issue_sql_for_an_ascii_name) {
  const std::string name = "fasteners-ascii-lock";
  const std::string sql = "SELECT ('x' || left(encode(sha256(convert_to('" + name +
                          "', 'UTF8')), 'hex'), 16))::bit(64)::bigint";
  EXPECT_EQ(std::to_string(postgres_key(name)), pg::query(sql));
}

TEST(postgres_key, matches_the_server_for_utf8_empty_and_random_names) {
  std::vector<std::string> names = {"café-€-日本", "", "lock", "\U0001F512 ключ",
                                    std::string(1000, 'x')};
  std::mt19937 random(20240611);
  const std::vector<std::string> pieces = {"a",  "Z", "0", "-",  "_",          " ", "/",  "'",
                                           "\\", "é", "€", "日", "\U0001F600", "%", "\t", "\n"};
  for (int i = 0; i < 12; ++i) {
    std::string name;
    const int length = static_cast<int>(random() % 40);
    for (int j = 0; j < length; ++j) name += pieces[random() % pieces.size()];
    names.push_back(name);
  }
  for (const auto& name : names) {
    EXPECT_EQ(postgres_key(name), pg::server_key(name)) << "name '" << name << "'";
  }
}

// Golden values, computed once by the server with the issue's SQL: the key can never drift.
TEST(postgres_key, golden_values) {
  const std::vector<std::pair<std::string, std::int64_t>> golden = {
      {"", -2039914840885289964},  // e3b0c44298fc1c14, sha256 of nothing
      {"lock", 865541628958336260},
      {"café-€-日本", 2912375666671624951},
      {"fasteners", 862214967823740897},
  };
  for (const auto& [name, key] : golden) {
    EXPECT_EQ(postgres_key(name), key) << "name '" << name << "'";
    EXPECT_EQ(pg::server_key(name), key) << "the server disagrees on '" << name << "'";
  }
}

// The key hashes the name's bytes as they are, as sha256() of a bytea does in SQL.
TEST(postgres_key, hashes_the_bytes_as_given) {
  const std::string bytes = "\xff\xfe lock \x80";
  const std::string sql = "SELECT ('x' || left(encode(sha256('\\x" + pg::hex_of(bytes) +
                          "'::bytea), 'hex'), 16))::bit(64)::bigint";
  EXPECT_EQ(std::to_string(postgres_key(bytes)), pg::query(sql));
}

TEST(postgres_key, the_objects_report_their_name_and_key) {
  const std::string name = pg::unique_name("é");
  postgres_lock lock(pg::conninfo(), name);
  postgres_reader_writer_lock rw(pg::conninfo(), name);
  EXPECT_EQ(lock.name(), name);
  EXPECT_EQ(rw.name(), name);
  EXPECT_EQ(lock.key(), postgres_key(name));
  EXPECT_EQ(rw.key(), postgres_key(name));
  EXPECT_EQ(lock.key(), pg::server_key(name));
}

TEST(postgres_key, a_name_with_a_nul_byte_is_refused_at_construction) {
  const std::string name("bad\0name", 8);
  EXPECT_THROW(postgres_lock(pg::conninfo(), name), std::invalid_argument);
  EXPECT_THROW(postgres_reader_writer_lock(pg::conninfo(), name), std::invalid_argument);
  EXPECT_THROW(postgres_lock(pg::conninfo(), std::string(1, '\0')), std::invalid_argument);
  // Construction does not connect: an unreachable server is no error yet.
  EXPECT_NO_THROW(postgres_lock("host=/nonexistent-dir port=1", "fine"));
}

// ---------------------------------------------------------------------------------------------
// Exclusive locks: misuse, the server's view, sessions.

TEST(postgres_lock_test, release_without_holding_throws_operation_not_permitted) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  expect_not_permitted([&] { lock.release(); }, "release of a new object");
  expect_not_permitted([&] { lock.unlock(); }, "unlock of a new object");
  lock.lock();
  postgres_lock other(pg::conninfo(), name);
  expect_not_permitted([&] { other.release(); }, "release through an object that does not hold");
  EXPECT_TRUE(lock.acquired());
  EXPECT_FALSE(pg::server_try(lock.key()));
  lock.unlock();
  expect_not_permitted([&] { lock.unlock(); }, "a second unlock");
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));

  postgres_reader_writer_lock rw(pg::conninfo(), name);
  expect_not_permitted([&] { rw.release_read_lock(); }, "release_read_lock of a new object");
  expect_not_permitted([&] { rw.release_write_lock(); }, "release_write_lock of a new object");
  rw.lock_shared();
  expect_not_permitted([&] { rw.release_write_lock(); }, "release_write_lock of a read lock");
  EXPECT_TRUE(rw.read_acquired());
  rw.unlock_shared();
  expect_not_permitted([&] { rw.unlock_shared(); }, "a second unlock_shared");
  rw.lock();
  expect_not_permitted([&] { rw.release_read_lock(); }, "release_read_lock of a write lock");
  EXPECT_TRUE(rw.write_acquired());
  rw.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(rw.key()));
}

TEST(postgres_lock_test, negative_or_nan_timeouts_throw_invalid_argument) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  postgres_reader_writer_lock rw(pg::conninfo(), name);
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THROW(lock.acquire(true, std::chrono::duration<double>(-1.0)), std::invalid_argument);
  EXPECT_THROW(lock.acquire(true, std::chrono::duration<double>(-1e-9)), std::invalid_argument);
  EXPECT_THROW(lock.acquire(true, nan), std::invalid_argument);
  EXPECT_THROW(lock.try_lock_for(nan), std::invalid_argument);
  EXPECT_THROW(
      lock.try_lock_until(std::chrono::time_point<steady, std::chrono::duration<double>>(nan)),
      std::invalid_argument);
  EXPECT_THROW(rw.acquire_read_lock(true, std::chrono::duration<double>(-0.5)),
               std::invalid_argument);
  EXPECT_THROW(rw.acquire_write_lock(true, std::chrono::duration<double>(-0.5)),
               std::invalid_argument);
  EXPECT_THROW(rw.acquire_read_lock(true, nan), std::invalid_argument);
  EXPECT_THROW(rw.acquire_write_lock(true, nan), std::invalid_argument);
  EXPECT_THROW(rw.try_lock_shared_for(nan), std::invalid_argument);
  EXPECT_FALSE(lock.acquired());
  EXPECT_FALSE(rw.read_acquired());
  EXPECT_FALSE(rw.write_acquired());
  EXPECT_EQ(pg::advisory_locks_on(lock.key(), true), 0);
  EXPECT_EQ(pg::advisory_locks_on(lock.key(), false), 0);
}

TEST(postgres_lock_test, acquire_then_release_leaves_nothing_on_the_server) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(lock.try_lock());
    EXPECT_FALSE(lock.try_lock()) << "a held object took its lock again";
    EXPECT_FALSE(on_other_thread([&] { return lock.try_lock(); }));
    EXPECT_EQ(pg::advisory_locks_on(lock.key(), true), 1);
    lock.unlock();
    EXPECT_EQ(pg::advisory_locks_on(lock.key(), true), 0) << "round " << i;
    EXPECT_TRUE(pg::server_try(lock.key())) << "round " << i;
  }
  EXPECT_TRUE(lock.session_alive()) << "the object closed its session without close_on_release";
}

TEST(postgres_lock_test, destruction_releases) {
  const std::string name = pg::unique_name();
  {
    postgres_lock lock(pg::conninfo(), name);
    lock.lock();
    EXPECT_FALSE(pg::server_try(lock.key()));
  }
  postgres_lock other(pg::conninfo(), name);
  EXPECT_TRUE(other.try_lock()) << "the destroyed object's lock is still held";
  other.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
  {
    postgres_reader_writer_lock rw(pg::conninfo(), name);
    std::vector<std::thread> readers;
    latch all_read(3);
    latch done(1);
    for (int i = 0; i < 2; ++i) {
      readers.emplace_back([&] {
        rw.lock_shared();
        all_read.count_down();
        done.wait_for();
      });
    }
    rw.lock_shared();
    all_read.count_down();
    ASSERT_TRUE(all_read.wait_for());
    done.count_down();
    for (auto& t : readers) t.join();
    EXPECT_FALSE(pg::server_try(rw.key()));
  }
  EXPECT_TRUE(other.try_lock()) << "the destroyed object's read locks are still held";
  other.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

TEST(postgres_lock_test, moved_objects_keep_their_lock) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  lock.lock();
  postgres_lock moved(std::move(lock));
  EXPECT_TRUE(moved.acquired());
  EXPECT_EQ(moved.name(), name);
  EXPECT_FALSE(pg::server_try(moved.key()));
  const std::string other_name = pg::unique_name("other");
  postgres_lock assigned(pg::conninfo(), other_name);
  assigned.lock();
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.acquired());
  EXPECT_EQ(assigned.name(), name);
  EXPECT_FALSE(pg::server_try(postgres_key(name)));
  // Assigning over a held lock releases it, as destruction does.
  EXPECT_TRUE(pg::server_try(postgres_key(other_name)));
  assigned.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

TEST(postgres_lock_test, native_handle_and_session_state) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  EXPECT_EQ(lock.native_handle(), -1);
  EXPECT_FALSE(lock.session_alive()) << "a new object has a session before its first acquire";
  lock.lock();
  EXPECT_GE(lock.native_handle(), 0);
  EXPECT_TRUE(lock.session_alive());
  lock.unlock();
  EXPECT_EQ(lock.native_handle(), -1);
  EXPECT_TRUE(lock.session_alive());
}

TEST(postgres_lock_test, close_on_release_ends_the_session) {
  const std::string name = pg::unique_name();
  postgres_options options;
  options.close_on_release = true;
  postgres_lock lock(pg::conninfo(), name, options);
  for (int round = 0; round < 2; ++round) {
    lock.lock();
    EXPECT_TRUE(lock.session_alive());
    const auto pids = holder_pids(lock.key());
    ASSERT_EQ(pids.size(), 1u);
    lock.unlock();
    EXPECT_FALSE(lock.session_alive()) << "round " << round;
    EXPECT_TRUE(eventually([&] { return !backend_exists(pids[0]); }))
        << "the server process of the released session lives on";
  }
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
}

// ---------------------------------------------------------------------------------------------
// Lost sessions.

// The server process of the session holding `key`; "" if none (or more than one) holds it.
std::string only_holder_pid(std::int64_t key) {
  const auto pids = holder_pids(key);
  return pids.size() == 1 ? pids[0] : "";
}

// After the session of `lock` (whose socket is `socket`) was ended behind its back: once the end
// has reached this machine, the first session_alive() says false and acquired() follows, release()
// reports the lost lock, and the next acquire connects again.
void expect_lost_lock(postgres_lock& lock, std::intptr_t socket) {
  ASSERT_TRUE(pg::wait_for_hangup(socket)) << "the server did not close the session";
  EXPECT_FALSE(lock.session_alive()) << "the first session_alive() after the end says true";
  EXPECT_FALSE(lock.acquired()) << "acquired() says true once the session is known lost";
  const std::string message =
      expect_system_error([&] { lock.release(); }, std::errc::connection_reset, "release()");
  EXPECT_NE(lowercase(message).find("lost"), std::string::npos)
      << "the message does not say the lock was lost: " << message;
  EXPECT_FALSE(lock.acquired());
  expect_not_permitted([&] { lock.release(); }, "a second release after the loss");
  EXPECT_TRUE(lock.try_lock()) << "the object did not connect again";
  EXPECT_TRUE(lock.session_alive());
  EXPECT_EQ(pg::advisory_locks_on(lock.key(), true), 1);
  EXPECT_FALSE(pg::server_try(lock.key()));
  lock.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
}

TEST(postgres_session_test, a_terminated_session_loses_the_lock) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  lock.lock();
  const std::intptr_t socket = lock.native_handle();
  const std::string pid = only_holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  EXPECT_TRUE(pg::wait_for_advisory_locks(lock.key(), 0, true));
  expect_lost_lock(lock, socket);
}

TEST(postgres_session_test, a_terminated_session_loses_read_locks) {
  const std::string name = pg::unique_name();
  postgres_reader_writer_lock lock(pg::conninfo(), name);
  lock.lock_shared();
  const std::intptr_t socket = lock.native_handle();
  const std::string pid = only_holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  ASSERT_TRUE(pg::wait_for_hangup(socket));
  EXPECT_FALSE(lock.session_alive());
  EXPECT_FALSE(lock.read_acquired());
  expect_system_error([&] { lock.unlock_shared(); }, std::errc::connection_reset,
                      "unlock_shared()");
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
}

TEST(postgres_session_test, a_server_restart_loses_the_lock) {
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name);
  lock.lock();
  const std::intptr_t socket = lock.native_handle();
  ASSERT_FALSE(only_holder_pid(lock.key()).empty());
  pg::restart_server();
  expect_lost_lock(lock, socket);
}

// A waiter whose session ends held nothing: its error says the session ended, not that locks
// were lost.
TEST(postgres_session_test, a_waiter_whose_session_ends_is_not_told_it_lost_locks) {
  const std::string name = pg::unique_name();
  postgres_lock holder(pg::conninfo(), name);
  holder.lock();
  postgres_lock waiter(pg::conninfo(), name);
  std::string message;
  std::thread waiting([&] {
    message = expect_system_error([&] { waiter.lock(); }, std::errc::connection_reset,
                                  "lock() of a waiter whose session ended");
  });
  ASSERT_TRUE(pg::wait_for_advisory_locks(holder.key(), 1, false)) << "the waiter never queued";
  EXPECT_EQ(pg::query("SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE NOT granted "
                      "AND " +
                      advisory_rows(holder.key())),
            "1");
  waiting.join();
  EXPECT_NE(message.find("ended"), std::string::npos) << message;
  EXPECT_EQ(message.find("held"), std::string::npos) << message;
  EXPECT_FALSE(waiter.acquired());
  holder.unlock();
}

// ---------------------------------------------------------------------------------------------
// Connection errors.

// Every acquire of an object on `conninfo` throws std::system_error within `bound` seconds (with
// `code`, if given); returns the messages.
std::vector<std::string> expect_connection_errors(const std::string& conninfo, double bound,
                                                  std::optional<std::errc> code = std::nullopt) {
  const postgres_options options;
  std::vector<std::string> messages;
  postgres_lock lock(conninfo, pg::unique_name(), options);
  postgres_reader_writer_lock rw(conninfo, pg::unique_name("rw"), options);
  const std::vector<std::pair<std::string, std::function<void()>>> calls = {
      {"lock()", [&] { lock.lock(); }},
      {"try_lock()", [&] { lock.try_lock(); }},
      {"try_lock_for(1s)", [&] { lock.try_lock_for(1s); }},
      {"acquire_read_lock()", [&] { rw.acquire_read_lock(); }},
      {"try_lock_shared()", [&] { rw.try_lock_shared(); }},
      {"acquire_write_lock(true, 1)",
       [&] { rw.acquire_write_lock(true, std::chrono::duration<double>(1)); }},
  };
  for (const auto& [what, call] : calls) {
    const auto start = steady::now();
    try {
      call();
      ADD_FAILURE() << what << " on '" << conninfo << "' did not throw";
    } catch (const std::system_error& e) {
      messages.push_back(e.what());
      if (code) {
        EXPECT_EQ(e.code(), *code) << what << ": " << e.what();
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << " threw something else than std::system_error: " << e.what();
    }
    EXPECT_LT(seconds_since(start), bound) << what << " took too long";
  }
  EXPECT_FALSE(lock.acquired());
  EXPECT_FALSE(rw.read_acquired());
  EXPECT_FALSE(rw.write_acquired());
  EXPECT_FALSE(lock.session_alive());
  return messages;
}

TEST(postgres_errors_test, an_unreachable_server_names_host_and_database_but_no_password) {
  for (const std::string host : {"/nonexistent-dir", "127.0.0.1"}) {
    SCOPED_TRACE(host);
    const std::string conninfo =
        "host=" + host + " port=1 dbname=fasteners_db_marker user=fasteners password=secret";
    for (const auto& message :
         expect_connection_errors(conninfo, 15.0, std::errc::connection_refused)) {
      EXPECT_NE(message.find(host), std::string::npos) << "no host in: " << message;
      EXPECT_NE(message.find("fasteners_db_marker"), std::string::npos)
          << "no database in: " << message;
      EXPECT_EQ(message.find("secret"), std::string::npos) << "the password shows: " << message;
    }
  }
}

TEST(postgres_errors_test, a_uri_password_never_shows) {
  const std::string conninfo = "postgresql://fasteners:secret@127.0.0.1:1/fasteners_db_marker";
  for (const auto& message : expect_connection_errors(conninfo, 15.0)) {
    EXPECT_EQ(message.find("secret"), std::string::npos) << "the password shows: " << message;
    EXPECT_NE(message.find("fasteners_db_marker"), std::string::npos)
        << "no database in: " << message;
  }
}

// A host that does not answer at all: the connect timeout of the options bounds the wait.
TEST(postgres_errors_test, the_connect_timeout_bounds_the_wait) {
  postgres_options options;
  options.connect_timeout = 2;
  const auto start = steady::now();
  // 192.0.2.0/24 is TEST-NET-1: no such host answers (or the network is unreachable at once).
  postgres_lock lock("host=192.0.2.1 port=5432 dbname=d", pg::unique_name(), options);
  EXPECT_THROW(lock.try_lock(), std::system_error);
  const double elapsed = seconds_since(start);
  std::cout << "gave up after " << elapsed << " s\n";
  EXPECT_LT(elapsed, 2.0 + 8.0);
}

TEST(postgres_errors_test, a_missing_database_is_named) {
  const std::string conninfo = with_param(pg::conninfo(), "dbname", "nope_fasteners_missing");
  for (const auto& message : expect_connection_errors(conninfo, 15.0)) {
    EXPECT_NE(message.find("nope_fasteners_missing"), std::string::npos)
        << "no database in: " << message;
  }
}

// A server that refuses the login denies access: permission_denied, naming the server.
TEST(postgres_errors_test, a_refused_login_throws_permission_denied) {
  const std::string conninfo = with_param(pg::conninfo(), "user", "no_such_role_fasteners");
  for (const auto& message :
       expect_connection_errors(conninfo, 15.0, std::errc::permission_denied)) {
    EXPECT_NE(message.find("no_such_role_fasteners"), std::string::npos) << message;
    EXPECT_EQ(message.find("LOCATION"), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------
// A role's settings.

// A login role whose defaults end a statement, a lock wait and an idle session after 1 ms.
struct hasty_role : pg::login_role {
  hasty_role()
      : login_role({{"statement_timeout", "1ms"},
                    {"lock_timeout", "1ms"},
                    {"idle_session_timeout", "1ms"}}) {}
  std::string conninfo() const { return with_param(pg::conninfo(), "user", name()); }
};

TEST(postgres_settings_test, a_roles_1ms_timeouts_break_no_connect) {
  hasty_role role;
  const std::string name = pg::unique_name();
  postgres_options once;
  once.close_on_release = true;  // A login at every acquire.
  int failures = 0;
  std::string first_failure;
  for (int i = 0; i < 300; ++i) {
    try {
      postgres_lock lock(role.conninfo(), name, once);
      if (!lock.try_lock()) throw std::runtime_error("try_lock() found the free lock taken");
      lock.unlock();
    } catch (const std::exception& e) {
      if (failures++ == 0) first_failure = e.what();
    }
  }
  EXPECT_EQ(failures, 0) << "connects that failed, the first with: " << first_failure;
  EXPECT_TRUE(pg::server_shows_nothing(postgres_key(name)));
}

TEST(postgres_settings_test, a_roles_1ms_timeouts_end_no_wait_or_hold) {
  hasty_role role;
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  postgres_lock holder(role.conninfo(), name);
  ASSERT_TRUE(holder.try_lock());
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(pg::server_try(key)) << "the holder's session ended while idle";
  EXPECT_TRUE(holder.session_alive());
  postgres_lock waiter(role.conninfo(), name);
  const auto start = steady::now();
  EXPECT_FALSE(on_other_thread([&] {
    try {
      return waiter.try_lock_for(200ms);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
      return false;
    }
  }));
  EXPECT_GE(seconds_since(start), 0.19) << "the timed wait ended before its deadline";
  std::thread waiting([&] {
    EXPECT_NO_THROW(waiter.lock());
    EXPECT_TRUE(waiter.acquired());
    std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(pg::server_try(key)) << "the waiter's session ended while idle";
    EXPECT_NO_THROW(waiter.unlock());
  });
  std::this_thread::sleep_for(100ms);
  holder.unlock();
  waiting.join();
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// ---------------------------------------------------------------------------------------------
// Scale.

TEST(postgres_scale_test, two_hundred_objects_hold_distinct_names_at_once) {
  constexpr int count = 200;
  std::vector<std::unique_ptr<postgres_lock>> locks;
  std::string keys;
  for (int i = 0; i < count; ++i) {
    locks.push_back(
        std::make_unique<postgres_lock>(pg::conninfo(), pg::unique_name(std::to_string(i))));
    keys += (i ? "," : "") + std::to_string(locks.back()->key());
  }
  const std::string held_sql =
      "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
      "objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = ANY(ARRAY[" +
      keys + "]::bigint[])";
  for (auto& lock : locks) ASSERT_TRUE(lock->try_lock()) << lock->name();
  EXPECT_EQ(pg::query(held_sql), std::to_string(count));
  for (std::size_t i = 0; i < locks.size(); i += 37) {
    EXPECT_FALSE(pg::server_try(locks[i]->key())) << locks[i]->name();
  }
  for (auto& lock : locks) lock->unlock();
  EXPECT_EQ(pg::query(held_sql), "0");
  locks.clear();
}

// ---------------------------------------------------------------------------------------------
// Function wrappers and guards.

TEST(postgres_locked_test, the_function_runs_under_the_lock) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  auto locked = fasteners::postgres_locked(pg::conninfo(), name, [&](int a, const std::string& b) {
    EXPECT_FALSE(pg::server_try(key)) << "called without the lock";
    EXPECT_FALSE(pg::server_try(key, true)) << "called without the lock";
    return b + std::to_string(a);
  });
  EXPECT_EQ(locked(7, "x"), "x7");
  EXPECT_TRUE(pg::server_try(key)) << "the lock outlived the call";
  auto copy = locked;
  EXPECT_EQ(copy(8, "y"), "y8");
  // Copies share one lock object: calls on threads never overlap.
  occupancy inside;
  auto counted = fasteners::postgres_locked(pg::conninfo(), name, [&] {
    inside.enter_exclusive();
    std::this_thread::yield();
    inside.leave_exclusive();
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < 3; ++t) {
    pool.emplace_back([c = counted] {
      for (int i = 0; i < 20; ++i) c();
    });
  }
  for (auto& t : pool) t.join();
  EXPECT_FALSE(inside.violated());
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

TEST(postgres_locked_test, read_locked_calls_share_and_write_locked_calls_exclude) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  constexpr int threads = 3;
  latch all_inside(threads);
  std::atomic<int> together{0};
  auto read = fasteners::postgres_read_locked(pg::conninfo(), name, [&] {
    EXPECT_FALSE(pg::server_try(key)) << "a read-locked call without the read lock";
    EXPECT_TRUE(pg::server_try(key, true)) << "a read-locked call under a write lock";
    if (all_inside.arrive_and_wait_for()) ++together;
    return 1;
  });
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([c = read] { EXPECT_EQ(c(), 1); });
  }
  for (auto& t : pool) t.join();
  EXPECT_EQ(together, threads) << "the read-locked calls did not run at once";
  EXPECT_TRUE(pg::server_shows_nothing(key));

  auto write = fasteners::postgres_write_locked(pg::conninfo(), name, [&](int x) {
    EXPECT_FALSE(pg::server_try(key)) << "a write-locked call without the write lock";
    EXPECT_FALSE(pg::server_try(key, true)) << "a write-locked call without the write lock";
    return x * 2;
  });
  EXPECT_EQ(write(21), 42);
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

TEST(postgres_guard_test, guards_release_on_destruction) {
  const std::string name = pg::unique_name();
  postgres_reader_writer_lock lock(pg::conninfo(), name);
  {
    auto guard = lock.write_lock();
    EXPECT_TRUE(guard.owns_lock());
    EXPECT_TRUE(lock.write_acquired());
    EXPECT_FALSE(pg::server_try(lock.key(), true));
  }
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
  {
    auto guard = lock.read_lock();
    EXPECT_TRUE(lock.read_acquired());
    EXPECT_FALSE(pg::server_try(lock.key()));
    EXPECT_TRUE(pg::server_try(lock.key(), true));
    fasteners::postgres_read_guard moved(std::move(guard));
    EXPECT_FALSE(guard.owns_lock());  // NOLINT(bugprone-use-after-move): checked on purpose
    EXPECT_TRUE(moved.owns_lock());
    EXPECT_TRUE(lock.read_acquired());
  }
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
  {
    auto guard = lock.write_lock();
    guard.unlock();
    EXPECT_FALSE(guard.owns_lock());
    EXPECT_FALSE(lock.write_acquired());
    EXPECT_TRUE(pg::server_try(lock.key()));
  }
  EXPECT_TRUE(pg::server_shows_nothing(lock.key()));
}

}  // namespace
}  // namespace fasteners_test
