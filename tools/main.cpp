// The fasteners command-line tool: run a command under a lock, and tell who holds a lock.
#include <algorithm>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "errors.hpp"
#include "fasteners/version.hpp"
#include "flock_command.hpp"
#include "help_texts.hpp"
#include "option_prefixes.hpp"
#include "run_command.hpp"
#include "status_command.hpp"
#include "system.hpp"

namespace {

using namespace fasteners::tool;

constexpr const char* description =
    "Inter-process file locks for scripts: the locks of the fasteners C++ library, shared with "
    "python-fasteners (and, with --flock, with util-linux flock(1)); with --postgres, PostgreSQL "
    "advisory locks, across machines.";

// The name of the subcommand whose arguments these are, for error messages.
std::string subcommand_of(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "run" || args[0] == "status")) return args[0];
  return {};
}

// How this program was invoked: by which name, and whether as flock(1) (through a link named
// flock), which is `fasteners run --flock`.
struct invocation {
  std::string program_name;
  bool as_flock = false;
};

// The arguments as CLI11 is to parse them. `run` reads its command line as flock(1) does, which
// CLI11 cannot: options end at the lock file, and what follows belongs to the command. Long
// options may be abbreviated, as getopt_long allows.
std::vector<std::string> arguments_to_parse(CLI::App& app, CLI::App& run_app, CLI::App& status_app,
                                            const std::vector<std::string>& args,
                                            run_options& run_opts) {
  const std::string subcommand = subcommand_of(args);
  if (subcommand.empty()) return expand_long_options(app, args, "");
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  std::vector<std::string> parsed = subcommand == "run"
                                        ? split_run_arguments(run_app, rest, run_opts)
                                        : expand_long_options(status_app, rest, "status");
  parsed.insert(parsed.begin(), subcommand);
  return parsed;
}

// Parses `args` into `app`; returns the exit status when that is all there is to do (--help,
// --version). Throws usage_error for bad usage.
std::optional<int> parse(CLI::App& app, std::vector<std::string> parsed,
                         const std::vector<std::string>& args, const invocation& how) {
  std::reverse(parsed.begin(), parsed.end());  // CLI11 takes them last first.
  try {
    app.parse(parsed);
  } catch (const CLI::CallForHelp& e) {
    if (how.as_flock) std::cout << flock_help(how.program_name);
    return how.as_flock ? 0 : app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    if (how.as_flock) std::cout << flock_version(how.program_name) << '\n';
    return how.as_flock ? 0 : app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    if (args.empty()) {
      message = "a subcommand is required: run or status";
    } else if (subcommand_of(args).empty() && args[0].rfind('-', 0) != 0) {
      message = "unknown subcommand '" + args[0] + "': expected run or status";
    }
    throw usage_error(subcommand_of(args), message);
  }
  return std::nullopt;
}

// `options` as the invocation has them: named as invoked, and through a link named flock,
// `fasteners run --flock` (--postgres then is bad usage).
run_options for_invocation(run_options options, const invocation& how) {
  options.program_name = how.program_name;
  if (!how.as_flock) return options;
  if (options.postgres) {
    throw usage_error("run", "--postgres is not for " + how.program_name +
                                 ", whose locks are flock(2)'s: use fasteners run --postgres");
  }
  options.use_flock = true;
  options.command_name = how.program_name;
  return options;
}

int main_throwing(const std::vector<std::string>& given, const invocation& how) {
  CLI::App app(description, "fasteners");
  app.footer(help::main);
  // Options start with '-' only; CLI11 would also take '/x' for one on Windows, where paths may
  // start with '/'. Subcommands inherit this.
  app.allow_windows_style_options(false);
  app.set_version_flag("-V,--version", std::string("fasteners ") + fasteners::version_string,
                       "Print the version and exit");
  app.require_subcommand(1);
  run_options run_opts;
  status_options status_opts;
  CLI::App* const run_app = add_run_command(app, run_opts);
  CLI::App* const status_app = add_status_command(app, status_opts);
  for (auto* sub : {run_app, status_app}) sub->fallthrough(false);

  std::vector<std::string> args = given;
  if (how.as_flock) args.insert(args.begin(), "run");
  auto parsed = arguments_to_parse(app, *run_app, *status_app, args, run_opts);
  if (const auto done = parse(app, std::move(parsed), args, how)) return *done;
  if (run_app->parsed()) return run(for_invocation(run_opts, how));
  return status(status_opts);
}

}  // namespace

int main(int argc, char** argv) {
  invocation how;
  how.program_name = program_name(argc, argv);
  how.as_flock = is_flock_name(how.program_name);
  try {
    return main_throwing(arguments(argc, argv), how);
  } catch (const tool_error& e) {
    std::cerr << (how.as_flock ? as_flock_message(e.what(), how.program_name) : e.what())
              << std::endl;
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << (how.as_flock ? how.program_name : std::string("fasteners"))
              << ": internal error: " << e.what() << std::endl;
    return exit_software;
  }
}
