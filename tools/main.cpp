// The fasteners command-line tool: run a command under a lock, and tell who holds a lock.
#include <algorithm>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "errors.hpp"
#include "fasteners/version.hpp"
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

constexpr const char* footer = R"(Examples:
  fasteners run /tmp/backup.lock rsync -a src/ dst/
  fasteners run -n -E 75 /tmp/cron.lock -c 'make nightly'
  fasteners status /tmp/backup.lock --json
  fasteners run --postgres 'host=db.example dbname=app' -w 60 deploy ./deploy.sh
  fasteners status --postgres 'host=db.example dbname=app' deploy

Run 'fasteners run --help' or 'fasteners status --help' for their options.)";

// The name of the subcommand whose arguments these are, for error messages.
std::string subcommand_of(const std::vector<std::string>& args) {
  if (!args.empty() && (args[0] == "run" || args[0] == "status")) return args[0];
  return {};
}

int main_throwing(const std::vector<std::string>& args) {
  CLI::App app(description, "fasteners");
  app.footer(footer);
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

  // `run` reads its command line as flock(1) does, which CLI11 cannot: options end at the lock
  // file, and what follows belongs to the command. Long options may be abbreviated, as getopt_long
  // allows.
  std::vector<std::string> parsed;
  const std::string subcommand = subcommand_of(args);
  if (subcommand.empty()) {
    parsed = expand_long_options(app, args, "");
  } else {
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    parsed = subcommand == "run" ? split_run_arguments(*run_app, rest, run_opts)
                                 : expand_long_options(*status_app, rest, "status");
    parsed.insert(parsed.begin(), subcommand);
  }
  try {
    std::reverse(parsed.begin(), parsed.end());  // CLI11 takes them last first.
    app.parse(parsed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string message = e.what();
    if (args.empty()) {
      message = "a subcommand is required: run or status";
    } else if (subcommand_of(args).empty() && args[0].rfind('-', 0) != 0) {
      message = "unknown subcommand '" + args[0] + "': expected run or status";
    }
    throw usage_error(subcommand_of(args), message);
  }
  if (run_app->parsed()) return run(run_opts);
  return status(status_opts);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return main_throwing(arguments(argc, argv));
  } catch (const tool_error& e) {
    std::cerr << e.what() << std::endl;
    return e.exit_code();
  } catch (const std::exception& e) {
    std::cerr << "fasteners: internal error: " << e.what() << std::endl;
    return exit_software;
  }
}
