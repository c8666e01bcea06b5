// Tests of fasteners::interprocess_reader_writer_lock: both sides, guards, adaptors, misuse.
#include <atomic>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

using fasteners::interprocess_reader_writer_lock;
using reader_writer_lock_test = lock_test;

// Expects `f` to throw std::system_error with operation_not_permitted.
template <class F>
void expect_not_permitted(F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted) << what << ": " << e.what();
  }
}

// Takes `n` read locks through `lock` on `n` threads that are all alive at once (so none can be
// mistaken for another), and leaves them held when the threads end.
void read_lock_on_threads(interprocess_reader_writer_lock& lock, int n) {
  latch all_acquired(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      EXPECT_TRUE(lock.acquire_read_lock());
      EXPECT_TRUE(all_acquired.arrive_and_wait_for());
    });
  }
  for (auto& t : threads) t.join();
}

TEST_F(reader_writer_lock_test, acquire_and_release_both_sides) {
  interprocess_reader_writer_lock lock(lock_path());
  EXPECT_EQ(lock.path(), lock_path());
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_TRUE(lock.acquire_read_lock());
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_FALSE(lock.write_acquired());
  lock.release_read_lock();
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(lock.acquire_write_lock(true, 10s));
  EXPECT_TRUE(lock.write_acquired());
  EXPECT_FALSE(lock.read_acquired());
  lock.release_write_lock();
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_TRUE(lock.acquire_read_lock(false));
  lock.release_read_lock();
  EXPECT_TRUE(lock.acquire_write_lock(false));
  lock.release_write_lock();
  EXPECT_TRUE(lock.acquire_read_lock(true, std::chrono::duration<double>(1.0)));
  lock.release_read_lock();
}

TEST_F(reader_writer_lock_test, one_object_holds_one_read_lock_per_thread) {
  interprocess_reader_writer_lock lock(lock_path());
  read_lock_on_threads(lock, 2);
  EXPECT_TRUE(lock.read_acquired());
  lock.release_read_lock();
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  lock.release_read_lock();
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  expect_not_permitted([&] { lock.release_read_lock(); }, "a third release_read_lock");
}

TEST_F(reader_writer_lock_test, guards_hold_until_destroyed) {
  interprocess_reader_writer_lock lock(lock_path());
  {
    fasteners::read_guard guard = lock.read_lock();
    EXPECT_TRUE(guard.owns_lock());
    EXPECT_TRUE(static_cast<bool>(guard));
    EXPECT_TRUE(lock.read_acquired());
    EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
    EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
  }
  EXPECT_FALSE(lock.read_acquired());
  {
    fasteners::write_guard guard = lock.write_lock();
    EXPECT_TRUE(guard.owns_lock());
    EXPECT_TRUE(lock.write_acquired());
    EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);
  }
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, guards_move_and_unlock_early) {
  interprocess_reader_writer_lock lock(lock_path());
  fasteners::write_guard outer = [&] {
    fasteners::write_guard inner = lock.write_lock();
    return inner;
  }();
  EXPECT_TRUE(outer.owns_lock());
  fasteners::write_guard moved(std::move(outer));
  EXPECT_FALSE(outer.owns_lock());  // NOLINT(bugprone-use-after-move): a moved guard is empty.
  EXPECT_TRUE(moved.owns_lock());
  EXPECT_TRUE(lock.write_acquired());
  moved.unlock();
  EXPECT_FALSE(moved.owns_lock());
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);

  fasteners::read_guard read = lock.read_lock();
  interprocess_reader_writer_lock other(dir() / "other");
  fasteners::read_guard other_read = other.read_lock();
  EXPECT_TRUE(other.read_acquired());
  other_read = std::move(read);  // releases the read lock on "other"
  EXPECT_FALSE(other.read_acquired());
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_TRUE(other_read.owns_lock());
  EXPECT_EQ(try_in_child(kind::write, dir() / "other"), k_acquired);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
}

TEST_F(reader_writer_lock_test, works_with_shared_lock_and_unique_lock) {
  interprocess_reader_writer_lock lock(lock_path());
  {
    std::shared_lock<interprocess_reader_writer_lock> guard(lock);
    EXPECT_TRUE(lock.read_acquired());
    EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  }
  {
    std::shared_lock<interprocess_reader_writer_lock> guard(lock, std::try_to_lock);
    EXPECT_TRUE(guard.owns_lock());
  }
  {
    std::shared_lock<interprocess_reader_writer_lock> guard(lock, k_short);
    EXPECT_TRUE(guard.owns_lock());
    guard.unlock();
    EXPECT_TRUE(guard.try_lock_until(std::chrono::system_clock::now() + 1s));
  }
  EXPECT_FALSE(lock.read_acquired());
  {
    std::unique_lock<interprocess_reader_writer_lock> guard(lock);
    EXPECT_TRUE(lock.write_acquired());
    EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);
  }
  EXPECT_FALSE(lock.write_acquired());
  {
    std::lock_guard<interprocess_reader_writer_lock> guard(lock);
    EXPECT_TRUE(lock.write_acquired());
  }
  {
    std::unique_lock<interprocess_reader_writer_lock> guard(lock, std::defer_lock);
    EXPECT_FALSE(lock.write_acquired());
    EXPECT_TRUE(guard.try_lock_for(k_short));
    EXPECT_TRUE(lock.write_acquired());
  }
  EXPECT_FALSE(lock.write_acquired());
  child_process holder = hold_in_child(kind::write, lock_path());
  {
    std::shared_lock<interprocess_reader_writer_lock> guard(lock, std::try_to_lock);
    EXPECT_FALSE(guard.owns_lock());
    const auto start = steady::now();
    EXPECT_FALSE(guard.try_lock_for(k_short));
    EXPECT_GE(steady::now() - start, k_short);
  }
  {
    std::unique_lock<interprocess_reader_writer_lock> guard(lock, std::try_to_lock);
    EXPECT_FALSE(guard.owns_lock());
  }
  EXPECT_EQ(holder.finish(), 0);
}

TEST_F(reader_writer_lock_test, release_of_a_side_not_held_throws_operation_not_permitted) {
  interprocess_reader_writer_lock lock(lock_path());
  expect_not_permitted([&] { lock.release_read_lock(); }, "release_read_lock of nothing");
  expect_not_permitted([&] { lock.release_write_lock(); }, "release_write_lock of nothing");
  ASSERT_TRUE(lock.acquire_read_lock());
  expect_not_permitted([&] { lock.release_write_lock(); }, "release_write_lock of a read lock");
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  lock.release_read_lock();
  ASSERT_TRUE(lock.acquire_write_lock());
  expect_not_permitted([&] { lock.unlock_shared(); }, "unlock_shared of a write lock");
  EXPECT_TRUE(lock.write_acquired());
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);
  lock.unlock();
  expect_not_permitted([&] { lock.unlock(); }, "a second unlock");
}

TEST_F(reader_writer_lock_test, negative_or_nan_timeouts_throw_invalid_argument) {
  interprocess_reader_writer_lock lock(lock_path());
  EXPECT_THROW(lock.acquire_read_lock(true, std::chrono::duration<double>(-0.5)),
               std::invalid_argument);
  EXPECT_THROW(lock.acquire_write_lock(true, std::chrono::duration<double>(-0.5)),
               std::invalid_argument);
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THROW(lock.acquire_read_lock(true, nan), std::invalid_argument);
  EXPECT_THROW(lock.acquire_write_lock(true, nan), std::invalid_argument);
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_FALSE(lock.write_acquired());
}

TEST_F(reader_writer_lock_test, destruction_releases_every_read_lock) {
  {
    interprocess_reader_writer_lock lock(lock_path());
    read_lock_on_threads(lock, 2);
    EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  }
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  {
    interprocess_reader_writer_lock lock(lock_path());
    lock.acquire_write_lock();
  }
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, moved_objects_keep_their_locks) {
  interprocess_reader_writer_lock lock(lock_path());
  std::thread([&] { lock.acquire_read_lock(); }).join();
  ASSERT_TRUE(lock.acquire_read_lock());
  interprocess_reader_writer_lock moved(std::move(lock));
  EXPECT_TRUE(moved.read_acquired());
  EXPECT_EQ(moved.path(), lock_path());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  moved.release_read_lock();
  moved.release_read_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);

  ASSERT_TRUE(moved.acquire_write_lock());
  interprocess_reader_writer_lock assigned(dir() / "other");
  ASSERT_TRUE(assigned.acquire_read_lock());
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.write_acquired());
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);
  EXPECT_EQ(try_in_child(kind::write, dir() / "other"), k_acquired);
  assigned.release_write_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, a_reader_releasing_keeps_the_other_readers_lock) {
  interprocess_reader_writer_lock first(lock_path());
  interprocess_reader_writer_lock second(lock_path());
  ASSERT_TRUE(first.acquire_read_lock());
  std::thread([&] { EXPECT_TRUE(second.acquire_read_lock()); }).join();
  second.release_read_lock();
  EXPECT_TRUE(first.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  first.release_read_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, a_thread_may_release_what_another_thread_acquired) {
  interprocess_reader_writer_lock lock(lock_path());
  std::thread([&] { lock.acquire_write_lock(); }).join();
  EXPECT_TRUE(lock.write_acquired());
  lock.release_write_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  lock.acquire_read_lock();
  std::thread([&] { lock.release_read_lock(); }).join();
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(lock.acquire_write_lock(true, std::chrono::duration<double>(5.0)));
  lock.release_write_lock();
}

}  // namespace
}  // namespace fasteners_test
