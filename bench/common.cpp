// Clocks, statistics, child processes, the waiters' protocol and the /proc/locks probe.
#include "common.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <system_error>

extern char** environ;

namespace fasteners_bench {
namespace {

std::int64_t clock_ns(clockid_t id) {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return std::int64_t{ts.tv_sec} * k_ns_per_s + ts.tv_nsec;
}

timespec to_timespec(std::int64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / k_ns_per_s);
  ts.tv_nsec = static_cast<long>(ns % k_ns_per_s);
  return ts;
}

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::system_category(), what);
}

}  // namespace

std::int64_t now_ns() { return clock_ns(CLOCK_MONOTONIC); }

std::int64_t process_cpu_ns() { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

void sleep_for_ns(std::int64_t ns) { sleep_until_ns(now_ns() + ns); }

void sleep_until_ns(std::int64_t monotonic_ns) {
  const timespec ts = to_timespec(monotonic_ns);
  while (::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

namespace {

// The value at quantile q of sorted, non-empty values, by nearest rank.
double nearest_rank(const std::vector<double>& sorted, double q) {
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(std::max<std::size_t>(rank, 1), sorted.size()) - 1];
}

}  // namespace

summary summarize(std::vector<double> values) {
  summary s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  s.count = n;
  s.min = values.front();
  s.max = values.back();
  s.median = n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
  s.p10 = nearest_rank(values, 0.10);
  s.p90 = nearest_rank(values, 0.90);
  s.p99 = nearest_rank(values, 0.99);
  s.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(n);
  return s;
}

std::vector<std::size_t> turn_order(std::size_t n, std::mt19937& rng) {
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

child_process spawn(const std::vector<std::string>& argv) {
  int to[2];
  int from[2];
  if (::pipe2(to, O_CLOEXEC) != 0) throw_errno("pipe2");
  if (::pipe2(from, O_CLOEXEC) != 0) {
    const int error = errno;
    ::close(to[0]);
    ::close(to[1]);
    throw std::system_error(error, std::system_category(), "pipe2");
  }
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  // dup2 clears close-on-exec on the copies; the originals close at exec.
  ::posix_spawn_file_actions_adddup2(&actions, to[0], STDIN_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, from[1], STDOUT_FILENO);
  std::vector<char*> args;
  for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  child_process child;
  const int error =
      ::posix_spawn(&child.pid, argv.at(0).c_str(), &actions, nullptr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::close(to[0]);
  ::close(from[1]);
  if (error != 0) {
    ::close(to[1]);
    ::close(from[0]);
    throw std::system_error(error, std::system_category(), "posix_spawn " + argv.at(0));
  }
  child.to_child = to[1];
  child.from_child = from[0];
  return child;
}

int finish(child_process& child) {
  if (child.to_child >= 0) ::close(child.to_child);
  if (child.from_child >= 0) ::close(child.from_child);
  child.to_child = child.from_child = -1;
  if (child.pid < 0) return -1;
  int status = 0;
  while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  child.pid = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void send_command(child_process& child, char command) { write_all(child.to_child, &command, 1); }

void expect_answer(child_process& child, char expected) {
  char answer = 0;
  read_all(child.from_child, &answer, 1);
  if (answer != expected) throw std::runtime_error("a child process sent an unexpected answer");
}

void abandon(child_process& child) {
  if (child.pid >= 0) ::kill(child.pid, SIGKILL);
  finish(child);
}

void write_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write to a pipe");
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void read_all(int fd, void* data, std::size_t size) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read from a pipe");
    }
    if (n == 0) throw std::runtime_error("a child process closed its pipe (did it fail?)");
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

bool capture_output(const std::vector<std::string>& argv, std::string& output) {
  if (::access(argv.at(0).c_str(), X_OK) != 0) return false;
  child_process child = spawn(argv);
  ::close(child.to_child);
  child.to_child = -1;
  output.clear();
  char buffer[512];
  for (;;) {
    const ssize_t n = ::read(child.from_child, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    output.append(buffer, static_cast<std::size_t>(n));
  }
  return finish(child) == 0;
}

void start_wait(child_process& waiter) {
  send_command(waiter, k_go);
  expect_answer(waiter, k_waiting);
}

wait_record read_handoff(child_process& waiter, const char* label) {
  wait_record record{};
  read_all(waiter.from_child, &record, sizeof record);
  if (record.acquired != 1) {
    throw std::runtime_error(std::string("the ") + label + " waiter did not get the lock");
  }
  return record;
}

void stop_child(child_process& child, const std::string& what) {
  send_command(child, k_quit);
  if (const int status = finish(child); status != 0) {
    throw std::runtime_error(what + " exited with status " + std::to_string(status));
  }
}

void handoff_samples::summarize_into(handoff_times& times) && {
  times.latency_ns = summarize(std::move(latency));
  times.release_ns = summarize(std::move(release));
  times.wall_ns = summarize(std::move(wall));
  times.cpu_ns = summarize(std::move(cpu));
}

void handoff_samples::add(std::int64_t released, std::int64_t returned, const wait_record& record) {
  latency.push_back(static_cast<double>(record.end_ns - released));
  release.push_back(static_cast<double>(returned - released));
  wall.push_back(static_cast<double>(record.end_ns - record.start_ns));
  cpu.push_back(static_cast<double>(record.cpu_ns));
}

bool waiter_blocked_in_kernel(std::uint64_t inode) {
  // Lines look like "7: -> OFDLCK ADVISORY  WRITE -1 00:2e:1234 0 EOF"; "->" marks a waiter.
  std::ifstream locks("/proc/locks");
  const std::string suffix = ":" + std::to_string(inode);
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream fields(line);
    std::string field;
    bool waiter = false;
    while (fields >> field) {
      if (field == "->") waiter = true;
      if (waiter && std::count(field.begin(), field.end(), ':') == 2 &&
          field.size() > suffix.size() &&
          field.compare(field.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace fasteners_bench
