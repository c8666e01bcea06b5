// How the fasteners tool fails: flock(1)'s exit codes (those of <sysexits.h>) and a one-line error.
#pragma once

#include <stdexcept>
#include <string>

namespace fasteners::tool {

inline constexpr int exit_usage = 64;          // EX_USAGE: bad options or arguments.
inline constexpr int exit_data_error = 65;     // EX_DATAERR: a lock call failed on an open file.
inline constexpr int exit_no_input = 66;       // EX_NOINPUT: the lock file cannot be opened.
inline constexpr int exit_unavailable = 69;    // EX_UNAVAILABLE: the command cannot be executed.
inline constexpr int exit_software = 70;       // EX_SOFTWARE: an internal error.
inline constexpr int exit_os_error = 71;       // EX_OSERR: out of memory or descriptors, and such.
inline constexpr int exit_cannot_create = 73;  // EX_CANTCREAT: read-only or full file system.

// `fasteners status`: whether the lock is free or held.
inline constexpr int exit_free = 0;
inline constexpr int exit_held = 1;

// A failure that ends the tool: main() prints what() as one line on stderr and exits with
// exit_code().
class tool_error : public std::runtime_error {
 public:
  tool_error(int exit_code, const std::string& message)
      : std::runtime_error(message), exit_code_(exit_code) {}
  int exit_code() const noexcept { return exit_code_; }

 private:
  int exit_code_;
};

// Bad options or arguments of `subcommand` ("run", "status" or empty for the tool itself).
inline tool_error usage_error(const std::string& subcommand, const std::string& message) {
  const std::string name = subcommand.empty() ? "fasteners" : "fasteners " + subcommand;
  return tool_error(exit_usage, name + ": " + message + " (see '" + name + " --help')");
}

}  // namespace fasteners::tool
