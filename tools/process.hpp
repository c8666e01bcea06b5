// Running the command of `fasteners run`: the platform's part (tools/posix/, tools/windows/).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace fasteners::tool {

// What `fasteners run` starts: a program and its arguments.
struct command_line {
  std::vector<std::string> argv;  // The program (searched in PATH) and its arguments, in UTF-8.
  // Windows only: the last argument is a command for cmd.exe, which does not read its command
  // line by the C runtime's quoting rules; it is put in double quotes as written.
  bool raw_last_argument = false;
  // POSIX only: signals the program starts with at their default action, although this process
  // ignores them (`run --postgres` ignores SIGINT and SIGQUIT while the command runs). Others keep
  // this process's dispositions, as exec leaves them.
  std::vector<int> default_signals = {};
  // Variables the program gets in its environment besides this process's, as NAME and value (in
  // UTF-8), replacing any of the same name.
  std::vector<std::pair<std::string, std::string>> environment = {};
};

// A command started by start_command(), for wait_command(): its process id on POSIX, its process
// handle on Windows.
using command_process = std::intptr_t;

// How the command ended.
struct command_status {
  int exit_code = 0;  // Its exit status, or 128 + N if signal N ended it (as shells report it).
  int signal = 0;     // The signal that ended it; 0 if it exited (always on Windows).
};

// Whether a started command can share the lock through an inherited descriptor: true on POSIX.
// False on Windows, where a LockFileEx lock belongs to the process that took it, so the lock
// stays with this process until the command ends, as with `-o`.
bool command_can_inherit_lock();

// Starts `command` with this process's environment (and command_line::environment), working
// directory and standard streams. If `inherited` is a descriptor (>= 0; POSIX only), the program
// gets a copy of it that stays open across exec, so it shares the open file (and the lock held
// through it); this process opens and closes no descriptor meanwhile (which would drop classic
// fcntl locks). On Windows the arguments are joined into one UTF-16 command line that
// CommandLineToArgvW and the C runtime split back into the same arguments. As with execvp, a file
// that the kernel cannot execute (a script without a #! line) runs with /bin/sh (POSIX). Throws
// std::system_error (with the error of exec or CreateProcessW, such as ENOENT or
// ERROR_FILE_NOT_FOUND) naming the program if it cannot be started.
command_process start_command(const command_line& command, std::intptr_t inherited);

// Whether exec_command() works here: true on POSIX; false on Windows, which cannot replace a
// process by another.
bool command_can_replace_process();

// Replaces this process by `command` (flock(1)'s --no-fork), which execvp finds and starts (a
// file without a #! line with /bin/sh). If `inherited` is a descriptor (>= 0; POSIX only), that
// very descriptor stays open across exec, so the program holds the lock held through it. Returns
// only by throwing: std::system_error (with exec's error) naming the program if it cannot be
// started, std::errc::function_not_supported on Windows.
void exec_command(const command_line& command, std::intptr_t inherited);

// Waits until the command from start_command() ends, whatever signals arrive meanwhile. On Windows
// Ctrl+C and Ctrl+Break, which reach the command too, do not end this process while it waits; the
// exit status is the command's exit code as it is (a 32-bit value, such as 0xC0000005 for a
// crash).
command_status wait_command(command_process process);

// Waits until the command from start_command() has ended, whatever signals arrive meanwhile,
// without collecting it: its process id (its handle on Windows) names it until wait_command().
void await_command_end(command_process process);

// Asks the command from start_command(), not collected by wait_command() yet, to end: SIGTERM on
// POSIX, TerminateProcess (exit code 143) on Windows. Any thread may call it.
void terminate_command(command_process process) noexcept;

// How `-c COMMAND` runs: $SHELL -c COMMAND (/bin/sh when SHELL is unset or empty), as flock(1)
// does; on Windows %COMSPEC% /d /s /c "COMMAND" (cmd.exe when COMSPEC is unset), with COMMAND as
// written.
command_line shell_command(const std::string& command);

// While one lives, SIGINT and SIGQUIT do not end this process (as system(3) does while its
// command runs; made before the command starts, so that none comes between), so that a Ctrl+C at
// the terminal, which reaches the command as well, does not end the session, and the lock, before
// the command has ended. Does nothing on Windows, where wait_command() sees to Ctrl+C.
class interrupts_ignored {
 public:
  interrupts_ignored();
  ~interrupts_ignored();
  interrupts_ignored(const interrupts_ignored&) = delete;
  interrupts_ignored& operator=(const interrupts_ignored&) = delete;

  // The signals ignored here that were not before: the command must start with them at their
  // default action (command_line::default_signals).
  std::vector<int> ignored_here() const;

 private:
  struct saved;
  std::unique_ptr<saved> saved_;
};

}  // namespace fasteners::tool
