// Tests of fasteners::interprocess_reader_writer_lock and the read/write conflict matrix.
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

constexpr int k_readers = 4;

// Expects `f` to throw std::system_error with resource_deadlock_would_occur.
template <class F>
void expect_deadlock_error(F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << what << ": " << e.what();
  }
}

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

using conflict_matrix = kind_pair_test;

// The pairs of kinds that exclude each other (all but read and read).
using conflicting_pairs = kind_pair_test;

TEST_P(conflict_matrix, between_objects_of_one_process) {
  kind_lock held_lock(first(), lock_path());
  kind_lock other(second(), lock_path());
  thread_holder held(held_lock);
  ASSERT_TRUE(held.wait_held());
  EXPECT_EQ(other.acquire(false), !conflict());
  if (other.held()) other.release();
  const auto start = steady::now();
  EXPECT_EQ(other.acquire(true, std::chrono::duration<double>(0.2)), !conflict());
  if (conflict()) {
    EXPECT_GE(seconds_since(start), 0.2);
    EXPECT_LT(seconds_since(start), 5.0);
  }
  if (other.held()) other.release();
  ASSERT_TRUE(held.release());
  EXPECT_TRUE(other.acquire(false));
  other.release();
}

TEST_P(conflict_matrix, child_holds_first) {
  child_process holder = hold_in_child(first(), lock_path());
  kind_lock other(second(), lock_path());
  EXPECT_EQ(other.acquire(false), !conflict());
  if (other.held()) other.release();
  if (conflict()) {
    const auto start = steady::now();
    EXPECT_FALSE(other.acquire(true, std::chrono::duration<double>(0.2)));
    EXPECT_GE(seconds_since(start), 0.2);
    EXPECT_LT(seconds_since(start), 5.0);
  }
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(other.acquire(false));
  other.release();
}

TEST_P(conflict_matrix, this_process_holds_first) {
  kind_lock held(first(), lock_path());
  ASSERT_TRUE(held.acquire());
  EXPECT_EQ(try_in_child(second(), lock_path()), conflict() ? k_busy : k_acquired);
  held.release();
  EXPECT_EQ(try_in_child(second(), lock_path()), k_acquired);
}

TEST_P(conflict_matrix, holding_thread_gets_deadlock_error_instead_of_waiting) {
  kind_lock held(first(), lock_path());
  kind_lock other(second(), lock_path());
  ASSERT_TRUE(held.acquire());
  expect_deadlock_error([&] { other.acquire(); }, "a blocking acquire");
  expect_deadlock_error([&] { other.acquire(true, std::chrono::duration<double>(0.2)); },
                        "a timed acquire");
  EXPECT_FALSE(other.acquire(false));
  if (other.held()) other.release();
  EXPECT_TRUE(held.held());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  held.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_P(conflicting_pairs, waiter_in_another_process_gets_the_lock_after_release) {
  kind_lock held(first(), lock_path());
  ASSERT_TRUE(held.acquire());
  child_process waiter = spawn_helper("hold", {to_string(second()), arg_of(lock_path())});
  EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt);
  held.release();
  EXPECT_EQ(waiter.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(waiter.finish(), 0);
}

TEST_P(conflicting_pairs, a_blocking_waiter_gets_the_lock_another_thread_releases) {
  kind_lock held_lock(first(), lock_path());
  thread_holder held(held_lock);
  ASSERT_TRUE(held.wait_held());
  kind_lock waiting_lock(second(), lock_path());
  thread_holder waiter(waiting_lock);
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  ASSERT_TRUE(held.release());
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  EXPECT_TRUE(waiter.release());
}

TEST_P(conflicting_pairs, a_blocking_waiter_gets_the_lock_another_process_releases) {
  child_process holder = hold_in_child(first(), lock_path());
  kind_lock waiting_lock(second(), lock_path());
  thread_holder waiter(waiting_lock);
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_TRUE(waiter.release());
}

TEST_P(conflicting_pairs, a_timed_waiter_gets_the_lock_another_thread_releases_in_time) {
  kind_lock held_lock(first(), lock_path());
  thread_holder held(held_lock);
  ASSERT_TRUE(held.wait_held());
  std::thread releaser([&] {
    std::this_thread::sleep_for(k_short);
    EXPECT_TRUE(held.release());
  });
  kind_lock waiting(second(), lock_path());
  const auto start = steady::now();
  EXPECT_TRUE(waiting.acquire(true, k_upper));
  EXPECT_LT(seconds_since(start), 5.0);
  releaser.join();
  if (waiting.held()) waiting.release();
}

TEST_P(conflicting_pairs, a_timed_waiter_gets_the_lock_another_process_releases_in_time) {
  child_process holder = hold_in_child(first(), lock_path());
  std::thread releaser([&] {
    std::this_thread::sleep_for(k_short);
    EXPECT_EQ(holder.finish(), 0);
  });
  kind_lock waiting(second(), lock_path());
  const auto start = steady::now();
  EXPECT_TRUE(waiting.acquire(true, k_upper));
  const double took = seconds_since(start);
  EXPECT_GE(took, 0.15);
  EXPECT_LT(took, 5.0);
  releaser.join();
  if (waiting.held()) waiting.release();
}

INSTANTIATE_TEST_SUITE_P(all_pairs, conflict_matrix, ::testing::ValuesIn(all_kind_pairs()),
                         pair_name);

// Pairs of kinds that one object can take: both sides of one reader-writer lock, or two holds
// of one interprocess_lock.
using same_object_matrix = kind_pair_test;

TEST_P(same_object_matrix, between_threads_sharing_one_object) {
  interprocess_reader_writer_lock rw(lock_path());
  fasteners::interprocess_lock exclusive(lock_path());
  auto acquire = [&](kind k, bool blocking) {
    switch (k) {
      case kind::lock:
        return exclusive.acquire(blocking);
      case kind::read:
        return rw.acquire_read_lock(blocking);
      case kind::write:
        return rw.acquire_write_lock(blocking);
    }
    return false;
  };
  auto release = [&](kind k) {
    switch (k) {
      case kind::lock:
        return exclusive.release();
      case kind::read:
        return rw.release_read_lock();
      case kind::write:
        return rw.release_write_lock();
    }
  };
  thread_holder held([&] { return acquire(first(), true); }, [&] { release(first()); });
  ASSERT_TRUE(held.wait_held());
  const bool got = acquire(second(), false);
  EXPECT_EQ(got, !conflict());
  if (got) release(second());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  ASSERT_TRUE(held.release());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

INSTANTIATE_TEST_SUITE_P(same_object_pairs, same_object_matrix,
                         ::testing::Values(std::make_tuple(kind::lock, kind::lock),
                                           std::make_tuple(kind::read, kind::read),
                                           std::make_tuple(kind::read, kind::write),
                                           std::make_tuple(kind::write, kind::read),
                                           std::make_tuple(kind::write, kind::write)),
                         pair_name);

INSTANTIATE_TEST_SUITE_P(conflicting, conflicting_pairs,
                         ::testing::ValuesIn(conflicting_kind_pairs()), pair_name);

TEST_F(reader_writer_lock_test, same_object_reacquire_by_the_holding_thread_throws) {
  interprocess_reader_writer_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire_read_lock());
  expect_deadlock_error([&] { lock.acquire_read_lock(); }, "read after read");
  expect_deadlock_error([&] { lock.acquire_write_lock(); }, "write after read");
  expect_deadlock_error([&] { lock.acquire_write_lock(true, std::chrono::duration<double>(0.2)); },
                        "timed write after read");
  expect_deadlock_error([&] { lock.try_lock_for(k_short); }, "try_lock_for after read");
  expect_deadlock_error([&] { lock.try_lock_shared_for(k_short); },
                        "try_lock_shared_for after read");
  EXPECT_FALSE(lock.acquire_write_lock(false));
  EXPECT_FALSE(lock.try_lock());
  EXPECT_FALSE(lock.acquire_read_lock(false));
  EXPECT_FALSE(lock.try_lock_shared());
  EXPECT_TRUE(lock.read_acquired());
  lock.release_read_lock();
  EXPECT_FALSE(lock.read_acquired());

  ASSERT_TRUE(lock.acquire_write_lock());
  expect_deadlock_error([&] { lock.acquire_write_lock(); }, "write after write");
  expect_deadlock_error([&] { lock.acquire_read_lock(); }, "read after write");
  expect_deadlock_error([&] { lock.acquire_read_lock(true, std::chrono::duration<double>(0.2)); },
                        "timed read after write");
  expect_deadlock_error(
      [&] { lock.try_lock_shared_until(std::chrono::system_clock::now() + k_short); },
      "try_lock_shared_until after write");
  EXPECT_FALSE(lock.acquire_read_lock(false));
  EXPECT_FALSE(lock.try_lock_shared());
  EXPECT_FALSE(lock.acquire_write_lock(false));
  EXPECT_TRUE(lock.write_acquired());
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);
  lock.release_write_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, readers_overlap_across_threads_with_their_own_objects) {
  latch all_inside(k_readers);
  std::atomic<int> overlapped{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < k_readers; ++i) {
    readers.emplace_back([&] {
      interprocess_reader_writer_lock lock(lock_path());
      auto guard = lock.read_lock();
      if (all_inside.arrive_and_wait_for(10s)) ++overlapped;
    });
  }
  for (auto& r : readers) r.join();
  EXPECT_EQ(overlapped.load(), k_readers);
}

TEST_F(reader_writer_lock_test, readers_overlap_across_threads_sharing_one_object) {
  interprocess_reader_writer_lock lock(lock_path());
  latch all_inside(k_readers);
  latch checked(1);
  std::atomic<int> overlapped{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < k_readers; ++i) {
    readers.emplace_back([&] {
      lock.acquire_read_lock();
      if (all_inside.arrive_and_wait_for(10s)) ++overlapped;
      checked.wait_for();
      lock.release_read_lock();
    });
  }
  EXPECT_TRUE(all_inside.wait_for());
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_FALSE(lock.write_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
  checked.count_down();
  for (auto& r : readers) r.join();
  EXPECT_EQ(overlapped.load(), k_readers);
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_F(reader_writer_lock_test, readers_overlap_across_processes) {
  std::vector<child_process> readers;
  for (int i = 0; i < k_readers; ++i) readers.push_back(hold_in_child(kind::read, lock_path()));
  // All of them hold it now: none has been told to release.
  for (auto& r : readers) EXPECT_TRUE(r.running());
  interprocess_reader_writer_lock lock(lock_path());
  EXPECT_TRUE(lock.try_lock_shared());
  lock.unlock_shared();
  EXPECT_FALSE(lock.try_lock());
  for (auto& r : readers) EXPECT_EQ(r.finish(), 0);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
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

TEST_F(reader_writer_lock_test, writers_are_alone_among_threads) {
  occupancy inside;
  int counter = 0;
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&, t] {
      interprocess_reader_writer_lock lock(lock_path());
      for (int i = 0; i < 150; ++i) {
        if ((i + t) % 3 == 0) {
          auto guard = lock.write_lock();
          inside.enter_exclusive();
          const int seen = counter;
          std::this_thread::yield();
          counter = seen + 1;
          inside.leave_exclusive();
        } else {
          auto guard = lock.read_lock();
          inside.enter_shared();
          std::this_thread::yield();
          inside.leave_shared();
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_FALSE(inside.violated());
  EXPECT_EQ(counter, 200);
}

TEST_F(reader_writer_lock_test, writers_are_alone_among_threads_sharing_one_object) {
  interprocess_reader_writer_lock lock(lock_path());
  occupancy inside;
  int counter = 0;
  std::vector<std::thread> workers;
  for (int t = 0; t < 4; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < 150; ++i) {
        if ((i + t) % 3 == 0) {
          std::lock_guard<interprocess_reader_writer_lock> guard(lock);
          inside.enter_exclusive();
          const int seen = counter;
          std::this_thread::yield();
          counter = seen + 1;
          inside.leave_exclusive();
        } else {
          std::shared_lock<interprocess_reader_writer_lock> guard(lock);
          inside.enter_shared();
          std::this_thread::yield();
          inside.leave_shared();
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_FALSE(inside.violated());
  EXPECT_EQ(counter, 200);
}

TEST_F(reader_writer_lock_test, a_waiting_writer_holds_back_new_readers_of_this_process) {
  interprocess_reader_writer_lock reader(lock_path());
  interprocess_reader_writer_lock writer(lock_path());
  interprocess_reader_writer_lock late_reader(lock_path());
  thread_holder read_held([&] { return reader.acquire_read_lock(); },
                          [&] { reader.release_read_lock(); });
  ASSERT_TRUE(read_held.wait_held());
  thread_holder write_held([&] { return writer.acquire_write_lock(); },
                           [&] { writer.release_write_lock(); });
  EXPECT_FALSE(write_held.wait_held(k_quiet));
  // The writer waits now; a new reader must wait behind it, so a timed read gives up.
  EXPECT_FALSE(late_reader.try_lock_shared_for(k_short));
  ASSERT_TRUE(read_held.release());
  EXPECT_TRUE(write_held.wait_held());
  EXPECT_FALSE(late_reader.try_lock_shared());
  ASSERT_TRUE(write_held.release());
  EXPECT_TRUE(late_reader.try_lock_shared());
  late_reader.unlock_shared();
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

TEST_F(reader_writer_lock_test, timed_shared_tries_give_up_no_sooner_than_their_deadline) {
  child_process holder = hold_in_child(kind::write, lock_path());
  interprocess_reader_writer_lock lock(lock_path());
  auto start = steady::now();
  EXPECT_FALSE(lock.try_lock_shared_for(k_short));
  EXPECT_GE(steady::now() - start, k_short);
  EXPECT_LT(steady::now() - start, k_upper);
  start = steady::now();
  EXPECT_FALSE(lock.try_lock_shared_until(start + k_short));
  EXPECT_GE(steady::now(), start + k_short);
  const auto system_deadline = std::chrono::system_clock::now() + k_short;
  EXPECT_FALSE(lock.try_lock_shared_until(system_deadline));
  EXPECT_GE(std::chrono::system_clock::now(), system_deadline);
  start = steady::now();
  EXPECT_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + k_short));
  EXPECT_GE(steady::now() - start, k_short);
  EXPECT_LT(steady::now() - start, k_upper);
  start = steady::now();
  EXPECT_FALSE(lock.acquire_read_lock(true, std::chrono::duration<double>(0.2)));
  EXPECT_GE(seconds_since(start), 0.2);
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_FALSE(lock.try_lock_shared_for(-1s));
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(lock.try_lock_shared_for(-1s));
  lock.unlock_shared();
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

TEST_F(reader_writer_lock_test, processes_count_without_lost_updates_under_the_write_lock) {
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(
      run_counting_processes(kind::write, lock_path(), dir() / "counter", 4, 1, 200, false));
  EXPECT_EQ(read_counter(dir() / "counter"), 4 * 200);
}

TEST_F(reader_writer_lock_test, processes_with_threads_count_without_lost_updates) {
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(
      run_counting_processes(kind::write, lock_path(), dir() / "counter", 3, 3, 100, false));
  EXPECT_EQ(read_counter(dir() / "counter"), 3 * 3 * 100);
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(run_counting_processes(kind::write, lock_path(), dir() / "counter", 2, 3, 100, true));
  EXPECT_EQ(read_counter(dir() / "counter"), 2 * 3 * 100);
}

}  // namespace
}  // namespace fasteners_test
