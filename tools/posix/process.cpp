// Running the command of `fasteners run` on POSIX: posix_spawnp or execvp, the lock handed down.
#include "process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <system_error>

extern char** environ;

namespace fasteners::tool {
namespace {

std::system_error os_error(int error, const std::string& what) {
  return std::system_error(std::error_code(error, std::system_category()), "fasteners: " + what);
}

// argv for exec: pointers into `argv`, which must outlive them, and a null pointer.
std::vector<char*> c_arguments(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  return args;
}

// The file that execvp runs for `program`: `program` itself when it names a path (has a '/'),
// else the first executable regular file of that name in the directories of PATH (confstr's
// default path when PATH is unset; an empty entry is the working directory).
std::string program_path(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  std::string search;
  if (const char* path = std::getenv("PATH")) {
    search = path;
  } else {
    search.resize(::confstr(_CS_PATH, nullptr, 0));
    if (!search.empty()) ::confstr(_CS_PATH, search.data(), search.size());
    search = search.c_str();
  }
  std::size_t begin = 0;
  for (;;) {
    const auto end = search.find(':', begin);
    const std::string dir = search.substr(begin, end == std::string::npos ? end : end - begin);
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (end == std::string::npos) return program;
    begin = end + 1;
  }
}

// The environment for `command`: this process's, less the variables that `command.environment`
// sets, then those; pointers into `storage`, which must outlive them, and a null pointer.
std::vector<char*> environment_of(const command_line& command, std::vector<std::string>& storage) {
  std::vector<char*> out;
  if (command.environment.empty()) {
    for (char** entry = environ; *entry != nullptr; ++entry) out.push_back(*entry);
    out.push_back(nullptr);
    return out;
  }
  for (const auto& [name, value] : command.environment) storage.push_back(name + "=" + value);
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const bool replaced =
        std::any_of(command.environment.begin(), command.environment.end(), [&](const auto& v) {
          return text.size() > v.first.size() && text.compare(0, v.first.size(), v.first) == 0 &&
                 text[v.first.size()] == '=';
        });
    if (!replaced) out.push_back(*entry);
  }
  for (auto& entry : storage) out.push_back(entry.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

bool command_can_inherit_lock() { return true; }

bool command_can_replace_process() { return true; }

namespace {

// posix_spawn's file actions and attributes for `command`, destroyed with it.
class spawn_setup {
 public:
  // The command gets a copy of `inherited` (if >= 0), made in the new process by dup2 (so
  // without FD_CLOEXEC) at the lowest number free here, so it shares the very open file, and the
  // lock held through it. This process makes and closes no descriptor of the file: closing one
  // would drop a classic fcntl lock. posix_spawn runs no fork handlers; the library's own
  // descriptors are close-on-exec.
  spawn_setup(const command_line& command, std::intptr_t inherited) {
    if (const int error = ::posix_spawn_file_actions_init(&actions_)) {
      throw os_error(error, "cannot start '" + command.argv[0] + "'");
    }
    if (inherited >= 0) {
      int target = 3;
      while (::fcntl(target, F_GETFD) != -1 || errno != EBADF) ++target;
      if (const int error =
              ::posix_spawn_file_actions_adddup2(&actions_, static_cast<int>(inherited), target)) {
        ::posix_spawn_file_actions_destroy(&actions_);
        throw os_error(error, "cannot hand the lock to the command");
      }
    }
    if (command.default_signals.empty()) return;
    if (const int error = ::posix_spawnattr_init(&attributes_)) {
      ::posix_spawn_file_actions_destroy(&actions_);
      throw os_error(error, "cannot start '" + command.argv[0] + "'");
    }
    with_attributes_ = true;
    sigset_t defaults;
    sigemptyset(&defaults);
    for (const int signal : command.default_signals) sigaddset(&defaults, signal);
    ::posix_spawnattr_setsigdefault(&attributes_, &defaults);
    ::posix_spawnattr_setflags(&attributes_, POSIX_SPAWN_SETSIGDEF);
  }
  ~spawn_setup() {
    if (with_attributes_) ::posix_spawnattr_destroy(&attributes_);
    ::posix_spawn_file_actions_destroy(&actions_);
  }
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;

  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attributes() const { return with_attributes_ ? &attributes_ : nullptr; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attributes_;
  bool with_attributes_ = false;
};

}  // namespace

command_process start_command(const command_line& command, std::intptr_t inherited) {
  const std::vector<std::string>& argv = command.argv;
  const spawn_setup setup(command, inherited);
  pid_t pid = 0;
  std::vector<char*> args = c_arguments(argv);
  std::vector<std::string> storage;
  const std::vector<char*> env = environment_of(command, storage);
  int error =
      ::posix_spawnp(&pid, args[0], setup.actions(), setup.attributes(), args.data(), env.data());
  if (error == ENOEXEC) {
    // As execvp: a file that the kernel cannot execute (a script without a #! line) is a script
    // for /bin/sh.
    std::vector<std::string> shell_argv{"/bin/sh", program_path(argv[0])};
    shell_argv.insert(shell_argv.end(), argv.begin() + 1, argv.end());
    args = c_arguments(shell_argv);
    error =
        ::posix_spawn(&pid, args[0], setup.actions(), setup.attributes(), args.data(), env.data());
  }
  if (error != 0) throw os_error(error, "failed to execute '" + argv[0] + "'");
  return pid;
}

void exec_command(const command_line& command, std::intptr_t inherited) {
  const std::vector<std::string>& argv = command.argv;
  if (inherited >= 0) {
    // The very descriptor stays open, not a copy: closing a descriptor of the file, as exec does
    // with close-on-exec ones, would drop a classic fcntl lock.
    const int fd = static_cast<int>(inherited);
    const int flags = ::fcntl(fd, F_GETFD);
    if (flags == -1 || ::fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC) == -1) {
      throw os_error(errno, "cannot hand the lock to the command");
    }
  }
  for (const int signal : command.default_signals) ::signal(signal, SIG_DFL);
  // This process is about to become the command: its own environment is the command's.
  for (const auto& [name, value] : command.environment) {
    if (::setenv(name.c_str(), value.c_str(), 1) != 0) {
      throw os_error(errno, "cannot set " + name + " for '" + argv[0] + "'");
    }
  }
  std::vector<char*> args = c_arguments(argv);
  ::execvp(args[0], args.data());  // Runs a file without a #! line with /bin/sh.
  throw os_error(errno, "failed to execute '" + argv[0] + "'");
}

void await_command_end(command_process process) {
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(process), &info, WEXITED | WNOWAIT) < 0) {
    if (errno != EINTR) throw os_error(errno, "cannot wait for the command");
  }
}

void terminate_command(command_process process) noexcept {
  ::kill(static_cast<pid_t>(process), SIGTERM);
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

struct interrupts_ignored::saved {
  struct sigaction interrupt {};
  struct sigaction quit {};
};

interrupts_ignored::interrupts_ignored() : saved_(std::make_unique<saved>()) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGINT, &ignore, &saved_->interrupt);
  ::sigaction(SIGQUIT, &ignore, &saved_->quit);
}

interrupts_ignored::~interrupts_ignored() {
  ::sigaction(SIGINT, &saved_->interrupt, nullptr);
  ::sigaction(SIGQUIT, &saved_->quit, nullptr);
}

std::vector<int> interrupts_ignored::ignored_here() const {
  std::vector<int> out;
  if (saved_->interrupt.sa_handler != SIG_IGN) out.push_back(SIGINT);
  if (saved_->quit.sa_handler != SIG_IGN) out.push_back(SIGQUIT);
  return out;
}

}  // namespace fasteners::tool
