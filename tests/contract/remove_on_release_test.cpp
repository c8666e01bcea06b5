// lock_options::remove_on_release: lock files disappear after use (where the platform deletes
// open files), and two holders never meet.
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

fasteners::lock_options removing() {
  fasteners::lock_options options;
  options.remove_on_release = true;
  return options;
}

using remove_on_release_test = lock_test;

TEST_F(remove_on_release_test, the_last_release_deletes_the_file) {
  const bool deletes = remove_on_release_deletes(dir(), kind::lock);
  fasteners::interprocess_lock lock(lock_path(), removing());
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round) + (deletes ? ", deleting" : ", not deleting"));
    ASSERT_TRUE(lock.try_lock());  // The next acquire makes a new file.
    EXPECT_TRUE(fs::exists(lock_path()));
    fasteners::interprocess_lock other(lock_path(), removing());
    EXPECT_FALSE(on_other_thread([&] { return other.try_lock(); }));
    lock.unlock();
    EXPECT_EQ(fs::exists(lock_path()), !deletes);
  }
}

TEST_F(remove_on_release_test, without_the_option_the_file_stays) {
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_TRUE(fs::exists(lock_path()));
}

TEST_F(remove_on_release_test, readers_leave_the_file_until_the_last_one_releases) {
  fasteners::interprocess_reader_writer_lock a(lock_path(), removing());
  fasteners::interprocess_reader_writer_lock b(lock_path(), removing());
  ASSERT_TRUE(a.try_lock_shared());
  std::thread([&] { ASSERT_TRUE(b.try_lock_shared()); }).join();
  a.unlock_shared();
  EXPECT_TRUE(fs::exists(lock_path()));
  b.unlock_shared();
  EXPECT_EQ(fs::exists(lock_path()), !remove_on_release_deletes(dir(), kind::read));
}

TEST_F(remove_on_release_test, a_reader_leaves_the_file_while_another_process_reads) {
  child_process other = hold_in_child(kind::read, lock_path());
  fasteners::interprocess_reader_writer_lock reader(lock_path(), removing());
  ASSERT_TRUE(reader.try_lock_shared());
  reader.unlock_shared();
  EXPECT_TRUE(fs::exists(lock_path())) << "deleted while another process held a read lock";
  EXPECT_EQ(other.finish(), 0);
}

// Helper "count_removing LOCK COUNTER ITERATIONS": increments the counter ITERATIONS times, each
// under a fresh remove_on_release lock, alternating exclusive and write locks, blocking and timed.
FASTENERS_TEST_HELPER(count_removing) {
  const fs::path lock_file = path_of(args.at(0));
  const int iterations = std::stoi(args.at(2));
  counter_file counter(path_of(args.at(1)));
  for (int i = 0; i < iterations; ++i) {
    if (i % 2 == 0) {
      fasteners::interprocess_lock lock(lock_file, removing());
      lock.lock();
      counter.increment();
      lock.unlock();
    } else {
      fasteners::interprocess_reader_writer_lock lock(lock_file, removing());
      if (!lock.try_lock_for(k_long)) return fail(3, "no write lock");
      counter.increment();
      lock.unlock();
    }
  }
  return 0;
}

// Several processes race to create, lock, delete and re-create the lock file; no update is lost,
// so no two of them ever held the lock at once, and no file is left behind where files are deleted.
TEST_F(remove_on_release_test, processes_deleting_the_file_never_hold_it_together) {
  const fs::path counter = dir() / "counter";
  write_counter(counter, 0);
  constexpr int processes = 4;
  constexpr int iterations = 300;
  std::vector<child_process> workers;
  for (int i = 0; i < processes; ++i) {
    workers.push_back(spawn_helper(
        "count_removing", {arg_of(lock_path()), arg_of(counter), std::to_string(iterations)}));
  }
  for (auto& worker : workers) EXPECT_EQ(worker.finish(), 0);
  EXPECT_EQ(read_counter(counter), processes * iterations);
  EXPECT_EQ(fs::exists(lock_path()), !remove_on_release_deletes(dir(), kind::lock));
}

}  // namespace
}  // namespace fasteners_test
