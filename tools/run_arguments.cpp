// `fasteners run`'s command line: its options, and flock(1)'s grammar of the arguments after them.
#include "run_arguments.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <limits>

#include "errors.hpp"
#include "fasteners/version.hpp"
#include "help_texts.hpp"
#include "option_prefixes.hpp"

namespace fasteners::tool {
namespace {

using seconds = std::chrono::duration<double>;

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

}  // namespace

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

std::optional<std::size_t> parse_slots(const std::optional<std::string>& given) {
  if (!given) return std::nullopt;
  const std::string& text = *given;
  const auto bad = [&](const char* why) {
    return usage_error("run", "invalid number of slots '" + text + "': " + why +
                                  "; --slots takes a whole number, 1 or more");
  };
  if (text.empty()) throw bad("it is empty");
  if (text.find_first_not_of("0123456789") != std::string::npos) throw bad("not a whole number");
  const auto digits = text.find_first_not_of('0');
  if (digits == std::string::npos) throw bad("a semaphore needs at least one slot");
  // More digits than any size_t holds: too many slots for any semaphore, which says how many
  // it takes at most (see make_file_semaphore_lock()).
  if (text.size() - digits > std::numeric_limits<std::size_t>::digits10) {
    return std::numeric_limits<std::size_t>::max();
  }
  return static_cast<std::size_t>(std::stoull(text.substr(digits)));
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

namespace {

// -x, -s and -u: which lock, or its release (the last one given wins, as in flock(1)).
void add_lock_kind_options(CLI::App& run, run_options& o) {
  run.add_flag_callback(
         "-x,-e,--exclusive",
         [&o] {
           o.shared = false;
           o.unlock = false;
         },
         "Take an exclusive (write) lock: the default")
      ->trigger_on_parse();
  run.add_flag_callback(
         "-s,--shared",
         [&o] {
           o.shared = true;
           o.unlock = false;
         },
         "Take a shared (read) lock")
      ->trigger_on_parse();
  run.add_flag_callback(
         "-u,--unlock", [&o] { o.unlock = true; },
         "Release the lock held on FD's open file (with FD only)")
      ->trigger_on_parse();
}

// -n, -w and -E: how long to wait, and the exit status when the lock could not be had.
void add_wait_options(CLI::App& run, run_options& o) {
  run.add_flag("-n,--nb,--nonblock,--nonblocking", o.nonblocking,
               "Fail rather than wait if the lock is taken (exit status: see -E)");
  run.add_option("-w,--wait,--timeout", o.timeout,
                 "Wait at most SECONDS (fractions allowed; 0: one try; over 10^9: no limit), then "
                 "fail (see -E)")
      ->type_name("SECONDS")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run.add_option("-E,--conflict-exit-code", o.conflict_exit_code,
                 "Exit status when -n or -w cannot get the lock: 0 to 255, default 1")
      ->type_name("N")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

// -o, -F, --postgres, --slots, --flock, --fence and -v: how the lock is held and reported.
void add_holding_options(CLI::App& run, run_options& o) {
  run.add_flag("-o,--close", o.close,
               "Keep the lock from COMMAND: it ends with COMMAND, whatever COMMAND left running "
               "(implied on Windows)");
  run.add_flag("-F,--no-fork", o.no_fork,
               "Execute COMMAND in place of fasteners (no fork): COMMAND holds the lock through "
               "the descriptor it inherits (not with -o; not on Windows)");
  run.add_option("--postgres", o.postgres,
                 "Take the PostgreSQL advisory lock named by the operand (NAME, not LOCKFILE) in "
                 "this database: a libpq connection string or URI; see below")
      ->type_name("CONNINFO")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run.add_option(
         "--on-loss", o.on_loss,
         "With --postgres: what happens when the lock is lost while COMMAND runs (the "
         "session ended): warn (the default) says so on stderr once COMMAND ends; term also "
         "sends COMMAND SIGTERM at once")
      ->type_name("warn|term")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run.add_option("--slots", o.slots,
                 "Take one of N slots of the semaphore file LOCKFILE (with --postgres, of the "
                 "PostgreSQL semaphore NAME; at most N such commands run at once) instead of a "
                 "lock; not with -s, --flock, -F or FD; see below")
      ->type_name("N")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  run.add_flag("--flock", o.use_flock,
               "Use flock(2) locks, shared with flock(1), not fcntl ones (python-fasteners'); "
               "locks directories too; not on Windows");
  run.add_flag("--fence", o.fence,
               "Take the lock with a fencing token, larger than every one taken before on it, and "
               "run COMMAND with it in FASTENERS_FENCE (with -s: the latest exclusive lock's, 0 if "
               "none); not with --slots, --flock or FD; see below");
  run.add_flag("-v,--verbose", o.verbose,
               "As flock(1): say on stdout how long getting the lock took and which command "
               "runs, on stderr that the lock was not had; and on stderr whom it waits for");
}

// -c, LOCKFILE and COMMAND: what is locked and what runs.
void add_operands(CLI::App& run, run_options& o) {
  run.add_option("-c,--command", o.shell_command,
                 "Run this with $SHELL -c (/bin/sh if unset; on Windows %COMSPEC% /d /s /c) "
                 "instead of COMMAND")
      ->type_name("'SHELL COMMAND'");
  run.add_option("LOCKFILE", o.lock_file,
                 "The lock file: created if missing (its directory must exist); a number FD "
                 "without COMMAND: lock the file open as descriptor FD (see below); with "
                 "--postgres, the lock's NAME")
      ->required()
      ->type_name("");
  // Filled by split_run_arguments(), declared here for the help text.
  run.add_option("COMMAND", o.command, "The command and its arguments (after an optional --)")
      ->type_name("");
}

// Appends the rest of one option to `parsed`: its value, when it takes one that is the next
// argument (advancing `i`). A cluster of short options such as -nw5 or -sw 5 takes a value as the
// rest of the cluster, or as the next argument.
void take_option_value(const CLI::App& run_app, const std::string& arg,
                       const std::vector<std::string>& args, std::size_t& i,
                       std::vector<std::string>& parsed) {
  if (arg[1] == '-') {
    if (arg.find('=') == std::string::npos && takes_value(run_app, arg) && i < args.size()) {
      parsed.push_back(args[i++]);
    }
    return;
  }
  for (std::size_t j = 1; j < arg.size(); ++j) {
    if (!takes_value(run_app, std::string{'-', arg[j]})) continue;
    if (j + 1 == arg.size() && i < args.size()) parsed.push_back(args[i++]);
    return;
  }
}

}  // namespace

CLI::App* add_run_command(CLI::App& app, run_options& o) {
  auto* run = app.add_subcommand("run", "Run a command while holding a lock on a file");
  run->description(
      "Run a command while holding a lock on a file; also: fasteners run [OPTIONS] LOCKFILE -c "
      "'SHELL COMMAND', and fasteners run [OPTIONS] FD (lock the file the shell opened as FD)");
  run->footer(help::run);
  add_lock_kind_options(*run, o);
  add_wait_options(*run, o);
  add_holding_options(*run, o);
  add_operands(*run, o);
  run->set_version_flag("-V,--version", std::string("fasteners ") + fasteners::version_string,
                        "Print the version and exit");
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
    take_option_value(run_app, arg, args, i, parsed);
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

}  // namespace fasteners::tool
