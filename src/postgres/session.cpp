// A PostgreSQL session through libpq: its setup, the advisory-lock statements, and loss.
#include "postgres/session.hpp"

#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "engine/async_thread.hpp"
#include "postgres/client.hpp"
#include "postgres/sqlstate.hpp"

namespace fasteners::detail::postgres {
namespace {

// The session's statements, prepared once at connection: parsed and planned once, each call then
// sends only the key and the session's server process id. A statement that takes or lets go of a
// lock acts only in that process: its WHERE, which reads no column, is checked once before the
// select list runs, so that in another process it returns no row and touches nothing. Every one
// returns the server process id. pg_advisory_lock returns void: a row at all means the lock was
// taken. A timed wait sets lock_timeout in a subquery that runs before the lock is asked for, and
// turns it off once it came; when the timeout fires, the statement fails, and its implicit
// transaction undoes the setting.
// The table of the fencing tokens (see fence()): the latest token of each key, in the
// session's first schema on the search path.
constexpr const char* fence_table =
    "CREATE TABLE IF NOT EXISTS fasteners_fence (key bigint PRIMARY KEY, token bigint NOT NULL)";

constexpr const char* prepared_statements =
    "PREPARE fasteners_try_exclusive(bigint, integer) AS "
    "SELECT pg_try_advisory_lock($1), pg_backend_pid() WHERE pg_backend_pid() = $2; "
    "PREPARE fasteners_try_shared(bigint, integer) AS "
    "SELECT pg_try_advisory_lock_shared($1), pg_backend_pid() WHERE pg_backend_pid() = $2; "
    "PREPARE fasteners_wait_exclusive(bigint, integer) AS "
    "SELECT pg_advisory_lock($1), pg_backend_pid() WHERE pg_backend_pid() = $2; "
    "PREPARE fasteners_wait_shared(bigint, integer) AS "
    "SELECT pg_advisory_lock_shared($1), pg_backend_pid() WHERE pg_backend_pid() = $2; "
    "PREPARE fasteners_wait_exclusive_until(bigint, text, integer) AS "
    "SELECT pg_advisory_lock($1), pg_backend_pid(), set_config('lock_timeout', '0', false) "
    "FROM (SELECT set_config('lock_timeout', $2, false)) AS limit_set "
    "WHERE pg_backend_pid() = $3; "
    "PREPARE fasteners_wait_shared_until(bigint, text, integer) AS "
    "SELECT pg_advisory_lock_shared($1), pg_backend_pid(), set_config('lock_timeout', '0', false) "
    "FROM (SELECT set_config('lock_timeout', $2, false)) AS limit_set "
    "WHERE pg_backend_pid() = $3; "
    "PREPARE fasteners_unlock_exclusive(bigint, integer) AS "
    "SELECT pg_advisory_unlock($1), pg_backend_pid() WHERE pg_backend_pid() = $2; "
    "PREPARE fasteners_unlock_shared(bigint, integer) AS "
    "SELECT pg_advisory_unlock_shared($1), pg_backend_pid() WHERE pg_backend_pid() = $2; ";

// The statements that ask pg_locks about the key: whether the session holds it in a mode
// (ExclusiveLock, ShareLock), whether any session waits for its exclusive lock, and whether
// another session holds that.
std::string lock_queries() {
  return "PREPARE fasteners_holds(bigint, text) AS "
         "SELECT count(*) > 0, pg_backend_pid() FROM pg_catalog.pg_locks WHERE " +
         key_condition(1) +
         " AND pid = pg_backend_pid() AND granted AND mode = $2; "
         "PREPARE fasteners_writer_waiting(bigint) AS "
         "SELECT count(*) > 0, pg_backend_pid() FROM pg_catalog.pg_locks WHERE " +
         key_condition(1) +
         " AND NOT granted AND mode = 'ExclusiveLock'; "
         "PREPARE fasteners_held_elsewhere(bigint) AS "
         "SELECT count(*) > 0, pg_backend_pid() FROM pg_catalog.pg_locks WHERE " +
         key_condition(1) + " AND granted AND mode = 'ExclusiveLock' AND pid <> pg_backend_pid(); ";
}

// Whether every timeout that could end a wait, a held lock or the session is off (true or false).
constexpr const char* timeouts_off =
    "SELECT (SELECT bool_and(coalesce(current_setting(n, true), '0') = '0') FROM unnest(ARRAY["
    "'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', "
    "'idle_session_timeout']) AS n)::text; ";

// The session's server process, server and database.
constexpr const char* identity_query =
    "SELECT pg_backend_pid()::text, (SELECT system_identifier FROM pg_control_system())::text, "
    "(SELECT oid FROM pg_database WHERE datname = current_database())::text; ";

constexpr const char* pooler_explained =
    "a transaction pooler (such as PgBouncer in transaction mode) is between this client and the "
    "server, and session locks cannot work through one; connect to the server directly, or "
    "through a pooler in session mode";

// How often the setup is tried behind a pooler that refuses startup options (see the constructor).
constexpr int setup_tries = 3;

const char* statement(lock_mode mode, deadline until) {
  const bool shared = mode == lock_mode::shared;
  if (until == try_once) return shared ? "fasteners_try_shared" : "fasteners_try_exclusive";
  if (until == no_deadline) return shared ? "fasteners_wait_shared" : "fasteners_wait_exclusive";
  return shared ? "fasteners_wait_shared_until" : "fasteners_wait_exclusive_until";
}

// "another server process than the session's (P)", or with the other's id if known.
std::string other_process(const std::string& found, const std::string& own) {
  return "the statement reached " +
         (found.empty() ? std::string("another server process") : "server process " + found) +
         " instead of the session's own (" + own + ")";
}

using std::chrono::steady_clock;

// The answer to what was sent on `conn` (PQsendQuery) while probing a pooler: the first column of
// the last statement's first row ("" if none), or nullopt if none came by `until` (a client that
// waits for a server process of the pool). Throws std::system_error (io_error) if a statement
// failed.
std::optional<std::string> answer_by(PGconn* conn, steady_clock::time_point until,
                                     const std::string& name, const std::string& where) {
  std::string value;
  std::string error;
  for (;;) {
    while (PQisBusy(conn) != 0) {
      if (!wait_for(PQsocket(conn), POLLIN, until)) return std::nullopt;
      if (PQconsumeInput(conn) == 0) break;
    }
    PGresult* r = PQgetResult(conn);
    if (r == nullptr) break;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) value = PQgetvalue(r, 0, 0);
    const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok && error.empty()) error = PQresultErrorMessage(r);
    PQclear(r);
  }
  if (PQstatus(conn) != CONNECTION_OK) error = PQerrorMessage(conn);
  if (!error.empty()) {
    throw_error(std::errc::io_error, "connect for", name, where, "probing the pooler: " + error);
  }
  return value;
}

// Sends `sql` on `conn` and waits for the answer as answer_by, at most `limit`.
std::optional<std::string> ask(PGconn* conn, const char* sql, steady_clock::duration limit,
                               const std::string& name, const std::string& where) {
  if (PQsendQuery(conn, sql) == 0) {
    throw_error(std::errc::io_error, "connect for", name, where,
                "probing the pooler: " + std::string(PQerrorMessage(conn)));
  }
  return answer_by(conn, steady_clock::now() + limit, name, where);
}

}  // namespace

session::session(const std::string& conninfo, const postgres_options& options,
                 const std::string& name)
    : name_(name), where_(describe_target(conninfo)) {
  connector connect(conninfo, options, name_, where_);
  // Behind a pooler that refuses startup options the role's timeouts (statement_timeout,
  // idle_session_timeout) apply until the setup's SET statements turn them off, and may end the
  // setup: it is tried a few times.
  for (int attempt = 1;; ++attempt) {
    connection conn = connect.connect();
    conn_ = conn.get();
    try {
      set_up(connect);
      conn.release();
      break;
    } catch (const std::system_error& e) {
      conn_ = nullptr;
      lost_ = false;
      if (connect.settings_sent() || e.code() == std::errc::protocol_error) throw;
      if (attempt == setup_tries) {
        throw std::system_error(e.code(), std::string(e.what()) + " (tried " +
                                              std::to_string(setup_tries) +
                                              " times: behind a pooler that refuses startup "
                                              "options, a role's timeouts can end the setup)");
      }
    }
  }
  // A FATAL message while idle tells that the server ends the session (see alive()).
  PQsetNoticeReceiver(conn_, on_notice, this);
  // libpq opens its socket close-on-exec; a child it forks must not keep the session alive either,
  // which disown() sees to.
  where_ = std::string("host ") + (PQhost(conn_) != nullptr ? PQhost(conn_) : "?") + " port " +
           (PQport(conn_) != nullptr ? PQport(conn_) : "?") + " database " +
           (PQdb(conn_) != nullptr ? PQdb(conn_) : "?");
}

void session::set_up(connector& connect) {
  // Directly connected, the server process that libpq was told of at connection is the session's;
  // a pooler tells its own number. On another process this divides by zero, and the statements
  // after it do not run.
  std::string sql = identity_query;
  if (connect.settings_sent()) {
    sql += "SELECT 1 / (pg_backend_pid() = " + std::to_string(PQbackendPID(conn_)) + ")::int; ";
    sql += std::string(prepared_statements) + lock_queries();
  }
  bool pooled = !connect.settings_sent();
  const std::vector<std::string> row =
      run_script(sql, "connect for", sqlstate::division_by_zero, &pooled);
  if (row.size() < 3) fail("connect for", "the server did not say who it is", nullptr);
  backend_pid_ = row[0];
  identity_.system = row[1];
  identity_.database = row[2];
  if (!pooled) return;  // Directly connected, and prepared.
  if (pooled_per_transaction(connect)) {
    throw_error(std::errc::protocol_error, "connect for", name_, where_,
                std::string("the server process of the session changes between transactions, "
                            "so ") +
                    pooler_explained);
  }
  // Whether or not the pooler passed the startup options on, the settings are made sure of.
  sql.clear();
  for (const setting& s : connect.settings()) {
    if (s.since <= PQserverVersion(conn_)) sql += "SET " + s.name + " = " + s.value + "; ";
  }
  sql += std::string(prepared_statements) + lock_queries();
  sql += timeouts_off;
  if (run_script(sql, "connect for").at(0) != "true") {
    throw_error(std::errc::io_error, "connect for", name_, where_,
                "the session's timeouts could not be turned off through the pooler");
  }
}

bool session::pooled_per_transaction(connector& connect) {
  // A probe connection through the same pooler opens a transaction while this session is idle,
  // then this session asks for its server process again, three times over. A session pooler never
  // lends this session's process to the probe, nor moves this session to another, nor makes it
  // wait for one; a transaction pooler does one or the other (PgBouncer hands out the idle server
  // process used last: the probe gets this session's, and this session the probe's once that is
  // back), or makes it wait while the pool is busy.
  const connection probe = connect.connect();
  const auto own_pid = [&] {
    return ask(conn_, "SELECT pg_backend_pid()::text", std::chrono::seconds(1), name_, where_);
  };
  for (int round = 0; round < 3; ++round) {
    auto probe_pid = ask(probe.get(), "BEGIN; SELECT pg_backend_pid()::text",
                         std::chrono::milliseconds(250), name_, where_);
    if (!probe_pid) {
      // The pool has no server process to spare. A transaction pooler serves its waiting clients
      // in turn: this session, behind the probe, cannot get one before it. So an answer while the
      // probe still waits comes from a process the session keeps: session pooling.
      const auto own = own_pid();
      if (own != backend_pid_) return true;
      probe_pid = answer_by(probe.get(), steady_clock::now() + std::chrono::milliseconds(100),
                            name_, where_);
      if (!probe_pid) return false;
    }
    if (*probe_pid == backend_pid_ || own_pid() != backend_pid_) return true;
    if (!ask(probe.get(), "COMMIT", std::chrono::seconds(1), name_, where_)) return true;
    if (own_pid() != backend_pid_) return true;
  }
  return false;
}

session::~session() {
  PQclear(reply_);
  // In a forked child the socket is /dev/null by now (disown()): the goodbye goes nowhere.
  if (conn_ != nullptr) PQfinish(conn_);
}

int session::socket() const noexcept { return conn_ != nullptr ? PQsocket(conn_) : -1; }

std::string session::ended() const {
  return held_ > 0 ? "the session has ended, and the locks it held were lost with it"
                   : "the session has ended";
}

void session::fail(std::string_view action, std::string_view detail, const char* sqlstate) {
  const std::string_view state = sqlstate != nullptr ? sqlstate : "";
  if (state == sqlstate::lock_not_available) {  // lock_timeout fired.
    throw std::system_error(std::make_error_code(std::errc::timed_out), "lock_timeout");
  }
  if (state == sqlstate::invalid_sql_statement_name ||
      state == sqlstate::duplicate_prepared_statement) {
    moved(action, std::string("the session's prepared statements are ") +
                      (state == sqlstate::invalid_sql_statement_name ? "gone" : "there already") +
                      ", so another server process than the session's ran the statement");
  }
  if (state == sqlstate::insufficient_privilege) {
    throw_error(std::errc::permission_denied, action, name_, where_, detail);
  }
  if (state == sqlstate::deadlock_detected) {
    throw_error(std::errc::resource_deadlock_would_occur, action, name_, where_,
                "the server found a deadlock: " + std::string(detail));
  }
  if (PQstatus(conn_) != CONNECTION_OK ||
      sqlstate::in(state, sqlstate::operator_intervention_class) ||
      sqlstate::in(state, sqlstate::connection_exception_class)) {
    lost_ = true;
    throw_error(std::errc::connection_reset, action, name_, where_,
                ended() + ": " + std::string(detail));
  }
  throw_error(std::errc::io_error, action, name_, where_, detail);
}

void session::moved(std::string_view action, std::string_view why) {
  lost_ = true;
  std::string detail(why);
  detail += ": ";
  detail += pooler_explained;
  if (held_ > 0) detail += end_own_process();
  throw_error(std::errc::protocol_error, action, name_, where_, detail);
}

std::string session::end_own_process() {
  const std::string sql = "SELECT pg_terminate_backend(" + backend_pid_ + ")";
  PGresult* r = PQexec(conn_, sql.c_str());
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  // A statement that reached that very process ends with it.
  const bool ended_it =
      (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
       std::strcmp(PQgetvalue(r, 0, 0), "t") == 0) ||
      (state != nullptr && sqlstate::in(state, sqlstate::operator_intervention_class));
  const std::string why = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(conn_);
  PQclear(r);
  if (ended_it) {
    return "; the session's own server process " + backend_pid_ +
           " was ended, and with it the locks it held there";
  }
  return "; ending the session's own server process " + backend_pid_ + " failed (" + why +
         "): the locks it held stay there until that process ends";
}

std::vector<std::string> session::run_script(const std::string& sql, std::string_view action,
                                             std::string_view tolerated, bool* hit) {
  if (PQsendQuery(conn_, sql.c_str()) == 0) fail(action, PQerrorMessage(conn_), nullptr);
  std::vector<std::string> row;
  std::string error;
  std::string state;
  while (PGresult* r = PQgetResult(conn_)) {
    const ExecStatusType status = PQresultStatus(r);
    if (status == PGRES_TUPLES_OK && row.empty() && PQntuples(r) > 0) {
      for (int i = 0; i < PQnfields(r); ++i) row.emplace_back(PQgetvalue(r, 0, i));
    } else if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && error.empty()) {
      error = PQresultErrorMessage(r);
      const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      state = code != nullptr ? code : "";
    }
    PQclear(r);
  }
  if (hit != nullptr && !tolerated.empty() && state == tolerated) {
    *hit = true;
    return row;
  }
  if (!error.empty()) fail(action, error, state.empty() ? nullptr : state.c_str());
  if (row.empty()) fail(action, "no answer", nullptr);
  return row;
}

std::pair<std::string, std::string> session::run_prepared(const char* statement,
                                                          const std::vector<std::string>& params,
                                                          std::string_view action) {
  if (lost_ || disowned_) throw_error(std::errc::connection_reset, action, name_, where_, ended());
  const char* values[3] = {};
  for (std::size_t i = 0; i < params.size() && i < 3; ++i) values[i] = params[i].c_str();
  return finish(PQexecPrepared(conn_, statement, static_cast<int>(params.size()), values, nullptr,
                               nullptr, 0),
                action);
}

std::pair<std::string, std::string> session::run(const std::string& sql, std::string_view action) {
  if (lost_ || disowned_) throw_error(std::errc::connection_reset, action, name_, where_, ended());
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
  params.push_back(backend_pid_);
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
    if (row.second != backend_pid_) moved("take the", other_process(row.second, backend_pid_));
    if (row.first == "t") ++held_;
    return row.first == "t";
  }
  // No row: the statement reached another server process, and took nothing there.
  if (row.second != backend_pid_) moved("take the", other_process(row.second, backend_pid_));
  // pg_try_advisory_lock says t or f; pg_advisory_lock returns only once it has the lock.
  const bool granted = until != try_once || row.first == "t";
  if (granted) ++held_;
  return granted;
}

void session::unlock(std::int64_t key, lock_mode mode) {
  const char* name =
      mode == lock_mode::shared ? "fasteners_unlock_shared" : "fasteners_unlock_exclusive";
  const auto row = run_prepared(name, {std::to_string(key), backend_pid_}, "release the");
  if (row.second != backend_pid_) moved("release the", other_process(row.second, backend_pid_));
  if (row.first != "t") {
    lost_ = true;
    throw_error(std::errc::connection_reset, "release the", name_, where_,
                "the server no longer held it for this session (its locks are lost)");
  }
  --held_;
}

bool session::writer_waiting(std::int64_t key) {
  const auto row = run_prepared("fasteners_writer_waiting", {std::to_string(key)}, "join the");
  if (row.second != backend_pid_) moved("join the", other_process(row.second, backend_pid_));
  return row.first == "t";
}

bool session::held_elsewhere(std::int64_t key) {
  const auto row = run_prepared("fasteners_held_elsewhere", {std::to_string(key)}, "join the");
  if (row.second != backend_pid_) moved("join the", other_process(row.second, backend_pid_));
  return row.first == "t";
}

std::vector<std::string> session::run_own(const std::string& sql, std::string_view action) {
  if (lost_ || disowned_) throw_error(std::errc::connection_reset, action, name_, where_, ended());
  return run_script(sql, action);
}

std::uint64_t session::fence(std::int64_t key, lock_mode mode) {
  constexpr std::string_view action = "take a fencing token of the";
  if (lost_ || disowned_) throw_error(std::errc::connection_reset, action, name_, where_, ended());
  const std::string k = std::to_string(key);
  bool missing = false;
  if (mode == lock_mode::shared) {
    const auto row =
        run_script("SELECT coalesce((SELECT token FROM fasteners_fence WHERE key = " + k + "), 0)",
                   action, sqlstate::undefined_table, &missing);
    return missing ? 0 : std::stoull(row.at(0));  // No table: no exclusive token yet.
  }
  // Autocommit: the new token is committed (durable) before the statement returns. Unlike the lock
  // statements, these do not check pg_backend_pid(): a token taken on another server process
  // (a pooler gone to transaction mode, which the next lock statement finds) is only skipped.
  const std::string take = "INSERT INTO fasteners_fence AS f VALUES (" + k +
                           ", 1) ON CONFLICT (key) DO UPDATE SET token = f.token + 1 "
                           "RETURNING token";
  try {
    auto row = run_script(take, action, sqlstate::undefined_table, &missing);
    if (missing) {
      try {
        run_script(std::string(fence_table) + "; SELECT true", action);
      } catch (const std::system_error& e) {
        // Another session may have created it at the same moment (duplicate_table,
        // unique_violation): the statement below tells.
        if (e.code() == std::errc::permission_denied || lost_) throw;
      }
      row = run_script(take, action);
    }
    return std::stoull(row.at(0));
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::permission_denied) throw;
    const char* role = PQuser(conn_);
    throw_error(std::errc::permission_denied, action, name_, where_,
                std::string("the role may not create or write the table fasteners_fence; an "
                            "administrator runs: ") +
                    fence_table + "; GRANT SELECT, INSERT, UPDATE ON fasteners_fence TO \"" +
                    (role != nullptr ? role : "") + "\"");
  }
}

void session::unlock_all() {
  const auto row = run(
      "SELECT pg_advisory_unlock_all(), pg_backend_pid() WHERE pg_backend_pid() = " + backend_pid_,
      "release the");
  if (row.second != backend_pid_) moved("release the", other_process(row.second, backend_pid_));
  held_ = 0;
}

short session::send_lock(std::int64_t key, lock_mode mode) {
  if (lost_ || disowned_) {
    throw_error(std::errc::connection_reset, "wait for the", name_, where_, ended());
  }
  const std::string key_text = std::to_string(key);
  const char* values[2] = {key_text.c_str(), backend_pid_.c_str()};
  if (PQsetnonblocking(conn_, 1) != 0 || PQsendQueryPrepared(conn_, statement(mode, no_deadline), 2,
                                                             values, nullptr, nullptr, 0) == 0) {
    fail("wait for the", PQerrorMessage(conn_), nullptr);
  }
  in_flight_ = true;
  wait_key_ = key;
  wait_mode_ = mode;
  const int flushed = PQflush(conn_);
  if (flushed < 0) {
    // What was sent is unknown: the session is not used again.
    lost_ = true;
    in_flight_ = false;
    throw_error(std::errc::connection_reset, "wait for the", name_, where_,
                ended() + ": " + PQerrorMessage(conn_));
  }
  flushing_ = flushed > 0;
  return flushing_ ? POLLIN | POLLOUT : POLLIN;
}

bool session::read_lock_reply(short revents, short& events) noexcept {
  events = POLLIN;
  if (!in_flight_) return true;
  if ((revents & POLLOUT) != 0 || flushing_) {
    const int flushed = PQflush(conn_);
    if (flushed < 0) {
      lost_ = true;  // take_reply() says so.
      in_flight_ = false;
      return true;
    }
    flushing_ = flushed > 0;
  }
  if (PQconsumeInput(conn_) == 0 && PQstatus(conn_) != CONNECTION_BAD) {
    lost_ = true;
    in_flight_ = false;
    return true;
  }
  // Once the connection is bad, PQgetResult() returns at once: its error, then the end.
  while (PQstatus(conn_) == CONNECTION_BAD || PQisBusy(conn_) == 0) {
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) {
      in_flight_ = false;
      return true;
    }
    if (reply_ == nullptr) {
      reply_ = r;
    } else {
      PQclear(r);
    }
  }
  if (flushing_) events |= POLLOUT;
  return false;
}

bool session::take_reply(bool cancelled) {
  PGresult* const r = std::exchange(reply_, nullptr);
  in_flight_ = false;
  flushing_ = false;
  if (PQstatus(conn_) == CONNECTION_OK) PQsetnonblocking(conn_, 0);  // Nothing is left to send.
  if (lost_) {
    PQclear(r);
    throw_error(std::errc::connection_reset, "wait for the", name_, where_,
                ended() + ": " + PQerrorMessage(conn_));
  }
  if (cancelled && r != nullptr && PQresultStatus(r) == PGRES_FATAL_ERROR) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state != nullptr && state == sqlstate::query_canceled) {
      PQclear(r);
      return false;
    }
  }
  const auto row = finish(r, "wait for the");
  // No row: the statement reached another server process, and took nothing there.
  if (row.second != backend_pid_) moved("take the", other_process(row.second, backend_pid_));
  ++held_;
  return true;
}

bool session::holds(std::int64_t key, lock_mode mode) {
  const auto row =
      run_prepared("fasteners_holds",
                   {std::to_string(key), mode == lock_mode::shared ? "ShareLock" : "ExclusiveLock"},
                   "release the");
  if (row.second != backend_pid_) moved("release the", other_process(row.second, backend_pid_));
  if (row.first == "t") ++held_;
  return row.first == "t";
}

void session::settle_lock() noexcept {
  short events = 0;
  if (!read_lock_reply(0, events)) {
    // No reply yet: the statement is cancelled. PQcancel() returns once the postmaster has
    // signalled the session's server process, which acts on it while the statement runs; a
    // signal that comes once the statement has ended is dropped as the next statement is read.
    // So nothing is sent on the session before PQcancel() has returned. A signal that comes
    // before the statement runs (the server process still reads it, or it is still being sent)
    // is dropped too, and the statement would then wait for the lock for good: so the cancel is
    // sent again, after 1 ms, then at growing intervals up to a second, until the reply comes.
    auto pause = std::chrono::milliseconds(1);
    for (bool replied = false; !replied;) {
      bool sent = false;
      if (PGcancel* cancel = PQgetCancel(conn_)) {
        char error[256];
        sent = PQcancel(cancel, error, sizeof error) == 1;
        PQfreeCancel(cancel);
      }
      if (!sent) {
        // The server may still grant the lock: the session is closed rather than used again.
        lost_ = true;
        return;
      }
      const auto until = std::chrono::steady_clock::now() + pause;
      while (!(replied = read_lock_reply(events, events))) {
        if (!wait_for(PQsocket(conn_), events, until)) break;
      }
      pause = std::min(pause * 2, std::chrono::milliseconds(1000));
    }
    if (lost_) return;
  }
  bool held = false;
  try {
    held = take_reply(true);
  } catch (...) {
    if (lost()) return;  // Closed, the session lets go of everything.
    // Another failure: whether the server holds the lock all the same is asked below.
  }
  try {
    // A statement cancelled just after its grant leaves the lock held (a session lock outlives the
    // statement), as a lock_timeout does (see lock()): ask.
    if (!held) held = holds(wait_key_, wait_mode_);
    if (held) unlock(wait_key_, wait_mode_);
  } catch (...) {
    lost_ = true;  // What the session holds is unknown: closed, it holds nothing.
  }
}

void session::on_notice(void* self, const PGresult* notice) {
  const char* severity = PQresultErrorField(notice, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity != nullptr &&
      (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0)) {
    static_cast<session*>(self)->ending_ = true;
  }
}

bool session::alive() noexcept {
  if (conn_ == nullptr || lost_ || disowned_) return false;
  if (PQstatus(conn_) != CONNECTION_OK) return false;
  // An idle session hears from the server when it ends the session: a FATAL error, which libpq
  // hands to the notice receiver while idle, then the end of the connection. A notice or a changed
  // parameter may come too, which ends nothing.
  const int fd = PQsocket(conn_);
  if (!wait_for(fd, POLLIN, std::chrono::steady_clock::now())) return true;
  if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
    lost_ = true;
    return false;
  }
  PQisBusy(conn_);  // Parses what came.
  char byte = 0;
  const ssize_t peeked = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  const bool closed =
      peeked == 0 || (peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  if (ending_ || closed) lost_ = true;
  return !lost_;
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

std::uint64_t send_watched_lock(session& s, std::int64_t key, lock_mode mode,
                                std::shared_ptr<engine::async_thread::fd_watcher> w,
                                short& events) {
  // Watched before the statement goes: the poller's call waits for the caller's mutex meanwhile.
  events = POLLIN;
  const std::uint64_t watch = engine::async_thread::watch(s.socket(), events, std::move(w));
  if (watch == 0) throw std::system_error(std::make_error_code(std::errc::not_enough_memory));
  try {
    const short wanted = s.send_lock(key, mode);
    if (wanted != events) {
      events = wanted;
      engine::async_thread::rewatch(watch, events);
    }
  } catch (...) {
    engine::async_thread::unwatch(watch);
    throw;
  }
  return watch;
}

bool read_watched_reply(session& s, std::uint64_t& watch, short& events, short revents) noexcept {
  short wanted = 0;
  if (!s.read_lock_reply(revents, wanted)) {
    if (wanted != events) {
      events = wanted;
      engine::async_thread::rewatch(watch, events);
    }
    return false;
  }
  engine::async_thread::unwatch(watch);
  watch = 0;
  return true;
}

}  // namespace fasteners::detail::postgres
