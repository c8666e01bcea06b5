// The POSIX mechanics of the test support (common/test_support.hpp, posix_support.hpp): temp
// directories, helper processes through posix_spawn and pipes, descriptors, the counter file.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <system_error>
#include <utility>

#include "posix/posix_support.hpp"

extern char** environ;

namespace fasteners_test {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t k_counter_width = 20;

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Moves a new descriptor above the standard ones, so dup2 onto 0 or 1 always makes a copy.
int above_stdio(int fd) {
  if (fd > 2) return fd;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  ::close(fd);
  return moved;
}

std::chrono::milliseconds remaining(steady::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now());
  return left.count() > 0 ? left : 0ms;
}

int fd_of(std::intptr_t handle) { return static_cast<int>(handle); }

}  // namespace

temp_dir::temp_dir() {
  std::string pattern = (fs::temp_directory_path() / "fasteners_test_XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw_errno("mkdtemp " + pattern);
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  // Tests may leave directories without write permission behind.
  for (auto it = fs::recursive_directory_iterator(path_, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    }
  }
  fs::remove_all(path_, ec);
}

struct child_process::state {
  pid_t pid = -1;
  int in = -1;   // writes to the child's stdin
  int out = -1;  // reads the child's stdout
};

child_process::child_process(const std::vector<std::string>& argv) : state_(new state) {
  int in[2];
  int out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw_errno("pipe2");
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno("pipe2");
  for (int* fd : {&in[0], &in[1], &out[0], &out[1]}) *fd = above_stdio(*fd);

  std::vector<char*> args;
  std::vector<std::string> copy = argv;
  for (auto& arg : copy) args.push_back(arg.data());
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  const int rc = ::posix_spawn(&state_->pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  state_->in = in[1];
  state_->out = out[0];
  if (rc != 0) {
    state_->pid = -1;
    throw std::system_error(rc, std::generic_category(), "posix_spawn " + argv[0]);
  }
}

child_process::~child_process() {
  if (!state_) return;
  if (state_->pid > 0) {
    ::kill(state_->pid, SIGKILL);
    int status = 0;
    while (::waitpid(state_->pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (state_->in >= 0) ::close(state_->in);
  if (state_->out >= 0) ::close(state_->out);
}

child_process::child_process(child_process&& other) noexcept = default;

int child_process::id() const noexcept { return state_->pid; }

bool child_process::read_output(steady::time_point deadline) {
  while (state_->out >= 0) {
    pollfd p{state_->out, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(remaining(deadline).count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    char chunk[256];
    const ssize_t n = ::read(state_->out, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      output_.append(chunk, static_cast<std::size_t>(n));
      return true;
    }
    ::close(state_->out);  // The child closed its stdout.
    state_->out = -1;
  }
  return false;
}

bool child_process::write_line(const std::string& line) {
  if (state_->in < 0) return false;
  const std::string data = line + "\n";
  return ::write(state_->in, data.data(), data.size()) == static_cast<ssize_t>(data.size());
}

void child_process::close_stdin() {
  if (state_->in >= 0) ::close(state_->in);
  state_->in = -1;
}

bool child_process::running() const {
  if (state_->pid <= 0) return false;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(state_->pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == 0;
}

void child_process::kill() {
  if (state_->pid > 0) ::kill(state_->pid, SIGKILL);
}

int child_process::wait(std::chrono::milliseconds timeout) {
  if (state_->pid <= 0) return -1;
  return wait_for_pid(std::exchange(state_->pid, -1), timeout);
}

int wait_for_pid(pid_t pid, std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return exit_code_of(status);
    if (r < 0 && errno != EINTR) return -1;
    if (steady::now() >= deadline) {
      std::cerr << "process " << pid << " did not end within " << timeout.count()
                << " ms; killing it\n";
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return -1;
    }
    std::this_thread::sleep_for(1ms);
  }
}

bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  // The state follows the command name, which is in parentheses and may hold spaces.
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  const char state = line[close + 2];
  return state != 'Z' && state != 'X' && state != 'x';
}

bool drop_privileges() {
  constexpr uid_t nobody = 65534;
  if (::geteuid() == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0) {
      return false;
    }
    // Dropping privileges makes a process undumpable; sanitizers need to inspect themselves.
    ::prctl(PR_SET_DUMPABLE, 1L, 0L, 0L, 0L);
  }
  return ::geteuid() != 0 && ::getegid() != 0;
}

namespace {
rlimit thread_limit{};  // The limit before forbid_threads().
}  // namespace

bool forbid_threads() {
  if (!drop_privileges() || ::getrlimit(RLIMIT_NPROC, &thread_limit) != 0) return false;
  const rlimit none{0, thread_limit.rlim_max};
  return ::setrlimit(RLIMIT_NPROC, &none) == 0;
}

bool allow_threads() { return ::setrlimit(RLIMIT_NPROC, &thread_limit) == 0; }

std::size_t count_open_handles() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) throw_errno("opendir /proc/self/fd");
  std::size_t n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

std::vector<std::intptr_t> handles_referring_to(const fs::path& path) {
  const auto want = file_identity(path);
  std::vector<std::intptr_t> fds;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(entry.path().filename().c_str());
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_dev == want.first && st.st_ino == want.second) {
      fds.push_back(fd);
    }
  }
  return fds;
}

bool inherited_by_children(std::intptr_t handle) {
  const int flags = ::fcntl(fd_of(handle), F_GETFD);
  if (flags < 0) throw_errno("fcntl(F_GETFD)");
  return (flags & FD_CLOEXEC) == 0;
}

std::pair<std::uint64_t, std::uint64_t> file_identity(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("stat " + path.string());
  return {st.st_dev, st.st_ino};
}

fs::path null_device() { return "/dev/null"; }

bool is_character_device(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISCHR(st.st_mode);
}

bool remove_on_release_deletes(const fs::path&, kind) { return true; }

counter_file::counter_file(const fs::path& path)
    : handle_(::open(path.c_str(), O_RDWR | O_CLOEXEC)) {
  if (handle_ < 0) throw_errno("open " + path.string());
}

counter_file::~counter_file() { ::close(fd_of(handle_)); }

void counter_file::increment() {
  char buf[k_counter_width + 1] = {};
  if (::pread(fd_of(handle_), buf, k_counter_width, 0) != static_cast<ssize_t>(k_counter_width)) {
    throw_errno("pread counter");
  }
  const long value = std::strtol(buf, nullptr, 10);
  sched_yield();
  char out[k_counter_width + 1];
  std::snprintf(out, sizeof out, "%020ld", value + 1);
  if (::pwrite(fd_of(handle_), out, k_counter_width, 0) != static_cast<ssize_t>(k_counter_width)) {
    throw_errno("pwrite counter");
  }
}

std::vector<std::string> command_line(int argc, char** argv) {
  return std::vector<std::string>(argv, argv + argc);
}

void prepare_test_process() {
  // Writing to a child that has ended must fail with EPIPE, not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
}

std::string this_program() { return fs::read_symlink("/proc/self/exe").string(); }

}  // namespace fasteners_test
