// The PostgreSQL tests' support (pg_test_support.hpp): the fixture's server found through its
// state file, queries over libpq, restarts through scripts/postgres-server.sh.
#include "postgres/pg_test_support.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>
#include <utility>

namespace fasteners::test::pg {

namespace fs = std::filesystem;

namespace {

// libpq's messages end with a newline.
std::string trimmed(std::string message) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
    message.pop_back();
  }
  return message;
}

std::string first_line_of(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  if (!in || !std::getline(in, line) || line.empty()) {
    throw std::runtime_error("cannot read " + file.string());
  }
  return line;
}

fs::path state_file() {
  const char* env = std::getenv("FASTENERS_TEST_POSTGRES_STATE");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path(FASTENERS_PG_STATE_DEFAULT);
}

std::string checked_conninfo() {
  const fs::path file = server_dir() / "conninfo";
  const std::string info = first_line_of(file);
  const PGPing ping = PQping(info.c_str());
  if (ping != PQPING_OK) {
    throw std::runtime_error("the PostgreSQL test server (" + info + ") " +
                             (ping == PQPING_REJECT
                                  ? "refuses connections (starting up or shutting down: did a test "
                                    "running beside this one restart it?)"
                                  : "does not answer") +
                             "; see " + (server_dir() / "server.log").string());
  }
  return info;
}

struct result_deleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

result_ptr execute(PGconn* conn, const std::string& sql) {
  result_ptr r(PQexec(conn, sql.c_str()));
  const ExecStatusType status = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    const std::string message = r ? PQresultErrorMessage(r.get()) : PQerrorMessage(conn);
    throw std::runtime_error(trimmed(message) + " [SQL: " + sql + "]");
  }
  return r;
}

std::string first_value(const PGresult* r) {
  if (PQntuples(r) == 0 || PQnfields(r) == 0 || PQgetisnull(r, 0, 0)) return "";
  return PQgetvalue(r, 0, 0);
}

std::vector<std::vector<std::string>> all_rows(const PGresult* r) {
  std::vector<std::vector<std::string>> rows(static_cast<std::size_t>(PQntuples(r)));
  for (int i = 0; i < PQntuples(r); ++i) {
    for (int j = 0; j < PQnfields(r); ++j) {
      rows[static_cast<std::size_t>(i)].emplace_back(PQgetisnull(r, i, j) ? ""
                                                                          : PQgetvalue(r, i, j));
    }
  }
  return rows;
}

// The WHERE clause of the advisory locks on `key` in the test database.
std::string advisory_lock_filter(std::int64_t key) {
  const auto bits = static_cast<std::uint64_t>(key);
  return "locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = "
         "current_database()) AND classid = " +
         std::to_string(bits >> 32) +
         "::bigint::oid AND objid = " + std::to_string(bits & 0xffffffffU) +
         "::bigint::oid AND objsubid = 1";
}

// Runs scripts/postgres-server.sh COMMAND DIR with `environment` (NAME=VALUE entries) and waits for
// it; throws std::runtime_error if it fails (its messages are on stderr).
void run_server_script(const std::string& command, const fs::path& dir,
                       const std::vector<std::string>& environment = {}) {
  std::vector<std::string> argv{"/usr/bin/env"};
  argv.insert(argv.end(), environment.begin(), environment.end());
  argv.insert(argv.end(), {"/bin/bash", FASTENERS_PG_SERVER_SCRIPT, command, dir.string()});
  fasteners_test::child_process script(argv);
  script.close_stdin();
  while (script.read_line(std::chrono::seconds(120))) {
  }
  const int code = script.wait(std::chrono::seconds(120));
  if (code != 0) {
    throw std::runtime_error("postgres-server.sh " + command + " " + dir.string() +
                             " failed (exit code " + std::to_string(code) +
                             "); its messages are on stderr");
  }
}

}  // namespace

fs::path server_dir() {
  const fs::path file = state_file();
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    throw std::runtime_error(
        "no PostgreSQL test server: " + file.string() +
        " does not exist. CTest starts one for the tests (fixture postgres_server); to run a test "
        "program by hand, run `ctest -R postgres.server_start` first, or start one with "
        "scripts/postgres-server.sh and set FASTENERS_TEST_POSTGRES_STATE to a file naming its "
        "directory");
  }
  return first_line_of(file);
}

std::string conninfo() {
  // Initialized again at the next call if it throws.
  static const std::string info = checked_conninfo();
  return info;
}

std::string unprivileged_conninfo() {
  std::string info = conninfo();
  const std::string superuser = "user=fasteners ";
  const auto at = info.find(superuser);
  if (at == std::string::npos) throw std::runtime_error("no user in the conninfo " + info);
  return info.replace(at, superuser.size(), "user=fasteners_unprivileged ");
}

std::string query(const std::string& sql) { return connection().query(sql); }

std::vector<std::vector<std::string>> query_rows(const std::string& sql) {
  return connection().query_rows(sql);
}

void restart_server() { run_server_script("restart", server_dir()); }

fs::path psql_path() { return fs::path(first_line_of(server_dir() / "bindir")) / "psql"; }

std::string unique_name(const std::string& suffix) {
  static std::atomic<int> counter{0};
  const ::testing::TestInfo* test = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = "fasteners-test/";
  name += test != nullptr ? std::string(test->test_suite_name()) + "." + test->name() : "helper";
  name += "/" + std::to_string(::getpid()) + "/" + std::to_string(++counter);
  if (!suffix.empty()) name += "/" + suffix;
  return name;
}

int advisory_locks_on(std::int64_t key, bool granted) {
  return std::stoi(query("SELECT count(*) FROM pg_locks WHERE " + advisory_lock_filter(key) +
                         " AND granted = " + (granted ? "true" : "false")));
}

bool wait_for_advisory_locks(std::int64_t key, int count, bool granted,
                             std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  connection session;
  const std::string sql = "SELECT count(*) FROM pg_locks WHERE " + advisory_lock_filter(key) +
                          " AND granted = " + (granted ? "true" : "false");
  for (;;) {
    if (std::stoi(session.query(sql)) == count) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int terminate_sessions_on(std::int64_t key) {
  return std::stoi(
      query("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT pid FROM "
            "pg_locks WHERE " +
            advisory_lock_filter(key) + " AND pid <> pg_backend_pid()) AS holders) AS ended"));
}

bool wait_for_hangup(std::intptr_t handle, std::chrono::milliseconds timeout) {
  pollfd p{static_cast<int>(handle), POLLRDHUP, 0};
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (::poll(&p, 1, 100) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return true;
  }
  return false;
}

std::string hex_of(const std::string& bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    const auto byte = static_cast<unsigned char>(c);
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

std::string key_sql(const std::string& name) {
  // The expression of the comment above fasteners::postgres_key.
  const std::string text = "convert_from('\\x" + hex_of(name) + "'::bytea, 'UTF8')";
  return "('x' || left(encode(sha256(convert_to(" + text +
         ", 'UTF8')), 'hex'), 16))::bit(64)::bigint";
}

std::int64_t server_key(const std::string& name) {
  return std::stoll(query("SELECT " + key_sql(name)));
}

bool server_try(std::int64_t key, bool shared) {
  const std::string k = std::to_string(key);
  const std::string suffix = shared ? "_shared" : "";
  return query("SELECT CASE WHEN pg_try_advisory_lock" + suffix + "(" + k +
               ") THEN pg_advisory_unlock" + suffix + "(" + k + ") ELSE false END") == "t";
}

bool server_shows_nothing(std::int64_t key) {
  return wait_for_advisory_locks(key, 0, false, std::chrono::seconds(5)) &&
         advisory_locks_on(key, true) == 0;
}

std::string literal(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) {
    quoted += c;
    if (c == '\'') quoted += c;
  }
  return quoted + "'";
}

connection::connection(const std::string& info) : conn_(PQconnectdb(info.c_str())) {
  if (conn_ == nullptr) throw std::runtime_error("PQconnectdb: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string message = trimmed(PQerrorMessage(conn_));
    PQfinish(conn_);
    throw std::runtime_error("cannot connect to " + info + ": " + message);
  }
}

connection::~connection() { PQfinish(conn_); }

std::string connection::query(const std::string& sql) {
  return first_value(execute(conn_, sql).get());
}

std::vector<std::vector<std::string>> connection::query_rows(const std::string& sql) {
  return all_rows(execute(conn_, sql).get());
}

int connection::backend_pid() const { return PQbackendPID(conn_); }

private_server::private_server(const std::string& listen, const std::string& trust)
    : listen_(listen), port_(free_tcp_port(listen.empty() ? "127.0.0.1" : listen)) {
  char pattern[] = "/tmp/fasteners-pgp.XXXXXX";
  if (::mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  std::vector<std::string> environment{"FASTENERS_PG_PORT=" + std::to_string(port_),
                                       "FASTENERS_PG_LISTEN=" + listen,
                                       "FASTENERS_PG_TRUST=" + trust};
  std::error_code ec;
  if (fs::exists(state_file(), ec)) {
    environment.push_back("FASTENERS_PG_BINDIR=" + first_line_of(server_dir() / "bindir"));
  }
  try {
    run_server_script("start", dir_, environment);
  } catch (...) {
    fs::remove_all(dir_, ec);
    throw;
  }
  running_ = true;
  conninfo_ = first_line_of(dir_ / "conninfo");
}

private_server::~private_server() {
  try {
    stop();
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

std::string private_server::tcp_conninfo() const {
  return "host=" + listen_ + " port=" + std::to_string(port_) + " user=fasteners dbname=fasteners";
}

void private_server::stop() {
  if (!running_) return;
  running_ = false;
  run_server_script("stop", dir_);
}

login_role::login_role(const std::vector<std::pair<std::string, std::string>>& settings) {
  static std::atomic<int> counter{0};
  name_ = "fasteners_role_" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
  query("CREATE ROLE " + name_ + " LOGIN");
  for (const auto& [setting, value] : settings) {
    query("ALTER ROLE " + name_ + " SET " + setting + " = " + literal(value));
  }
}

login_role::~login_role() {
  try {
    query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = " +
          literal(name_));
    query("DROP ROLE " + name_);
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
}

int free_tcp_port(const std::string& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  socklen_t size = sizeof a;
  const bool ok = ::inet_pton(AF_INET, address.c_str(), &a.sin_addr) == 1 &&
                  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &size) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error("no free TCP port on " + address);
  return ntohs(a.sin_port);
}

}  // namespace fasteners::test::pg
