// `fasteners run`'s command line: what it asks for, and how flock(1)'s grammar reads it.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace fasteners::tool {

// What `fasteners run` was asked to do, as parsed from its command line.
struct run_options {
  std::string lock_file;  // With --postgres: the lock's name. A number without a command: FD.
  std::optional<std::string> postgres;  // --postgres CONNINFO: a PostgreSQL advisory lock.
  // --on-loss=warn|term as written (with --postgres): what a lock lost while COMMAND runs does.
  std::optional<std::string> on_loss;
  std::optional<std::string> slots;  // --slots N as written: one of N slots of a semaphore.
  // -s, -x (the default) and -u: the last one given wins, as in flock(1).
  bool shared = false;
  bool unlock = false;
  bool nonblocking = false;
  std::optional<std::string> timeout;             // -w SECONDS as written; none: no limit.
  std::optional<std::string> conflict_exit_code;  // -E N as written; none: 1.
  bool close = false;
  bool no_fork = false;  // -F: exec COMMAND in place of this process.
  bool use_flock = false;
  // --fence: the lock takes a fencing token, which COMMAND gets as $FASTENERS_FENCE.
  bool fence = false;
  bool verbose = false;
  std::optional<std::string> shell_command;  // -c
  std::vector<std::string> command;
  // The name this program was invoked by, which the lines of -v begin with (as flock(1)'s).
  std::string program_name = "fasteners";
  // How usage messages spell this command: "fasteners run", or "flock" through a link so named.
  std::string command_name = "fasteners run";
};

// Adds the `run` subcommand to `app`; what it parses lands in `options`.
CLI::App* add_run_command(CLI::App& app, run_options& options);

// Splits the arguments that follow `run` the way flock(1) reads them: options up to the first
// operand, which names the lock file (or, with no command, the descriptor); after it come the
// command and its arguments (after an optional `--`), or `-c COMMAND`. Abbreviated long options
// are written out in full, as getopt_long reads them. Stores the command in `options.command` and
// returns the rest, for `run_app` to parse. `run_app` tells which options take a value. Throws
// usage_error for an ambiguous abbreviation.
std::vector<std::string> split_run_arguments(const CLI::App& run_app,
                                             const std::vector<std::string>& args,
                                             run_options& options);

// -w: seconds as strtod (and so flock(1)) reads them: decimal or hexadecimal, fractions and
// exponents allowed; 0 or more, 0 meaning one try. A value too small for a double (1e-400, -0) is
// 0; one over 10^9 seconds is no limit: returns nothing then, as when -w is not given. Throws
// usage_error saying what is wrong with any other.
std::optional<std::chrono::duration<double>> parse_timeout(const std::optional<std::string>& given);
// -E: 0 to 255, 1 when not given. Throws usage_error for any other.
int parse_conflict_exit_code(const std::optional<std::string>& given);
// --slots: a whole number of slots, 1 or more, as decimal digits; nothing when not given. Throws
// usage_error saying what is wrong with any other. (The semaphore says what most it takes.)
std::optional<std::size_t> parse_slots(const std::optional<std::string>& given);
// A descriptor number as flock(1) takes one: decimal digits, at most INT_MAX; nothing otherwise.
std::optional<int> descriptor_number(const std::string& text);

}  // namespace fasteners::tool
