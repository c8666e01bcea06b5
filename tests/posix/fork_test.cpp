// Tests of fork(): a forked child neither holds nor releases its parent's locks.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>

#include "posix/posix_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

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
  const fs::path path = path_of(args.at(1));
  const fs::path stop_file = path_of(args.at(2));
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

// The number after `prefix` in `line`, or -1.
long number_after(const std::optional<std::string>& line, const std::string& prefix) {
  if (!line || line->rfind(prefix, 0) != 0) return -1;
  return std::stol(line->substr(prefix.size()));
}

class fork_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(fork_test, a_forked_child_neither_holds_nor_releases_the_parents_lock) {
  const fs::path stop_file = dir() / "stop";
  child_process parent =
      spawn_helper("fork_child", {to_string(GetParam()), arg_of(lock_path()), arg_of(stop_file)});
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
  // Released by the parent, free although the child lives on. The child's timed wait, which gave
  // up but stays queued in the kernel, may be granted first and let go at once: hence a wait.
  EXPECT_TRUE(process_alive(static_cast<pid_t>(child)));
  EXPECT_TRUE(writer.acquire(true, k_upper));
  writer.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(process_alive(static_cast<pid_t>(child)));

  std::ofstream(stop_file).put('x');
  EXPECT_EQ(parent.finish(), 0);
}

TEST_P(fork_test, the_lock_is_free_when_the_parent_dies_while_its_forked_child_lives) {
  // Become the orphaned child's new parent, to reap it.
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1L, 0L, 0L, 0L), 0);
  const fs::path stop_file = dir() / "stop";
  child_process parent =
      spawn_helper("fork_child", {to_string(GetParam()), arg_of(lock_path()), arg_of(stop_file)});
  const auto line = parent.read_line();
  const long child = number_after(line, "child-ok ");
  if (child <= 0) {
    ::prctl(PR_SET_CHILD_SUBREAPER, 0L, 0L, 0L, 0L);
    FAIL() << "the fork helper did not report a healthy child: " << line.value_or("(nothing)")
           << ", exit code " << parent.wait();
  }
  const auto child_pid = static_cast<pid_t>(child);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  parent.kill();
  EXPECT_EQ(parent.wait(), k_killed);
  EXPECT_TRUE(process_alive(child_pid));
  // Free although the child lives on (after its abandoned timed wait's grant, if it came first).
  kind_lock writer(kind::write, lock_path());
  EXPECT_TRUE(writer.acquire(true, k_upper));
  writer.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(process_alive(child_pid));

  std::ofstream(stop_file).put('x');
  EXPECT_EQ(wait_for_pid(child_pid), 0);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0L, 0L, 0L, 0L);
}

INSTANTIATE_TEST_SUITE_P(each_kind, fork_test, ::testing::ValuesIn(all_kinds), kind_name);

}  // namespace
}  // namespace fasteners_test
