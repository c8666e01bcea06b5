// Tests of the locks' process life cycle: killed holders, fork, close-on-exec, signals during
// waits.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"
#include "test_util.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

volatile std::sig_atomic_t g_signals = 0;

extern "C" void count_signal(int) { g_signals = g_signals + 1; }

// Waits until `file` exists, at most a minute (so a forked child never outlives a broken test).
void wait_for_file(const fs::path& file) {
  const auto deadline = steady::now() + 60s;
  while (!fs::exists(file) && steady::now() < deadline) std::this_thread::sleep_for(5ms);
}

// The checks a forked child runs on its copy of the parent's lock; returns 0 or a failure code.
int check_forked_copy(kind_lock& lock, kind k, const fs::path& path) {
  if (lock.held()) return fail(31, "the forked child's copy says it is acquired");
  try {
    lock.release();
    return fail(32, "release in the forked child did not throw");
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::operation_not_permitted) {
      return fail(33, std::string("release in the forked child threw ") + e.what());
    }
  }
  // The parent still holds the lock: the child's copy gets what a stranger would get.
  const bool got = lock.acquire(false);
  if (got == conflicts(k, k)) return fail(34, "a try in the forked child gave the wrong answer");
  if (got) lock.release();
  if (conflicts(k, k)) {
    // This thread holds nothing in the child, so a timed wait times out instead of throwing.
    if (lock.acquire(true, std::chrono::duration<double>(0.1))) {
      return fail(35, "a timed acquire in the forked child took the parent's lock");
    }
  }
  kind_lock writer(kind::write, path);
  if (writer.acquire(false)) return fail(36, "a new object in the forked child took the lock");
  return 0;
}

// Helper "fork_child KIND PATH STOP_FILE": takes the lock, forks a child that checks its copy
// (see check_forked_copy) and then lives until STOP_FILE exists; prints "child-ok PID". Then
// releases the lock on the line "release" (printing "released"), and ends with stdin.
FASTENERS_TEST_HELPER(fork_child) {
  const kind k = parse_kind(args.at(0));
  const fs::path path = args.at(1);
  const fs::path stop_file = args.at(2);
  kind_lock lock(k, path);
  if (!lock.acquire()) return fail(1, "acquire returned false");
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return fail(2, "pipe2 failed");
  std::cout.flush();
  const pid_t child = ::fork();
  if (child < 0) return fail(2, "fork failed");
  if (child == 0) {
    ::close(report[0]);
    int code = k_error;
    try {
      code = check_forked_copy(lock, k, path);
    } catch (const std::exception& e) {
      fail(k_error, std::string("the forked child's checks threw ") + e.what());
    }
    const char byte = static_cast<char>(code);
    if (::write(report[1], &byte, 1) != 1) ::_exit(37);
    ::close(report[1]);
    // Leave the test's pipes to the parent, then live on until told to stop.
    const int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    if (code == 0) wait_for_file(stop_file);
    ::_exit(code);
  }
  ::close(report[1]);
  char byte = 99;
  const bool reported = ::read(report[0], &byte, 1) == 1;
  ::close(report[0]);
  if (!reported || byte != 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    return fail(reported ? byte : 38, "the forked child's checks failed");
  }
  std::cout << "child-ok " << child << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "release") {
      lock.release();
      std::cout << "released" << std::endl;
    }
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 39;
}

// Helper "wait_through_signals KIND PATH restart|norestart none|acquire|until SECONDS": installs
// a SIGUSR1 handler (with or without SA_RESTART), prints "ready", then waits for the lock: as
// long as needed ("none"), or at most SECONDS through acquire(true, timeout) or try_lock_until on
// the system clock. Prints "held N" or "timed-out N" with the number of signals it caught.
FASTENERS_TEST_HELPER(wait_through_signals) {
  const kind k = parse_kind(args.at(0));
  const bool restart = args.at(2) == "restart";
  const std::string mode = args.at(3);
  struct sigaction action {};
  action.sa_handler = count_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = restart ? SA_RESTART : 0;
  if (::sigaction(SIGUSR1, &action, nullptr) != 0) return fail(2, "sigaction failed");
  kind_lock lock(k, args.at(1));
  std::cout << "ready" << std::endl;
  if (mode == "none") {
    if (!lock.acquire()) return fail(20, "a blocking acquire returned false");
    std::cout << "held " << g_signals << std::endl;
    lock.release();
    return 0;
  }
  const double seconds = std::stod(args.at(4));
  const auto system_deadline = std::chrono::system_clock::now() +
                               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                   std::chrono::duration<double>(seconds));
  const auto start = steady::now();
  const bool got = mode == "until" ? lock.acquire_until(system_deadline)
                                   : lock.acquire(true, std::chrono::duration<double>(seconds));
  const double elapsed = seconds_since(start);
  if (got) return fail(21, "a timed wait took a lock that was held throughout");
  if (elapsed < seconds) {
    return fail(22, "a timed wait returned after " + std::to_string(elapsed) + " s");
  }
  if (mode == "until" && std::chrono::system_clock::now() < system_deadline) {
    return fail(23, "try_lock_until returned before its deadline");
  }
  std::cout << "timed-out " << g_signals << std::endl;
  return 0;
}

// The number after `prefix` in `line`, or -1.
long number_after(const std::optional<std::string>& line, const std::string& prefix) {
  if (!line || line->rfind(prefix, 0) != 0) return -1;
  return std::stol(line->substr(prefix.size()));
}

class process_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(process_test, a_killed_holder_frees_the_lock_for_a_waiter_at_once) {
  child_process holder = hold_in_child(GetParam(), lock_path());
  kind_lock waiter_lock(kind::write, lock_path());
  thread_holder waiter(waiter_lock);
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  const auto start = steady::now();
  holder.kill(SIGKILL);
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  EXPECT_TRUE(waiter.release());
}

TEST_P(process_test, a_killed_holder_frees_the_lock_for_a_waiting_process) {
  child_process holder = hold_in_child(GetParam(), lock_path());
  child_process waiter = spawn_helper("hold", {"write", lock_path().string()});
  EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt);
  holder.kill(SIGKILL);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);
  EXPECT_EQ(waiter.read_line(5s), std::optional<std::string>("held"));
  EXPECT_EQ(waiter.finish(), 0);
  kind_lock lock(kind::write, lock_path());
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(process_test, a_forked_child_neither_holds_nor_releases_the_parents_lock) {
  const fs::path stop_file = dir() / "stop";
  child_process parent =
      spawn_helper("fork_child", {to_string(GetParam()), lock_path().string(), stop_file.string()});
  const auto line = parent.read_line();
  const long child = number_after(line, "child-ok ");
  ASSERT_GT(child, 0) << "the fork helper did not report a healthy child: "
                      << line.value_or("(nothing)") << ", exit code " << parent.wait();
  // The child's failed release left the parent's lock in place.
  kind_lock writer(kind::write, lock_path());
  EXPECT_FALSE(writer.acquire(false));
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);

  ASSERT_TRUE(parent.write_line("release"));
  EXPECT_EQ(parent.read_line(), std::optional<std::string>("released"));
  // Released by the parent, free although the child lives on.
  EXPECT_TRUE(process_alive(static_cast<pid_t>(child)));
  EXPECT_TRUE(writer.acquire(false));
  writer.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(process_alive(static_cast<pid_t>(child)));

  std::ofstream(stop_file).put('x');
  EXPECT_EQ(parent.finish(), 0);
}

TEST_P(process_test, the_lock_is_free_when_the_parent_dies_while_its_forked_child_lives) {
  // Become the orphaned child's new parent, to reap it.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1L, 0L, 0L, 0L), 0);
  const fs::path stop_file = dir() / "stop";
  child_process parent =
      spawn_helper("fork_child", {to_string(GetParam()), lock_path().string(), stop_file.string()});
  const auto line = parent.read_line();
  const long child = number_after(line, "child-ok ");
  if (child <= 0) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 0L, 0L, 0L, 0L);
    FAIL() << "the fork helper did not report a healthy child: " << line.value_or("(nothing)")
           << ", exit code " << parent.wait();
  }
  const auto child_pid = static_cast<pid_t>(child);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  parent.kill(SIGKILL);
  EXPECT_EQ(parent.wait(), 128 + SIGKILL);
  EXPECT_TRUE(process_alive(child_pid));
  kind_lock writer(kind::write, lock_path());
  EXPECT_TRUE(writer.acquire(false));
  writer.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(process_alive(child_pid));

  std::ofstream(stop_file).put('x');
  EXPECT_EQ(wait_for_pid(child_pid), 0);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0L, 0L, 0L, 0L);
}

TEST_P(process_test, lock_files_are_opened_close_on_exec) {
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  const auto fds = fds_referring_to(lock_path());
  EXPECT_FALSE(fds.empty()) << "no descriptor of the lock file is open while it is held";
  for (const int fd : fds) {
    const int flags = ::fcntl(fd, F_GETFD);
    EXPECT_NE(flags, -1);
    EXPECT_TRUE(flags & FD_CLOEXEC) << "descriptor " << fd << " is not close-on-exec";
  }

  child_process exec_child = spawn_helper("idle");
  ASSERT_EQ(exec_child.read_line(), std::optional<std::string>("ready"));
  const std::string lock_file = fs::canonical(lock_path()).string();
  for (const auto& target : fd_targets(exec_child.pid())) {
    EXPECT_NE(target, lock_file) << "an exec'd child inherited the lock file's descriptor";
  }
  // Released here, free although the exec'd child lives on.
  lock.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(exec_child.running());
  EXPECT_EQ(exec_child.finish(), 0);
}

INSTANTIATE_TEST_SUITE_P(each_kind, process_test, ::testing::ValuesIn(all_kinds), kind_name);

// Signals during waits: (waiting kind, SA_RESTART).
class signal_test : public lock_test, public ::testing::WithParamInterface<std::tuple<kind, bool>> {
 protected:
  kind waiting_kind() const { return std::get<0>(GetParam()); }
  std::string restart() const { return std::get<1>(GetParam()) ? "restart" : "norestart"; }
};

std::string signal_test_name(const ::testing::TestParamInfo<std::tuple<kind, bool>>& info) {
  return std::string(to_string(std::get<0>(info.param))) +
         (std::get<1>(info.param) ? "_sa_restart" : "_no_sa_restart");
}

TEST_P(signal_test, signals_do_not_break_a_blocking_wait) {
  kind_lock holder(kind::write, lock_path());
  ASSERT_TRUE(holder.acquire());
  child_process waiter = spawn_helper(
      "wait_through_signals", {to_string(waiting_kind()), lock_path().string(), restart(), "none"});
  ASSERT_EQ(waiter.read_line(), std::optional<std::string>("ready"));
  for (int i = 0; i < 60; ++i) {
    waiter.kill(SIGUSR1);
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(waiter.running()) << "the waiter ended while the lock was held";
  holder.release();
  const auto line = waiter.read_line();
  EXPECT_GT(number_after(line, "held "), 0) << line.value_or("(nothing)");
  EXPECT_EQ(waiter.finish(), 0);
}

TEST_P(signal_test, signals_do_not_shorten_a_timed_wait) {
  kind_lock holder(kind::write, lock_path());
  ASSERT_TRUE(holder.acquire());
  for (const char* mode : {"acquire", "until"}) {
    child_process waiter =
        spawn_helper("wait_through_signals",
                     {to_string(waiting_kind()), lock_path().string(), restart(), mode, "0.3"});
    ASSERT_EQ(waiter.read_line(), std::optional<std::string>("ready"));
    const auto deadline = steady::now() + 10s;
    while (waiter.running() && steady::now() < deadline) {
      waiter.kill(SIGUSR1);
      std::this_thread::sleep_for(5ms);
    }
    const auto line = waiter.read_line();
    EXPECT_GT(number_after(line, "timed-out "), 0) << mode << ": " << line.value_or("(nothing)");
    EXPECT_EQ(waiter.finish(), 0) << mode;
  }
  holder.release();
}

INSTANTIATE_TEST_SUITE_P(kinds_and_flags, signal_test,
                         ::testing::Combine(::testing::ValuesIn(all_kinds), ::testing::Bool()),
                         signal_test_name);

}  // namespace
}  // namespace fasteners_test
