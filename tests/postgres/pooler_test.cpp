// PgBouncer between the library and the server: in session mode the locks work as directly
// connected; in transaction mode every acquire fails with protocol_error before any lock is taken,
// and a session that finds itself on another server process while holding ends its own, so that
// no lock outlives it on a pooled server connection.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "fasteners/postgres.hpp"
#include "postgres/pg_test_support.hpp"

namespace pg = fasteners::test::pg;
using namespace fasteners_test;
using namespace std::chrono_literals;

namespace {

// A PgBouncer in `mode` (session or transaction) with PgBouncer's default settings otherwise
// (`pool_size` server connections if given), listening on a Unix socket of its own and forwarding
// to the test server, for the role fasteners and the `roles` given. Stopped on destruction.
class pgbouncer {
 public:
  explicit pgbouncer(const std::string& mode, int pool_size = 0,
                     const std::vector<std::string>& roles = {})
      : pool_size_(pool_size) {
    // Its directory must be writable by the user PgBouncer runs as (not root: it refuses).
    dir_ = temp_dir_path();
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    {
      std::ofstream users(dir_ / "users.txt");
      users << "\"fasteners\" \"\"\n";
      for (const auto& role : roles) users << '"' << role << "\" \"\"\n";
    }
    std::filesystem::permissions(dir_ / "users.txt", std::filesystem::perms::all);
    write_ini(mode);
    std::vector<std::string> argv{"/usr/sbin/pgbouncer"};
    if (::geteuid() == 0) {
      argv.push_back("-u");
      argv.push_back("postgres");
    }
    argv.push_back((dir_ / "pgbouncer.ini").string());
    process_.emplace(argv);
  }
  ~pgbouncer() {
    if (process_) process_->kill();
    process_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string conninfo(const std::string& user = "fasteners") const {
    return "host=" + dir_.string() + " port=" + std::to_string(port_) +
           " dbname=fasteners user=" + user;
  }
  // Whether it accepts connections within `timeout`.
  bool ready(std::chrono::milliseconds timeout) const {
    const auto until = steady::now() + timeout;
    while (steady::now() < until) {
      try {
        pg::connection probe(conninfo());
        if (probe.query("SELECT 1") == "1") return true;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }
  // Switches to `mode` (SIGHUP: PgBouncer reads its configuration again); clients connected now
  // stay, and are served in the new mode from their next transaction on.
  void reload_as(const std::string& mode) {
    write_ini(mode);
    ASSERT_EQ(::kill(process_->id(), SIGHUP), 0);
    // The reload shows in its log.
    const auto until = steady::now() + k_long;
    while (log().find("got SIGHUP") == std::string::npos && steady::now() < until) {
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_NE(log().find("got SIGHUP"), std::string::npos) << "PgBouncer did not reload";
  }
  std::string log() const {
    std::ifstream in(dir_ / "pgbouncer.log");
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

 private:
  static std::filesystem::path temp_dir_path() {
    char pattern[] = "/tmp/fasteners-pgb.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }
  void write_ini(const std::string& mode) const {
    const std::string server_socket = pg::query("SHOW unix_socket_directories");
    const std::string server_port = pg::query("SHOW port");
    {
      std::ofstream ini(dir_ / "pgbouncer.ini");
      ini << "[databases]\n"
          << "fasteners = host=" << server_socket << " port=" << server_port
          << " dbname=fasteners\n"
          << "[pgbouncer]\n"
          << "listen_addr =\n"
          << "listen_port = " << port_ << "\n"
          << "unix_socket_dir = " << dir_.string() << "\n"
          << "auth_type = trust\n"
          << "auth_file = " << (dir_ / "users.txt").string() << "\n"
          << "pool_mode = " << mode << "\n"
          << "logfile = " << (dir_ / "pgbouncer.log").string() << "\n";
      if (pool_size_ > 0) ini << "default_pool_size = " << pool_size_ << "\n";
    }
    std::filesystem::permissions(dir_ / "pgbouncer.ini", std::filesystem::perms::all);
  }

  std::filesystem::path dir_;
  int port_ = 6400 + static_cast<int>(::getpid() % 1000);
  int pool_size_;
  std::optional<child_process> process_;
};

void require_pgbouncer() {
  if (!std::filesystem::exists("/usr/sbin/pgbouncer")) {
    GTEST_FAIL() << "PgBouncer is not installed (Debian package pgbouncer, see scripts/setup.sh)";
  }
}

// The advisory locks in pg_locks on the keys of `names`, granted or not.
int advisory_locks_on(const std::vector<std::string>& names) {
  std::string keys;
  for (const auto& name : names) {
    keys += (keys.empty() ? "" : ",") + std::to_string(fasteners::postgres_key(name));
  }
  return std::stoi(
      pg::query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND "
                "((classid::bigint << 32) | objid::bigint) = ANY(ARRAY[" +
                keys + "]::bigint[])"));
}

// Expects `f` to throw std::system_error with protocol_error naming a transaction pooler.
void expect_refused(const std::function<void()>& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " through a transaction pooler did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::protocol_error) << what << ": " << e.what();
    EXPECT_NE(std::string(e.what()).find("transaction pooler"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Session mode.

TEST(pooler, session_mode_with_default_settings_works) {
  require_pgbouncer();
  pgbouncer bouncer("session");
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  const std::string name = pg::unique_name();
  const std::int64_t key = fasteners::postgres_key(name);
  fasteners::postgres_lock a(bouncer.conninfo(), name);
  fasteners::postgres_lock b(bouncer.conninfo(), name);
  ASSERT_TRUE(a.try_lock());
  EXPECT_FALSE(b.try_lock());
  EXPECT_FALSE(pg::server_try(key)) << "a direct client took the lock held through the pooler";
  std::this_thread::sleep_for(50ms);  // Held through idle time.
  EXPECT_FALSE(on_other_thread([&] { return b.try_lock_for(100ms); }));
  std::thread waiter([&] {
    b.lock();
    EXPECT_FALSE(pg::server_try(key));
    b.unlock();
  });
  std::this_thread::sleep_for(100ms);
  a.unlock();
  waiter.join();
  // A login through the pooler at every acquire.
  fasteners::postgres_options once;
  once.close_on_release = true;
  fasteners::postgres_reader_writer_lock rw(bouncer.conninfo(), name, once);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(rw.try_lock_shared()) << i;
    EXPECT_TRUE(pg::server_try(key, true));
    EXPECT_FALSE(pg::server_try(key));
    rw.unlock_shared();
  }
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// Behind a pooler that refuses startup options the settings go as SET statements: a role whose
// lock_timeout and statement_timeout would end a wait within 50 ms waits all the same.
TEST(pooler, session_mode_turns_the_roles_timeouts_off) {
  require_pgbouncer();
  pg::login_role role({{"lock_timeout", "1ms"}, {"statement_timeout", "50ms"}});
  pgbouncer bouncer("session", 0, {role.name()});
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  const std::string name = pg::unique_name();
  fasteners::postgres_lock holder(bouncer.conninfo(role.name()), name);
  ASSERT_TRUE(holder.try_lock());
  fasteners::postgres_lock waiter(bouncer.conninfo(role.name()), name);
  std::thread waiting([&] {
    EXPECT_NO_THROW(waiter.lock());
    EXPECT_TRUE(waiter.acquired());
    if (waiter.acquired()) waiter.unlock();
  });
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(waiter.acquired());
  holder.unlock();
  waiting.join();
  EXPECT_TRUE(pg::server_shows_nothing(fasteners::postgres_key(name)));
}

// ---------------------------------------------------------------------------------------------
// Transaction mode.

TEST(pooler, a_transaction_pooler_is_refused_before_the_first_lock) {
  require_pgbouncer();
  pgbouncer bouncer("transaction", 2);
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  const std::string name = pg::unique_name();
  fasteners::postgres_lock lock(bouncer.conninfo(), name);
  fasteners::postgres_reader_writer_lock rw(bouncer.conninfo(), name);
  for (int cycle = 0; cycle < 5; ++cycle) {
    SCOPED_TRACE(cycle);
    // What an acquire took (it should take nothing) is let go again at once.
    expect_refused([&] { lock.try_lock() ? lock.unlock() : void(); }, "try_lock()");
    expect_refused([&] { lock.lock(), lock.unlock(); }, "lock()");
    expect_refused([&] { lock.try_lock_for(1s) ? lock.unlock() : void(); }, "try_lock_for()");
    expect_refused([&] { rw.lock_shared(), rw.unlock_shared(); }, "lock_shared()");
    EXPECT_FALSE(lock.acquired());
    EXPECT_FALSE(rw.read_acquired());
    EXPECT_EQ(advisory_locks_on({name}), 0);
  }
}

// Helper "pg_through_pooler CONNINFO PREFIX COUNT": takes and releases COUNT names (PREFIX/i) once
// each; prints "refused R taken T other O" (protocol_error, acquired, anything else).
FASTENERS_TEST_HELPER(pg_through_pooler) {
  int refused = 0;
  int taken = 0;
  int other = 0;
  for (int i = 0; i < std::stoi(args.at(2)); ++i) {
    fasteners::postgres_lock lock(args.at(0), args.at(1) + "/" + std::to_string(i));
    try {
      if (lock.try_lock_for(1s)) {
        ++taken;
        lock.unlock();
      }
    } catch (const std::system_error& e) {
      if (e.code() == std::errc::protocol_error) {
        ++refused;
      } else {
        ++other;
        std::cerr << "pg_through_pooler: " << e.what() << std::endl;
      }
    }
  }
  std::cout << "refused " << refused << " taken " << taken << " other " << other << std::endl;
  return 0;
}

TEST(pooler, processes_through_a_transaction_pooler_are_all_refused_and_leave_no_lock) {
  require_pgbouncer();
  pgbouncer bouncer("transaction", 2);
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  constexpr int processes = 4;
  constexpr int objects = 20;
  const std::string prefix = pg::unique_name();
  std::vector<child_process> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(spawn_helper(
        "pg_through_pooler",
        {bouncer.conninfo(), prefix + "/" + std::to_string(p), std::to_string(objects)}));
  }
  for (auto& child : children) {
    const auto line = child.read_line(std::chrono::minutes(2));
    EXPECT_EQ(line.value_or("(nothing)"),
              "refused " + std::to_string(objects) + " taken 0 other 0");
    EXPECT_EQ(child.finish(), 0);
  }
  std::vector<std::string> names;
  for (int p = 0; p < processes; ++p) {
    for (int i = 0; i < objects; ++i) {
      names.push_back(prefix + "/" + std::to_string(p) + "/" + std::to_string(i));
    }
  }
  EXPECT_EQ(advisory_locks_on(names), 0) << "locks were left on pooled server connections";
  // Other clients, direct ones included, can take every name.
  for (std::size_t i = 0; i < names.size(); i += 7) {
    EXPECT_TRUE(pg::server_try(fasteners::postgres_key(names[i]))) << names[i];
  }
}

// A pooler switched from session to transaction mode while a lock is held: the session's next
// statement after the switch goes back to the pool, another client pins that server process, and
// the release runs on another one. The object must end its own server process (which frees the
// lock) and say so, not leave the lock there.
TEST(pooler, a_holder_moved_to_another_server_process_ends_its_own) {
  require_pgbouncer();
  pgbouncer bouncer("session", 2);
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  const std::string name = pg::unique_name();
  const std::int64_t key = fasteners::postgres_key(name);
  fasteners::postgres_reader_writer_lock rw(bouncer.conninfo(), name);
  rw.lock_shared();
  const std::string own = pg::query(
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND "
      "((classid::bigint << 32) | objid::bigint) = " +
      std::to_string(key));
  ASSERT_FALSE(own.empty());
  bouncer.reload_as("transaction");
  // Joining the read lock (from another thread: a thread that holds it does not take it twice)
  // asks the server whether a writer waits: one statement, after which the server process goes
  // back to the pool, where the next client gets it.
  ASSERT_TRUE(on_other_thread([&] { return rw.try_lock_shared(); }));
  pg::connection pinned(bouncer.conninfo());
  pinned.query("BEGIN");
  ASSERT_EQ(pinned.query("SELECT pg_backend_pid()"), own) << "the pooler handed out another one";
  rw.unlock_shared();  // The other reading hold stays: no statement.
  try {
    rw.unlock_shared();
    ADD_FAILURE() << "the release on another server process did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::protocol_error) << e.what();
    EXPECT_NE(std::string(e.what()).find("transaction pooler"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ended"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, 0, true)) << "the lock outlived its session";
  const auto until = steady::now() + k_long;
  while (pg::query("SELECT count(*) FROM pg_stat_activity WHERE pid = " + own) != "0" &&
         steady::now() < until) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(pg::query("SELECT count(*) FROM pg_stat_activity WHERE pid = " + own), "0")
      << "the object's own server process still runs";
  EXPECT_FALSE(rw.read_acquired());
}

}  // namespace
