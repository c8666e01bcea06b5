// A PostgreSQL session through libpq: connecting, the advisory-lock statements, and loss.
#include "postgres/session.hpp"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace fasteners::detail::postgres {
namespace {

// The conninfo's keywords that are set, as libpq parses them (nullptr if it cannot).
struct parsed_conninfo {
  PQconninfoOption* options = nullptr;
  explicit parsed_conninfo(const std::string& conninfo) {
    options = PQconninfoParse(conninfo.c_str(), nullptr);
  }
  ~parsed_conninfo() {
    if (options != nullptr) PQconninfoFree(options);
  }
  parsed_conninfo(const parsed_conninfo&) = delete;
  parsed_conninfo& operator=(const parsed_conninfo&) = delete;
  const char* get(const char* keyword) const {
    if (options == nullptr) return nullptr;
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, keyword) == 0) {
        return o->val != nullptr && o->val[0] != '\0' ? o->val : nullptr;
      }
    }
    return nullptr;
  }
};

const char* or_env(const char* value, const char* variable, const char* fallback) {
  if (value != nullptr) return value;
  const char* env = std::getenv(variable);
  return env != nullptr && env[0] != '\0' ? env : fallback;
}

// The process's name, for application_name.
std::string program_name() {
#if defined(__GLIBC__)
  return program_invocation_short_name;
#else
  return "?";
#endif
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0) return "?";
  return buffer;
}

void ignore_notice(void*, const char*) {}

// The session's statements, prepared once at connection: parsed and planned once, each call then
// sends only the key. Every one returns the server process id too, which must stay the session's
// (see session::lock). pg_advisory_lock returns void: a row at all means the lock was taken. A
// timed wait sets lock_timeout in a subquery that runs before the lock is asked for, and turns it
// off once it came; when the timeout fires, the statement fails, and its implicit transaction
// undoes the setting.
constexpr const char* prepared_statements =
    "PREPARE fasteners_try_exclusive(bigint) AS "
    "SELECT pg_try_advisory_lock($1), pg_backend_pid(); "
    "PREPARE fasteners_try_shared(bigint) AS "
    "SELECT pg_try_advisory_lock_shared($1), pg_backend_pid(); "
    "PREPARE fasteners_wait_exclusive(bigint) AS "
    "SELECT pg_advisory_lock($1), pg_backend_pid(); "
    "PREPARE fasteners_wait_shared(bigint) AS "
    "SELECT pg_advisory_lock_shared($1), pg_backend_pid(); "
    "PREPARE fasteners_wait_exclusive_until(bigint, text) AS "
    "SELECT pg_advisory_lock($1), pg_backend_pid(), set_config('lock_timeout', '0', false) "
    "FROM (SELECT set_config('lock_timeout', $2, false)) AS limit_set; "
    "PREPARE fasteners_wait_shared_until(bigint, text) AS "
    "SELECT pg_advisory_lock_shared($1), pg_backend_pid(), set_config('lock_timeout', '0', false) "
    "FROM (SELECT set_config('lock_timeout', $2, false)) AS limit_set; "
    "PREPARE fasteners_unlock_exclusive(bigint) AS "
    "SELECT pg_advisory_unlock($1), pg_backend_pid(); "
    "PREPARE fasteners_unlock_shared(bigint) AS "
    "SELECT pg_advisory_unlock_shared($1), pg_backend_pid(); "
    // Whether the session holds the key in a mode (ExclusiveLock, ShareLock), as pg_locks shows a
    // bigint key: its high and low halves, objsubid 1.
    "PREPARE fasteners_holds(bigint, text) AS "
    "SELECT count(*) > 0, pg_backend_pid() FROM pg_locks WHERE locktype = 'advisory' "
    "AND pid = pg_backend_pid() AND granted AND mode = $2 AND objsubid = 1 "
    "AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()); "
    // Whether any session waits for the key's exclusive lock.
    "PREPARE fasteners_writer_waiting(bigint) AS "
    "SELECT count(*) > 0, pg_backend_pid() FROM pg_locks WHERE locktype = 'advisory' "
    "AND NOT granted AND mode = 'ExclusiveLock' AND objsubid = 1 "
    "AND classid = (($1 >> 32) & 4294967295)::oid AND objid = ($1 & 4294967295)::oid "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()); ";

constexpr const char* pooler_explained =
    "a transaction pooler (such as PgBouncer in transaction mode) is between this client and the "
    "server, and session locks cannot work through one; connect to the server directly, or "
    "through a pooler in session mode";

const char* statement(lock_mode mode, deadline until) {
  const bool shared = mode == lock_mode::shared;
  if (until == try_once) return shared ? "fasteners_try_shared" : "fasteners_try_exclusive";
  if (until == no_deadline) return shared ? "fasteners_wait_shared" : "fasteners_wait_exclusive";
  return shared ? "fasteners_wait_shared_until" : "fasteners_wait_exclusive_until";
}

}  // namespace

std::string describe_target(const std::string& conninfo) {
  const parsed_conninfo parsed(conninfo);
  std::string where = "host ";
  where += or_env(parsed.get("host"), "PGHOST",
                  or_env(parsed.get("hostaddr"), "PGHOSTADDR", "(the default socket)"));
  where += " port ";
  where += or_env(parsed.get("port"), "PGPORT", "5432");
  where += " database ";
  const char* user = or_env(parsed.get("user"), "PGUSER", nullptr);
  where += or_env(parsed.get("dbname"), "PGDATABASE", user != nullptr ? user : "(the user's)");
  return where;
}

void throw_error(std::errc e, std::string_view action, const std::string& name,
                 const std::string& where, std::string_view detail) {
  std::string message = "fasteners: cannot ";
  message += action;
  message += " lock '";
  for (const char c : name) message += c;
  message += "' on ";
  message += where;
  if (!detail.empty()) {
    message += ": ";
    // One line: libpq's messages span several, with a tab before each hint.
    for (const char c : detail) {
      if (c == '\n') {
        message += ' ';
      } else if (c != '\t') {
        message += c;
      }
    }
  }
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  throw std::system_error(std::make_error_code(e), message);
}

session::session(const std::string& conninfo, const postgres_options& options,
                 const std::string& name)
    : name_(name), where_(describe_target(conninfo)) {
  const parsed_conninfo parsed(conninfo);
  if (!conninfo.empty() && parsed.options == nullptr) {
    throw_error(std::errc::invalid_argument, "connect for", name_, "the server",
                "the conninfo cannot be parsed");
  }
  // The library's defaults come first; what the conninfo sets (expanded from "dbname") wins.
  std::vector<std::string> keys;
  std::vector<std::string> values;
  const auto set_default = [&](const char* key, const std::string& value) {
    if (parsed.get(key) == nullptr && std::getenv(key) == nullptr) {
      keys.emplace_back(key);
      values.push_back(value);
    }
  };
  if (std::getenv("PGCONNECT_TIMEOUT") == nullptr && options.connect_timeout > 0) {
    set_default("connect_timeout", std::to_string(options.connect_timeout));
  }
  if (options.keepalives_idle > 0) {
    set_default("keepalives", "1");
    set_default("keepalives_idle", std::to_string(options.keepalives_idle));
    set_default("keepalives_interval", std::to_string(options.keepalives_interval));
    set_default("keepalives_count", std::to_string(options.keepalives_count));
  }
  if (std::getenv("PGAPPNAME") == nullptr) {
    std::string app =
        "fasteners " + std::to_string(::getpid()) + "@" + host_name() + " " + program_name();
    if (app.size() > 63) app.resize(63);
    set_default("application_name", app);
  }
  if (!conninfo.empty()) {
    keys.emplace_back("dbname");
    values.push_back(conninfo);
  }
  std::vector<const char*> key_ptrs;
  std::vector<const char*> value_ptrs;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    key_ptrs.push_back(keys[i].c_str());
    value_ptrs.push_back(values[i].c_str());
  }
  key_ptrs.push_back(nullptr);
  value_ptrs.push_back(nullptr);
  conn_ = PQconnectdbParams(key_ptrs.data(), value_ptrs.data(), 1);
  if (conn_ == nullptr) {
    throw_error(std::errc::not_enough_memory, "connect for", name_, where_, "out of memory");
  }
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string detail = PQerrorMessage(conn_);
    PQfinish(conn_);
    conn_ = nullptr;
    const bool timed_out = detail.find("timeout expired") != std::string::npos;
    throw_error(timed_out ? std::errc::timed_out : std::errc::connection_refused, "connect for",
                name_, where_, detail);
  }
  PQsetNoticeProcessor(conn_, ignore_notice, nullptr);
  // libpq opens its socket close-on-exec; a child it forks must not keep the session alive either,
  // which disown() sees to.
  const bool v14 = PQserverVersion(conn_) >= 140000;
  std::string setup =
      "SET lock_timeout = 0; SET statement_timeout = 0; "
      "SET idle_in_transaction_session_timeout = 0; ";
  if (v14) {
    // A waiting session notices a client that went away within a second, not at the grant.
    setup += "SET idle_session_timeout = 0; SET client_connection_check_interval = 1000; ";
  }
  if (options.keepalives_idle > 0) {
    // The server's side of the keepalives: a client machine that went away loses its locks.
    setup += "SET tcp_keepalives_idle = " + std::to_string(options.keepalives_idle) +
             "; SET tcp_keepalives_interval = " + std::to_string(options.keepalives_interval) +
             "; SET tcp_keepalives_count = " + std::to_string(options.keepalives_count) + "; ";
  }
  setup += prepared_statements;
  setup +=
      "SELECT pg_backend_pid()::text || ' ' || (SELECT system_identifier FROM pg_control_system())"
      "::text, (SELECT oid FROM pg_database WHERE datname = current_database())::text";
  try {
    const auto [pid_and_system, database] = run(setup, "connect for");
    const auto space = pid_and_system.find(' ');
    backend_pid_ = pid_and_system.substr(0, space);
    identity_.system = space == std::string::npos ? "" : pid_and_system.substr(space + 1);
    identity_.database = database;
  } catch (...) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw;
  }
  where_ = std::string("host ") + (PQhost(conn_) != nullptr ? PQhost(conn_) : "?") + " port " +
           (PQport(conn_) != nullptr ? PQport(conn_) : "?") + " database " +
           (PQdb(conn_) != nullptr ? PQdb(conn_) : "?");
}

session::~session() {
  // In a forked child the socket is /dev/null by now (disown()): the goodbye goes nowhere.
  if (conn_ != nullptr) PQfinish(conn_);
}

int session::socket() const noexcept { return conn_ != nullptr ? PQsocket(conn_) : -1; }

void session::fail(std::string_view action, std::string_view detail, const char* sqlstate) {
  const std::string state = sqlstate != nullptr ? sqlstate : "";
  if (state == "55P03") {  // lock_not_available: lock_timeout fired.
    throw std::system_error(std::make_error_code(std::errc::timed_out), "lock_timeout");
  }
  if (state == "26000") {
    // A statement prepared at connection is gone: the session's server process changed.
    lost_ = true;
    throw_error(std::errc::protocol_error, action, name_, where_,
                "the session's prepared statements are gone, so its server process changed: " +
                    std::string(pooler_explained));
  }
  if (state == "40P01") {
    throw_error(std::errc::resource_deadlock_would_occur, action, name_, where_,
                "the server found a deadlock: " + std::string(detail));
  }
  if (PQstatus(conn_) != CONNECTION_OK || state.rfind("57P", 0) == 0 || state.rfind("08", 0) == 0) {
    lost_ = true;
    throw_error(
        std::errc::connection_reset, action, name_, where_,
        "the session has ended, and the locks it held were lost with it: " + std::string(detail));
  }
  throw_error(std::errc::io_error, action, name_, where_, detail);
}

std::pair<std::string, std::string> session::run_prepared(const char* statement,
                                                          const std::vector<std::string>& params,
                                                          std::string_view action) {
  if (lost_ || disowned_) {
    throw_error(std::errc::connection_reset, action, name_, where_,
                "the session has ended, and the locks it held were lost with it");
  }
  const char* values[2] = {};
  for (std::size_t i = 0; i < params.size() && i < 2; ++i) values[i] = params[i].c_str();
  return finish(PQexecPrepared(conn_, statement, static_cast<int>(params.size()), values, nullptr,
                               nullptr, 0),
                action);
}

std::pair<std::string, std::string> session::run(const std::string& sql, std::string_view action) {
  if (lost_ || disowned_) {
    throw_error(std::errc::connection_reset, action, name_, where_,
                "the session has ended, and the locks it held were lost with it");
  }
  return finish(PQexec(conn_, sql.c_str()), action);
}

std::pair<std::string, std::string> session::finish(PGresult* result, std::string_view action) {
  std::pair<std::string, std::string> row;
  if (result == nullptr || PQresultStatus(result) != PGRES_TUPLES_OK) {
    const std::string detail =
        result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn_);
    const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
    const std::string sqlstate = state != nullptr ? state : "";
    PQclear(result);
    fail(action, detail, sqlstate.empty() ? nullptr : sqlstate.c_str());
  }
  if (PQntuples(result) > 0) {
    row.first = PQgetvalue(result, 0, 0);
    if (PQnfields(result) > 1) row.second = PQgetvalue(result, 0, 1);
  }
  PQclear(result);
  return row;
}

bool session::lock(std::int64_t key, lock_mode mode, deadline until) {
  std::vector<std::string> params{std::to_string(key)};
  if (until != try_once && until != no_deadline) {
    // The server ends the wait at the deadline: at least 1 ms, since 0 would mean no limit.
    const auto left = until - std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(left).count();
    params.push_back(std::to_string(ms < 1 ? 1 : static_cast<long long>(std::ceil(ms))));
  }
  std::pair<std::string, std::string> row;
  try {
    row = run_prepared(statement(mode, until), params, "wait for the");
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::timed_out) throw;
    // The server's lock_timeout fired. If the grant came as it fired, the server keeps the lock
    // for the session all the same (a session lock outlives the failed statement): ask.
    row = run_prepared(
        "fasteners_holds",
        {std::to_string(key), mode == lock_mode::shared ? "ShareLock" : "ExclusiveLock"},
        "wait for the");
    if (row.second == backend_pid_) return row.first == "t";
  }
  if (row.second != backend_pid_) {
    // The statement reached another server process: a pooler hands out server sessions per
    // transaction, and a session lock taken there belongs to nobody. Let it go there, and say why.
    PQclear(PQexec(conn_, "SELECT pg_advisory_unlock_all()"));
    lost_ = true;
    throw_error(std::errc::protocol_error, "take the", name_, where_,
                "the session's server process changed from " + backend_pid_ + " to " + row.second +
                    ": " + pooler_explained);
  }
  // pg_try_advisory_lock says t or f; pg_advisory_lock returns only once it has the lock.
  return until != try_once || row.first == "t";
}

void session::unlock(std::int64_t key, lock_mode mode) {
  const char* name =
      mode == lock_mode::shared ? "fasteners_unlock_shared" : "fasteners_unlock_exclusive";
  const auto row = run_prepared(name, {std::to_string(key)}, "release the");
  if (row.first != "t" || row.second != backend_pid_) {
    lost_ = true;
    throw_error(std::errc::connection_reset, "release the", name_, where_,
                "the server no longer held it for this session (its locks are lost)");
  }
}

bool session::writer_waiting(std::int64_t key) {
  const auto row = run_prepared("fasteners_writer_waiting", {std::to_string(key)}, "join the");
  return row.first == "t";
}

void session::unlock_all() { run("SELECT pg_advisory_unlock_all()", "release the"); }

bool session::alive() noexcept {
  if (conn_ == nullptr || lost_ || disowned_) return false;
  if (PQstatus(conn_) != CONNECTION_OK) return false;
  // An idle session hears from the server only when it ends the session: a readable socket means
  // a closing message or end of file.
  pollfd p{PQsocket(conn_), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, 0);
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) return true;
  if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
    lost_ = true;
    return false;
  }
  return true;
}

void session::disown() noexcept {
  disowned_ = true;
  if (conn_ == nullptr) return;
  const int fd = PQsocket(conn_);
  if (fd < 0) return;
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup3(null, fd, O_CLOEXEC);
    ::close(null);
  }
}

}  // namespace fasteners::detail::postgres
