// `--postgres`: PostgreSQL advisory locks for `fasteners run` and `fasteners status`.
#include "postgres.hpp"

#include <cctype>
#include <cstdlib>
#include <string_view>
#include <utility>

#include "errors.hpp"

#if defined(FASTENERS_TOOL_POSTGRES)
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "fasteners/postgres.hpp"
#endif

namespace fasteners::tool {
namespace {

// "a\n\tb\n" -> "a b": libpq's messages span lines; the tool's errors are one line.
std::string one_line(const std::string& text) {
  std::string out;
  bool space = false;
  for (const char c : text) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

void replace_all(std::string& text, const std::string& what, const std::string& with) {
  if (what.empty()) return;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
}

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// The password of a URI's user:password@ as written (percent-encoded or not), or empty.
std::string uri_password(const std::string& conninfo) {
  std::string_view rest = conninfo;
  for (const std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (starts_with(rest, scheme)) {
      rest.remove_prefix(scheme.size());
      const auto end = rest.find_first_of("/?");
      const auto authority = rest.substr(0, end);
      const auto at = authority.rfind('@');
      if (at == std::string_view::npos) return {};
      const auto userinfo = authority.substr(0, at);
      const auto colon = userinfo.find(':');
      if (colon == std::string_view::npos) return {};
      return std::string(userinfo.substr(colon + 1));
    }
  }
  return {};
}

}  // namespace

std::string postgres_unsupported_message(const std::string& subcommand) {
  return "fasteners " + subcommand +
         ": --postgres is not available: this fasteners was built without PostgreSQL support "
         "(FASTENERS_POSTGRES off, or libpq not found when it was built)";
}

std::string describe_postgres_holder(const postgres_holder& h) {
  std::string out;
  if (h.client_pid > 0) {
    out = "pid " + std::to_string(h.client_pid);
    if (!h.client_host.empty()) out += " on " + h.client_host;
    if (!h.program.empty()) out += " (" + h.program + ")";
    return out;
  }
  out = "session " + std::to_string(h.backend_pid);
  std::string about = h.application_name;
  if (!h.client.empty()) about += (about.empty() ? "from " : ", from ") + h.client;
  if (!about.empty()) out += " (" + about + ")";
  return out;
}

#if defined(FASTENERS_TOOL_POSTGRES)

namespace {

struct connection_closer {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using connection = std::unique_ptr<PGconn, connection_closer>;
struct result_clearer {
  void operator()(PGresult* r) const { PQclear(r); }
};
using result = std::unique_ptr<PGresult, result_clearer>;
struct options_freer {
  void operator()(PQconninfoOption* o) const { PQconninfoFree(o); }
};
using conninfo_options = std::unique_ptr<PQconninfoOption, options_freer>;

std::string this_host() {
  char name[HOST_NAME_MAX + 1] = "";
  if (::gethostname(name, sizeof name) != 0) return {};
  name[HOST_NAME_MAX] = '\0';
  return name;
}

// "fasteners <pid>@<host> <program>", as this library's sessions name themselves (the server
// keeps the first 63 bytes).
void parse_application_name(postgres_holder& h) {
  std::string_view text = h.application_name;
  constexpr std::string_view prefix = "fasteners ";
  if (!starts_with(text, prefix)) return;
  text.remove_prefix(prefix.size());
  long long pid = 0;
  std::size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits])) &&
         digits < 10) {
    pid = pid * 10 + (text[digits] - '0');
    ++digits;
  }
  if (digits == 0 || pid == 0 || digits >= text.size() || text[digits] != '@') return;
  text.remove_prefix(digits + 1);
  const auto space = text.find(' ');
  h.client_pid = pid;
  h.client_host = std::string(text.substr(0, space));
  h.program = space == std::string_view::npos ? "" : std::string(text.substr(space + 1));
}

connection connect(const std::string& subcommand, const std::string& conninfo) {
  const std::string fallback_name = "fasteners " + subcommand;
  // Entries before dbname (which carries the conninfo) are defaults that the conninfo overrides.
  std::vector<const char*> keys;
  std::vector<const char*> values;
  const char* env_timeout = std::getenv("PGCONNECT_TIMEOUT");
  if (env_timeout == nullptr || *env_timeout == '\0') {
    keys.push_back("connect_timeout");
    values.push_back("10");  // As postgres_options' default.
  }
  keys.push_back("fallback_application_name");
  values.push_back(fallback_name.c_str());
  keys.push_back("dbname");
  values.push_back(conninfo.c_str());
  keys.push_back(nullptr);
  values.push_back(nullptr);
  connection c(PQconnectdbParams(keys.data(), values.data(), 1));
  if (!c) {
    throw tool_error(exit_unavailable,
                     "fasteners " + subcommand + ": cannot connect to PostgreSQL: out of memory");
  }
  if (PQstatus(c.get()) != CONNECTION_OK) {
    throw tool_error(exit_unavailable, "fasteners " + subcommand +
                                           ": cannot connect to PostgreSQL: " +
                                           scrub(PQerrorMessage(c.get()), conninfo));
  }
  return c;
}

// Whether a conninfo libpq cannot parse may hold a password, which libpq's message could quote.
bool may_hold_password(const std::string& conninfo) {
  std::string lower;
  for (const char c : conninfo)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("password") != std::string::npos || lower.find('@') != std::string::npos;
}

std::string field(const PGresult* r, int row, int column) {
  if (PQgetisnull(r, row, column)) return {};
  return std::string(PQgetvalue(r, row, column),
                     static_cast<std::size_t>(PQgetlength(r, row, column)));
}

class library_postgres_lock final : public postgres_run_lock {
 public:
  library_postgres_lock(const std::string& conninfo, const std::string& name, bool shared)
      : lock_(conninfo, name, options()), shared_(shared) {}

  bool try_acquire() override {
    return shared_ ? lock_.acquire_read_lock(false) : lock_.acquire_write_lock(false);
  }
  bool acquire(std::optional<std::chrono::duration<double>> timeout) override {
    return shared_ ? lock_.acquire_read_lock(true, timeout)
                   : lock_.acquire_write_lock(true, timeout);
  }
  void release() override {
    if (shared_) {
      lock_.release_read_lock();
    } else {
      lock_.release_write_lock();
    }
  }

 private:
  static postgres_options options() {
    postgres_options o;
    o.close_on_release = true;  // Nothing is left to do on the server after the release.
    return o;
  }

  postgres_reader_writer_lock lock_;
  const bool shared_;
};

}  // namespace

bool postgres_supported() { return true; }

void check_conninfo(const std::string& subcommand, const std::string& conninfo) {
  char* error = nullptr;
  const conninfo_options parsed(PQconninfoParse(conninfo.c_str(), &error));
  if (parsed) return;
  std::string detail = error != nullptr ? one_line(error) : "out of memory";
  PQfreemem(error);
  // libpq quotes pieces of what it cannot parse, which may be a password.
  if (may_hold_password(conninfo)) detail = "libpq cannot parse it";
  throw usage_error(subcommand, "invalid --postgres connection string: " + detail);
}

std::string scrub(const std::string& text, const std::string& conninfo) {
  std::string out = one_line(text);
  const conninfo_options parsed(PQconninfoParse(conninfo.c_str(), nullptr));
  if (parsed) {
    for (const auto* o = parsed.get(); o->keyword != nullptr; ++o) {
      if (o->val == nullptr || *o->val == '\0') continue;
      if (std::strcmp(o->keyword, "password") == 0 || std::strcmp(o->keyword, "sslpassword") == 0) {
        replace_all(out, o->val, "***");
      }
    }
  }
  replace_all(out, uri_password(conninfo), "***");
  return out;
}

postgres_lock_state postgres_holders(const std::string& subcommand, const std::string& conninfo,
                                     const std::string& name) {
  postgres_lock_state state;
  state.key = postgres_key(name);
  const connection c = connect(subcommand, conninfo);
  state.database = PQdb(c.get());
  // The bigint form of an advisory lock's tag: classid = the key's high 32 bits, objid = its low
  // 32 bits (both as oid), objsubid = 1; in the session's database. pg_locks.waitstart exists
  // from PostgreSQL 14.
  const auto key = static_cast<std::uint64_t>(state.key);
  const std::string high = std::to_string(key >> 32U);
  const std::string low = std::to_string(key & 0xFFFFFFFFU);
  const std::string since =
      PQserverVersion(c.get()) >= 140000
          ? "CASE WHEN NOT l.granted AND l.waitstart IS NOT NULL THEN l.waitstart "
            "ELSE coalesce(a.state_change, a.backend_start) END"
          : "coalesce(a.state_change, a.backend_start)";
  const std::string query =
      "SELECT l.pid, l.granted, l.mode, a.application_name, a.usename, "
      "CASE WHEN a.client_port = -1 THEN 'local' "
      "ELSE coalesce(a.client_hostname, host(a.client_addr)) END, "
      "to_char((" +
      since +
      ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
      "FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
      "WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database "
      "WHERE datname = pg_catalog.current_database()) "
      "AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 1 "
      "ORDER BY l.granted DESC, (" +
      since + ") NULLS LAST, l.pid";
  const char* params[] = {high.c_str(), low.c_str()};
  const result r(PQexecParams(c.get(), query.c_str(), 2, nullptr, params, nullptr, nullptr, 0));
  if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) {
    throw tool_error(exit_unavailable, "fasteners " + subcommand +
                                           ": cannot list the holders of '" + name +
                                           "': " + scrub(PQerrorMessage(c.get()), conninfo));
  }
  for (int row = 0; row < PQntuples(r.get()); ++row) {
    postgres_holder h;
    h.backend_pid = std::strtoll(PQgetvalue(r.get(), row, 0), nullptr, 10);
    h.waiting = field(r.get(), row, 1) != "t";
    h.mode = field(r.get(), row, 2);
    h.exclusive = h.mode != "ShareLock";
    h.application_name = field(r.get(), row, 3);
    h.user = field(r.get(), row, 4);
    h.client = field(r.get(), row, 5);
    h.since = field(r.get(), row, 6);
    parse_application_name(h);
    state.holders.push_back(std::move(h));
  }
  return state;
}

bool is_this_process(const postgres_holder& h) {
  if (h.client_pid != static_cast<long long>(::getpid())) return false;
  // The server may have cut the host name short.
  const std::string host = this_host();
  return !h.client_host.empty() && starts_with(host, h.client_host);
}

std::unique_ptr<postgres_run_lock> make_postgres_run_lock(const std::string& conninfo,
                                                          const std::string& name, bool shared) {
  return std::make_unique<library_postgres_lock>(conninfo, name, shared);
}

struct interrupts_ignored::saved {
  struct sigaction interrupt {};
  struct sigaction quit {};
};

interrupts_ignored::interrupts_ignored() : saved_(std::make_unique<saved>()) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGINT, &ignore, &saved_->interrupt);
  ::sigaction(SIGQUIT, &ignore, &saved_->quit);
}

interrupts_ignored::~interrupts_ignored() {
  ::sigaction(SIGINT, &saved_->interrupt, nullptr);
  ::sigaction(SIGQUIT, &saved_->quit, nullptr);
}

std::vector<int> interrupts_ignored::ignored_here() const {
  std::vector<int> out;
  if (saved_->interrupt.sa_handler != SIG_IGN) out.push_back(SIGINT);
  if (saved_->quit.sa_handler != SIG_IGN) out.push_back(SIGQUIT);
  return out;
}

#else  // !FASTENERS_TOOL_POSTGRES

bool postgres_supported() { return false; }

void check_conninfo(const std::string& subcommand, const std::string&) {
  throw tool_error(exit_unavailable, postgres_unsupported_message(subcommand));
}

std::string scrub(const std::string& text, const std::string& conninfo) {
  std::string out = one_line(text);
  replace_all(out, uri_password(conninfo), "***");
  return out;
}

postgres_lock_state postgres_holders(const std::string& subcommand, const std::string&,
                                     const std::string&) {
  throw tool_error(exit_unavailable, postgres_unsupported_message(subcommand));
}

bool is_this_process(const postgres_holder&) { return false; }

std::unique_ptr<postgres_run_lock> make_postgres_run_lock(const std::string&, const std::string&,
                                                          bool) {
  throw tool_error(exit_unavailable, postgres_unsupported_message("run"));
}

struct interrupts_ignored::saved {};
interrupts_ignored::interrupts_ignored() = default;
interrupts_ignored::~interrupts_ignored() = default;
std::vector<int> interrupts_ignored::ignored_here() const { return {}; }

#endif

}  // namespace fasteners::tool
