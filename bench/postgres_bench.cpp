// fasteners_postgres_bench: fasteners::postgres_lock against a raw libpq loop on one connection
// and against psycopg2, in one run, on a PostgreSQL server given by its conninfo.
#include <libpq-fe.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "fasteners/postgres.hpp"
#include "fasteners/version.hpp"
#include "postgres_bench.hpp"

namespace fasteners_bench {
namespace {

const char* const k_usage = R"(usage: fasteners_postgres_bench --conninfo CONNINFO [options]

Measures, in one run, fasteners::postgres_lock against a raw libpq loop on one
connection (SELECT pg_advisory_lock(k) / pg_advisory_unlock(k)) and against
psycopg2 doing the same in SQL: hand-off latency to a waiter blocked in another
process, and uncontended acquire+release through one session. Prints a table
and marks the targets PASS or FAIL (ratios against the raw figures of this run).

  --conninfo STRING      the server (a libpq conninfo or URI; default: libpq's
                         defaults, PGHOST and friends)
  --json FILE            also write the results as JSON (for bench/postgres_plot.py)
  --csv FILE             also write the results as CSV
  --markdown FILE        also write a Markdown page (the summary and the full table)
  --png NAME             the plot the Markdown page shows (default: FILE's name, .png)
  --quick                few rounds, for a smoke test (figures are rough)
  --rounds N             hand-off rounds per contender (default 300)
  --pairs N              uncontended pairs per contender (default 2000)
  --block N              uncontended pairs per turn (default 50)
  --hold-min-ms X        A holds the lock X..Y ms after B says it waits
  --hold-max-ms Y          (defaults 2 and 12)
  --python PATH          the Python with psycopg2 (default /usr/bin/python3)
  --no-python            skip psycopg2
  --no-pin               leave the processes' CPUs to the scheduler (by default each
                         client and its server process share a CPU: the holders' one
                         CPU, the waiters' another)
  --fail-on-targets      exit with status 2 if a target is missed
)";

// The psycopg2 holder's and pairs' commands and answers (the waiters' are in common.hpp).
constexpr char k_acquire = 'a';
constexpr char k_acquired = 'k';
constexpr char k_release = 'r';
constexpr char k_pairs = 'u';

// What the measurements do, one kind per contender row.
enum class method {
  raw,              // libpq: PQexec of SELECT pg_advisory_lock(k) / pg_advisory_unlock(k).
  raw_prepared,     // libpq: the same statements prepared once, run with PQexecPrepared.
  lock,             // fasteners::postgres_lock::lock() / unlock().
  lock_fencing,     // lock() / unlock() with postgres_options::fencing (one more round trip).
  try_lock,         // try_lock() / unlock() (uncontended only).
  try_lock_for,     // try_lock_for(timeout) / unlock().
  python_psycopg2,  // psycopg2, autocommit, the same SQL as raw.
};

struct contender {
  const char* key;
  const char* label;
  method how;
};

const contender k_handoff[] = {
    {"raw_libpq", "raw libpq pg_advisory_lock()", method::raw},
    {"fasteners_lock", "fasteners lock()", method::lock},
    {"fasteners_try_lock_for", "fasteners try_lock_for(10 s)", method::try_lock_for},
    {"python_psycopg2", "psycopg2 pg_advisory_lock()", method::python_psycopg2},
};

const contender k_pairs_contenders[] = {
    {"raw_libpq", "raw libpq pg_advisory_lock+unlock", method::raw},
    {"raw_libpq_prepared", "raw libpq, prepared, lock+unlock", method::raw_prepared},
    {"fasteners_lock", "fasteners lock()+unlock()", method::lock},
    {"fasteners_lock_fencing", "fasteners lock()+unlock(), fencing", method::lock_fencing},
    {"fasteners_try_lock", "fasteners try_lock()+unlock()", method::try_lock},
    {"fasteners_try_lock_for", "fasteners try_lock_for(10 s)+unlock()", method::try_lock_for},
    {"python_psycopg2", "psycopg2 pg_advisory_lock+unlock", method::python_psycopg2},
};

const char* method_name(method how) {
  switch (how) {
    case method::raw:
      return "raw";
    case method::raw_prepared:
      return "raw_prepared";
    case method::lock:
      return "lock";
    case method::lock_fencing:
      return "lock_fencing";
    case method::try_lock:
      return "try_lock";
    case method::try_lock_for:
      return "try_lock_for";
    case method::python_psycopg2:
      return "python";
  }
  return "?";
}

method method_by_name(const std::string& name) {
  for (const method how : {method::raw, method::lock, method::try_lock, method::try_lock_for}) {
    if (name == method_name(how)) return how;
  }
  throw std::invalid_argument("unknown waiter kind " + name);
}

// The psycopg2 peer: one program, three modes (argv: MODE CONNINFO KEY). It reads one-byte
// commands on stdin ('q' or EOF ends it) and answers on stdout in native int64s:
//   waiter: 'g' -> 'w' just before it waits, then a wait_record after it released again;
//   holder: 'a' -> takes the lock, 'k'; 'r' -> releases it, then {start, end, released};
//   pairs:  'u' + int32 n -> n lock+unlock pairs, then each pair's duration in ns.
const char* const k_python_peer = R"py(
import struct, sys, time
import psycopg2

mode, conninfo, key = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = psycopg2.connect(conninfo)
conn.autocommit = True
cur = conn.cursor()
LOCK = "SELECT pg_advisory_lock(%s)"
UNLOCK = "SELECT pg_advisory_unlock(%s)"
args = (key,)
stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

def send(data):
    stdout.write(data)
    stdout.flush()

while True:
    command = stdin.read(1)
    if command in (b"", b"q"):
        break
    if mode == "waiter" and command == b"g":
        send(b"w")
        start, cpu = time.monotonic_ns(), time.process_time_ns()
        cur.execute(LOCK, args)
        cur.fetchone()
        end, cpu = time.monotonic_ns(), time.process_time_ns() - cpu
        cur.execute(UNLOCK, args)
        send(struct.pack("=4q", start, end, cpu, 1 if cur.fetchone()[0] else 0))
    elif mode == "holder" and command == b"a":
        cur.execute(LOCK, args)
        cur.fetchone()
        send(b"k")
    elif mode == "holder" and command == b"r":
        start = time.monotonic_ns()
        cur.execute(UNLOCK, args)
        released = cur.fetchone()[0]
        end = time.monotonic_ns()
        send(struct.pack("=3q", start, end, 1 if released else 0))
    elif mode == "pairs" and command == b"u":
        (n,) = struct.unpack("=i", stdin.read(4))
        times = []
        for _ in range(n):
            t = time.monotonic_ns()
            cur.execute(LOCK, args)
            cur.fetchone()
            cur.execute(UNLOCK, args)
            cur.fetchone()
            times.append(time.monotonic_ns() - t)
        send(struct.pack("=%dq" % n, *times))
    else:
        sys.exit("postgres peer: unexpected command %r in mode %s" % (command, mode))
conn.close()
)py";

// One libpq connection, for the raw baseline and the pg_locks probe.
class pq_connection {
 public:
  explicit pq_connection(const std::string& conninfo) : conn_(::PQconnectdb(conninfo.c_str())) {
    if (conn_ == nullptr || ::PQstatus(conn_) != CONNECTION_OK) {
      const std::string message =
          conn_ != nullptr ? ::PQerrorMessage(conn_) : std::string("out of memory");
      ::PQfinish(conn_);
      throw std::runtime_error("cannot connect to PostgreSQL: " + message);
    }
  }
  ~pq_connection() { ::PQfinish(conn_); }
  pq_connection(const pq_connection&) = delete;
  pq_connection& operator=(const pq_connection&) = delete;

  // Runs a query that returns one row and returns its first value.
  std::string value(const std::string& sql) {
    PGresult* result = ::PQexec(conn_, sql.c_str());
    if (::PQresultStatus(result) != PGRES_TUPLES_OK || ::PQntuples(result) != 1) {
      const std::string message = ::PQerrorMessage(conn_);
      ::PQclear(result);
      throw std::runtime_error("PostgreSQL: " + sql + ": " + message);
    }
    std::string v = ::PQgetvalue(result, 0, 0);
    ::PQclear(result);
    return v;
  }

  // Runs the prepared statement `name` with one bigint parameter; returns its first value.
  std::string prepared_value(const char* name, const std::string& parameter) {
    const char* values[] = {parameter.c_str()};
    PGresult* result = ::PQexecPrepared(conn_, name, 1, values, nullptr, nullptr, 0);
    if (::PQresultStatus(result) != PGRES_TUPLES_OK || ::PQntuples(result) != 1) {
      const std::string message = ::PQerrorMessage(conn_);
      ::PQclear(result);
      throw std::runtime_error(std::string("PostgreSQL: ") + name + ": " + message);
    }
    std::string v = ::PQgetvalue(result, 0, 0);
    ::PQclear(result);
    return v;
  }

  // Prepares `sql` as the statement `name`.
  void prepare(const char* name, const std::string& sql) {
    PGresult* result = ::PQprepare(conn_, name, sql.c_str(), 0, nullptr);
    const bool ok = ::PQresultStatus(result) == PGRES_COMMAND_OK;
    ::PQclear(result);
    if (!ok) throw std::runtime_error("PostgreSQL: cannot prepare " + sql);
  }

  // Runs a query and returns its rows, as text.
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    PGresult* result = ::PQexec(conn_, sql.c_str());
    if (::PQresultStatus(result) != PGRES_TUPLES_OK) {
      const std::string message = ::PQerrorMessage(conn_);
      ::PQclear(result);
      throw std::runtime_error("PostgreSQL: " + sql + ": " + message);
    }
    std::vector<std::vector<std::string>> out;
    for (int row = 0; row < ::PQntuples(result); ++row) {
      out.emplace_back();
      for (int column = 0; column < ::PQnfields(result); ++column) {
        out.back().emplace_back(::PQgetvalue(result, row, column));
      }
    }
    ::PQclear(result);
    return out;
  }

  // How the connection reaches the server, naming no user, password or database.
  std::string via() const {
    const char* host = ::PQhost(conn_);
    if (host == nullptr || *host == '\0' || *host == '/') return "a Unix socket";
    return std::string("TCP to ") + host;
  }

 private:
  PGconn* conn_;
};

constexpr const char* k_application = "fasteners-bench-cpu";

// The conninfo of a session whose server process is to run on `cpu`: pin_server_sessions() finds
// it by its application_name.
std::string conninfo_on(const pg_settings& c, int cpu) {
  if (!c.pin) return c.conninfo;
  const std::string setting =
      "application_name=" + std::string(k_application) + std::to_string(cpu);
  if (c.conninfo.rfind("postgresql://", 0) == 0 || c.conninfo.rfind("postgres://", 0) == 0) {
    return c.conninfo + (c.conninfo.find('?') == std::string::npos ? "?" : "&") + setting;
  }
  return c.conninfo.empty() ? setting : c.conninfo + " " + setting;
}

// Runs process (or thread) `pid`, 0 for the calling thread, on `cpu` alone; returns errno or 0.
int pin_to(pid_t pid, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<std::size_t>(cpu), &set);
  return ::sched_setaffinity(pid, sizeof set, &set) == 0 ? 0 : errno;
}

// What pinning the server's processes did.
struct pin_report {
  int pinned = 0;
  std::string error;
};

// Pins the server process of each session that conninfo_on() named to its CPU.
void pin_server_sessions(const pg_settings& c, pq_connection& conn, pin_report& report) {
  if (!c.pin) return;
  const auto rows = conn.rows(
      "SELECT pid, substr(application_name, " + std::to_string(std::strlen(k_application) + 1) +
      ") FROM pg_stat_activity WHERE application_name LIKE '" + k_application + "%'");
  for (const auto& row : rows) {
    const int error = pin_to(static_cast<pid_t>(std::stol(row.at(0))), std::stoi(row.at(1)));
    if (error == 0) {
      ++report.pinned;
    } else if (error != ESRCH && report.error.empty()) {  // ESRCH: a session that just ended.
      report.error = std::string("cannot pin the server's processes (") + std::strerror(error) +
                     "; run as root or as the server's user)";
    }
  }
}

// The raw baseline: what an application with one libpq connection would write, sending the SQL
// text each time, or (`prepared`) preparing the statements once, as the library does.
class raw_lock {
 public:
  raw_lock(const std::string& conninfo, std::int64_t key, bool prepared)
      : conn_(conninfo),
        key_(std::to_string(key)),
        prepared_(prepared),
        lock_("SELECT pg_advisory_lock(" + key_ + ")"),
        unlock_("SELECT pg_advisory_unlock(" + key_ + ")") {
    if (prepared_) {
      conn_.prepare("raw_lock", "SELECT pg_advisory_lock($1)");
      conn_.prepare("raw_unlock", "SELECT pg_advisory_unlock($1)");
    }
  }
  void lock() {
    if (prepared_) {
      conn_.prepared_value("raw_lock", key_);
    } else {
      conn_.value(lock_);
    }
  }
  void unlock() {
    const std::string released =
        prepared_ ? conn_.prepared_value("raw_unlock", key_) : conn_.value(unlock_);
    if (released != "t") throw std::runtime_error("pg_advisory_unlock returned false");
  }

 private:
  pq_connection conn_;
  const std::string key_;
  const bool prepared_;
  const std::string lock_;
  const std::string unlock_;
};

std::chrono::nanoseconds timeout_of(const pg_settings& c) {
  return std::chrono::nanoseconds(static_cast<std::int64_t>(c.timeout_s * 1e9));
}

// A lock in this process taken and released one of the ways above.
class local_lock {
 public:
  local_lock(method how, const std::string& conninfo, const std::string& name,
             std::chrono::nanoseconds timeout)
      : how_(how), timeout_(timeout) {
    if (how == method::raw || how == method::raw_prepared) {
      raw_ = std::make_unique<raw_lock>(conninfo, fasteners::postgres_key(name),
                                        how == method::raw_prepared);
    } else {
      fasteners::postgres_options options;
      options.fencing = how == method::lock_fencing;
      lib_ = std::make_unique<fasteners::postgres_lock>(conninfo, name, options);
    }
  }
  // Whether it acquired (only try_lock and try_lock_for can fail).
  bool acquire() {
    switch (how_) {
      case method::raw:
      case method::raw_prepared:
        raw_->lock();
        return true;
      case method::lock:
      case method::lock_fencing:
        lib_->lock();
        return true;
      case method::try_lock:
        return lib_->try_lock();
      case method::try_lock_for:
        return lib_->try_lock_for(timeout_);
      case method::python_psycopg2:
        break;
    }
    throw std::logic_error("not a local lock");
  }
  void release() {
    if (raw_) {
      raw_->unlock();
    } else {
      lib_->unlock();
    }
  }

 private:
  method how_;
  std::chrono::nanoseconds timeout_;
  std::unique_ptr<raw_lock> raw_;
  std::unique_ptr<fasteners::postgres_lock> lib_;
};

std::vector<std::string> python_command(const pg_settings& c, const char* mode, int cpu,
                                        std::int64_t key) {
  return {c.python, "-c", k_python_peer, mode, conninfo_on(c, cpu), std::to_string(key)};
}

// Starts a child that runs on `cpu` (children start on this process's CPU, cpu_holder).
child_process spawn_on(const pg_settings& c, int cpu, const std::vector<std::string>& argv) {
  child_process child = spawn(argv);
  if (c.pin && cpu != c.cpu_holder) {
    if (const int error = pin_to(child.pid, cpu); error != 0) {
      ::kill(child.pid, SIGKILL);
      finish(child);
      throw std::system_error(error, std::system_category(), "sched_setaffinity of a child");
    }
  }
  return child;
}

void stop(child_process& child, const char* label) {
  stop_child(child, std::string("a child of ") + label);
}

class child_guard {
 public:
  explicit child_guard(child_process child) : child_(child) {}
  ~child_guard() {
    if (child_.pid >= 0) abandon(child_);
  }
  child_guard(const child_guard&) = delete;
  child_guard& operator=(const child_guard&) = delete;
  child_process& get() { return child_; }

 private:
  child_process child_;
};

std::string lock_name(const char* section, const contender& who) {
  return std::string("fasteners-bench/") + section + "/" + who.key;
}

// Sees whether a session waits for the advisory lock `key` in the server's lock queue.
class queue_probe {
 public:
  explicit queue_probe(const std::string& conninfo) : conn_(conninfo) {}
  pq_connection& connection() { return conn_; }
  bool waiting(std::int64_t key) {
    const auto k = static_cast<std::uint64_t>(key);
    return conn_.value(
               "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
               " AND classid = " +
               std::to_string(k >> 32) + " AND objid = " + std::to_string(k & 0xffffffffu) +
               " AND objsubid = 1") != "0";
  }

 private:
  pq_connection conn_;
};

// One contender's hand-off measurement: the holder here (or, for psycopg2, in a Python child)
// and the waiter in a child process, each with its own session.
class handoff_run {
 public:
  handoff_run(const contender& who, const pg_settings& c)
      : who_(who),
        config_(c),
        name_(lock_name("handoff", who)),
        key_(fasteners::postgres_key(name_)) {
    if (who.how == method::python_psycopg2) {
      python_holder_ = std::make_unique<child_guard>(
          spawn_on(c, c.cpu_holder, python_command(c, "holder", c.cpu_holder, key_)));
      waiter_ = std::make_unique<child_guard>(
          spawn_on(c, c.cpu_waiter, python_command(c, "waiter", c.cpu_waiter, key_)));
    } else {
      holder_ =
          std::make_unique<local_lock>(who.how, conninfo_on(c, c.cpu_holder), name_, timeout_of(c));
      const std::int64_t timeout_ns =
          who.how == method::try_lock_for ? timeout_of(c).count() : std::int64_t{-1};
      waiter_ = std::make_unique<child_guard>(
          spawn_on(c, c.cpu_waiter,
                   {c.self, "--child-waiter", method_name(who.how), conninfo_on(c, c.cpu_waiter),
                    name_, std::to_string(timeout_ns)}));
    }
  }

  void round(queue_probe& probe, std::int64_t hold_ns, bool counted) {
    if (holder_) {
      holder_->acquire();
    } else {
      send_command(python_holder_->get(), k_acquire);
      expect_answer(python_holder_->get(), k_acquired);
    }
    start_wait(waiter_->get());
    sleep_for_ns(hold_ns);
    // B said it is about to wait; see it queued in the server before releasing.
    const std::int64_t give_up = now_ns() + config_.queued_wait_ns;
    bool seen = probe.waiting(key_);
    while (!seen && now_ns() < give_up) {
      sleep_for_ns(200000);
      seen = probe.waiting(key_);
    }
    if (!seen && counted) ++not_seen_;
    std::int64_t released = 0;
    std::int64_t returned = 0;
    if (holder_) {
      released = now_ns();
      holder_->release();
      returned = now_ns();
    } else {
      send_command(python_holder_->get(), k_release);
      std::int64_t answer[3] = {};
      read_all(python_holder_->get().from_child, answer, sizeof answer);
      if (answer[2] != 1) throw std::runtime_error("the psycopg2 holder did not hold the lock");
      released = answer[0];
      returned = answer[1];
    }
    const wait_record record = read_handoff(waiter_->get(), who_.label);
    if (counted) samples_.add(released, returned, record);
  }

  pg_handoff_result result() {
    stop(waiter_->get(), who_.label);
    if (python_holder_) stop(python_holder_->get(), who_.label);
    pg_handoff_result r;
    r.key = who_.key;
    r.label = who_.label;
    r.ran = true;
    r.not_seen = not_seen_;
    std::move(samples_).summarize_into(r);
    return r;
  }

 private:
  const contender& who_;
  const pg_settings& config_;
  const std::string name_;
  const std::int64_t key_;
  std::unique_ptr<local_lock> holder_;
  std::unique_ptr<child_guard> python_holder_;
  std::unique_ptr<child_guard> waiter_;
  int not_seen_ = 0;
  handoff_samples samples_;
};

// One contender's uncontended pairs, through one object (one session) for the whole run.
class pairs_run {
 public:
  pairs_run(const contender& who, const pg_settings& c) : who_(who) {
    const std::string name = lock_name("uncontended", who);
    if (who.how == method::python_psycopg2) {
      python_ = std::make_unique<child_guard>(
          spawn(python_command(c, "pairs", c.cpu_holder, fasteners::postgres_key(name))));
    } else {
      lock_ =
          std::make_unique<local_lock>(who.how, conninfo_on(c, c.cpu_holder), name, timeout_of(c));
    }
  }

  void turn(int n, bool counted) {
    if (python_) {
      send_command(python_->get(), k_pairs);
      const std::int32_t count = n;
      write_all(python_->get().to_child, &count, sizeof count);
      std::vector<std::int64_t> times(static_cast<std::size_t>(n));
      read_all(python_->get().from_child, times.data(), times.size() * sizeof times[0]);
      if (counted) {
        for (const auto t : times) pairs_.push_back(static_cast<double>(t));
      }
      return;
    }
    for (int i = 0; i < n; ++i) {
      const std::int64_t start = now_ns();
      if (!lock_->acquire()) {
        throw std::runtime_error(std::string(who_.label) + ": an uncontended acquire failed");
      }
      lock_->release();
      const std::int64_t end = now_ns();
      if (counted) pairs_.push_back(static_cast<double>(end - start));
    }
  }

  pg_pair_result result() {
    if (python_) stop(python_->get(), who_.label);
    pg_pair_result r;
    r.key = who_.key;
    r.label = who_.label;
    r.ran = true;
    r.pair_ns = summarize(std::move(pairs_));
    return r;
  }

 private:
  const contender& who_;
  std::unique_ptr<local_lock> lock_;
  std::unique_ptr<child_guard> python_;
  std::vector<double> pairs_;
};

// Rows in the contenders' order: the measured ones, and psycopg2's with a note when it is skipped.
template <class Result, class Contenders>
std::vector<Result> in_order(const Contenders& all, std::vector<Result> measured,
                             const std::string& python_note) {
  std::vector<Result> rows;
  std::size_t next = 0;
  for (const auto& who : all) {
    if (who.how == method::python_psycopg2 && !python_note.empty()) {
      Result row;
      row.key = who.key;
      row.label = who.label;
      row.note = python_note;
      rows.push_back(std::move(row));
    } else {
      rows.push_back(std::move(measured.at(next++)));
    }
  }
  return rows;
}

// The contenders that run: all but psycopg2 when `python_note` says why it cannot.
template <class Contenders>
std::vector<const contender*> select(const Contenders& all, const std::string& python_note) {
  std::vector<const contender*> chosen;
  for (const auto& who : all) {
    if (who.how == method::python_psycopg2 && !python_note.empty()) {
      std::fprintf(stderr, "  %s: skipped: %s\n", who.label, python_note.c_str());
    } else {
      std::fprintf(stderr, "  %s\n", who.label);
      chosen.push_back(&who);
    }
  }
  return chosen;
}

std::vector<pg_handoff_result> measure_handoff(const pg_settings& c, std::mt19937& rng,
                                               const std::string& python_note, pin_report& pins) {
  std::vector<std::unique_ptr<handoff_run>> runs;
  for (const auto* who : select(k_handoff, python_note)) {
    runs.push_back(std::make_unique<handoff_run>(*who, c));
  }
  queue_probe probe(conninfo_on(c, c.cpu_holder));
  std::uniform_real_distribution<double> hold(c.hold_min_ms, c.hold_max_ms);
  for (int i = 0; i < c.warmup_rounds + c.handoff_rounds; ++i) {
    // After the first round every session is open.
    if (i == 1) pin_server_sessions(c, probe.connection(), pins);
    for (const auto index : turn_order(runs.size(), rng)) {
      runs[index]->round(probe, static_cast<std::int64_t>(hold(rng) * 1e6), i >= c.warmup_rounds);
    }
  }
  std::vector<pg_handoff_result> measured;
  for (auto& run : runs) measured.push_back(run->result());
  return in_order(k_handoff, std::move(measured), python_note);
}

std::vector<pg_pair_result> measure_pairs(const pg_settings& c, std::mt19937& rng,
                                          const std::string& python_note, pin_report& pins) {
  std::vector<std::unique_ptr<pairs_run>> runs;
  for (const auto* who : select(k_pairs_contenders, python_note)) {
    runs.push_back(std::make_unique<pairs_run>(*who, c));
  }
  // One turn not counted: connecting, and the server's first look at each statement.
  for (auto& run : runs) run->turn(c.block, false);
  {
    pq_connection monitor(conninfo_on(c, c.cpu_holder));
    pin_server_sessions(c, monitor, pins);
  }
  for (int done = 0; done < c.pairs; done += c.block) {
    const int n = std::min(c.block, c.pairs - done);
    for (const auto index : turn_order(runs.size(), rng)) runs[index]->turn(n, true);
  }
  std::vector<pg_pair_result> measured;
  for (auto& run : runs) measured.push_back(run->result());
  return in_order(k_pairs_contenders, std::move(measured), python_note);
}

// --child-waiter KIND CONNINFO NAME TIMEOUT_NS: waits once per 'g' on stdin (see k_python_peer).
int child_waiter_main(const std::vector<std::string>& args) {
  if (args.size() != 4) throw std::invalid_argument("--child-waiter KIND CONNINFO NAME TIMEOUT_NS");
  const method how = method_by_name(args[0]);
  local_lock lock(how, args[1], args[2], std::chrono::nanoseconds(std::stoll(args[3])));
  return serve_waits([&] { return lock.acquire(); }, [&] { lock.release(); });
}

struct options {
  pg_settings config;
  std::string json;
  std::string csv;
  std::string markdown;
  std::string png;
  bool fail_on_targets = false;
};

options parse(int argc, char** argv) {
  options o;
  auto& c = o.config;
  if (const char* env = std::getenv("FASTENERS_BENCH_CONNINFO")) c.conninfo = env;
  command_line line(argc, argv);
  std::string arg;
  while (line.next(arg)) {
    if (common_option(arg, line, o, k_usage)) continue;
    if (arg == "--conninfo") {
      c.conninfo = line.value();
    } else if (arg == "--markdown") {
      o.markdown = line.value();
    } else if (arg == "--png") {
      o.png = line.value();
    } else if (arg == "--quick") {
      c.handoff_rounds = 30;
      c.pairs = 200;
    } else if (arg == "--pairs") {
      c.pairs = std::stoi(line.value());
    } else if (arg == "--block") {
      c.block = std::stoi(line.value());
    } else if (arg == "--no-pin") {
      c.pin = false;
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  if (c.handoff_rounds < 1 || c.pairs < 1 || c.block < 1 || !(c.hold_min_ms >= 0.5) ||
      !(c.hold_max_ms >= c.hold_min_ms)) {
    throw std::invalid_argument("an option is out of range (see --help)");
  }
  if (o.png.empty() && !o.markdown.empty()) {
    std::string base = o.markdown.substr(o.markdown.find_last_of('/') + 1);
    if (base.size() > 3 && base.compare(base.size() - 3, 3, ".md") == 0) {
      base.resize(base.size() - 3);
    }
    o.png = base + ".png";
  }
  return o;
}

// Picks the holders' and the waiters' CPUs among those this process may use (one CPU serves both
// on a machine with one) and moves this process to the holders' CPU.
void choose_cpus(pg_settings& c) {
  if (!c.pin) return;
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
    throw std::system_error(errno, std::system_category(), "sched_getaffinity");
  }
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE && cpus.size() < 2; ++cpu) {
    if (CPU_ISSET(static_cast<std::size_t>(cpu), &allowed)) cpus.push_back(cpu);
  }
  if (cpus.empty()) throw std::runtime_error("no CPU to run on");
  c.cpu_holder = cpus.front();
  c.cpu_waiter = cpus.back();
  if (const int error = pin_to(0, c.cpu_holder); error != 0) {
    throw std::system_error(error, std::system_category(), "sched_setaffinity");
  }
}

std::string describe_placement(const pg_settings& c, const pin_report& pins) {
  if (!c.pin) return "left to the scheduler (--no-pin)";
  std::string text =
      "each client and its server process on one CPU: holders and the "
      "uncontended loops on CPU " +
      std::to_string(c.cpu_holder) + ", waiters on CPU " + std::to_string(c.cpu_waiter);
  if (!pins.error.empty()) return text + "; but " + pins.error;
  return text + " (" + std::to_string(pins.pinned) + " server processes pinned)";
}

int run(int argc, char** argv) {
  const options o = parse(argc, argv);
  const std::int64_t started = now_ns();
  pg_results r;
  r.config = o.config;
  auto& c = r.config;
  char self[4096];
  const ssize_t length = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (length <= 0) throw std::runtime_error("cannot find this program in /proc/self/exe");
  c.self.assign(self, static_cast<std::size_t>(length));
  r.machine = describe_machine();
  r.fasteners_version = fasteners::version_string;
  {
    pq_connection conn(c.conninfo);
    r.server_version = conn.value("SHOW server_version");
    r.server_via = conn.via();
  }
  const int lib = ::PQlibVersion();
  r.libpq_version = std::to_string(lib / 10000) + "." + std::to_string(lib % 10000);
  std::string python_note;
  if (!c.use_python) {
    python_note = "disabled with --no-python";
  } else {
    std::string out;
    if (capture_output({c.python, "-c",
                        "import platform, psycopg2; "
                        "print(psycopg2.__version__.split()[0], platform.python_version())"},
                       out)) {
      out = trimmed(out);
      const auto space = out.find(' ');
      r.psycopg2_version = out.substr(0, space);
      r.python_version = space == std::string::npos ? "" : out.substr(space + 1);
    } else {
      python_note = c.python + " cannot import psycopg2 (install python3-psycopg2)";
    }
  }
  std::fprintf(stderr, "fasteners_postgres_bench: server PostgreSQL %s, libpq %s\n",
               r.server_version.c_str(), r.libpq_version.c_str());

  choose_cpus(c);
  std::mt19937 rng(std::random_device{}());
  pin_report pins;
  std::fprintf(stderr, "1. hand-off, %d rounds each:\n", c.handoff_rounds);
  r.handoff = measure_handoff(c, rng, python_note, pins);
  std::fprintf(stderr, "2. uncontended pairs, %d each:\n", c.pairs);
  r.pairs = measure_pairs(c, rng, python_note, pins);
  r.placement = describe_placement(c, pins);

  r.machine.load_after = load_average();
  r.total_seconds = static_cast<double>(now_ns() - started) / 1e9;
  pg_evaluate_targets(r);
  pg_print_table(r, stdout);
  std::fflush(stdout);
  if (!o.json.empty()) pg_write_json(r, o.json);
  if (!o.csv.empty()) pg_write_csv(r, o.csv);
  if (!o.markdown.empty()) pg_write_markdown(r, o.markdown, o.png);
  if (o.fail_on_targets) {
    for (const auto& t : r.targets) {
      if (!t.extra && t.evaluated && !t.pass) return 2;
    }
  }
  return 0;
}

}  // namespace
}  // namespace fasteners_bench

int main(int argc, char** argv) {
  using namespace fasteners_bench;
  try {
    if (argc >= 2 && std::string(argv[1]) == "--child-waiter") {
      return child_waiter_main(std::vector<std::string>(argv + 2, argv + argc));
    }
    std::signal(SIGPIPE, SIG_IGN);  // A dead child must show up as an error, not kill the run.
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fasteners_postgres_bench: %s\n", e.what());
    return 1;
  }
}
