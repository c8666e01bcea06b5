// Tests of fasteners::interprocess_lock: acquire modes, timeouts, standard lock adaptors, threads.
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

// Runs `threads` threads that each enter the lock `iterations` times; returns the final value of a
// plain counter they increment and checks that no two were inside at once.
template <class MakeLock>
int count_with_threads(int threads, int iterations, MakeLock make_lock, occupancy& inside) {
  int counter = 0;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      interprocess_lock& lock = make_lock();
      for (int i = 0; i < iterations; ++i) {
        std::lock_guard<interprocess_lock> guard(lock);
        inside.enter_exclusive();
        const int seen = counter;
        std::this_thread::yield();
        counter = seen + 1;
        inside.leave_exclusive();
      }
    });
  }
  for (auto& w : workers) w.join();
  return counter;
}

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

TEST_F(interprocess_lock_test, non_blocking_acquire_fails_while_another_object_holds) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  const auto start = steady::now();
  EXPECT_FALSE(other.acquire(false));
  EXPECT_FALSE(other.try_lock());
  EXPECT_LT(seconds_since(start), std::chrono::duration<double>(k_upper).count());
  EXPECT_FALSE(other.acquired());
  EXPECT_TRUE(holder.acquired());
  ASSERT_TRUE(held.release());
  EXPECT_TRUE(other.try_lock());
  other.unlock();
}

TEST_F(interprocess_lock_test, timed_acquire_gives_up_no_sooner_than_its_timeout) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  const auto start = steady::now();
  EXPECT_FALSE(other.acquire(true, std::chrono::duration<double>(0.2)));
  const double elapsed = seconds_since(start);
  EXPECT_GE(elapsed, 0.2);
  EXPECT_LT(elapsed, 5.0);
  EXPECT_FALSE(other.acquired());
}

TEST_F(interprocess_lock_test, timed_acquire_ignores_timeout_when_not_blocking) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  const auto start = steady::now();
  EXPECT_FALSE(other.acquire(false, std::chrono::duration<double>(3.0)));
  EXPECT_LT(seconds_since(start), 2.0);
}

TEST_F(interprocess_lock_test, try_lock_for_and_until_give_up_no_sooner_than_their_deadline) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());

  auto start = steady::now();
  EXPECT_FALSE(other.try_lock_for(k_short));
  EXPECT_GE(steady::now() - start, k_short);
  EXPECT_LT(steady::now() - start, k_upper);

  start = steady::now();
  EXPECT_FALSE(other.try_lock_until(start + k_short));
  EXPECT_GE(steady::now(), start + k_short);
  EXPECT_LT(steady::now() - start, k_upper);

  const auto system_deadline = std::chrono::system_clock::now() + k_short;
  start = steady::now();
  EXPECT_FALSE(other.try_lock_until(system_deadline));
  EXPECT_GE(std::chrono::system_clock::now(), system_deadline);
  EXPECT_LT(steady::now() - start, k_upper);
  EXPECT_FALSE(other.acquired());
}

TEST_F(interprocess_lock_test, zero_negative_and_past_deadlines_try_once) {
  interprocess_lock lock(lock_path());
  EXPECT_TRUE(lock.try_lock_for(0s));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_for(-1s));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_until(steady::now() - 1s));
  lock.unlock();
  EXPECT_TRUE(lock.try_lock_until(std::chrono::system_clock::now() - 1s));
  lock.unlock();
  EXPECT_TRUE(lock.acquire(true, std::chrono::duration<double>(0)));
  lock.release();

  interprocess_lock other(lock_path());
  thread_holder held([&] { return lock.acquire(); }, [&] { lock.release(); });
  ASSERT_TRUE(held.wait_held());
  const auto start = steady::now();
  EXPECT_FALSE(other.try_lock_for(0s));
  EXPECT_FALSE(other.try_lock_for(-1s));
  EXPECT_FALSE(other.try_lock_until(steady::now() - 1s));
  EXPECT_FALSE(other.try_lock_until(std::chrono::system_clock::now() - 1s));
  EXPECT_FALSE(other.acquire(true, std::chrono::duration<double>(0)));
  EXPECT_LT(seconds_since(start), 2.0);
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

TEST_F(interprocess_lock_test, timed_acquire_succeeds_when_the_holder_releases_in_time) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    held.release();
  });
  const auto start = steady::now();
  EXPECT_TRUE(other.acquire(true, std::chrono::duration<double>(20.0)));
  EXPECT_LT(seconds_since(start), 15.0);
  releaser.join();
  other.release();
}

TEST_F(interprocess_lock_test, try_lock_for_succeeds_when_the_holder_releases_in_time) {
  interprocess_lock holder(lock_path());
  interprocess_lock other(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  std::thread releaser([&] {
    std::this_thread::sleep_for(100ms);
    held.release();
  });
  EXPECT_TRUE(other.try_lock_until(std::chrono::system_clock::now() + 20s));
  releaser.join();
  other.unlock();
}

TEST_F(interprocess_lock_test, blocking_acquire_waits_for_release_by_another_thread) {
  interprocess_lock holder(lock_path());
  interprocess_lock waiter_lock(lock_path());
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  thread_holder waiter([&] { return waiter_lock.acquire(); }, [&] { waiter_lock.release(); });
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  ASSERT_TRUE(held.release());
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_TRUE(waiter.release());
}

TEST_F(interprocess_lock_test, one_object_is_a_mutex_for_the_threads_sharing_it) {
  interprocess_lock lock(lock_path());
  occupancy inside;
  const int counter = count_with_threads(
      4, 300, [&]() -> interprocess_lock& { return lock; }, inside);
  EXPECT_EQ(counter, 4 * 300);
  EXPECT_FALSE(inside.violated());
  EXPECT_FALSE(lock.acquired());
}

TEST_F(interprocess_lock_test, objects_on_one_file_exclude_threads_of_one_process) {
  std::vector<std::unique_ptr<interprocess_lock>> locks;
  std::mutex locks_mutex;
  occupancy inside;
  const int counter = count_with_threads(
      4, 300,
      [&]() -> interprocess_lock& {
        std::lock_guard<std::mutex> guard(locks_mutex);
        locks.push_back(std::make_unique<interprocess_lock>(lock_path()));
        return *locks.back();
      },
      inside);
  EXPECT_EQ(counter, 4 * 300);
  EXPECT_FALSE(inside.violated());
}

TEST_F(interprocess_lock_test, blocking_waiter_sharing_the_object_gets_it_after_release) {
  interprocess_lock lock(lock_path());
  thread_holder held([&] { return lock.acquire(); }, [&] { lock.release(); });
  ASSERT_TRUE(held.wait_held());
  EXPECT_FALSE(lock.try_lock());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    lock.lock();
    got = true;
    lock.unlock();
  });
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.load());
  ASSERT_TRUE(held.release());
  waiter.join();
  EXPECT_TRUE(got.load());
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

TEST_F(interprocess_lock_test, excludes_other_processes) {
  interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.release();
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);

  child_process holder = hold_in_child(kind::lock, lock_path());
  EXPECT_FALSE(lock.try_lock());
  auto start = steady::now();
  EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.2)));
  EXPECT_GE(seconds_since(start), 0.2);
  EXPECT_LT(seconds_since(start), 5.0);
  start = steady::now();
  EXPECT_FALSE(lock.try_lock_until(std::chrono::system_clock::now() + k_short));
  EXPECT_GE(steady::now() - start, k_short);
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TEST_F(interprocess_lock_test, waiter_in_another_process_gets_the_lock_after_release) {
  interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  child_process waiter = spawn_helper("hold", {"lock", arg_of(lock_path())});
  EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt);
  lock.release();
  EXPECT_EQ(waiter.read_line(), std::optional<std::string>("held"));
  EXPECT_FALSE(lock.try_lock());
  EXPECT_EQ(waiter.finish(), 0);
}

TEST_F(interprocess_lock_test, blocking_acquire_waits_for_another_process) {
  child_process holder = hold_in_child(kind::lock, lock_path());
  interprocess_lock lock(lock_path());
  thread_holder waiter([&] { return lock.acquire(); }, [&] { lock.release(); });
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  holder.close_stdin();
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_TRUE(waiter.release());
}

TEST_F(interprocess_lock_test, processes_count_without_lost_updates) {
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(run_counting_processes(kind::lock, lock_path(), dir() / "counter", 4, 1, 200, false));
  EXPECT_EQ(read_counter(dir() / "counter"), 4 * 200);
}

TEST_F(interprocess_lock_test, processes_with_threads_count_without_lost_updates) {
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(run_counting_processes(kind::lock, lock_path(), dir() / "counter", 3, 3, 100, false));
  EXPECT_EQ(read_counter(dir() / "counter"), 3 * 3 * 100);
}

TEST_F(interprocess_lock_test,
       processes_with_threads_sharing_an_object_count_without_lost_updates) {
  write_counter(dir() / "counter", 0);
  ASSERT_TRUE(run_counting_processes(kind::lock, lock_path(), dir() / "counter", 3, 3, 100, true));
  EXPECT_EQ(read_counter(dir() / "counter"), 3 * 3 * 100);
}

TEST_F(interprocess_lock_test, blocking_or_timed_reacquire_by_the_holding_thread_throws) {
  interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  for (int attempt = 0; attempt < 4; ++attempt) {
    try {
      switch (attempt) {
        case 0:
          lock.acquire();
          break;
        case 1:
          lock.acquire(true, std::chrono::duration<double>(0.2));
          break;
        case 2:
          lock.try_lock_for(k_short);
          break;
        default:
          lock.try_lock_until(std::chrono::system_clock::now() + k_short);
          break;
      }
      ADD_FAILURE() << "attempt " << attempt << " returned instead of throwing";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << "attempt " << attempt;
    }
  }
  EXPECT_FALSE(lock.acquire(false));
  EXPECT_FALSE(lock.try_lock());
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.release();
  EXPECT_FALSE(lock.acquired());
}

TEST_F(interprocess_lock_test,
       blocking_acquire_through_another_object_by_the_holding_thread_throws) {
  interprocess_lock lock(lock_path());
  interprocess_lock other(lock_path());
  ASSERT_TRUE(lock.acquire());
  try {
    other.acquire();
    ADD_FAILURE() << "a blocking acquire returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
  }
  try {
    other.try_lock_for(k_short);
    ADD_FAILURE() << "a timed acquire returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
  }
  EXPECT_FALSE(other.try_lock());
  EXPECT_FALSE(other.acquired());
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.release();
  EXPECT_TRUE(other.try_lock());
  other.unlock();
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
