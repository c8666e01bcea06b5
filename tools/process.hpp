// Running the command of `fasteners run`: the platform's part (tools/posix/process.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fasteners::tool {

// How the command ended.
struct command_status {
  int exit_code = 0;  // Its exit status, or 128 + N if signal N ended it (as shells report it).
  int signal = 0;     // The signal that ended it; 0 if it exited.
};

// Starts the program `argv[0]` (searched in PATH) with the arguments `argv` and this process's
// environment and standard streams. If `inherited` is a descriptor (>= 0), the program gets a
// copy of it that stays open across exec, so it shares the open file (and the lock held through
// it); this process opens and closes no descriptor meanwhile (which would drop classic fcntl
// locks). Returns the process id. Throws std::system_error (with the error of exec, such as
// ENOENT or EACCES) naming the program if it cannot be started.
long start_command(const std::vector<std::string>& argv, std::intptr_t inherited);

// Waits until the process `pid` from start_command() ends, whatever signals arrive meanwhile.
command_status wait_command(long pid);

// The shell that runs `-c` commands: $SHELL, as flock(1) uses, or /bin/sh when it is unset.
std::string command_shell();

// A short description of a signal ("Terminated"), for messages.
std::string signal_description(int signal);

}  // namespace fasteners::tool
