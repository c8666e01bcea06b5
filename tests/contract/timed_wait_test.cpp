// Timed waits on lock files: many at once, and waits that gave up while still queued in the kernel.
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

using timed_wait_test = lock_test;

// Helper "churn_writers PATH SECONDS": takes and releases the write lock on PATH, waiting for it
// each time, until SECONDS have passed.
FASTENERS_TEST_HELPER(churn_writers) {
  fasteners::interprocess_lock lock(path_of(args.at(0)));
  const auto end = steady::now() + std::chrono::duration<double>(std::stod(args.at(1)));
  while (steady::now() < end) {
    lock.lock();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    lock.unlock();
  }
  return 0;
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

// A timed wait that gave up stays queued in the kernel, and its grant, which nobody wants, is
// released as soon as it comes, also when the object keeps the file open (keep_open), so that
// closing the file does not release it anyway.
TEST_F(timed_wait_test, an_abandoned_grant_is_released_while_the_object_keeps_the_file_open) {
  fasteners::lock_options keep;
  keep.keep_open = true;
  for (const kind k : {kind::lock, kind::read}) {
    child_process holder = hold_in_child(kind::write, lock_path());
    kind_lock waiter(k, lock_path(), keep);
    EXPECT_FALSE(waiter.acquire(true, std::chrono::duration<double>(0.02)));
    holder.kill();
    EXPECT_EQ(holder.wait(), k_killed);
    // The grant goes to the abandoned wait, which lets go of it at once: another process gets
    // the lock soon, while `waiter` lives on with its file open.
    const auto until = steady::now() + k_long;
    int code = k_busy;
    while ((code = try_in_child(kind::write, lock_path())) == k_busy && steady::now() < until) {
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(code, k_acquired) << to_string(k) << ": the abandoned grant is still held";
    EXPECT_FALSE(waiter.held());
  }
}

// A try is one try, also beside a write wait of this process that gave up and is still queued,
// while a reader of another process holds the lock and a writer of a third waits at the gate: the
// try finds the lock taken by them, not by a grant to the abandoned wait.
TEST_F(timed_wait_test, a_try_beside_an_abandoned_wait_and_a_waiting_writer_is_one_try) {
  child_process reader = hold_in_child(kind::read, lock_path());
  fasteners::interprocess_reader_writer_lock rw(lock_path());
  EXPECT_FALSE(rw.try_lock_for(20ms));
  child_process writer = spawn_helper("hold", {"write", arg_of(lock_path())});
  ASSERT_TRUE(wait_for_waiting_writer(lock_path()));
  for (int i = 0; i < 3; ++i) {
    const auto start = steady::now();
    EXPECT_FALSE(rw.try_lock_shared());
    EXPECT_LT(seconds_since(start), 0.5) << "try_lock_shared() waited";
    const auto write_start = steady::now();
    EXPECT_FALSE(rw.try_lock());
    EXPECT_LT(seconds_since(write_start), 0.5) << "try_lock() waited";
  }
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(writer.finish(), 0);
}

// Timed writers that give up at once and come back: each new wait adopts the queued wait of the
// last, also as that wait takes the gate after its caller gave up. Every call ends with an answer.
TEST_F(timed_wait_test, writers_that_give_up_and_return_always_get_an_answer) {
  std::vector<child_process> churn;
  for (int i = 0; i < 2; ++i) {
    churn.push_back(spawn_helper("churn_writers", {arg_of(lock_path()), "3"}));
  }
  std::atomic<int> errors{0};
  std::atomic<int> got{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) {
    pool.emplace_back([&, i] {
      fasteners::interprocess_lock lock(lock_path());
      const auto end = steady::now() + 3s;
      for (int n = 0; steady::now() < end; ++n) {
        try {
          if (lock.try_lock_for(std::chrono::microseconds(50 + 150 * ((n + i) % 4)))) {
            ++got;
            lock.unlock();
          }
        } catch (const std::system_error& e) {
          if (errors++ == 0) ADD_FAILURE() << e.what();
        }
      }
    });
  }
  for (auto& t : pool) t.join();
  for (auto& c : churn) EXPECT_EQ(c.finish(), 0);
  EXPECT_EQ(errors, 0);
  EXPECT_GT(got, 0);
}

}  // namespace
}  // namespace fasteners_test
