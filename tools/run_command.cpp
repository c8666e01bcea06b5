// `fasteners run`: take a lock, run a command while holding it, exit with the command's status.
#include "run_command.hpp"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <iostream>
#include <limits>
#include <system_error>

#include "errors.hpp"
#include "fasteners/holders.hpp"
#include "fasteners/version.hpp"
#include "lock_backend.hpp"
#include "option_prefixes.hpp"
#include "postgres.hpp"
#include "process.hpp"
#include "system.hpp"
#include "verbose_report.hpp"

namespace fasteners::tool {
namespace {

namespace fs = std::filesystem;
using seconds = std::chrono::duration<double>;

constexpr const char* footer =
    R"footer(The lock is taken before COMMAND starts and released when it ends. Unless -o is
given, COMMAND inherits a descriptor of the locked file, so the lock stays held for
as long as COMMAND, or anything it leaves running with that descriptor, lives, even
if this process is killed. Signals are not forwarded to COMMAND. With -F, COMMAND
replaces this process (no fork) and holds the lock through that descriptor.

With a descriptor number FD and no COMMAND, the lock is taken on the file that the
shell opened as FD, and stays held after fasteners ends, until the last copy of
that descriptor is closed or -u releases it:
  ( fasteners run -n 9 || exit 1; ...commands under the lock... ) 9<>/var/lock/job.lock
It is an fcntl lock on the whole file, which this library and python-fasteners
see (with --flock, a flock(2) lock): -s needs FD open for reading (9<>FILE or
9<FILE), an exclusive lock needs it open for writing (9<>FILE or 9>FILE). -u
releases the lock held on FD's open file.

On Windows a lock belongs to the process that took it, so -o is implied: fasteners
holds the lock until COMMAND ends, ignoring Ctrl+C and Ctrl+Break (which reach
COMMAND too) meanwhile; if fasteners is killed, the lock is released. There -c runs
%COMSPEC% /d /s /c (cmd.exe), --flock is not available (nor are -F, -u and FD),
and the exit status is COMMAND's exit code as it is.

Long options may be abbreviated to any unambiguous beginning (--nonb, --time 5).
-w reads SECONDS as strtod does (2.5, 1e-3, 0x10); a value below the smallest
double (1e-400) is 0, one over 10^9 seconds (31 years; inf too) waits without limit;
an empty, negative or non-numeric one (nan included) is bad usage.

With -v, as flock(1), on stdout: "NAME: getting lock took S seconds" and "NAME:
executing PROGRAM", written when fasteners ends if stdout is not a terminal (after
COMMAND's output; with -F never); on stderr: "NAME: failed to get lock" or "NAME:
timeout while waiting to get lock". NAME is the name fasteners was invoked by.
When it waits, it also says on stderr whom it waits for.

Invoked through a link named flock, fasteners is 'fasteners run --flock', with
flock(1)'s help and version. To make one (~/bin first in PATH):
  ln -s "$(command -v fasteners)" ~/bin/flock

Exit status: that of COMMAND (128+N if signal N killed it); the conflict exit code
(-E, default 1) when -n or -w could not get the lock; 0 when a lock on FD was taken
or released; 64 for bad usage, 65 when a lock call fails on an open file (such as
FD not open), 66 when the lock file cannot be opened (its directory must exist), 69
when COMMAND cannot be executed, 71 when memory or descriptors run out and for
other system errors, 73 when the lock file cannot be created on a read-only or full
file system: the codes of flock(1).

With --postgres CONNINFO (a libpq connection string or URI; '' for libpq's
defaults, PGHOST and so on), the operand is not a file but the NAME of a
PostgreSQL advisory lock in that database, the lock of fasteners::postgres_lock
and postgres_reader_writer_lock on every machine (psql sessions can take it too:
see fasteners/postgres.hpp for its key). The database session that holds it
belongs to this process, which waits for COMMAND and then releases it: the lock
ends when fasteners ends, even if COMMAND, or anything it left running, runs on
(-o is implied). While COMMAND runs, fasteners ignores SIGINT and SIGQUIT (a
Ctrl+C at the terminal reaches COMMAND too); SIGTERM or SIGKILL to it ends the
lock at once. --flock, -F, -u and FD cannot be used with --postgres. The
connection waits at most 10 seconds unless CONNINFO sets connect_timeout. Exit
status as for files, and 69 when the server cannot be reached, refuses the login
or loses the session while waiting. A session lost while COMMAND runs is reported
on stderr; the exit status stays COMMAND's.)footer";

bool takes_value(const CLI::App& app, const std::string& name) {
  const CLI::Option* option = app.get_option_no_throw(name);
  return option != nullptr && option->get_items_expected_min() > 0;
}

bool is_shell_command_option(const std::string& arg) {
  return arg == "-c" || arg == "--command" || arg.rfind("--command=", 0) == 0 ||
         (arg.size() > 2 && arg.rfind("-c", 0) == 0);
}

// The longest wait -w counts: longer ones (infinity included) never end, so they wait without
// limit.
constexpr double longest_timeout = 1e9;

// -w: seconds as strtod (and so flock(1)) reads them: decimal or hexadecimal, fractions and
// exponents allowed; 0 or more, 0 meaning one try. A value too small for a double (1e-400, -0) is
// 0; one over longest_timeout is no limit: returns nothing then, as when -w is not given. Throws
// usage_error saying what is wrong with any other.
std::optional<seconds> parse_timeout(const std::optional<std::string>& given) {
  if (!given) return std::nullopt;
  const std::string& text = *given;
  const auto bad = [&](const char* why) {
    return usage_error("run", "invalid timeout '" + text + "': " + why +
                                  "; expected a number of seconds, 0 or more (fractions allowed)");
  };
  if (text.empty()) throw bad("it is empty");
  char* end = nullptr;
  errno = 0;
  double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || std::isnan(value)) throw bad("not a number");
  if (errno == ERANGE && std::fabs(value) < 1) value = 0;  // Below the smallest double.
  if (value < 0) throw bad("it is negative");
  if (value > longest_timeout) return std::nullopt;
  return seconds(value);
}

int parse_conflict_exit_code(const std::optional<std::string>& given) {
  if (!given) return 1;
  const std::string& text = *given;
  std::size_t used = 0;
  int value = -1;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 0 || value > 255) {
    throw usage_error("run", "invalid conflict exit code '" + text + "': expected 0 to 255");
  }
  return value;
}

bool is_any_of(const std::error_code& ec, std::initializer_list<std::errc> errors) {
  for (const auto e : errors) {
    if (ec == e) return true;
  }
  return false;
}

// flock(1)'s exit status for a lock file that cannot be opened: 71 when memory or descriptors
// run out, 73 when it cannot be created on a read-only or full file system, 66 otherwise; and for
// a failed lock call on an open file (lock_call_error): 71 when locks or memory run out, 65
// otherwise. The library's errors count as opening ones, as nearly all are (ENOLCK, of its lock
// calls, is 71 either way). Compared as conditions, so Windows errors count as their errno
// equivalents (ERROR_DISK_FULL as no_space_on_device).
int exit_code_for(const std::system_error& e) {
  const std::error_code& ec = e.code();
  if (ec.category() != std::system_category() && ec.category() != std::generic_category()) {
    return exit_os_error;
  }
  using std::errc;
  if (dynamic_cast<const lock_call_error*>(&e) != nullptr) {
    return is_any_of(ec, {errc::no_lock_available, errc::not_enough_memory}) ? exit_os_error
                                                                             : exit_data_error;
  }
  if (is_any_of(ec, {errc::not_enough_memory, errc::too_many_files_open,
                     errc::too_many_files_open_in_system, errc::no_lock_available})) {
    return exit_os_error;
  }
  if (is_any_of(ec, {errc::read_only_file_system, errc::no_space_on_device})) {
    return exit_cannot_create;
  }
  return exit_no_input;
}

// flock(1)'s exit status when COMMAND cannot be executed: 71 when memory runs out, else 69.
int exec_exit_code(const std::system_error& e) {
  return e.code() == std::errc::not_enough_memory ? exit_os_error : exit_unavailable;
}

// A descriptor number as flock(1) takes one: decimal digits, at most INT_MAX; nothing otherwise.
std::optional<int> descriptor_number(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  const long long value = std::stoll(text);
  if (value > std::numeric_limits<int>::max()) return std::nullopt;
  return static_cast<int>(value);
}

// flock(1) does not create the lock file's directory, and neither does `fasteners run` (the
// library would): a misspelt path must not silently become a new lock.
void check_directory(const fs::path& path) {
  const auto parent = path.parent_path();
  if (parent.empty()) return;
  std::error_code ec;
  if (!fs::exists(parent, ec) && !ec) {
    throw tool_error(exit_no_input, "fasteners: cannot open lock file '" + utf8_of(path) +
                                        "': the directory '" + utf8_of(parent) +
                                        "' does not exist");
  }
}

// Whether `holder`'s lock keeps us from taking ours.
bool conflicts(const run_options& o, const lock_holder& holder) {
  const bool fcntl = holder.mechanism == lock_mechanism::fcntl_ofd ||
                     holder.mechanism == lock_mechanism::fcntl_posix;
  if (o.use_flock ? holder.mechanism != lock_mechanism::flock : !fcntl) return false;
  return !o.shared || holder.kind == lock_kind::exclusive || holder.waiting;
}

std::string describe_holder(const lock_holder& h) {
  std::string out = h.pid > 0 ? "pid " + std::to_string(h.pid) : "a process this user cannot see";
  if (!h.command.empty()) out += " (" + h.command + ")";
  return out;
}

// Joins at most a few descriptions: "a, b and 3 more".
std::string list(const std::vector<std::string>& items) {
  constexpr std::size_t most = 5;
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < most; ++i) {
    out += i == 0 ? "" : ", ";
    out += items[i];
  }
  if (items.size() > most) out += " and " + std::to_string(items.size() - most) + " more";
  return out;
}

// "held exclusive by pid 1234 (backup.sh)": the processes whose locks keep us waiting.
std::string describe_holders(const run_options& o, const fs::path& path) {
  std::error_code ec;
  const auto all = holders(path, ec);
  if (ec == std::errc::function_not_supported) {
    return "its holders cannot be looked up on " + system_name();
  }
  if (ec) return "its holders are unknown (" + ec.message() + ")";
  std::vector<std::string> holding;
  std::vector<std::string> waiting;
  std::size_t possible = 0;
  bool exclusive = false;
  for (const auto& h : all) {
    if (!conflicts(o, h)) continue;
    if (!h.inspectable && h.pid > 0) {
      ++possible;  // One of the processes this user may not inspect: counted, not named.
    } else if (h.waiting) {
      waiting.push_back(describe_holder(h));
    } else {
      exclusive = exclusive || h.kind == lock_kind::exclusive;
      holding.push_back(describe_holder(h));
    }
  }
  if (possible > 0) {
    holding.push_back("one of " + std::to_string(possible) +
                      " processes this user may not inspect");
  }
  std::string out;
  if (!holding.empty()) out = (exclusive ? "held exclusive by " : "held by ") + list(holding);
  if (!waiting.empty()) {
    out += out.empty() ? "" : "; ";
    out += "a writer waits for it first: " + list(waiting);
  }
  return out.empty() ? "held by another process" : out;
}

// What `fasteners run` locks, for messages and the holder lookup of -v.
struct lock_target {
  std::string name;       // "'/tmp/job.lock'", or "descriptor 9 ('/tmp/job.lock')".
  fs::path holders_path;  // What holders() is asked about.
};

// Whether -n or -w 0 asks for one try only.
bool one_try(const run_options& o, const std::optional<seconds>& timeout) {
  return o.nonblocking || (timeout && timeout->count() == 0);
}

// Takes `lock` as -n, -w and -v say; returns whether it did. Throws tool_error with flock(1)'s
// exit status when the file cannot be opened or locked.
bool take(lock_backend& lock, const run_options& o, const std::optional<seconds>& timeout,
          const lock_target& target) {
  const std::string what =
      std::string("the ") + (o.shared ? "shared" : "exclusive") + " lock on " + target.name;
  try {
    return take_and_report(lock, one_try(o, timeout), timeout, {o.verbose, o.program_name}, what,
                           [&] { return describe_holders(o, target.holders_path); });
  } catch (const std::system_error& e) {
    throw tool_error(exit_code_for(e), e.what());
  }
}

// Keeps the lock object alive, without releasing it, until the process exits: releasing would
// take the lock from the command and whatever it left running with the inherited descriptor.
// The OS drops this process's share of the lock when it exits, as flock(1)'s does.
void keep_until_exit(std::unique_ptr<lock_backend> lock) {
  // Still reachable, so leak checkers stay quiet; volatile, so the store is not optimized away.
  [[maybe_unused]] static lock_backend* volatile kept = nullptr;
  kept = lock.release();
}

// --postgres: "held exclusive by pid 1234 on host1 (fasteners)": the sessions that keep us
// waiting, as pg_locks and pg_stat_activity tell, asked in a session of its own.
std::string describe_postgres_holders(bool shared, const std::string& conninfo,
                                      const std::string& name) {
  postgres_lock_state state;
  try {
    state = postgres_holders("run", conninfo, name);
  } catch (const tool_error& e) {
    std::string why = e.what();
    const std::string prefix = "fasteners run: ";
    if (why.rfind(prefix, 0) == 0) why.erase(0, prefix.size());
    return "its holders are unknown (" + why + ")";
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
  std::string out;
  if (!holding.empty()) out = (exclusive ? "held exclusive by " : "held by ") + list(holding);
  if (!waiting.empty()) {
    out += out.empty() ? "" : "; ";
    out +=
        (writers_wait ? "a writer waits for it first: " : "waiting for it first: ") + list(waiting);
  }
  return out.empty() ? "held by another session" : out;
}

// The library's error about the database, as one line that names the tool and no password.
std::string database_error(const std::exception& e, const std::string& conninfo) {
  std::string message = scrub(e.what(), conninfo);
  if (message.rfind("fasteners", 0) != 0) message = "fasteners run: " + message;
  return message;
}

// Refuses what --postgres cannot do, before anything is asked of the database.
void check_postgres_usage(const run_options& o) {
  if (o.use_flock) {
    throw usage_error("run",
                      "--flock cannot be used with --postgres: --flock takes a flock(2) lock on a "
                      "file, --postgres a PostgreSQL advisory lock");
  }
  if (o.unlock || o.no_fork) {
    throw usage_error("run", std::string(o.unlock ? "-u" : "-F") +
                                 " cannot be used with --postgres: the lock belongs to the "
                                 "database session of this process, which ends with it");
  }
  if (o.command.empty() && !o.shell_command) {
    throw usage_error("run", "no command given: " + o.command_name +
                                 " --postgres CONNINFO [OPTIONS] NAME COMMAND [ARGS...]" +
                                 (descriptor_number(o.lock_file)
                                      ? "; the descriptor form (FD without a command) cannot be "
                                        "used with --postgres"
                                      : ""));
  }
  if (o.lock_file.empty()) {
    throw usage_error("run", "the lock name given with --postgres is empty");
  }
  if (!postgres_supported()) {
    throw tool_error(exit_unavailable, postgres_unsupported_message("run"));
  }
  check_conninfo("run", *o.postgres);
}

// Runs `command` while this process's session holds `lock`, then releases it; returns the
// command's exit status.
int run_holding(postgres_run_lock& lock, command_line command, const std::string& what,
                const std::string& conninfo) {
  command_status status;
  {
    const interrupts_ignored ignored;
    command.default_signals = ignored.ignored_here();
    command_process process{};
    try {
      process = start_command(command, -1);  // The lock stays with this process's session.
    } catch (const std::system_error& e) {
      throw tool_error(exit_unavailable, e.what());
    }
    status = wait_command(process);
  }
  try {
    lock.release();
  } catch (const std::system_error& e) {
    // The command has run; its status stays the exit status.
    std::cerr << "fasteners: warning: " << what
              << " was lost while the command ran: " << scrub(e.what(), conninfo) << std::endl;
  }
  return status.exit_code;
}

// `fasteners run --postgres CONNINFO NAME COMMAND...`: the same steps as for a file, with a
// session of this process holding the lock until COMMAND ends.
int run_postgres(const run_options& o, const std::optional<seconds>& timeout,
                 int conflict_exit_code) {
  check_postgres_usage(o);
  const std::string& conninfo = *o.postgres;
  const std::string& name = o.lock_file;
  const command_line command =
      o.shell_command ? shell_command(*o.shell_command) : command_line{o.command};
  const std::string what =
      std::string("the ") + (o.shared ? "shared" : "exclusive") + " PostgreSQL lock '" + name + "'";
  const verbose_report report{o.verbose, o.program_name};
  std::unique_ptr<postgres_run_lock> lock;
  try {
    lock = make_postgres_run_lock(conninfo, name, o.shared);
    if (!take_and_report(*lock, one_try(o, timeout), timeout, report, what,
                         [&] { return describe_postgres_holders(o.shared, conninfo, name); })) {
      return conflict_exit_code;
    }
  } catch (const std::system_error& e) {
    throw tool_error(exit_unavailable, database_error(e, conninfo));
  } catch (const std::invalid_argument& e) {
    throw usage_error("run", scrub(e.what(), conninfo));
  }
  report.executing(command.argv[0]);
  return run_holding(*lock, command, what, conninfo);
}

// `fasteners run [OPTIONS] FD`: takes (or with -u releases) the lock on the open file of
// descriptor FD, which the shell opened; the lock stays with that open file after this process
// ends.
int run_descriptor(const run_options& o, int fd, const std::optional<seconds>& timeout,
                   int conflict_exit_code) {
  if (!descriptor_locks_supported(o.use_flock)) {
    throw usage_error(
        "run", command_can_inherit_lock()
                   ? "the descriptor form (fasteners run FD) needs open-file-description locks, "
                     "which " +
                         system_name() + " lacks: use --flock, or give a LOCKFILE and a COMMAND"
                   : "the descriptor form (fasteners run FD) is not available on " + system_name() +
                         ", where a lock cannot outlive the process that takes it: give a "
                         "LOCKFILE and a COMMAND");
  }
  const std::string name = descriptor_name(fd);
  if (o.unlock) {
    // As flock(1), -v tells how long the unlock call took.
    const auto start = std::chrono::steady_clock::now();
    try {
      unlock_descriptor(fd, o.use_flock);
    } catch (const std::system_error& e) {
      throw tool_error(exit_code_for(e), e.what());
    }
    verbose_report(o.verbose, o.program_name).took(std::chrono::steady_clock::now() - start);
    return 0;
  }
  const auto lock = make_descriptor_lock(fd, o.shared, o.use_flock);
  return take(*lock, o, timeout, {name, descriptor_path(fd)}) ? 0 : conflict_exit_code;
}

// Refuses what `fasteners run LOCKFILE COMMAND` cannot do here, before the file is opened.
void check_file_usage(const run_options& o) {
  if (o.unlock) {
    throw usage_error("run",
                      "-u releases the lock held through a descriptor that the shell opened: " +
                          o.command_name + " -u FD, without a command");
  }
  if (o.use_flock && !flock_supported()) {
    throw usage_error("run", "--flock is not available on " + system_name() +
                                 ", which has no flock(2); without it the lock is the library's, "
                                 "which python-fasteners shares");
  }
  if (o.no_fork && !command_can_replace_process()) {
    throw usage_error("run", "-F is not available on " + system_name() +
                                 ", where no program can replace a process; without it fasteners "
                                 "holds the lock until the command ends");
  }
}

// `fasteners run [OPTIONS] LOCKFILE COMMAND...`: takes the lock, runs COMMAND (or, with -F,
// becomes it) and returns its exit status, or the conflict exit code.
int run_file(const run_options& o, const std::optional<seconds>& timeout, int conflict_exit_code) {
  check_file_usage(o);
  const fs::path path = path_from_utf8(o.lock_file);
  check_directory(path);
  const command_line command =
      o.shell_command ? shell_command(*o.shell_command) : command_line{o.command};
  // Where a lock cannot be inherited (Windows), this process holds it until the command ends, as
  // with -o.
  const bool hand_down = !o.close && command_can_inherit_lock();

  auto lock = o.use_flock ? make_flock_lock(path, o.shared) : make_library_lock(path, o.shared);
  if (!take(*lock, o, timeout, {"'" + utf8_of(path) + "'", path})) return conflict_exit_code;
  verbose_report(o.verbose, o.program_name).executing(command.argv[0]);
  command_process process{};
  try {
    if (o.no_fork) exec_command(command, lock->native_handle());
    process = start_command(command, hand_down ? lock->native_handle() : -1);
  } catch (const std::system_error& e) {
    throw tool_error(exec_exit_code(e), e.what());
  }
  const command_status status = wait_command(process);
  if (hand_down) keep_until_exit(std::move(lock));
  return status.exit_code;
}

}  // namespace

CLI::App* add_run_command(CLI::App& app, run_options& o) {
  auto* run = app.add_subcommand("run", "Run a command while holding a lock on a file");
  run->description(
      "Run a command while holding a lock on a file; also: fasteners run [OPTIONS] LOCKFILE -c "
      "'SHELL COMMAND', and fasteners run [OPTIONS] FD (lock the file the shell opened as FD)");
  run->footer(footer);
  run->add_flag_callback(
         "-x,-e,--exclusive",
         [&o] {
           o.shared = false;
           o.unlock = false;
         },
         "Take an exclusive (write) lock: the default")
      ->trigger_on_parse();
  run->add_flag_callback(
         "-s,--shared",
         [&o] {
           o.shared = true;
           o.unlock = false;
         },
         "Take a shared (read) lock")
      ->trigger_on_parse();
  run->add_flag_callback(
         "-u,--unlock", [&o] { o.unlock = true; },
         "Release the lock held on FD's open file (with FD only)")
      ->trigger_on_parse();
  run->add_flag("-n,--nb,--nonblock,--nonblocking", o.nonblocking,
                "Fail rather than wait if the lock is taken (exit status: see -E)");
  run->add_option("-w,--wait,--timeout", o.timeout,
                  "Wait at most SECONDS (fractions allowed; 0: one try; over 10^9: no limit), then "
                  "fail (see -E)")
      ->type_name("SECONDS")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run->add_option("-E,--conflict-exit-code", o.conflict_exit_code,
                  "Exit status when -n or -w cannot get the lock: 0 to 255, default 1")
      ->type_name("N")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run->add_flag("-o,--close", o.close,
                "Keep the lock from COMMAND: it ends with COMMAND, whatever COMMAND left running "
                "(implied on Windows)");
  run->add_flag("-F,--no-fork", o.no_fork,
                "Execute COMMAND in place of fasteners (no fork): COMMAND holds the lock through "
                "the descriptor it inherits (not with -o; not on Windows)");
  run->add_option("--postgres", o.postgres,
                  "Take the PostgreSQL advisory lock named by the operand (NAME, not LOCKFILE) in "
                  "this database: a libpq connection string or URI; see below")
      ->type_name("CONNINFO")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run->add_flag("--flock", o.use_flock,
                "Use flock(2) locks, shared with flock(1), not fcntl ones (python-fasteners'); "
                "locks directories too; not on Windows");
  run->add_flag("-v,--verbose", o.verbose,
                "As flock(1): say on stdout how long getting the lock took and which command "
                "runs, on stderr that the lock was not had; and on stderr whom it waits for");
  run->add_option("-c,--command", o.shell_command,
                  "Run this with $SHELL -c (/bin/sh if unset; on Windows %COMSPEC% /d /s /c) "
                  "instead of COMMAND")
      ->type_name("'SHELL COMMAND'");
  run->add_option("LOCKFILE", o.lock_file,
                  "The lock file: created if missing (its directory must exist); a number FD "
                  "without COMMAND: lock the file open as descriptor FD (see below); with "
                  "--postgres, the lock's NAME")
      ->required()
      ->type_name("");
  run->set_version_flag("-V,--version", std::string("fasteners ") + fasteners::version_string,
                        "Print the version and exit");
  // Filled by split_run_arguments(), declared here for the help text.
  run->add_option("COMMAND", o.command, "The command and its arguments (after an optional --)")
      ->type_name("");
  return run;
}

std::vector<std::string> split_run_arguments(const CLI::App& run_app,
                                             const std::vector<std::string>& args,
                                             run_options& options) {
  std::vector<std::string> parsed;
  std::size_t i = 0;
  bool operands_only = false;
  // Options, up to the lock file.
  while (i < args.size()) {
    // flock(1) takes --command only in full (getopt_long does not know it), so --co is
    // --conflict-exit-code.
    const std::string arg = expand_long_option(run_app, args[i], "run", {"command"});
    if (arg == "--") {
      parsed.push_back(arg);
      ++i;
      operands_only = true;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;
    parsed.push_back(arg);
    ++i;
    if (arg[1] == '-') {
      if (arg.find('=') == std::string::npos && takes_value(run_app, arg) && i < args.size()) {
        parsed.push_back(args[i++]);
      }
      continue;
    }
    // A cluster of short options such as -nw5 or -sw 5: a value is the rest, or the next one.
    for (std::size_t j = 1; j < arg.size(); ++j) {
      if (!takes_value(run_app, std::string{'-', arg[j]})) continue;
      if (j + 1 == arg.size() && i < args.size()) parsed.push_back(args[i++]);
      break;
    }
  }
  if (i < args.size()) parsed.push_back(args[i++]);  // LOCKFILE.
  // flock(1)'s form LOCKFILE -c COMMAND, which takes nothing after COMMAND.
  if (!operands_only && i < args.size() && is_shell_command_option(args[i])) {
    const std::string& arg = args[i++];
    parsed.push_back(arg);
    if ((arg == "-c" || arg == "--command") && i < args.size()) parsed.push_back(args[i++]);
    if (i < args.size()) {
      throw usage_error("run", "-c takes exactly one argument, the shell command; unexpected '" +
                                   args[i] + "' after it (quote the whole command)");
    }
    return parsed;
  }
  if (i < args.size() && args[i] == "--") ++i;
  options.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
  return parsed;
}

int run(const run_options& o) {
  const auto timeout = parse_timeout(o.timeout);
  const int conflict_exit_code = parse_conflict_exit_code(o.conflict_exit_code);
  if (o.shell_command && !o.command.empty()) {
    throw usage_error("run", "give either COMMAND or -c 'SHELL COMMAND', not both");
  }
  if (o.no_fork && o.close) {
    throw usage_error("run",
                      "-F and -o cannot be used together: with -F the command replaces fasteners "
                      "and holds the lock, which -o would take from it");
  }
  if (o.postgres) return run_postgres(o, timeout, conflict_exit_code);
  const bool has_command = o.shell_command || !o.command.empty();
  if (!has_command) {
    if (const auto fd = descriptor_number(o.lock_file)) {
      return run_descriptor(o, *fd, timeout, conflict_exit_code);
    }
    throw usage_error("run", "no command given: " + o.command_name +
                                 " [OPTIONS] LOCKFILE COMMAND [ARGS...], or " + o.command_name +
                                 " [OPTIONS] FD to lock a descriptor the shell opened");
  }
  return run_file(o, timeout, conflict_exit_code);
}

}  // namespace fasteners::tool
