// fasteners as flock(1): invoked through a link named flock, it is `fasteners run --flock`.
#include "flock_command.hpp"

#include <cstring>
#include <initializer_list>

#include "fasteners/version.hpp"

namespace fasteners::tool {
namespace {

// flock(1)'s help (util-linux 2.38), with its program name as %1, for the options both take.
constexpr const char* help_text = R"(
Usage:
 %1 [options] <file>|<directory> <command> [<argument>...]
 %1 [options] <file>|<directory> -c <command>
 %1 [options] <file descriptor number>

Manage file locks from shell scripts.

This %1 is fasteners invoked as flock(1): 'fasteners run --flock'. It takes flock(2)
locks, as util-linux flock(1) does, and gives the same exit statuses and -v lines.

Options:
 -s, --shared             get a shared lock
 -x, --exclusive          get an exclusive lock (default)
 -u, --unlock             remove a lock (of a file descriptor number)
 -n, --nonblock           fail rather than wait
 -w, --timeout <secs>     wait for a limited amount of time
 -E, --conflict-exit-code <number>  exit code after conflict or timeout
 -o, --close              close file descriptor before running command
 -c, --command <command>  run a single command string through the shell
 -F, --no-fork            execute command without forking
 -v, --verbose            increase verbosity

 -h, --help               display this help
 -V, --version            display version

For more details see fasteners(1) and flock(1).
)";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

bool is_flock_name(const std::string& program_name) { return program_name == "flock"; }

std::string flock_help(const std::string& program_name) {
  std::string text = help_text;
  for (auto at = text.find("%1"); at != std::string::npos; at = text.find("%1", at)) {
    text.replace(at, 2, program_name);
    at += program_name.size();
  }
  return text;
}

std::string flock_version(const std::string& program_name) {
  return program_name + " from fasteners " + fasteners::version_string;
}

std::string as_flock_message(const std::string& message, const std::string& program_name) {
  std::string out = message;
  const std::string see_help = "(see 'fasteners run --help')";
  if (ends_with(out, see_help)) {
    out.replace(out.size() - see_help.size(), see_help.size(),
                "(see '" + program_name + " --help')");
  }
  for (const char* prefix : {"fasteners run: ", "fasteners: "}) {
    if (starts_with(out, prefix)) return out.replace(0, std::strlen(prefix), program_name + ": ");
  }
  return out;
}

}  // namespace fasteners::tool
