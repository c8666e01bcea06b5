// lock_options::remove_on_release: lock files disappear after use, and two holders never meet.
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"
#include "test_util.hpp"

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
  fasteners::interprocess_lock lock(lock_path(), removing());
  ASSERT_TRUE(lock.try_lock());
  EXPECT_TRUE(fs::exists(lock_path()));
  lock.unlock();
  EXPECT_FALSE(fs::exists(lock_path()));
  ASSERT_TRUE(lock.try_lock());  // And the next acquire makes a new one.
  EXPECT_TRUE(fs::exists(lock_path()));
  lock.unlock();
  EXPECT_FALSE(fs::exists(lock_path()));
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
  EXPECT_FALSE(fs::exists(lock_path()));
}

TEST_F(remove_on_release_test, a_reader_leaves_the_file_while_another_process_reads) {
  child_process other = hold_in_child(kind::read, lock_path());
  fasteners::interprocess_reader_writer_lock reader(lock_path(), removing());
  ASSERT_TRUE(reader.try_lock_shared());
  reader.unlock_shared();
  EXPECT_TRUE(fs::exists(lock_path())) << "deleted while another process held a read lock";
  EXPECT_EQ(other.finish(), 0);
}

TEST_F(remove_on_release_test, a_symlink_at_the_path_is_never_deleted) {
  const fs::path target = dir() / "target";
  fs::create_symlink(target, lock_path());
  fasteners::interprocess_lock lock(lock_path(), removing());
  ASSERT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_TRUE(fs::is_symlink(lock_path()));
  EXPECT_TRUE(fs::exists(target));
}

// Helper "count_removing LOCK COUNTER ITERATIONS": increments the counter ITERATIONS times, each
// under a fresh remove_on_release lock, alternating exclusive and write locks, blocking and timed.
FASTENERS_TEST_HELPER(count_removing) {
  const fs::path lock_file = args.at(0);
  const int iterations = std::stoi(args.at(2));
  const int fd = ::open(args.at(1).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail(2, "cannot open the counter");
  for (int i = 0; i < iterations; ++i) {
    if (i % 2 == 0) {
      fasteners::interprocess_lock lock(lock_file, removing());
      lock.lock();
      increment_counter(fd);
      lock.unlock();
    } else {
      fasteners::interprocess_reader_writer_lock lock(lock_file, removing());
      if (!lock.try_lock_for(k_long)) return fail(3, "no write lock");
      increment_counter(fd);
      lock.unlock();
    }
  }
  ::close(fd);
  return 0;
}

// Several processes race to create, lock, delete and re-create the lock file; no update is lost,
// so no two of them ever held the lock at once, and no file is left behind.
TEST_F(remove_on_release_test, processes_deleting_the_file_never_hold_it_together) {
  const fs::path counter = dir() / "counter";
  write_counter(counter, 0);
  constexpr int processes = 4;
  constexpr int iterations = 300;
  std::vector<child_process> workers;
  for (int i = 0; i < processes; ++i) {
    workers.push_back(spawn_helper(
        "count_removing", {lock_path().string(), counter.string(), std::to_string(iterations)}));
  }
  for (auto& worker : workers) EXPECT_EQ(worker.finish(), 0);
  EXPECT_EQ(read_counter(counter), processes * iterations);
  EXPECT_FALSE(fs::exists(lock_path()));
}

}  // namespace
}  // namespace fasteners_test
