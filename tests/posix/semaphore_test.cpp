// Tests of fasteners::interprocess_semaphore that need POSIX: at most N among processes and
// threads (counted in shared memory), fairness, CPU while waiting, fork, permissions.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "fasteners/holders.hpp"
#include "fasteners/interprocess_semaphore.hpp"
#include "posix/posix_support.hpp"
#include "posix/semaphore_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;
using fasteners::interprocess_semaphore;

// Helper "sem_churn PATH N SHM SECONDS THREADS": THREADS threads take a slot, stay inside for a
// moment, give it back, again and again for SECONDS; each counts itself in SHM while inside.
FASTENERS_TEST_HELPER(sem_churn) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  return churn(sem, path_of(args.at(2)), std::stod(args.at(3)), std::stoi(args.at(4)));
}

// Helper "sem_fair PATH N SECONDS": takes a slot, holds it 10 ms, gives it back, in a loop for
// SECONDS; prints the longest time it went without a slot, in milliseconds, and how many it got.
FASTENERS_TEST_HELPER(sem_fair) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  const auto start = steady::now();
  const auto end = start + std::chrono::duration<double>(std::stod(args.at(2)));
  auto last = start;
  double longest_ms = 0;
  long grants = 0;
  while (steady::now() < end) {
    sem.acquire();
    const auto now = steady::now();
    longest_ms =
        std::max(longest_ms, std::chrono::duration<double, std::milli>(now - last).count());
    ++grants;
    std::this_thread::sleep_for(10ms);
    last = steady::now();
    sem.release();
  }
  std::cout << longest_ms << " " << grants << std::endl;
  return 0;
}

// Helper "sem_wait_cpu PATH N": prints "waiting", waits for a slot, then prints the CPU seconds
// and the wall seconds the wait took.
FASTENERS_TEST_HELPER(sem_wait_cpu) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  return wait_reporting_cpu(sem);
}

class semaphore_test : public lock_test {
 protected:
  fs::path sem_path() const { return dir() / "sem"; }
};

TEST_F(semaphore_test, at_most_n_holders_among_processes_and_threads_and_n_is_reached) {
  const fs::path shm_path = dir() / "shm";
  shared_memory shm(shm_path, true);
  std::vector<child_process> churners;
  for (int i = 0; i < 8; ++i) {
    churners.push_back(
        spawn_helper("sem_churn", {arg_of(sem_path()), "3", arg_of(shm_path), "3", "2"}));
  }
  for (auto& child : churners) EXPECT_EQ(child.finish(), 0);
  EXPECT_EQ(shm->inside.load(), 0);
  EXPECT_EQ(shm->most.load(), 3) << "more than 3 holders at once, or never 3";
  EXPECT_GT(shm->entries.load(), 100);
  std::cout << "entries: " << shm->entries.load() << "\n";
}

TEST_F(semaphore_test, waiters_are_served_roughly_in_arrival_order) {
  std::vector<child_process> loops;
  for (int i = 0; i < 8; ++i)
    loops.push_back(spawn_helper("sem_fair", {arg_of(sem_path()), "2", "10"}));
  for (auto& child : loops) {
    const auto line = child.read_line(60s);
    ASSERT_TRUE(line.has_value());
    double longest_ms = 0;
    long grants = 0;
    ASSERT_EQ(std::sscanf(line->c_str(), "%lf %ld", &longest_ms, &grants), 2) << *line;
    std::cout << "process " << child.id() << ": longest without a slot " << longest_ms << " ms, "
              << grants << " slots\n";
    EXPECT_LT(longest_ms, 1000) << "a process went a second without a slot";
    EXPECT_EQ(child.finish(), 0);
  }
}

// Helper "sem_crowd PATH N SECONDS THREADS": THREADS threads each take a slot, hold it 10 ms and
// give it back, in a loop for SECONDS.
FASTENERS_TEST_HELPER(sem_crowd) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  const auto end = steady::now() + std::chrono::duration<double>(std::stod(args.at(2)));
  std::vector<std::thread> pool;
  for (int t = 0; t < std::stoi(args.at(3)); ++t) {
    pool.emplace_back([&] {
      while (steady::now() < end) {
        sem.acquire();
        std::this_thread::sleep_for(10ms);
        sem.release();
      }
    });
  }
  for (auto& thread : pool) thread.join();
  return 0;
}

TEST_F(semaphore_test, a_crowded_process_does_not_starve_a_lone_waiter) {
  child_process crowd = spawn_helper("sem_crowd", {arg_of(sem_path()), "2", "6", "8"});
  child_process lone = spawn_helper("sem_fair", {arg_of(sem_path()), "2", "5"});
  const auto line = lone.read_line(60s);
  ASSERT_TRUE(line.has_value());
  double longest_ms = 0;
  long grants = 0;
  ASSERT_EQ(std::sscanf(line->c_str(), "%lf %ld", &longest_ms, &grants), 2) << *line;
  std::cout << "the lone waiter: longest without a slot " << longest_ms << " ms, " << grants
            << " slots\n";
  EXPECT_LT(longest_ms, 1000) << "a process with many waiting threads starved another";
  EXPECT_EQ(lone.finish(), 0);
  EXPECT_EQ(crowd.finish(), 0);
}

TEST_F(semaphore_test, a_waiter_uses_little_cpu) {
  child_process holder = hold_slots_in_child(sem_path(), 2, 2);
  child_process waiter = spawn_helper("sem_wait_cpu", {arg_of(sem_path()), "2"});
  ASSERT_EQ(waiter.read_line(), std::optional<std::string>("waiting"));
  expect_a_cheap_wait(holder, waiter, 0.02);
}

TEST_F(semaphore_test, a_forked_child_inherits_no_slot) {
  interprocess_semaphore sem(sem_path(), 1);
  ASSERT_TRUE(sem.try_acquire());
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 0;
    if (sem.held() != 0) code = 31;
    try {
      sem.release();
      code = 32;
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::operation_not_permitted) code = 33;
    }
    if (code == 0 && sem.try_acquire()) code = 34;  // The parent holds the one slot.
    ::_exit(code);
  }
  ASSERT_GT(pid, 0);
  EXPECT_EQ(wait_for_pid(pid), 0);
  EXPECT_EQ(sem.held(), 1u);
  // The child's exit (and its closing of what it inherited) left the parent's slot held.
  EXPECT_EQ(run_helper("sem_expect_busy", {arg_of(sem_path()), "1"}), k_busy);
  sem.release();
  EXPECT_EQ(run_helper("sem_expect_busy", {arg_of(sem_path()), "1"}), k_acquired);
}

// Helper "sem_expect_busy PATH N": k_acquired if a try takes a slot, k_busy if not.
FASTENERS_TEST_HELPER(sem_expect_busy) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  return sem.try_acquire() ? k_acquired : k_busy;
}

TEST_F(semaphore_test, holders_name_each_slot_and_the_waiters) {
  child_process holder = hold_slots_in_child(sem_path(), 3, 3);
  interprocess_semaphore sem(sem_path(), 3);
  std::thread waiter([&] {
    if (sem.try_acquire_for(k_long)) sem.release();
  });
  std::vector<std::size_t> slots;
  bool first_in_line = false;
  const auto deadline = steady::now() + k_long;
  while (!first_in_line && steady::now() < deadline) {
    slots.clear();
    for (const auto& h : fasteners::holders(sem_path())) {
      if (const auto slot = fasteners::semaphore_slot(h)) {
        EXPECT_EQ(h.pid, holder.id());
        slots.push_back(*slot);
      }
      if (fasteners::semaphore_waiter(h)) {
        EXPECT_EQ(h.pid, ::getpid());
        first_in_line = true;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  std::sort(slots.begin(), slots.end());
  EXPECT_EQ(slots, (std::vector<std::size_t>{0, 1, 2}));
  EXPECT_TRUE(first_in_line) << "the waiter does not show as first in line";
  // A waiter of another process waits behind it, and shows on the line.
  child_process behind = spawn_helper("sem_wait_cpu", {arg_of(sem_path()), "3"});
  ASSERT_EQ(behind.read_line(), std::optional<std::string>("waiting"));
  bool in_line = false;
  while (!in_line && steady::now() < deadline + k_long) {
    for (const auto& h : fasteners::holders(sem_path())) {
      if (fasteners::semaphore_in_line(h) && h.pid == behind.id()) in_line = true;
    }
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(in_line) << "the second waiter does not show in line";
  EXPECT_EQ(holder.finish(), 0);
  waiter.join();
  EXPECT_TRUE(behind.read_line().has_value());
  EXPECT_EQ(behind.finish(), 0);
}

// Helper "sem_without_threads PATH": with every slot of PATH held elsewhere and this process
// forbidden to start threads (RLIMIT_NPROC 0, as an unprivileged user), an acquire that must wait
// fails with EAGAIN naming the path and holds nothing; once threads may be started again, a timed
// acquire times out as it should, no sooner.
FASTENERS_TEST_HELPER(sem_without_threads) {
  const fs::path path = path_of(args.at(0));
  interprocess_semaphore sem(path, 2);
  if (sem.try_acquire()) return fail(20, "took a slot another process holds");
  if (!forbid_threads()) return fail(2, "could not forbid threads as an unprivileged user");
  const int code = check_error_naming(
      path, [&] { sem.acquire(); }, "an acquire without threads",
      std::errc::resource_unavailable_try_again);
  if (code != 0) return code;
  if (sem.held() != 0) return fail(21, "the object holds a slot after the error");
  if (!allow_threads()) return fail(2, "could not allow threads again");
  const auto start = steady::now();
  if (sem.try_acquire_for(300ms)) return fail(22, "took a slot another process holds");
  if (seconds_since(start) < 0.3) return fail(23, "the timed acquire returned early");
  return 0;
}

TEST_F(semaphore_test, an_acquire_that_cannot_start_its_wait_is_an_error) {
  child_process holder = hold_slots_in_child(sem_path(), 2, 2);
  EXPECT_EQ(run_helper("sem_without_threads", {arg_of(sem_path())}), 0)
      << "see the helper's message above";
  EXPECT_EQ(holder.finish(), 0);
}

// semaphore_slots() in a process that holds a slot reads N without opening and closing the file
// again, which would drop the process's classic fcntl locks there.
TEST_F(semaphore_test, reading_n_in_a_holding_process_keeps_its_slot) {
  interprocess_semaphore sem(sem_path(), 1);
  ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(fasteners::semaphore_slots(sem_path()), std::optional<std::size_t>(1));
  EXPECT_EQ(run_helper("sem_expect_busy", {arg_of(sem_path()), "1"}), k_busy);
  sem.release();
}

TEST_F(semaphore_test, a_read_only_file_is_refused_with_a_clear_error) {
  {
    interprocess_semaphore sem(sem_path(), 2);
    ASSERT_TRUE(sem.try_acquire());
  }
  fs::permissions(sem_path(),
                  fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  EXPECT_EQ(run_helper("sem_unprivileged_acquire", {arg_of(sem_path())}), 0);
}

// Helper "sem_unprivileged_acquire PATH": as an unprivileged user, an acquire on a read-only
// semaphore file fails with permission_denied naming the path.
FASTENERS_TEST_HELPER(sem_unprivileged_acquire) {
  drop_privileges();
  const fs::path path = path_of(args.at(0));
  interprocess_semaphore sem(path, 2);
  return check_error_naming(
      path, [&] { sem.acquire(); }, "an acquire on a read-only file", std::errc::permission_denied);
}

}  // namespace
}  // namespace fasteners_test
