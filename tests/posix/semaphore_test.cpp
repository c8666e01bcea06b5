// Tests of fasteners::interprocess_semaphore with real processes: at most N, crashes, N
// enforced, timeouts, fairness, CPU while waiting, fork.
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

#include "fasteners/interprocess_semaphore.hpp"
#include "posix/posix_support.hpp"
#include "posix/semaphore_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;
using fasteners::interprocess_semaphore;

// Helper "sem_hold PATH N K": takes K slots, prints "held", and gives them back when stdin ends.
FASTENERS_TEST_HELPER(sem_hold) {
  interprocess_semaphore sem(path_of(args.at(0)), to_size(args.at(1)));
  return hold_until_stdin_ends(sem, to_size(args.at(2)));
}

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

// Helper "sem_expect_wrong_n PATH N RECORDED": every acquire must throw invalid_argument naming
// the path, the number the file records and N.
FASTENERS_TEST_HELPER(sem_expect_wrong_n) {
  const fs::path path = path_of(args.at(0));
  interprocess_semaphore sem(path, to_size(args.at(1)));
  return expect_wrong_n(sem, [&](const std::system_error& e) {
    const std::string what = e.what();
    return names(e, path) && what.find(args.at(1)) != std::string::npos &&
           what.find(args.at(2)) != std::string::npos;
  });
}

class semaphore_test : public lock_test {
 protected:
  fs::path sem_path() const { return dir() / "sem"; }
};

TEST_F(semaphore_test, the_constructor_checks_its_arguments_and_touches_nothing) {
  EXPECT_THROW(interprocess_semaphore(sem_path(), 0), std::invalid_argument);
  EXPECT_THROW(interprocess_semaphore(sem_path(), 100000), std::invalid_argument);
  EXPECT_THROW(interprocess_semaphore("", 2), std::invalid_argument);
  fasteners::lock_options remove;
  remove.remove_on_release = true;
  EXPECT_THROW(interprocess_semaphore(sem_path(), 2, remove), std::invalid_argument);
  interprocess_semaphore sem(sem_path(), 2);
  EXPECT_EQ(sem.slots(), 2u);
  EXPECT_EQ(sem.held(), 0u);
  EXPECT_EQ(sem.path(), sem_path());
  EXPECT_FALSE(fs::exists(sem_path()));
}

TEST_F(semaphore_test, one_object_takes_up_to_n_slots_and_gives_them_back) {
  interprocess_semaphore sem(sem_path(), 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(sem.held(), 3u);
  EXPECT_FALSE(sem.try_acquire());
  const auto start = steady::now();
  EXPECT_FALSE(sem.try_acquire_for(k_short));
  EXPECT_GE(steady::now() - start, k_short);
  interprocess_semaphore other(sem_path(), 3);
  expect_slots_to_pass_between_objects(
      sem, other, [&](const std::system_error& e) { return names(e, sem_path()); });
  EXPECT_EQ(fasteners::semaphore_slots(sem_path()), std::optional<std::size_t>(3));
}

TEST_F(semaphore_test, slots_held_by_other_processes_count) {
  child_process holder = spawn_helper("sem_hold", {arg_of(sem_path()), "3", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
  interprocess_semaphore sem(sem_path(), 3);
  EXPECT_TRUE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire());
  EXPECT_FALSE(sem.try_acquire_for(k_short));
  // A waiter gets a slot once the other process gives one back.
  std::thread give_back([&] {
    std::this_thread::sleep_for(k_short);
    holder.close_stdin();
  });
  const auto start = steady::now();
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  EXPECT_GE(steady::now() - start, k_short);
  give_back.join();
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(sem.held(), 2u);
}

TEST_F(semaphore_test, a_killed_holder_frees_its_slots_at_once) {
  child_process holder = spawn_helper("sem_hold", {arg_of(sem_path()), "2", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
  interprocess_semaphore sem(sem_path(), 2);
  EXPECT_FALSE(sem.try_acquire());
  std::thread killer([&] {
    std::this_thread::sleep_for(k_short);
    holder.kill();
  });
  // Waits in the kernel: the kill frees both slots, and this object takes both.
  EXPECT_TRUE(sem.try_acquire_for(k_long));
  EXPECT_TRUE(sem.try_acquire_for(k_upper));
  killer.join();
  EXPECT_EQ(holder.wait(), k_killed);
  EXPECT_EQ(sem.held(), 2u);
}

TEST_F(semaphore_test, another_n_fails_at_the_first_acquire_naming_both) {
  interprocess_semaphore sem(sem_path(), 3);
  ASSERT_TRUE(sem.try_acquire());
  EXPECT_EQ(run_helper("sem_expect_wrong_n", {arg_of(sem_path()), "4", "3"}), 0);
  // In this process too, while the file is open here.
  interprocess_semaphore wrong(sem_path(), 2);
  try {
    wrong.acquire();
    ADD_FAILURE() << "an acquire with another N did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("3 slots, not 2"), std::string::npos) << e.what();
  }
  sem.release();
  EXPECT_EQ(wrong.held(), 0u);
}

TEST_F(semaphore_test, a_file_that_is_not_a_semaphore_file_is_refused) {
  std::ofstream(sem_path()) << "some content\n";
  interprocess_semaphore sem(sem_path(), 2);
  try {
    sem.acquire();
    ADD_FAILURE() << "an acquire on a file with other content did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
    EXPECT_TRUE(names(e, sem_path())) << e.what();
  }
  std::ifstream in(sem_path());
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "some content");
  EXPECT_EQ(fasteners::semaphore_slots(sem_path()), std::nullopt);
}

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

TEST_F(semaphore_test, a_waiter_uses_little_cpu) {
  child_process holder = spawn_helper("sem_hold", {arg_of(sem_path()), "2", "2"});
  ASSERT_EQ(holder.read_line(), std::optional<std::string>("held"));
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
