// `--postgres`: PostgreSQL advisory locks for `fasteners run` and `fasteners status`.
#include "postgres.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>

#include "errors.hpp"
#include "run_arguments.hpp"
#include "run_lock.hpp"
#include "verbose_report.hpp"

#if defined(FASTENERS_TOOL_POSTGRES)
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "fasteners/postgres.hpp"
#include "postgres/client.hpp"
#include "postgres/connect.hpp"
#include "semaphore_lock.hpp"
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

#if defined(FASTENERS_TOOL_POSTGRES)
// `text` without `prefix` ("fasteners: ") if it starts with it.
std::string without_prefix(std::string text, std::string_view prefix) {
  if (starts_with(text, prefix)) text.erase(0, prefix.size());
  return text;
}
#endif

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

std::size_t postgres_semaphore_state::held() const {
  std::vector<std::size_t> taken = slot_of;
  std::sort(taken.begin(), taken.end());
  return static_cast<std::size_t>(std::unique(taken.begin(), taken.end()) - taken.begin());
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

using detail::postgres::connection;
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

// The client process, host and program of a session of this library, from its application_name.
void parse_application_name(postgres_holder& h) {
  if (const auto c = detail::postgres::parse_application_name(h.application_name)) {
    h.client_pid = c->pid;
    h.client_host = c->host;
    h.program = c->program;
  }
}

// A session of its own, as the library connects one (its defaults, its settings in the startup
// packet, so that no role's timeout ends the query), which takes no lock.
connection connect(const std::string& subcommand, const std::string& conninfo,
                   const std::string& name) {
  using detail::postgres::connector;
  try {
    connector c(conninfo, postgres_options(), name, detail::postgres::describe_target(conninfo));
    return c.connect();
  } catch (const std::system_error& e) {
    throw tool_error(exit_unavailable,
                     "fasteners " + subcommand + ": " +
                         without_prefix(scrub(e.what(), conninfo), "fasteners: "));
  }
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

// The query of the sessions that hold or wait for the key in $1 (a bigint), holders first, then
// waiters, oldest first. pg_locks.waitstart exists from PostgreSQL 14 (`server_version`).
std::string holders_query(int server_version) {
  const std::string since = server_version >= 140000
                                ? "CASE WHEN NOT l.granted AND l.waitstart IS NOT NULL THEN "
                                  "l.waitstart ELSE coalesce(a.state_change, a.backend_start) END"
                                : "coalesce(a.state_change, a.backend_start)";
  return "SELECT l.pid, l.granted, l.mode, a.application_name, a.usename, "
         "CASE WHEN a.client_port = -1 THEN 'local' "
         "ELSE coalesce(a.client_hostname, host(a.client_addr)) END, "
         "to_char((" +
         since +
         ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
         "FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
         "WHERE " +
         detail::postgres::key_condition(1, "l.") + " ORDER BY l.granted DESC, (" + since +
         ") NULLS LAST, l.pid";
}

// Row `row` of holders_query()'s result.
postgres_holder holder_of(const PGresult* r, int row) {
  postgres_holder h;
  h.backend_pid = std::strtoll(PQgetvalue(r, row, 0), nullptr, 10);
  h.waiting = field(r, row, 1) != "t";
  h.mode = field(r, row, 2);
  h.exclusive = h.mode != "ShareLock";
  h.application_name = field(r, row, 3);
  h.user = field(r, row, 4);
  h.client = field(r, row, 5);
  h.since = field(r, row, 6);
  parse_application_name(h);
  return h;
}

// A session of its own (see connect()) that lists the sessions holding or waiting for keys
// through holders_query(), prepared once. Its errors are tool_error (exit_unavailable) naming
// `subcommand` and `name`.
class holder_lister {
 public:
  holder_lister(const std::string& subcommand, const std::string& conninfo, const std::string& name)
      : c_(connect(subcommand, conninfo, name)),
        subcommand_(subcommand),
        conninfo_(conninfo),
        name_(name) {
    const std::string query = holders_query(PQserverVersion(c_.get()));
    const Oid types[] = {20};  // bigint
    check(result(PQprepare(c_.get(), "", query.c_str(), 1, types)), PGRES_COMMAND_OK);
  }

  std::string database() const { return PQdb(c_.get()); }

  // The sessions that hold or wait for `key`, holders first, then waiters, oldest first.
  std::vector<postgres_holder> of(std::int64_t key) const {
    const std::string text = std::to_string(key);
    const char* params[] = {text.c_str()};
    const result r(PQexecPrepared(c_.get(), "", 1, params, nullptr, nullptr, 0));
    check(r, PGRES_TUPLES_OK);
    std::vector<postgres_holder> found;
    for (int row = 0; row < PQntuples(r.get()); ++row) {
      found.push_back(holder_of(r.get(), row));
      found.back().key = key;
    }
    return found;
  }

  // N if `name` is that of a semaphore in use: some session holds the key of its N. 0 if none.
  std::size_t semaphore_slots() const {
    for (std::size_t n = 1; n <= postgres_semaphore_max_slots; ++n) {
      for (const auto& h : of(postgres_semaphore_slots_key(name_, n))) {
        if (!h.waiting) return n;
      }
    }
    return 0;
  }

  // The holders of the slots of semaphore `name` with `slots` slots, and of its turnstile.
  postgres_semaphore_state semaphore(std::size_t slots) const {
    postgres_semaphore_state state;
    state.slots = slots;
    for (std::size_t i = 0; i < slots; ++i) {
      // The first waiter waits for every slot: those waits are not holders.
      for (const auto& h : of(postgres_semaphore_slot_key(name_, i))) {
        if (h.waiting) continue;
        state.holding.push_back(h);
        state.slot_of.push_back(i);
      }
    }
    for (auto& h : of(postgres_semaphore_turnstile_key(name_))) {
      if (h.waiting) continue;  // Behind the first in line.
      h.waiting = true;         // It holds the turnstile while it waits for a slot.
      state.waiting.push_back(std::move(h));
    }
    return state;
  }

 private:
  void check(const result& r, ExecStatusType expected) const {
    if (r && PQresultStatus(r.get()) == expected) return;
    throw tool_error(exit_unavailable, "fasteners " + subcommand_ +
                                           ": cannot list the holders of '" + name_ +
                                           "': " + scrub(PQerrorMessage(c_.get()), conninfo_));
  }

  const connection c_;
  const std::string subcommand_;
  const std::string conninfo_;
  const std::string name_;
};

// What -v says when the holders cannot be listed: "its holders are unknown (why)".
std::string unknown_holders(const tool_error& e) {
  return "its holders are unknown (" + without_prefix(e.what(), "fasteners run: ") + ")";
}

// The waits and holds on `name` that keep a lock (`shared` or not) of this process from it, as
// pg_locks and pg_stat_activity tell in a session of their own: for -v.
std::string describe_postgres_holders(bool shared, const std::string& conninfo,
                                      const std::string& name) {
  postgres_lock_state state;
  try {
    state = postgres_holders("run", conninfo, name);
  } catch (const tool_error& e) {
    return unknown_holders(e);
  }
  std::vector<std::string> holding;
  std::vector<std::string> waiting;
  bool exclusive = false;
  bool writers_wait = true;
  for (const auto& h : state.holders) {
    if (is_this_process(h)) continue;
    // The server queues a request behind the waiting requests it conflicts with.
    if (shared && !h.exclusive) continue;
    if (h.waiting) {
      writers_wait = writers_wait && h.exclusive;
      waiting.push_back(describe_postgres_holder(h));
    } else {
      exclusive = exclusive || h.exclusive;
      holding.push_back(describe_postgres_holder(h));
    }
  }
  return describe_waits(holding, exclusive, waiting, writers_wait, "held by another session");
}

// "held by pid 1 on host1 (a) in slot 0, ...; waiting for it first: pid 3 ...": the sessions
// holding the slots of semaphore `name` (with `slots` slots), and its first waiter, but for this
// process's own; for -v.
std::string describe_postgres_semaphore_holders(const std::string& conninfo,
                                                const std::string& name, std::size_t slots) {
  postgres_semaphore_state state;
  try {
    state = postgres_semaphore_holders("run", conninfo, name, slots);
  } catch (const tool_error& e) {
    return unknown_holders(e);
  }
  std::vector<std::string> holding;
  std::vector<std::string> waiting;
  for (std::size_t i = 0; i < state.holding.size(); ++i) {
    const auto& h = state.holding[i];
    if (is_this_process(h)) continue;
    holding.push_back(describe_postgres_holder(h) + " in slot " + std::to_string(state.slot_of[i]));
  }
  for (const auto& h : state.waiting) {
    if (!is_this_process(h)) waiting.push_back(describe_postgres_holder(h));
  }
  return describe_waits(holding, false, waiting, false, "held by other sessions");
}

// How `fasteners run` ends when the server cannot be used: 69, with `message` (of a library
// error, without a password) naming the subcommand.
tool_error unavailable(std::string message) {
  if (message.rfind("fasteners", 0) != 0) message = "fasteners run: " + message;
  return tool_error(exit_unavailable, message);
}

// A shared or exclusive advisory lock of `fasteners run --postgres`, held by this process's own
// database session, which ends when the lock is released.
class postgres_run_lock final : public run_lock {
 public:
  postgres_run_lock(const std::string& conninfo, const std::string& name, bool shared, bool fencing)
      : loss_(std::make_shared<loss>()),
        lock_(conninfo, name, options(loss_, fencing)),
        conninfo_(conninfo),
        shared_(shared) {}
  ~postgres_run_lock() override {
    std::lock_guard<std::mutex> guard(loss_->mu);
    loss_->then = nullptr;
  }

  std::string what() const override {
    return std::string("the ") + (shared_ ? "shared" : "exclusive") + " PostgreSQL lock '" +
           lock_.name() + "'";
  }
  bool try_acquire() override {
    return shared_ ? lock_.acquire_read_lock(false) : lock_.acquire_write_lock(false);
  }
  bool acquire(std::optional<seconds> timeout) override {
    return shared_ ? lock_.acquire_read_lock(true, timeout)
                   : lock_.acquire_write_lock(true, timeout);
  }
  std::string holders() const override {
    return describe_postgres_holders(shared_, conninfo_, lock_.name());
  }
  std::intptr_t native_handle() const override { return -1; }  // The session's, not a file's.
  void release() override {
    if (shared_) {
      lock_.release_read_lock();
    } else {
      lock_.release_write_lock();
    }
  }
  bool ends_with_this_process() const override { return true; }
  tool_error error_for(const std::system_error& e) const override {
    return unavailable(describe(e));
  }
  std::string describe(const std::exception& e) const override {
    return scrub(e.what(), conninfo_);
  }
  void on_loss(std::function<void()> lost) override {
    std::lock_guard<std::mutex> guard(loss_->mu);
    loss_->then = std::move(lost);
    if (loss_->happened && loss_->then) loss_->then();
  }
  bool tells_loss() const override { return true; }
  std::uint64_t fencing_token() const override { return lock_.fencing_token(); }

 private:
  // Whether the lock was lost (the library's on_lost), and what to do then; shared with the
  // handler, which runs on a thread of the library.
  struct loss {
    std::mutex mu;
    bool happened = false;
    std::function<void()> then;
  };

  static postgres_options options(const std::shared_ptr<loss>& l, bool fencing) {
    postgres_options o;
    o.close_on_release = true;  // Nothing is left to do on the server after the release.
    o.fencing = fencing;
    o.on_lost = [l](const std::string&) {
      std::lock_guard<std::mutex> guard(l->mu);
      l->happened = true;
      if (l->then) l->then();
    };
    return o;
  }

  const std::shared_ptr<loss> loss_;
  postgres_reader_writer_lock lock_;
  const std::string conninfo_;
  const bool shared_;
};

// A slot of the PostgreSQL semaphore of `fasteners run --slots N --postgres`, held by a session of
// this process (postgres_options::close_on_release does not apply to semaphores: their sessions
// stay open while the object lives, which ends with the command).
class postgres_semaphore_lock final : public semaphore_lock<postgres_semaphore> {
 public:
  postgres_semaphore_lock(const std::string& conninfo, const std::string& name, std::size_t slots)
      : semaphore_lock(postgres_semaphore(conninfo, name, slots),
                       "the PostgreSQL semaphore '" + name + "'"),
        conninfo_(conninfo) {}

  std::string holders() const override {
    return describe_postgres_semaphore_holders(conninfo_, semaphore_.name(), semaphore_.slots());
  }
  std::string describe(const std::exception& e) const override {
    return scrub(e.what(), conninfo_);
  }

 protected:
  tool_error backend_error(const std::system_error& e) const override {
    return unavailable(describe(e));
  }

 private:
  const std::string conninfo_;
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

namespace {

// The state of lock `name` that `lister` lists; with `semaphores`, of the semaphore of that name
// instead if one is in use.
postgres_lock_state lock_state_of(const holder_lister& lister, const std::string& name,
                                  bool semaphores) {
  postgres_lock_state state;
  state.key = postgres_key(name);
  state.database = lister.database();
  if (semaphores) {
    if (const std::size_t slots = lister.semaphore_slots()) {
      state.semaphore = lister.semaphore(slots);
      return state;
    }
  }
  state.holders = lister.of(state.key);
  return state;
}

}  // namespace

postgres_lock_state postgres_holders(const std::string& subcommand, const std::string& conninfo,
                                     const std::string& name) {
  return lock_state_of(holder_lister(subcommand, conninfo, name), name, false);
}

postgres_lock_state postgres_status(const std::string& subcommand, const std::string& conninfo,
                                    const std::string& name) {
  return lock_state_of(holder_lister(subcommand, conninfo, name), name, true);
}

postgres_semaphore_state postgres_semaphore_holders(const std::string& subcommand,
                                                    const std::string& conninfo,
                                                    const std::string& name, std::size_t slots) {
  return holder_lister(subcommand, conninfo, name).semaphore(slots);
}

std::unique_ptr<run_lock> make_postgres_lock(const run_options& o) {
  check_conninfo("run", *o.postgres);
  try {
    return std::make_unique<postgres_run_lock>(*o.postgres, o.lock_file, o.shared, o.fence);
  } catch (const std::invalid_argument& e) {
    throw usage_error("run", scrub(e.what(), *o.postgres));
  }
}

std::unique_ptr<run_lock> make_postgres_semaphore_lock(const run_options& o, std::size_t slots) {
  check_conninfo("run", *o.postgres);
  try {
    return std::make_unique<postgres_semaphore_lock>(*o.postgres, o.lock_file, slots);
  } catch (const std::invalid_argument& e) {
    throw usage_error("run", without_prefix(scrub(e.what(), *o.postgres), "fasteners: "));
  }
}

bool is_this_process(const postgres_holder& h) {
  if (h.client_pid != static_cast<long long>(::getpid())) return false;
  // The server may have cut the host name short.
  const std::string host = this_host();
  return !h.client_host.empty() && starts_with(host, h.client_host);
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

postgres_lock_state postgres_status(const std::string& subcommand, const std::string&,
                                    const std::string&) {
  throw tool_error(exit_unavailable, postgres_unsupported_message(subcommand));
}

postgres_semaphore_state postgres_semaphore_holders(const std::string& subcommand,
                                                    const std::string&, const std::string&,
                                                    std::size_t) {
  throw tool_error(exit_unavailable, postgres_unsupported_message(subcommand));
}

bool is_this_process(const postgres_holder&) { return false; }

std::unique_ptr<run_lock> make_postgres_lock(const run_options&) {
  throw tool_error(exit_unavailable, postgres_unsupported_message("run"));
}

std::unique_ptr<run_lock> make_postgres_semaphore_lock(const run_options&, std::size_t) {
  throw tool_error(exit_unavailable, postgres_unsupported_message("run"));
}

#endif

}  // namespace fasteners::tool
