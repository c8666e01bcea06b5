// Shared helpers of the tests, the generic helper processes and the tests' main().
#include "test_util.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>

extern char** environ;

namespace fasteners_test {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_helper_switch = "--fasteners-helper=";
constexpr std::size_t k_counter_width = 20;

std::map<std::string, helper_function>& helpers() {
  static std::map<std::string, helper_function> map;
  return map;
}

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

child_process::child_process(const std::vector<std::string>& argv) {
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
  const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(in[0]);
  ::close(out[1]);
  in_ = in[1];
  out_ = out[0];
  if (rc != 0) {
    ::close(in_);
    ::close(out_);
    throw std::system_error(rc, std::generic_category(), "posix_spawn " + argv[0]);
  }
}

child_process::child_process(child_process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      in_(std::exchange(other.in_, -1)),
      out_(std::exchange(other.out_, -1)),
      buffer_(std::move(other.buffer_)) {}

child_process::~child_process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (in_ >= 0) ::close(in_);
  if (out_ >= 0) ::close(out_);
}

std::optional<std::string> child_process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    const auto newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      return line;
    }
    if (out_ < 0) return std::nullopt;
    pollfd p{out_, POLLIN, 0};
    const int ready = ::poll(&p, 1, static_cast<int>(remaining(deadline).count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return std::nullopt;
    char chunk[256];
    const ssize_t n = ::read(out_, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(out_);
      out_ = -1;
      continue;
    }
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

bool child_process::write_line(const std::string& line) {
  if (in_ < 0) return false;
  const std::string data = line + "\n";
  return ::write(in_, data.data(), data.size()) == static_cast<ssize_t>(data.size());
}

void child_process::close_stdin() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

bool child_process::running() const {
  if (pid_ <= 0) return false;
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return false;
  }
  return info.si_pid == 0;
}

void child_process::kill(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

int child_process::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  const int code = wait_for_pid(std::exchange(pid_, -1), timeout);
  return code;
}

int child_process::finish(std::chrono::milliseconds timeout) {
  close_stdin();
  return wait(timeout);
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

child_process spawn_helper(const std::string& name, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {fs::read_symlink("/proc/self/exe").string(),
                                   k_helper_switch + name};
  argv.insert(argv.end(), args.begin(), args.end());
  return child_process(argv);
}

int run_helper(const std::string& name, const std::vector<std::string>& args,
               std::chrono::milliseconds timeout) {
  child_process child = spawn_helper(name, args);
  return child.finish(timeout);
}

int try_in_child(kind k, const fs::path& path) {
  return run_helper("try", {to_string(k), path.string()});
}

child_process hold_in_child(kind k, const fs::path& path) {
  child_process child = spawn_helper("hold", {to_string(k), path.string()});
  const auto line = child.read_line();
  EXPECT_EQ(line, std::optional<std::string>("held"))
      << "the helper did not report holding a " << to_string(k) << " lock on " << path;
  return child;
}

bool register_helper(const char* name, helper_function f) {
  helpers()[name] = f;
  return true;
}

int fail(int code, const std::string& message) {
  std::cerr << "helper failed (" << code << "): " << message << std::endl;
  return code;
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

std::size_t count_open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) throw_errno("opendir /proc/self/fd");
  std::size_t n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

std::vector<int> fds_referring_to(const fs::path& path) {
  struct stat want {};
  if (::stat(path.c_str(), &want) != 0) throw_errno("stat " + path.string());
  std::vector<int> fds;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    const int fd = std::atoi(entry.path().filename().c_str());
    struct stat st {};
    if (::fstat(fd, &st) == 0 && st.st_dev == want.st_dev && st.st_ino == want.st_ino) {
      fds.push_back(fd);
    }
  }
  return fds;
}

std::vector<std::string> fd_targets(pid_t pid) {
  std::vector<std::string> targets;
  std::error_code ec;
  const fs::path dir = fs::path("/proc") / std::to_string(pid) / "fd";
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::error_code link_ec;
    const fs::path target = fs::read_symlink(it->path(), link_ec);
    if (!link_ec) targets.push_back(target.string());
  }
  return targets;
}

void write_counter(const fs::path& path, long value) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw_errno("fopen " + path.string());
  std::fprintf(f, "%020ld", value);
  std::fclose(f);
}

long read_counter(const fs::path& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) throw_errno("fopen " + path.string());
  long value = -1;
  if (std::fscanf(f, "%ld", &value) != 1) value = -1;
  std::fclose(f);
  return value;
}

void increment_counter(int fd) {
  char buf[k_counter_width + 1] = {};
  if (::pread(fd, buf, k_counter_width, 0) != static_cast<ssize_t>(k_counter_width)) {
    throw_errno("pread counter");
  }
  const long value = std::strtol(buf, nullptr, 10);
  sched_yield();
  char out[k_counter_width + 1];
  std::snprintf(out, sizeof out, "%020ld", value + 1);
  if (::pwrite(fd, out, k_counter_width, 0) != static_cast<ssize_t>(k_counter_width)) {
    throw_errno("pwrite counter");
  }
}

bool run_counting_processes(kind k, const fs::path& lock, const fs::path& counter, int processes,
                            int threads, int iterations, bool shared_object) {
  std::vector<child_process> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(spawn_helper(
        "count", {to_string(k), lock.string(), counter.string(), std::to_string(threads),
                  std::to_string(iterations), shared_object ? "shared" : "own"}));
  }
  bool ok = true;
  for (auto& child : children) {
    const int code = child.finish(120s);
    EXPECT_EQ(code, 0) << "a counting process failed";
    ok = ok && code == 0;
  }
  return ok;
}

void occupancy::enter_exclusive() {
  if (writers_.fetch_add(1) != 0 || readers_.load() != 0) violated_ = true;
}

void occupancy::enter_shared() {
  const int now = readers_.fetch_add(1) + 1;
  int max = max_readers_.load();
  while (now > max && !max_readers_.compare_exchange_weak(max, now)) {
  }
  if (writers_.load() != 0) violated_ = true;
}

void latch::count_down() {
  std::lock_guard<std::mutex> guard(mutex_);
  if (count_ > 0 && --count_ == 0) cv_.notify_all();
}

bool latch::wait_for(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard(mutex_);
  return cv_.wait_for(guard, timeout, [this] { return count_ == 0; });
}

thread_holder::thread_holder(std::function<bool()> acquire, std::function<void()> release) {
  thread_ = std::thread([this, acquire = std::move(acquire), release = std::move(release)] {
    bool got = false;
    try {
      got = acquire();
    } catch (const std::exception& e) {
      std::cerr << "thread_holder: acquire threw: " << e.what() << std::endl;
    }
    std::unique_lock<std::mutex> guard(mutex_);
    state_ = got ? state::held : state::failed;
    cv_.notify_all();
    cv_.wait(guard, [this] { return state_ == state::releasing; });
    if (got) {
      guard.unlock();
      try {
        release();
      } catch (const std::exception& e) {
        std::cerr << "thread_holder: release threw: " << e.what() << std::endl;
        guard.lock();
        ok_ = false;
        return;
      }
    }
  });
}

thread_holder::~thread_holder() { release(); }

bool thread_holder::wait_held(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard(mutex_);
  cv_.wait_for(guard, timeout, [this] { return state_ != state::acquiring; });
  return state_ == state::held;
}

bool thread_holder::done_acquiring() {
  std::lock_guard<std::mutex> guard(mutex_);
  return state_ != state::acquiring;
}

bool thread_holder::release() {
  if (!thread_.joinable()) return ok_;
  {
    std::unique_lock<std::mutex> guard(mutex_);
    // A thread still waiting for its lock cannot be stopped; wait for it.
    cv_.wait(guard, [this] { return state_ != state::acquiring; });
    state_ = state::releasing;
    cv_.notify_all();
  }
  thread_.join();
  return ok_;
}

// Helper "try KIND PATH": tries once; exits k_acquired (after releasing) or k_busy.
FASTENERS_TEST_HELPER(try) {
  kind_lock lock(parse_kind(args.at(0)), args.at(1));
  if (!lock.acquire(false)) return k_busy;
  lock.release();
  return k_acquired;
}

// Helper "hold KIND PATH": takes the lock, prints "held", releases when stdin ends.
FASTENERS_TEST_HELPER(hold) {
  kind_lock lock(parse_kind(args.at(0)), args.at(1));
  if (!lock.acquire()) return fail(1, "blocking acquire returned false");
  std::cout << "held" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  lock.release();
  return 0;
}

// Helper "idle": does nothing until its stdin ends.
FASTENERS_TEST_HELPER(idle) {
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

// Helper "count KIND LOCK COUNTER THREADS ITERATIONS shared|own": see run_counting_processes.
FASTENERS_TEST_HELPER(count) {
  const kind k = parse_kind(args.at(0));
  const fs::path lock_path = args.at(1);
  const fs::path counter = args.at(2);
  const int threads = std::stoi(args.at(3));
  const int iterations = std::stoi(args.at(4));
  const bool shared = args.at(5) == "shared";
  kind_lock shared_lock(k, lock_path);
  std::mutex errors_mutex;
  int errors = 0;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      try {
        std::optional<kind_lock> own;
        if (!shared) own.emplace(k, lock_path);
        kind_lock& lock = shared ? shared_lock : *own;
        const int fd = ::open(counter.c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) throw_errno("open " + counter.string());
        for (int i = 0; i < iterations; ++i) {
          if (!lock.acquire()) throw std::runtime_error("blocking acquire returned false");
          increment_counter(fd);
          lock.release();
        }
        ::close(fd);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> guard(errors_mutex);
        ++errors;
        std::cerr << "count helper: " << e.what() << std::endl;
      }
    });
  }
  for (auto& w : workers) w.join();
  return errors == 0 ? 0 : 1;
}

}  // namespace fasteners_test

// Runs a helper when called with --fasteners-helper=NAME ARGS..., the tests otherwise.
int main(int argc, char** argv) {
  using namespace fasteners_test;
  const std::string first = argc > 1 ? argv[1] : "";
  if (first.rfind(k_helper_switch, 0) == 0) {
    const std::string name = first.substr(std::strlen(k_helper_switch));
    const auto it = helpers().find(name);
    if (it == helpers().end()) return fail(2, "no helper named " + name);
    const std::vector<std::string> args(argv + 2, argv + argc);
    try {
      return it->second(args);
    } catch (const std::exception& e) {
      return fail(k_error, "helper " + name + " threw: " + e.what());
    }
  }
  // Writing to a child that has ended must fail with EPIPE, not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
