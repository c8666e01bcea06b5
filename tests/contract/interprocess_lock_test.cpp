// Tests of fasteners::interprocess_lock: acquire modes, extreme deadlines, adaptors, threads,
// misuse.
#include <atomic>
#include <cmath>
#include <functional>
#include <iostream>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

using fasteners::interprocess_lock;
using interprocess_lock_test = lock_test;

TEST_F(interprocess_lock_test, acquire_and_release) {
  interprocess_lock lock(lock_path());
  EXPECT_EQ(lock.path(), lock_path());
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.acquired());
  lock.release();
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(lock.acquire(false));
  EXPECT_TRUE(lock.acquired());
  lock.release();
  EXPECT_TRUE(lock.acquire(true, 10s));
  lock.release();
  EXPECT_FALSE(lock.acquired());
}

// Helper "extreme_deadlines PATH": while another process holds the lock on PATH, tries with
// deadlines at the ends of the clocks' ranges; each must be one quick try that fails.
FASTENERS_TEST_HELPER(extreme_deadlines) {
  interprocess_lock lock(path_of(args.at(0)));
  fasteners::interprocess_reader_writer_lock rw(path_of(args.at(0)));
  const std::vector<std::pair<const char*, std::function<bool()>>> tries = {
      {"try_lock_until(system_clock min)",
       [&] { return lock.try_lock_until(std::chrono::system_clock::time_point::min()); }},
      {"try_lock_until(steady_clock min)",
       [&] { return lock.try_lock_until(steady::time_point::min()); }},
      {"try_lock_for(nanoseconds min)",
       [&] { return lock.try_lock_for(std::chrono::nanoseconds::min()); }},
      {"try_lock_for(hours min)", [&] { return lock.try_lock_for(std::chrono::hours::min()); }},
      {"try_lock_shared_until(system_clock min)",
       [&] { return rw.try_lock_shared_until(std::chrono::system_clock::time_point::min()); }},
  };
  for (const auto& [name, attempt] : tries) {
    std::cout << name << std::endl;
    const auto start = steady::now();
    if (attempt()) return fail(1, std::string(name) + " took a held lock");
    if (seconds_since(start) > 2.0) return fail(2, std::string(name) + " waited");
  }
  return 0;
}

TEST_F(interprocess_lock_test, extreme_deadlines_neither_overflow_nor_wait) {
  interprocess_lock lock(lock_path());
  EXPECT_TRUE(lock.try_lock_for(std::chrono::hours::max()));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_for(std::chrono::nanoseconds::max()));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_until(steady::time_point::max()));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_until(std::chrono::system_clock::time_point::max()));
  lock.unlock();
  EXPECT_TRUE(lock.acquire(true, std::chrono::duration<double>(1e300)));
  // Deadlines in the past, in a child that gets killed if one of them waits for the holder.
  child_process child = spawn_helper("extreme_deadlines", {arg_of(lock_path())});
  std::string last = "(none)";
  const auto deadline = steady::now() + 10s;
  while (const auto line = child.read_line(
             std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady::now()))) {
    last = *line;
  }
  // Its output ended with it, or it still waits at the deadline (and gets killed).
  const int code = steady::now() < deadline ? child.wait() : -1;
  EXPECT_EQ(code, 0) << (code == -1 ? last + " waited for the holder instead of trying once"
                                    : "see the helper's message above");
  lock.release();
}

// Deadlines so far ahead on another clock that they overflow its nanoseconds (the year 2286, the
// end of `hours`): each wait must last as a wait without limit does, until the holder lets go.
TEST_F(interprocess_lock_test, far_deadlines_on_other_clocks_wait_until_the_holder_releases) {
  using std::chrono::system_clock;
  interprocess_lock lock(lock_path());
  fasteners::interprocess_reader_writer_lock rw(lock_path());
  const std::vector<std::pair<const char*, std::function<bool()>>> waits = {
      {"try_lock_until(system_clock, 10^10 s)",
       [&] {
         return lock.try_lock_until(std::chrono::time_point<system_clock, std::chrono::seconds>(
             std::chrono::seconds(10'000'000'000)));
       }},
      {"try_lock_until(system_clock, hours max)",
       [&] {
         return lock.try_lock_until(
             std::chrono::time_point<system_clock, std::chrono::hours>(std::chrono::hours::max()));
       }},
      {"try_lock_shared_until(system_clock, 10^10 s)",
       [&] {
         return rw.try_lock_shared_until(
             std::chrono::time_point<system_clock, std::chrono::seconds>(
                 std::chrono::seconds(10'000'000'000)));
       }},
  };
  for (const auto& [name, wait] : waits) {
    child_process holder = hold_in_child(kind::lock, lock_path());
    std::atomic<bool> done{false};
    bool taken = false;
    std::thread waiter([&, wait = wait] {
      taken = wait();
      done = true;
    });
    std::this_thread::sleep_for(k_quiet);
    EXPECT_FALSE(done) << name << " gave up while the lock was held";
    EXPECT_EQ(holder.finish(), 0);
    waiter.join();
    EXPECT_TRUE(taken) << name;
    if (lock.acquired()) lock.unlock();
    if (rw.read_acquired()) rw.unlock_shared();
  }
}

TEST_F(interprocess_lock_test, a_thread_may_release_what_another_thread_acquired) {
  interprocess_lock lock(lock_path());
  std::thread([&] { lock.lock(); }).join();
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.release();
  EXPECT_FALSE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);

  // The releasing thread's release also ends the acquiring thread's claim: it may wait again.
  lock.lock();
  std::thread([&] { lock.unlock(); }).join();
  EXPECT_TRUE(lock.acquire(true, std::chrono::duration<double>(5.0)));
  lock.unlock();
}

TEST_F(interprocess_lock_test, a_new_thread_is_not_mistaken_for_an_ended_thread_that_acquired) {
  interprocess_lock lock(lock_path());
  interprocess_lock other(lock_path());
  std::thread([&] { lock.lock(); }).join();
  // New threads may reuse the ended thread's id; they hold nothing, so they wait and time out.
  for (int i = 0; i < 3; ++i) {
    std::thread([&] {
      try {
        EXPECT_FALSE(other.try_lock_for(50ms));
        EXPECT_FALSE(lock.try_lock_for(50ms));
      } catch (const std::system_error& e) {
        ADD_FAILURE() << "a thread that holds nothing got: " << e.what();
      }
    }).join();
  }
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
}

TEST_F(interprocess_lock_test, works_with_lock_guard_and_unique_lock) {
  interprocess_lock lock(lock_path());
  interprocess_lock other(lock_path());
  {
    std::lock_guard<interprocess_lock> guard(lock);
    EXPECT_TRUE(lock.acquired());
    EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  }
  EXPECT_FALSE(lock.acquired());
  {
    std::unique_lock<interprocess_lock> guard(lock, std::try_to_lock);
    EXPECT_TRUE(guard.owns_lock());
    thread_holder attempt([&] { return other.try_lock(); }, [&] { other.unlock(); });
    EXPECT_FALSE(attempt.wait_held());
  }
  {
    std::unique_lock<interprocess_lock> guard(lock, std::defer_lock);
    EXPECT_FALSE(lock.acquired());
    guard.lock();
    EXPECT_TRUE(lock.acquired());
    guard.unlock();
    EXPECT_FALSE(lock.acquired());
    EXPECT_TRUE(guard.try_lock_for(1s));
    guard.unlock();
    EXPECT_TRUE(guard.try_lock_until(std::chrono::system_clock::now() + 1s));
  }
  EXPECT_FALSE(lock.acquired());
  thread_holder held([&] { return other.acquire(); }, [&] { other.release(); });
  ASSERT_TRUE(held.wait_held());
  std::unique_lock<interprocess_lock> timed(lock, k_short);
  EXPECT_FALSE(timed.owns_lock());
}

TEST_F(interprocess_lock_test, works_with_scoped_lock_and_std_lock) {
  interprocess_lock a(dir() / "a");
  interprocess_lock b(dir() / "b");
  {
    std::scoped_lock guard(a, b);
    EXPECT_TRUE(a.acquired());
    EXPECT_TRUE(b.acquired());
    EXPECT_EQ(try_in_child(kind::lock, dir() / "a"), k_busy);
    EXPECT_EQ(try_in_child(kind::lock, dir() / "b"), k_busy);
  }
  EXPECT_FALSE(a.acquired());
  EXPECT_FALSE(b.acquired());
  std::lock(a, b);
  EXPECT_TRUE(a.acquired());
  EXPECT_TRUE(b.acquired());
  a.unlock();
  b.unlock();
  EXPECT_EQ(try_in_child(kind::lock, dir() / "a"), k_acquired);
}

TEST_F(interprocess_lock_test, std_lock_in_opposite_orders_does_not_deadlock) {
  constexpr int k_rounds = 100;
  std::atomic<int> done{0};
  auto run = [&](bool reversed) {
    interprocess_lock a(dir() / "a");
    interprocess_lock b(dir() / "b");
    for (int i = 0; i < k_rounds; ++i) {
      if (reversed) {
        std::lock(b, a);
      } else {
        std::lock(a, b);
      }
      a.unlock();
      b.unlock();
    }
    ++done;
  };
  std::thread first(run, false);
  std::thread second(run, true);
  first.join();
  second.join();
  EXPECT_EQ(done.load(), 2);
}

TEST_F(interprocess_lock_test, release_without_holding_throws_operation_not_permitted) {
  interprocess_lock lock(lock_path());
  try {
    lock.release();
    ADD_FAILURE() << "release of a lock never taken did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted);
  }
  ASSERT_TRUE(lock.acquire());
  lock.release();
  try {
    lock.unlock();
    ADD_FAILURE() << "a second release did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted);
  }
  interprocess_lock other(lock_path());
  ASSERT_TRUE(lock.acquire());
  EXPECT_THROW(other.release(), std::system_error);
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.release();
}

TEST_F(interprocess_lock_test, negative_or_nan_timeout_throws_invalid_argument) {
  interprocess_lock lock(lock_path());
  EXPECT_THROW(lock.acquire(true, std::chrono::duration<double>(-1.0)), std::invalid_argument);
  EXPECT_THROW(lock.acquire(true, std::chrono::duration<double>(-1e-9)), std::invalid_argument);
  EXPECT_THROW(
      lock.acquire(true, std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN())),
      std::invalid_argument);
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(
      lock.acquire(true, std::chrono::duration<double>(std::numeric_limits<double>::infinity())));
  lock.release();
}

TEST_F(interprocess_lock_test, destruction_releases) {
  {
    interprocess_lock lock(lock_path());
    ASSERT_TRUE(lock.acquire());
    EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  }
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
}

TEST_F(interprocess_lock_test, moved_objects_keep_their_lock) {
  interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  interprocess_lock moved(std::move(lock));
  EXPECT_TRUE(moved.acquired());
  EXPECT_EQ(moved.path(), lock_path());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);

  interprocess_lock assigned(dir() / "other");
  ASSERT_TRUE(assigned.acquire());
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.acquired());
  EXPECT_EQ(assigned.path(), lock_path());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  // Assigning over a held lock releases it, as destruction does.
  EXPECT_EQ(try_in_child(kind::lock, dir() / "other"), k_acquired);

  std::vector<interprocess_lock> locks;
  locks.push_back(std::move(assigned));
  locks.emplace_back(dir() / "third");
  EXPECT_TRUE(locks[1].acquire());
  locks.reserve(100);  // moves both
  EXPECT_TRUE(locks[0].acquired());
  EXPECT_TRUE(locks[1].acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  locks[0].release();
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
  locks.clear();
  EXPECT_EQ(try_in_child(kind::lock, dir() / "third"), k_acquired);
}

TEST_F(interprocess_lock_test, releasing_a_lock_on_another_file_keeps_this_one) {
  interprocess_lock lock(lock_path());
  interprocess_lock other(dir() / "other");
  ASSERT_TRUE(lock.acquire());
  ASSERT_TRUE(other.acquire());
  other.release();
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  EXPECT_EQ(try_in_child(kind::lock, dir() / "other"), k_acquired);
  lock.release();
}

}  // namespace
}  // namespace fasteners_test
