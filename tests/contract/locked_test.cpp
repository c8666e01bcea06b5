// Tests of the function wrappers interprocess_locked, interprocess_read_locked,
// interprocess_write_locked.
#include <atomic>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

using locked_test = lock_test;

// Whether a lock of kind `k` can be taken on `path` right now by another process.
bool free_for(kind k, const std::filesystem::path& path) {
  const int code = try_in_child(k, path);
  EXPECT_TRUE(code == k_acquired || code == k_busy) << "helper exit code " << code;
  return code == k_acquired;
}

TEST_F(locked_test, interprocess_locked_holds_the_lock_during_the_call) {
  bool was_free_inside = true;
  auto add = fasteners::interprocess_locked(lock_path(), [&](int a, const std::string& b) {
    was_free_inside = free_for(kind::lock, lock_path());
    return a + static_cast<int>(b.size());
  });
  EXPECT_EQ(add(40, "ab"), 42);
  EXPECT_FALSE(was_free_inside);
  EXPECT_TRUE(free_for(kind::lock, lock_path()));
}

TEST_F(locked_test, wrappers_pass_arguments_by_reference_and_return_void) {
  auto bump = fasteners::interprocess_locked(lock_path(), [](int& value) { ++value; });
  int value = 1;
  bump(value);
  bump(value);
  EXPECT_EQ(value, 3);
  auto read_bump = fasteners::interprocess_read_locked(lock_path(), [](int& v) { v += 10; });
  read_bump(value);
  auto write_bump = fasteners::interprocess_write_locked(lock_path(), [](int& v) { v += 100; });
  write_bump(value);
  EXPECT_EQ(value, 113);
  auto move_only =
      fasteners::interprocess_locked(lock_path(), [](std::unique_ptr<int> p) { return *p + 1; });
  EXPECT_EQ(move_only(std::make_unique<int>(6)), 7);
}

TEST_F(locked_test, exceptions_propagate_and_release_the_lock) {
  auto throwing = fasteners::interprocess_locked(
      lock_path(), [](int) -> int { throw std::runtime_error("from inside"); });
  EXPECT_THROW(throwing(1), std::runtime_error);
  EXPECT_TRUE(free_for(kind::lock, lock_path()));
  auto read_throwing =
      fasteners::interprocess_read_locked(lock_path(), [] { throw std::out_of_range("read"); });
  EXPECT_THROW(read_throwing(), std::out_of_range);
  EXPECT_TRUE(free_for(kind::write, lock_path()));
  auto write_throwing =
      fasteners::interprocess_write_locked(lock_path(), [] { throw std::logic_error("write"); });
  EXPECT_THROW(write_throwing(), std::logic_error);
  EXPECT_TRUE(free_for(kind::write, lock_path()));
  // The wrapper still works after a throw.
  auto fine = fasteners::interprocess_locked(lock_path(), [] { return 5; });
  EXPECT_EQ(fine(), 5);
}

TEST_F(locked_test, many_threads_call_one_wrapper_and_its_copies_at_once) {
  occupancy inside;
  int counter = 0;
  auto increment = fasteners::interprocess_locked(lock_path(), [&] {
    inside.enter_exclusive();
    const int seen = counter;
    std::this_thread::yield();
    counter = seen + 1;
    inside.leave_exclusive();
    return seen;
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t, copy = increment] {
      for (int i = 0; i < 100; ++i) {
        if (t % 2 == 0) {
          increment();
        } else {
          copy();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 600);
  EXPECT_FALSE(inside.violated());
}

TEST_F(locked_test, write_locked_calls_are_alone_and_read_locked_calls_overlap) {
  occupancy inside;
  int counter = 0;
  latch readers_inside(3);
  std::atomic<int> overlapped{0};
  auto write = fasteners::interprocess_write_locked(lock_path(), [&] {
    inside.enter_exclusive();
    const int seen = counter;
    std::this_thread::yield();
    counter = seen + 1;
    inside.leave_exclusive();
  });
  auto read_together = fasteners::interprocess_read_locked(lock_path(), [&] {
    inside.enter_shared();
    if (readers_inside.arrive_and_wait_for(10s)) ++overlapped;
    inside.leave_shared();
  });
  auto read = fasteners::interprocess_read_locked(lock_path(), [&] {
    inside.enter_shared();
    std::this_thread::yield();
    inside.leave_shared();
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back([&] { read_together(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(overlapped.load(), 3);
  threads.clear();
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        if ((i + t) % 2 == 0) {
          write();
        } else {
          read();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(counter, 200);
  EXPECT_FALSE(inside.violated());
}

TEST_F(locked_test, read_and_write_wrappers_hold_their_lock_against_other_processes) {
  bool write_free = true;
  bool read_free = false;
  fasteners::interprocess_read_locked(lock_path(), [&] {
    write_free = free_for(kind::write, lock_path());
    read_free = free_for(kind::read, lock_path());
  })();
  EXPECT_FALSE(write_free);
  EXPECT_TRUE(read_free);
  fasteners::interprocess_write_locked(lock_path(),
                                       [&] { read_free = free_for(kind::read, lock_path()); })();
  EXPECT_FALSE(read_free);
  EXPECT_TRUE(free_for(kind::write, lock_path()));
}

TEST_F(locked_test, wrappers_wait_for_a_holder_in_another_process) {
  child_process holder = hold_in_child(kind::write, lock_path());
  std::atomic<bool> called{false};
  auto f = fasteners::interprocess_read_locked(lock_path(), [&] { called = true; });
  std::thread caller([&] { f(); });
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(called.load());
  EXPECT_EQ(holder.finish(), 0);
  caller.join();
  EXPECT_TRUE(called.load());
}

TEST_F(locked_test, a_recursive_call_throws_resource_deadlock_would_occur) {
  std::function<int(int)> call;
  call = fasteners::interprocess_locked(
      lock_path(), [&call](int depth) { return depth == 0 ? call(1) : depth; });
  try {
    call(0);
    ADD_FAILURE() << "a recursive call returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
  }
  EXPECT_TRUE(free_for(kind::lock, lock_path()));
  EXPECT_EQ(call(5), 5);
}

TEST_F(locked_test, making_a_wrapper_does_not_touch_the_file_system) {
  const auto path = dir() / "sub" / "lock";
  auto f = fasteners::interprocess_locked(path, [] { return 1; });
  EXPECT_FALSE(std::filesystem::exists(dir() / "sub"));
  EXPECT_EQ(f(), 1);
  EXPECT_TRUE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace fasteners_test
