// Timed waits: the corner cases (deadlines already passed, holders killed or releasing during the
// wait, many waits at once).
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

using timed_wait_test = lock_test;

TEST_F(timed_wait_test, a_deadline_already_passed_tries_once) {
  child_process holder = hold_in_child(kind::lock, lock_path());
  fasteners::interprocess_lock lock(lock_path());
  const auto start = steady::now();
  EXPECT_FALSE(lock.try_lock_until(steady::now() - 1s));
  EXPECT_FALSE(lock.try_lock_for(-5ms));
  EXPECT_FALSE(lock.acquire(true, 0s));
  EXPECT_LT(seconds_since(start), 1.0);
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(lock.try_lock_until(steady::now() - 1s));  // Free: the one try succeeds.
  lock.unlock();
}

TEST_F(timed_wait_test, a_holder_killed_during_the_wait_hands_over_at_once) {
  for (const kind k : {kind::lock, kind::write, kind::read}) {
    child_process holder = hold_in_child(kind::write, lock_path());
    kind_lock waiter(k, lock_path());
    const auto start = steady::now();
    thread_holder waiting([&] { return waiter.acquire(true, std::chrono::duration<double>(30)); },
                          [&] { waiter.release(); });
    std::this_thread::sleep_for(k_quiet);
    EXPECT_FALSE(waiting.done_acquiring());
    holder.kill();
    EXPECT_TRUE(waiting.wait_held());
    EXPECT_LT(seconds_since(start), 10.0) << "the waiter did not get the lock at once";
    EXPECT_TRUE(waiting.release());
  }
}

// 64 threads of one process in timed waits at once, half of them on files nobody releases in
// time and half on one file released while they wait.
TEST_F(timed_wait_test, many_threads_in_timed_waits_at_once) {
  constexpr int threads = 64;
  const auto released = dir() / "released";
  child_process holder = hold_in_child(kind::write, released);
  std::vector<child_process> stuck;
  for (int i = 0; i < 4; ++i) {
    stuck.push_back(hold_in_child(kind::write, dir() / ("stuck" + std::to_string(i))));
  }
  std::atomic<int> got{0};
  std::atomic<int> early{0};
  std::atomic<int> timed_out{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) {
    pool.emplace_back([&, i] {
      if (i % 2 == 0) {
        fasteners::interprocess_reader_writer_lock lock(released);
        if (lock.try_lock_shared_for(k_long)) {
          ++got;
          lock.unlock_shared();
        }
      } else {
        fasteners::interprocess_lock lock(dir() / ("stuck" + std::to_string(i % 4)));
        const auto start = steady::now();
        if (lock.try_lock_for(500ms)) return;
        ++timed_out;
        if (seconds_since(start) < 0.5) ++early;
      }
    });
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(holder.finish(), 0);
  for (auto& t : pool) t.join();
  EXPECT_EQ(got, threads / 2);
  EXPECT_EQ(timed_out, threads / 2);
  EXPECT_EQ(early, 0);
  for (auto& s : stuck) EXPECT_EQ(s.finish(), 0);
}

// A release that lands right at a waiter's deadline: whatever the waiter answers must be true
// of the lock. It never reports failure while holding, nor success without holding.
TEST_F(timed_wait_test, a_release_racing_the_deadline_gives_a_truthful_answer) {
  for (int round = 0; round < 40; ++round) {
    fasteners::interprocess_lock holder(lock_path());
    ASSERT_TRUE(holder.try_lock());
    fasteners::interprocess_lock waiter(lock_path());
    const auto wait = std::chrono::milliseconds(5 + round % 5);
    bool taken = false;
    std::thread t([&] { taken = waiter.try_lock_for(wait); });
    std::this_thread::sleep_for(wait);
    holder.unlock();
    t.join();
    EXPECT_EQ(waiter.acquired(), taken);
    fasteners::interprocess_lock probe(lock_path());
    std::thread([&] { EXPECT_EQ(probe.try_lock(), !taken) << "round " << round; }).join();
    if (probe.acquired()) probe.unlock();
    if (taken) waiter.unlock();
  }
}

}  // namespace
}  // namespace fasteners_test
