// Tests of fasteners::interprocess_semaphore that every platform runs, with real processes: N
// slots and no more, slots of other processes, crashes, N enforced, timeouts, exclusion.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/semaphore_checks.hpp"
#include "common/test_support.hpp"
#include "fasteners/interprocess_semaphore.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;
using fasteners::interprocess_semaphore;

std::size_t to_size(const std::string& s) { return static_cast<std::size_t>(std::stoul(s)); }

// Helper "sem_expect_wrong_n PATH N": every acquire must throw invalid_argument naming the path,
// the number the file records and N.
FASTENERS_TEST_HELPER(sem_expect_wrong_n) {
  const fs::path path = path_of(args.at(0));
  interprocess_semaphore sem(path, to_size(args.at(1)));
  return expect_wrong_n(sem, [&](const std::system_error& e) {
    const std::string what = e.what();
    return names(e, path) && what.find(args.at(1)) != std::string::npos &&
           what.find(args.at(2)) != std::string::npos;
  });
}

// Helper "sem_increment PATH COUNTER TIMES": TIMES times, takes the one slot of PATH and
// increments the counter file COUNTER in place.
FASTENERS_TEST_HELPER(sem_increment) {
  interprocess_semaphore sem(path_of(args.at(0)), 1);
  counter_file counter(path_of(args.at(1)));
  const int times = std::stoi(args.at(2));
  for (int i = 0; i < times; ++i) {
    sem.acquire();
    counter.increment();
    sem.release();
  }
  return 0;
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
  child_process holder = hold_slots_in_child(sem_path(), 3, 2);
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
  child_process holder = hold_slots_in_child(sem_path(), 2, 2);
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

TEST_F(semaphore_test, one_slot_excludes_like_a_lock_among_processes) {
  const fs::path counter = dir() / "counter";
  write_counter(counter, 0);
  std::vector<child_process> children;
  for (int i = 0; i < 4; ++i) {
    children.push_back(spawn_helper("sem_increment", {arg_of(sem_path()), arg_of(counter), "300"}));
  }
  for (auto& child : children) EXPECT_EQ(child.finish(), 0);
  EXPECT_EQ(read_counter(counter), 1200) << "updates were lost: two holders of one slot met";
}

}  // namespace
}  // namespace fasteners_test
