// Opening the connection of a PostgreSQL lock's session: libpq's parameters with the library's
// defaults, the session's settings in the startup packet (where no timeout applies to them), a
// server that does not know some settings or a pooler that refuses them, and errors that tell an
// unreachable server from a refused login.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "fasteners/detail/export.hpp"
#include "fasteners/postgres.hpp"

struct pg_conn;

namespace fasteners::detail::postgres {

// Where a conninfo points, for messages: "host H port P database D" with what it sets (never a
// password); libpq's defaults fill in the rest.
FASTENERS_API std::string describe_target(const std::string& conninfo);

// Throws std::system_error(e) with "fasteners: cannot <action> lock '<name>' on <where>: <detail>".
[[noreturn]] void throw_error(std::errc e, std::string_view action, const std::string& name,
                              const std::string& where, std::string_view detail);

// Waits until `fd` is ready for `events` (poll's) or `until` has passed (then false).
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point until);

// One setting every session needs, whatever the server's, the database's or the role's defaults.
struct setting {
  std::string name;
  std::string value;
  int since;  // The first server version that knows it, as PQserverVersion gives it.
};

// The settings of a session with `options`: every timeout that could end a wait, a held lock or an
// idle session turned off; a waiting session checking on its client every second; TCP keepalives
// and the user timeout (see postgres_options).
std::vector<setting> session_settings(const postgres_options& options);

// postgres_options::tcp_user_timeout resolved: milliseconds, 0 for none.
int tcp_user_timeout_ms(const postgres_options& options);

struct FASTENERS_API connection_closer {
  void operator()(pg_conn* conn) const noexcept;
};
using connection = std::unique_ptr<pg_conn, connection_closer>;

// The connections of one lock object: libpq's parameters, made once. Not thread-safe.
class FASTENERS_API connector {
 public:
  // `name` and `where` are for messages. Throws std::system_error (invalid_argument) if the
  // conninfo cannot be parsed.
  connector(const std::string& conninfo, const postgres_options& options, std::string name,
            std::string where);

  // Connects within the connect timeout, with the session's settings in the startup packet; to a
  // server that does not know some of them, with the others; to a pooler that refuses them
  // (PgBouncer: "unsupported startup parameter"), without (see settings_sent()). Throws
  // std::system_error naming the lock and the server: permission_denied when the server refused
  // the login, timed_out when it did not answer in time, connection_refused otherwise.
  connection connect();
  // Whether the last connect() sent the settings; if not, the session sets them itself.
  bool settings_sent() const noexcept { return with_settings_; }
  // The settings the connections send, or would send.
  std::vector<setting> settings() const;

 private:
  // Starts a connection in `conn` with the parameters as they are now and completes it; false if
  // it failed (libpq's message is then in `conn`, and `expired` says whether the connect timeout
  // ran out).
  bool attempt(connection& conn, bool& expired) const;
  // After a failed attempt with `message` and `sqlstate`: whether another attempt without some
  // settings may succeed (and the parameters now leave those out).
  bool retry_without(const std::string& message, std::string_view sqlstate);

  std::string name_;
  std::string where_;
  std::vector<std::string> keys_;
  std::vector<std::string> values_;
  std::string user_options_;  // The conninfo's (or PGOPTIONS') startup options.
  std::vector<setting> all_settings_;
  int newest_ = 0;  // Settings that only servers newer than this know are left out.
  bool with_settings_ = true;
  int timeout_seconds_ = 0;  // Per address tried; 0: none.
};

}  // namespace fasteners::detail::postgres
