// Opening a PostgreSQL session's connection through libpq: the parameters, the settings in the
// startup packet, and what a failure means.
#include "postgres/connect.hpp"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "postgres/client.hpp"
#include "postgres/sqlstate.hpp"

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

// Completes a connection that PQconnectStartParams began, as PQconnectdb would: at most `seconds`
// per address tried (none if 0), after which libpq goes on to the next address, if any. Returns
// whether the time ran out for the last attempt.
bool complete(PGconn* conn, int seconds) {
  using clock = std::chrono::steady_clock;
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  int attempt_socket = -1;
  auto until = clock::time_point::max();
  bool expired = false;
  while (state != PGRES_POLLING_OK && state != PGRES_POLLING_FAILED) {
    const int fd = PQsocket(conn);
    if (fd != attempt_socket) {  // Another address: a timeout of its own.
      attempt_socket = fd;
      until = seconds > 0 ? clock::now() + std::chrono::seconds(seconds) : clock::time_point::max();
      expired = false;
    }
    if (fd >= 0 && !wait_for(fd, state == PGRES_POLLING_READING ? POLLIN : POLLOUT, until)) {
      // Makes libpq's next step fail on this address, so that it tries the next one.
      ::shutdown(fd, SHUT_RDWR);
      expired = true;
      attempt_socket = -2;
    }
    state = PQconnectPoll(conn);
  }
  return expired && state == PGRES_POLLING_FAILED;
}

// A line of libpq's verbose form that names the server's source ("LOCATION:  f, file.c:123").
bool is_location(std::string_view line) {
  const auto label = line.find(":  ");
  if (label == std::string_view::npos) return false;
  const std::string_view rest = line.substr(label + 3);
  const auto comma = rest.find(", ");
  const auto colon = rest.rfind(':');
  return comma != std::string_view::npos && colon != std::string_view::npos && colon > comma &&
         colon + 1 < rest.size() &&
         rest.find_first_not_of("0123456789", colon + 1) == std::string_view::npos;
}

// The SQLSTATE in a line "SEVERITY:  SQLSTATE: message", or npos.
std::size_t sqlstate_at(std::string_view line) {
  for (auto at = line.find(":  "); at != std::string_view::npos; at = line.find(":  ", at + 1)) {
    const std::size_t code = at + 3;
    if (code + 7 > line.size() || line.substr(code + 5, 2) != ": ") continue;
    bool valid = true;
    for (std::size_t i = code; i < code + 5; ++i) {
      const auto c = static_cast<unsigned char>(line[i]);
      valid = valid && (std::isdigit(c) || std::isupper(c));
    }
    if (valid) return code;
  }
  return std::string_view::npos;
}

// A failed connection's message, which libpq wrote in its verbose form (see connector::attempt):
// the SQLSTATE of the server's last error, if one came, and the message in the default form.
std::pair<std::string, std::string> parse_failure(std::string_view verbose) {
  std::string state;
  std::string message;
  while (!verbose.empty()) {
    const auto end = verbose.find('\n');
    std::string line(verbose.substr(0, end));
    verbose.remove_prefix(end == std::string_view::npos ? verbose.size() : end + 1);
    if (is_location(line)) continue;
    if (const auto code = sqlstate_at(line); code != std::string::npos) {
      state = line.substr(code, 5);
      line.erase(code, 7);
    }
    message += line + "\n";
  }
  return {state, message};
}

void ignore_notice(void*, const PGresult*) {}

}  // namespace

bool wait_for(int fd, short events, std::chrono::steady_clock::time_point until) {
  for (;;) {
    int ms = -1;
    if (until != std::chrono::steady_clock::time_point::max()) {
      const auto left = until - std::chrono::steady_clock::now();
      ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      if (ms < 0) ms = 0;
    }
    pollfd p{fd, events, 0};
    const int ready = ::poll(&p, 1, ms);
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return true;  // The caller's next libpq call reports what is wrong.
  }
}

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

int tcp_user_timeout_ms(const postgres_options& options) {
  if (options.tcp_user_timeout >= 0) return options.tcp_user_timeout;
  if (options.keepalives_idle <= 0) return 0;
  return (options.keepalives_idle + options.keepalives_interval * options.keepalives_count) * 1000;
}

std::vector<setting> session_settings(const postgres_options& options) {
  // Timeouts first: behind a pooler they are SET statements, each of which a role's
  // statement_timeout could cancel until it is off.
  std::vector<setting> settings{{"statement_timeout", "0", 0},
                                {"lock_timeout", "0", 0},
                                {"idle_in_transaction_session_timeout", "0", 90600},
                                {"idle_session_timeout", "0", 140000},
                                // A waiting session notices a client that went away within a
                                // second, not at the grant.
                                {"client_connection_check_interval", "1000", 140000}};
  if (options.keepalives_idle > 0) {
    // The server's side of the keepalives: a client machine that went away loses its locks.
    settings.push_back({"tcp_keepalives_idle", std::to_string(options.keepalives_idle), 0});
    settings.push_back({"tcp_keepalives_interval", std::to_string(options.keepalives_interval), 0});
    settings.push_back({"tcp_keepalives_count", std::to_string(options.keepalives_count), 0});
  }
  if (const int ms = tcp_user_timeout_ms(options); ms > 0) {
    settings.push_back({"tcp_user_timeout", std::to_string(ms), 120000});
  }
  return settings;
}

void connection_closer::operator()(pg_conn* conn) const noexcept { PQfinish(conn); }

connector::connector(const std::string& conninfo, const postgres_options& options, std::string name,
                     std::string where)
    : name_(std::move(name)),
      where_(std::move(where)),
      all_settings_(session_settings(options)),
      newest_(INT_MAX) {
  const parsed_conninfo parsed(conninfo);
  if (!conninfo.empty() && parsed.options == nullptr) {
    throw_error(std::errc::invalid_argument, "connect for", name_, "the server",
                "the conninfo cannot be parsed");
  }
  // The library's defaults come first; what the conninfo sets (expanded from "dbname") wins.
  const auto set_default = [&](const char* key, const std::string& value) {
    if (parsed.get(key) == nullptr) {
      keys_.emplace_back(key);
      values_.push_back(value);
    }
  };
  if (options.keepalives_idle > 0) {
    set_default("keepalives", "1");
    set_default("keepalives_idle", std::to_string(options.keepalives_idle));
    set_default("keepalives_interval", std::to_string(options.keepalives_interval));
    set_default("keepalives_count", std::to_string(options.keepalives_count));
  }
  if (const int ms = tcp_user_timeout_ms(options); ms > 0) {
    set_default("tcp_user_timeout", std::to_string(ms));
  }
  if (std::getenv("PGAPPNAME") == nullptr) set_default("application_name", application_name());
  if (!conninfo.empty()) {
    keys_.emplace_back("dbname");
    values_.push_back(conninfo);
  }
  user_options_ = or_env(parsed.get("options"), "PGOPTIONS", "");
  const char* timeout = or_env(parsed.get("connect_timeout"), "PGCONNECT_TIMEOUT", nullptr);
  timeout_seconds_ = timeout != nullptr ? std::atoi(timeout) : options.connect_timeout;
  // As libpq: a limit under 2 s could end an attempt before it had a chance.
  if (timeout_seconds_ > 0 && timeout_seconds_ < 2) timeout_seconds_ = 2;
}

std::vector<setting> connector::settings() const {
  std::vector<setting> out;
  for (const setting& s : all_settings_) {
    if (s.since <= newest_) out.push_back(s);
  }
  return out;
}

bool connector::attempt(connection& conn, bool& expired) const {
  // The startup options come after the conninfo, so they override its "options": keep those.
  std::string startup = user_options_;
  if (with_settings_) {
    for (const setting& s : settings()) startup += " -c " + s.name + "=" + s.value;
  }
  std::vector<const char*> keys;
  std::vector<const char*> values;
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    keys.push_back(keys_[i].c_str());
    values.push_back(values_[i].c_str());
  }
  if (!startup.empty()) {
    keys.push_back("options");
    values.push_back(startup.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn.reset(PQconnectStartParams(keys.data(), values.data(), 1));
  if (!conn) throw_error(std::errc::not_enough_memory, "connect for", name_, where_, "no memory");
  // The verbose form carries the SQLSTATE of a server's error, which parse_failure reads back.
  PQsetErrorVerbosity(conn.get(), PQERRORS_VERBOSE);
  expired = PQstatus(conn.get()) != CONNECTION_BAD && complete(conn.get(), timeout_seconds_);
  if (PQstatus(conn.get()) != CONNECTION_OK) return false;
  PQsetErrorVerbosity(conn.get(), PQERRORS_DEFAULT);
  PQsetNoticeReceiver(conn.get(), ignore_notice, nullptr);
  return true;
}

bool connector::retry_without(const std::string& message, std::string_view sqlstate) {
  if (!with_settings_) return false;
  // PgBouncer does not pass startup options on: settings then go as SET statements.
  if (message.find("unsupported startup parameter") != std::string::npos) {
    with_settings_ = false;
    return true;
  }
  if (sqlstate != sqlstate::undefined_object) return false;
  // "unrecognized configuration parameter "NAME"": the server is older than NAME.
  for (const setting& s : settings()) {
    if (s.since > 0 && message.find('"' + s.name + '"') != std::string::npos) {
      newest_ = s.since - 1;
      return true;
    }
  }
  return false;
}

connection connector::connect() {
  for (;;) {
    connection conn;
    bool expired = false;
    if (attempt(conn, expired)) return conn;
    auto [state, message] = parse_failure(PQerrorMessage(conn.get()));
    if (retry_without(message, state)) continue;
    if (!state.empty() && (sqlstate::in(state, sqlstate::invalid_authorization_class) ||
                           state == sqlstate::insufficient_privilege)) {
      throw_error(std::errc::permission_denied, "connect for", name_, where_, message);
    }
    if (state.empty() && expired) {  // libpq's message tells of the attempt cut short.
      throw_error(std::errc::timed_out, "connect for", name_, where_,
                  "timeout expired after " + std::to_string(timeout_seconds_) + " s");
    }
    throw_error(std::errc::connection_refused, "connect for", name_, where_, message);
  }
}

}  // namespace fasteners::detail::postgres
