// Running the command of `fasteners run` on POSIX: posix_spawnp, a lock descriptor handed down.
#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

extern char** environ;

namespace fasteners::tool {
namespace {

std::system_error os_error(int error, const std::string& what) {
  return std::system_error(std::error_code(error, std::system_category()), "fasteners: " + what);
}

}  // namespace

bool command_can_inherit_lock() { return true; }

command_process start_command(const command_line& command, std::intptr_t inherited) {
  const std::vector<std::string>& argv = command.argv;
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  // The command gets a copy of the descriptor, made in the new process by dup2 (so without
  // FD_CLOEXEC) at the lowest number free here, so it shares the very open file, and the lock
  // held through it. This process makes and closes no descriptor of the file: closing one would
  // drop a classic fcntl lock. posix_spawn runs no fork handlers; the library's own descriptors
  // are close-on-exec.
  posix_spawn_file_actions_t actions;
  if (const int error = ::posix_spawn_file_actions_init(&actions)) {
    throw os_error(error, "cannot start '" + argv[0] + "'");
  }
  if (inherited >= 0) {
    int target = 3;
    while (::fcntl(target, F_GETFD) != -1 || errno != EBADF) ++target;
    if (const int error =
            ::posix_spawn_file_actions_adddup2(&actions, static_cast<int>(inherited), target)) {
      ::posix_spawn_file_actions_destroy(&actions);
      throw os_error(error, "cannot hand the lock to the command");
    }
  }
  posix_spawnattr_t attributes;
  posix_spawnattr_t* attributes_used = nullptr;
  if (!command.default_signals.empty()) {
    if (const int error = ::posix_spawnattr_init(&attributes)) {
      ::posix_spawn_file_actions_destroy(&actions);
      throw os_error(error, "cannot start '" + argv[0] + "'");
    }
    attributes_used = &attributes;
    sigset_t defaults;
    sigemptyset(&defaults);
    for (const int signal : command.default_signals) sigaddset(&defaults, signal);
    ::posix_spawnattr_setsigdefault(&attributes, &defaults);
    ::posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF);
  }
  pid_t pid = 0;
  const int error = ::posix_spawnp(&pid, args[0], &actions, attributes_used, args.data(), environ);
  if (attributes_used != nullptr) ::posix_spawnattr_destroy(attributes_used);
  ::posix_spawn_file_actions_destroy(&actions);
  if (error != 0) throw os_error(error, "failed to execute '" + argv[0] + "'");
  return pid;
}

command_status wait_command(command_process process) {
  int status = 0;
  while (::waitpid(static_cast<pid_t>(process), &status, 0) < 0) {
    if (errno != EINTR) throw os_error(errno, "cannot wait for the command");
  }
  if (WIFSIGNALED(status)) return {128 + WTERMSIG(status), WTERMSIG(status)};
  return {WEXITSTATUS(status), 0};
}

command_line shell_command(const std::string& command) {
  const char* shell = std::getenv("SHELL");
  return {{shell != nullptr && *shell != '\0' ? shell : "/bin/sh", "-c", command}};
}

std::string signal_description(int signal) {
  const char* description = ::strsignal(signal);
  return description != nullptr ? description : "signal " + std::to_string(signal);
}

}  // namespace fasteners::tool
