// A transaction pooler (PgBouncer in transaction mode) between the library and the server: the
// library must see its session's server process change and fail with a clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>

#include "fasteners/postgres.hpp"
#include "postgres/pg_test_support.hpp"

namespace pg = fasteners::test::pg;
using namespace fasteners_test;
using namespace std::chrono_literals;

namespace {

// A PgBouncer in transaction mode with two server connections, listening on a Unix socket of its
// own and forwarding to the test server. Stopped on destruction.
class pgbouncer {
 public:
  pgbouncer() {
    // Its directory must be writable by the user PgBouncer runs as (not root: it refuses).
    dir_ = temp_dir_path();
    std::filesystem::permissions(dir_, std::filesystem::perms::all);
    const std::string server_socket = pg::query("SHOW unix_socket_directories");
    const std::string server_port = pg::query("SHOW port");
    {
      std::ofstream users(dir_ / "users.txt");
      users << "\"fasteners\" \"\"\n";
      std::ofstream ini(dir_ / "pgbouncer.ini");
      ini << "[databases]\n"
          << "fasteners = host=" << server_socket << " port=" << server_port
          << " dbname=fasteners user=fasteners\n"
          << "[pgbouncer]\n"
          << "listen_addr =\n"
          << "listen_port = " << port_ << "\n"
          << "unix_socket_dir = " << dir_.string() << "\n"
          << "auth_type = trust\n"
          << "auth_file = " << (dir_ / "users.txt").string() << "\n"
          << "pool_mode = transaction\n"
          << "default_pool_size = 2\n"
          << "max_client_conn = 20\n"
          << "ignore_startup_parameters = extra_float_digits\n"
          << "logfile = " << (dir_ / "pgbouncer.log").string() << "\n";
    }
    std::filesystem::permissions(dir_ / "pgbouncer.ini", std::filesystem::perms::all);
    std::filesystem::permissions(dir_ / "users.txt", std::filesystem::perms::all);
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
  std::string conninfo() const {
    return "host=" + dir_.string() + " port=" + std::to_string(port_) +
           " dbname=fasteners user=fasteners";
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

 private:
  static std::filesystem::path temp_dir_path() {
    char pattern[] = "/tmp/fasteners-pgb.XXXXXX";
    if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }

  std::filesystem::path dir_;
  int port_ = 6400 + static_cast<int>(::getpid() % 1000);
  std::optional<child_process> process_;
};

TEST(pooler, a_transaction_pooler_is_detected_and_named) {
  if (!std::filesystem::exists("/usr/sbin/pgbouncer")) {
    GTEST_FAIL() << "PgBouncer is not installed (Debian package pgbouncer, see scripts/setup.sh)";
  }
  pgbouncer bouncer;
  ASSERT_TRUE(bouncer.ready(k_long)) << "PgBouncer did not accept connections";
  const std::string name = pg::unique_name();
  const std::int64_t key = fasteners::postgres_key(name);

  // With two server connections, pin the first in a transaction: the lock object's session gets
  // the second, and keeps it while the first stays pinned.
  pg::connection first(bouncer.conninfo());
  first.query("BEGIN");
  const std::string first_pid = first.query("SELECT pg_backend_pid()");
  fasteners::postgres_lock lock(bouncer.conninfo(), name);
  ASSERT_TRUE(lock.try_lock());
  lock.unlock();
  // Now pin the second and free the first: the object's next statement reaches another server
  // process than its session started on.
  pg::connection second(bouncer.conninfo());
  second.query("BEGIN");
  EXPECT_NE(second.query("SELECT pg_backend_pid()"), first_pid);
  first.query("COMMIT");
  try {
    lock.try_lock();
    ADD_FAILURE() << "a lock through a transaction pooler was reported as taken";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::protocol_error) << e.what();
    EXPECT_NE(std::string(e.what()).find("transaction pooler"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(lock.acquired());
  second.query("COMMIT");
  // Nothing stays locked on the server for the lost attempt.
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, 0, true));
}

}  // namespace
