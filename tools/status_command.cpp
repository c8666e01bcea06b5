// `fasteners status`: whether a lock file is free or held, and by which processes; how many slots
// of a semaphore file are held, and by which; the same of PostgreSQL names (--postgres).
#include "status_command.hpp"

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <system_error>
#include <vector>

#include "errors.hpp"
#include "fasteners/holders.hpp"
#include "fasteners/interprocess_semaphore.hpp"
#include "help_texts.hpp"
#include "json.hpp"
#include "postgres.hpp"
#include "system.hpp"

namespace fasteners::tool {
namespace {

namespace fs = std::filesystem;

enum class lock_state { free, shared, exclusive };

const char* name_of(lock_state s) {
  switch (s) {
    case lock_state::free:
      return "free";
    case lock_state::shared:
      return "shared";
    case lock_state::exclusive:
      return "exclusive";
  }
  return "free";
}

lock_state state_of(const std::vector<lock_holder>& holders) {
  auto state = lock_state::free;
  for (const auto& h : holders) {
    if (h.waiting) continue;
    if (h.kind == lock_kind::exclusive) return lock_state::exclusive;
    state = lock_state::shared;
  }
  return state;
}

std::string format_time(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  char buffer[32] = "";
  if (utc_time(seconds, utc)) {
    std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  }
  return buffer;
}

std::string range_of(const lock_holder& h) {
  return "bytes " + std::to_string(h.first_byte) + "-" +
         (h.last_byte ? std::to_string(*h.last_byte) : std::string("EOF"));
}

// Text that may hold any bytes (paths, command lines), with control characters shown escaped.
std::string printable(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20U || c == 0x7F) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out;
}

// A command line for the COMMAND column of the table: printable(), cut after 200 bytes. Only
// there: paths, and JSON, are always whole.
std::string table_command(const std::string& text) {
  constexpr std::size_t most = 200;
  std::string out = printable(text);
  if (out.size() > most) out = out.substr(0, most) + "...";
  return out;
}

std::string lock_description(const lock_holder& h) {
  std::string out(to_string(h.kind));
  if (h.waiting) out += " (waiting)";
  if (!h.whole_file && !h.waiting) out += " (" + range_of(h) + ")";
  return out;
}

// One row of the table of `fasteners status`.
struct table_row {
  std::string pid, lock, mechanism, command;
};

// Prints the table's rows under its heading, in columns as wide as their widest cell.
void print_table(std::vector<table_row> rows) {
  if (rows.empty()) return;
  rows.insert(rows.begin(), table_row{"PID", "LOCK", "MECHANISM", "COMMAND"});
  std::size_t w_pid = 0, w_lock = 0, w_mechanism = 0;
  for (const auto& r : rows) {
    w_pid = std::max(w_pid, r.pid.size());
    w_lock = std::max(w_lock, r.lock.size());
    w_mechanism = std::max(w_mechanism, r.mechanism.size());
  }
  for (const auto& r : rows) {
    std::cout << "  " << r.pid << std::string(w_pid - r.pid.size() + 2, ' ') << r.lock
              << std::string(w_lock - r.lock.size() + 2, ' ') << r.mechanism
              << std::string(w_mechanism - r.mechanism.size() + 2, ' ') << r.command << '\n';
  }
}

// Prints, per lock, the processes that may hold it (those this user may not inspect).
void print_possible_holders(const std::map<std::string, std::vector<int>>& possible) {
  for (const auto& [lock, pids] : possible) {
    constexpr std::size_t most = 10;
    std::cout << "  a lock (" << lock << ") held by one of " << pids.size()
              << " processes this user may not inspect: ";
    for (std::size_t i = 0; i < pids.size() && i < most; ++i) {
      std::cout << (i > 0 ? ", " : "") << pids[i];
    }
    std::cout << (pids.size() > most ? ", ..." : "")
              << " (--json lists them all; root can tell which)\n";
  }
}

// Prints the table of `holders`, each with its LOCK cell of `locks`, and below it the processes
// that may hold a lock whose holder could not be found.
void print_holders(const std::vector<lock_holder>& holders, const std::vector<std::string>& locks) {
  // Processes that may hold a lock whose holder could not be found are many (all processes of
  // other users): they are summed up below the table, per lock.
  std::vector<table_row> rows;
  std::map<std::string, std::vector<int>> possible;  // Lock description -> processes.
  for (std::size_t i = 0; i < holders.size(); ++i) {
    const lock_holder& h = holders[i];
    if (!h.inspectable && h.pid > 0) {
      possible[locks[i] + ", " + std::string(to_string(h.mechanism))].push_back(h.pid);
      continue;
    }
    table_row r{h.pid > 0 ? std::to_string(h.pid) : "?", locks[i],
                std::string(to_string(h.mechanism)), table_command(h.command)};
    if (h.since) r.command += " [since " + format_time(*h.since) + "]";
    if (!h.inspectable) r.command += "[a process this user cannot see]";
    rows.push_back(std::move(r));
  }
  print_table(std::move(rows));
  print_possible_holders(possible);
}

void print_text(const fs::path& path, bool exists, lock_state state,
                const std::vector<lock_holder>& holders) {
  std::cout << printable(utf8_of(path)) << ": ";
  if (state == lock_state::free) {
    std::cout << "free" << (exists ? "" : " (the file does not exist)") << '\n';
  } else {
    std::cout << "held " << name_of(state) << '\n';
  }
  std::vector<std::string> locks;
  for (const auto& h : holders) locks.push_back(lock_description(h));
  print_holders(holders, locks);
}

// The members of a holder's JSON object, without its braces.
std::string json_fields(const lock_holder& h) {
  return "\"pid\": " + (h.pid > 0 ? std::to_string(h.pid) : "null") +
         ", \"command\": " + (h.command.empty() ? "null" : json_string(h.command)) +
         ", \"kind\": \"" + std::string(to_string(h.kind)) + "\", \"mechanism\": \"" +
         std::string(to_string(h.mechanism)) +
         "\", \"waiting\": " + (h.waiting ? "true" : "false") +
         ", \"whole_file\": " + (h.whole_file ? "true" : "false") +
         ", \"first_byte\": " + std::to_string(h.first_byte) +
         ", \"last_byte\": " + (h.last_byte ? std::to_string(*h.last_byte) : "null") +
         ", \"since\": " + (h.since ? "\"" + format_time(*h.since) + "\"" : "null") +
         ", \"inspectable\": " + (h.inspectable ? "true" : "false");
}

std::string json_fields(const postgres_holder& h);

// A JSON array of holders (lock_holder or postgres_holder, with a json_fields() each), one a
// line, each with `extra` members after its own (`extra` as long as `holders`, or empty), and no
// line end after it.
template <class Holder>
void print_json_holders(const std::vector<Holder>& holders, const std::vector<std::string>& extra) {
  std::cout << "[";
  const char* separator = "\n";
  for (std::size_t i = 0; i < holders.size(); ++i) {
    std::cout << separator << "    {" << json_fields(holders[i])
              << (extra.empty() ? "" : ", " + extra[i]) << "}";
    separator = ",\n";
  }
  std::cout << (holders.empty() ? "]" : "\n  ]");
}

void print_json(const fs::path& path, bool exists, lock_state state,
                const std::vector<lock_holder>& holders) {
  std::cout << "{\n  \"path\": " << json_string(utf8_of(path))
            << ",\n  \"exists\": " << (exists ? "true" : "false") << ",\n  \"state\": \""
            << name_of(state) << "\",\n  \"holders\": ";
  print_json_holders(holders, {});
  std::cout << "\n}\n";
}

// "free" (no slot held), "held" (some), or "full" (all: a command with -n would not run).
const char* semaphore_state(std::size_t held, std::size_t slots) {
  return held == 0 ? "free" : held >= slots ? "full" : "held";
}

// What the locks on a semaphore file tell: its slots' holders, and the first waiter in line.
struct semaphore_view {
  std::size_t slots = 0;             // N, as the file records it.
  std::size_t held = 0;              // How many slots are held.
  std::vector<lock_holder> holding;  // The holders of slots, by slot.
  std::vector<std::size_t> slot_of;  // The slot of each of `holding`.
  // The waiters: the first in line (`first_in_line` of them: one process, or those sharing its
  // open file), then those behind it.
  std::vector<lock_holder> waiting;
  std::size_t first_in_line = 0;
  bool full() const { return held >= slots; }
  const char* state() const { return semaphore_state(held, slots); }
};

semaphore_view view_of(std::size_t slots, const std::vector<lock_holder>& holders) {
  semaphore_view v;
  v.slots = slots;
  std::vector<std::pair<std::size_t, const lock_holder*>> by_slot;
  for (const auto& h : holders) {
    if (const auto slot = semaphore_slot(h)) {
      by_slot.emplace_back(*slot, &h);
    } else if (semaphore_waiter(h)) {
      v.waiting.insert(v.waiting.begin() + static_cast<std::ptrdiff_t>(v.first_in_line++), h);
    } else if (semaphore_in_line(h)) {
      v.waiting.push_back(h);
    }
  }
  // Each holds a marker only, as a writer at the gate.
  for (auto& h : v.waiting) h.waiting = true;
  // Stable: the holders of one slot (processes sharing its open file) stay by pid.
  std::stable_sort(by_slot.begin(), by_slot.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (std::size_t i = 0; i < by_slot.size(); ++i) {
    if (i == 0 || by_slot[i].first != by_slot[i - 1].first) ++v.held;
    v.holding.push_back(*by_slot[i].second);
    v.slot_of.push_back(by_slot[i].first);
  }
  return v;
}

// The first line of `fasteners status` on semaphore `name`, and the holders of its slots then its
// waiters (the first `first_in_line` of them first in line) as table rows (`rows`), each with its
// LOCK cell (`locks`).
template <class Holder>
void semaphore_text(const std::string& name, std::size_t held, std::size_t slots,
                    const std::vector<Holder>& holding, const std::vector<std::size_t>& slot_of,
                    const std::vector<Holder>& waiting, std::size_t first_in_line,
                    std::vector<Holder>& rows, std::vector<std::string>& locks) {
  std::cout << printable(name) << ": semaphore: " << held << " of " << slots << " slots held\n";
  rows = holding;
  rows.insert(rows.end(), waiting.begin(), waiting.end());
  for (const auto slot : slot_of) locks.push_back("slot " + std::to_string(slot));
  locks.resize(holding.size() + first_in_line, "waiting (first in line)");
  locks.resize(rows.size(), "waiting");
}

void print_semaphore_text(const fs::path& path, const semaphore_view& v) {
  std::vector<lock_holder> rows;
  std::vector<std::string> locks;
  semaphore_text(utf8_of(path), v.held, v.slots, v.holding, v.slot_of, v.waiting, v.first_in_line,
                 rows, locks);
  print_holders(rows, locks);
}

void print_semaphore_json(const fs::path& path, const semaphore_view& v) {
  std::cout << "{\n  \"path\": " << json_string(utf8_of(path)) << ",\n  \"exists\": true"
            << ",\n  \"state\": \"" << v.state() << "\",\n  \"semaphore\": {\"slots\": " << v.slots
            << ", \"held\": " << v.held << "},\n  \"holders\": ";
  std::vector<std::string> slots;
  for (const auto slot : v.slot_of) slots.push_back("\"slot\": " + std::to_string(slot));
  print_json_holders(v.holding, slots);
  std::cout << ",\n  \"waiting\": ";
  std::vector<std::string> places;
  for (std::size_t i = 0; i < v.waiting.size(); ++i) {
    places.push_back(std::string("\"first_in_line\": ") + (i < v.first_in_line ? "true" : "false"));
  }
  print_json_holders(v.waiting, places);
  std::cout << "\n}\n";
}

lock_state state_of(const std::vector<postgres_holder>& holders) {
  auto state = lock_state::free;
  for (const auto& h : holders) {
    if (h.waiting) continue;
    if (h.exclusive) return lock_state::exclusive;
    state = lock_state::shared;
  }
  return state;
}

std::string kind_of(const postgres_holder& h) { return h.exclusive ? "exclusive" : "shared"; }

// Prints the table of the sessions `holders`, each with its LOCK cell of `locks`.
void print_postgres_holders(const std::vector<postgres_holder>& holders,
                            const std::vector<std::string>& locks) {
  if (holders.empty()) return;
  std::vector<std::vector<std::string>> rows{
      {"PID", "HOST", "LOCK", "SESSION", "CLIENT", "APPLICATION"}};
  for (std::size_t i = 0; i < holders.size(); ++i) {
    const auto& h = holders[i];
    const bool ours = h.client_pid > 0;  // A session of this library, by its application_name.
    std::string application = table_command(ours ? h.program : h.application_name);
    if (!h.since.empty()) application += " [since " + h.since + "]";
    rows.push_back({ours ? std::to_string(h.client_pid) : "?",
                    ours && !h.client_host.empty() ? printable(h.client_host) : "?", locks[i],
                    std::to_string(h.backend_pid), h.client.empty() ? "?" : printable(h.client),
                    application});
  }
  std::vector<std::size_t> widths(rows.front().size(), 0);
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) widths[i] = std::max(widths[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line = " ";
    for (std::size_t i = 0; i + 1 < r.size(); ++i) {
      line += " " + r[i] + std::string(widths[i] - r[i].size() + 1, ' ');
    }
    std::cout << line << ' ' << r.back() << '\n';
  }
}

void print_postgres_text(const std::string& name, lock_state state,
                         const std::vector<postgres_holder>& holders) {
  std::cout << printable(name) << ": "
            << (state == lock_state::free ? "free" : std::string("held ") + name_of(state)) << '\n';
  std::vector<std::string> locks;
  for (const auto& h : holders) locks.push_back(kind_of(h) + (h.waiting ? " (waiting)" : ""));
  print_postgres_holders(holders, locks);
}

void print_postgres_semaphore_text(const std::string& name, const postgres_semaphore_state& s) {
  std::vector<postgres_holder> rows;
  std::vector<std::string> locks;
  semaphore_text(name, s.held(), s.slots, s.holding, s.slot_of, s.waiting, s.waiting.size(), rows,
                 locks);
  print_postgres_holders(rows, locks);
}

std::string json_or_null(const std::string& text) {
  return text.empty() ? "null" : json_string(text);
}

// The members of a session's JSON object, without its braces.
std::string json_fields(const postgres_holder& h) {
  const bool ours = h.client_pid > 0;
  return "\"pid\": " + (ours ? std::to_string(h.client_pid) : "null") +
         ", \"host\": " + (ours ? json_or_null(h.client_host) : "null") +
         ", \"program\": " + (ours ? json_or_null(h.program) : "null") +
         ", \"application_name\": " + json_string(h.application_name) + ", \"kind\": \"" +
         kind_of(h) +
         "\", \"mechanism\": \"postgres\", \"waiting\": " + (h.waiting ? "true" : "false") +
         ", \"backend_pid\": " + std::to_string(h.backend_pid) +
         ", \"client\": " + json_or_null(h.client) + ", \"user\": " + json_or_null(h.user) +
         ", \"since\": " + json_or_null(h.since);
}

void print_postgres_json(const std::string& name, const postgres_lock_state& found,
                         lock_state state) {
  std::cout << "{\n  \"name\": " << json_string(name) << ",\n  \"key\": " << found.key
            << ",\n  \"database\": " << json_string(found.database) << ",\n  \"state\": \""
            << name_of(state) << "\",\n  \"holders\": ";
  print_json_holders(found.holders, {});
  std::cout << "\n}\n";
}

// As for a semaphore file, with the name and database for the path, and the advisory key that
// each session holds ("key").
void print_postgres_semaphore_json(const std::string& name, const std::string& database,
                                   const postgres_semaphore_state& s) {
  std::cout << "{\n  \"name\": " << json_string(name)
            << ",\n  \"database\": " << json_string(database) << ",\n  \"state\": \""
            << semaphore_state(s.held(), s.slots) << "\",\n  \"semaphore\": {\"slots\": " << s.slots
            << ", \"held\": " << s.held() << "},\n  \"holders\": ";
  std::vector<std::string> extra;
  for (std::size_t i = 0; i < s.holding.size(); ++i) {
    extra.push_back("\"slot\": " + std::to_string(s.slot_of[i]) +
                    ", \"key\": " + std::to_string(s.holding[i].key));
  }
  print_json_holders(s.holding, extra);
  extra.clear();
  for (const auto& h : s.waiting) extra.push_back("\"key\": " + std::to_string(h.key));
  std::cout << ",\n  \"waiting\": ";
  print_json_holders(s.waiting, extra);
  std::cout << "\n}\n";
}

// N, if the file at `path` (of status `st`) is a semaphore file. One that cannot be read is told
// of as a lock file: its holders are listed all the same.
std::optional<std::size_t> semaphore_slots_of(const fs::path& path, const fs::file_status& st) {
  if (!fs::is_regular_file(st)) return std::nullopt;
  try {
    return semaphore_slots(path);
  } catch (const std::system_error&) {
    return std::nullopt;
  }
}

// `fasteners status --postgres CONNINFO NAME`.
int status_postgres(const status_options& o) {
  if (o.lock_file.empty()) {
    throw usage_error("status", "the lock name given with --postgres is empty");
  }
  if (!postgres_supported()) {
    throw tool_error(exit_unavailable, postgres_unsupported_message("status"));
  }
  check_conninfo("status", *o.postgres);
  const auto found = postgres_status("status", *o.postgres, o.lock_file);
  if (const auto& semaphore = found.semaphore) {
    if (o.json) {
      print_postgres_semaphore_json(o.lock_file, found.database, *semaphore);
    } else {
      print_postgres_semaphore_text(o.lock_file, *semaphore);
    }
    std::cout.flush();
    return semaphore->held() >= semaphore->slots ? exit_held : exit_free;
  }
  const auto state = state_of(found.holders);
  if (o.json) {
    print_postgres_json(o.lock_file, found, state);
  } else {
    print_postgres_text(o.lock_file, state, found.holders);
  }
  std::cout.flush();
  return state == lock_state::free ? exit_free : exit_held;
}

}  // namespace

CLI::App* add_status_command(CLI::App& app, status_options& o) {
  auto* status =
      app.add_subcommand("status", "Tell whether a lock file is free or held, and by whom");
  status->footer(help::status);
  status->add_flag("--json", o.json, "Print the state as a JSON object");
  status
      ->add_option("--postgres", o.postgres,
                   "Tell about the PostgreSQL advisory lock (or semaphore) named by the operand "
                   "(NAME, not LOCKFILE) in this database: a libpq connection string or URI")
      ->type_name("CONNINFO")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  status
      ->add_option("LOCKFILE", o.lock_file,
                   "The lock file (or directory); with --postgres, the lock's NAME")
      ->required()
      ->type_name("");
  return status;
}

int status(const status_options& o) {
  if (o.postgres) return status_postgres(o);
  // An empty path names no file (the system would say ENOENT, and so "free").
  if (o.lock_file.empty()) throw usage_error("status", "the lock file path is empty");
  const fs::path path = path_from_utf8(o.lock_file);
  std::error_code ec;
  const auto st = fs::status(path, ec);
  const bool exists = fs::exists(st);
  if (ec && !exists && ec != std::errc::no_such_file_or_directory &&
      ec != std::errc::not_a_directory) {
    throw tool_error(exit_no_input,
                     "fasteners: cannot inspect '" + utf8_of(path) + "': " + ec.message());
  }
  std::vector<lock_holder> found;
  if (exists) {
    try {
      found = holders(path);
    } catch (const std::system_error& e) {
      if (e.code() == std::errc::function_not_supported) {
        throw tool_error(exit_unavailable,
                         "fasteners status: cannot tell who holds '" + utf8_of(path) +
                             "': holder lookup is not available on " + system_name() +
                             ", which does not tell which processes hold a lock (only Linux does)");
      }
      const int code = e.code() == std::errc::permission_denied ? exit_no_input : exit_os_error;
      throw tool_error(code, e.what());
    }
  }
  if (const auto slots = semaphore_slots_of(path, st)) {
    const auto view = view_of(*slots, found);
    if (o.json) {
      print_semaphore_json(path, view);
    } else {
      print_semaphore_text(path, view);
    }
    std::cout.flush();
    return view.full() ? exit_held : exit_free;
  }
  const auto state = state_of(found);
  if (o.json) {
    print_json(path, exists, state, found);
  } else {
    print_text(path, exists, state, found);
  }
  std::cout.flush();
  return state == lock_state::free ? exit_free : exit_held;
}

}  // namespace fasteners::tool
