// The byte range python-fasteners locks on Windows (byte 0, through LockFileEx or msvcrt's
// LockFile): the library's locks and such foreign locks exclude each other, in one process and
// across processes, and the library's default waits end when a foreign lock is released.
#include <string>
#include <thread>

#include "windows/windows_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

using windows_byte_range_test = lock_test;

TEST_F(windows_byte_range_test, a_foreign_lock_on_byte_zero_excludes_as_python_fasteners_does) {
  foreign_handle foreign(lock_path());
  ASSERT_TRUE(foreign.try_lock(true));  // InterProcessLock, or a writer of its ReaderWriterLock
  for (const kind k : all_kinds) {
    kind_lock lock(k, lock_path());
    EXPECT_FALSE(lock.acquire(false)) << to_string(k);
  }
  foreign.unlock();
  ASSERT_TRUE(foreign.try_lock(false));  // a reader of its ReaderWriterLock
  for (const kind k : all_kinds) {
    kind_lock lock(k, lock_path());
    const bool taken = lock.acquire(false);
    EXPECT_EQ(taken, k == kind::read) << to_string(k);
    if (taken) lock.release();
  }
  foreign.unlock();
  // msvcrt.locking(fd, LK_NBLCK, 1), python-fasteners' InterProcessLock, calls LockFile.
  ASSERT_TRUE(::LockFile(foreign.get(), 0, 0, 1, 0));
  fasteners::interprocess_lock lock(lock_path());
  EXPECT_FALSE(lock.acquire(false));
  ASSERT_TRUE(::UnlockFile(foreign.get(), 0, 0, 1, 0));
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_F(windows_byte_range_test, the_librarys_locks_exclude_foreign_locks_on_byte_zero) {
  foreign_handle foreign(lock_path());
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    kind_lock lock(k, lock_path());
    ASSERT_TRUE(lock.acquire());
    EXPECT_FALSE(foreign.try_lock(true));
    const bool shared = foreign.try_lock(false);
    EXPECT_EQ(shared, k == kind::read);
    if (shared) foreign.unlock();
    EXPECT_FALSE(::LockFile(foreign.get(), 0, 0, 1, 0));
    lock.release();
  }
}

// Helper "foreign_hold PATH exclusive|shared": locks byte 0 of the file as python-fasteners
// does, prints "held", and unlocks when its stdin ends.
FASTENERS_TEST_HELPER(foreign_hold) {
  foreign_handle foreign(path_of(args.at(0)));
  if (!foreign.try_lock(args.at(1) == "exclusive")) return k_busy;
  report_and_wait("held");
  foreign.unlock();
  return 0;
}

// Helper "foreign_try PATH exclusive|shared": tries once to lock byte 0 as python-fasteners does.
FASTENERS_TEST_HELPER(foreign_try) {
  foreign_handle foreign(path_of(args.at(0)));
  if (!foreign.try_lock(args.at(1) == "exclusive")) return k_busy;
  foreign.unlock();
  return k_acquired;
}

TEST_F(windows_byte_range_test, foreign_locks_on_byte_zero_in_other_processes_exclude_both_ways) {
  for (const bool exclusive : {true, false}) {
    const std::string mode = exclusive ? "exclusive" : "shared";
    SCOPED_TRACE(mode);
    {
      child_process foreign = spawn_helper("foreign_hold", {arg_of(lock_path()), mode});
      ASSERT_EQ(foreign.read_line(), std::optional<std::string>("held"));
      for (const kind k : all_kinds) {
        kind_lock lock(k, lock_path());
        const bool taken = lock.acquire(false);
        EXPECT_EQ(taken, !exclusive && k == kind::read) << to_string(k);
        if (taken) lock.release();
      }
      EXPECT_EQ(foreign.finish(), 0);
    }
    for (const kind k : all_kinds) {
      kind_lock lock(k, lock_path());
      ASSERT_TRUE(lock.acquire());
      const bool shares = !exclusive && k == kind::read;
      EXPECT_EQ(run_helper("foreign_try", {arg_of(lock_path()), mode}),
                shares ? k_acquired : k_busy)
          << to_string(k);
      lock.release();
    }
  }
}

// The library's default way of waiting (overlapped requests on Windows, synchronous handles
// under Wine, which never completes a pending overlapped LockFileEx) against a foreign lock:
// tries, timed waits and blocking waits, and no handle left behind.
TEST_F(windows_byte_range_test, waits_end_when_a_foreign_lock_is_released) {
  const auto path = lock_path();
  auto cycle = [&] {
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      EXPECT_TRUE(lock.acquire()) << "an uncontended acquire";
      kind_lock other(kind::write, path);
      EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); })) << "a try while held";
      lock.release();
    }
    foreign_handle foreign(path);
    ASSERT_TRUE(foreign.try_lock(true)) << "a foreign lock on a free file";
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      EXPECT_FALSE(lock.acquire(false)) << "a try while a foreign handle holds the lock";
    }
    kind_lock timed(kind::write, path);
    const auto start = steady::now();
    EXPECT_FALSE(timed.acquire(true, k_short)) << "a timed wait while a foreign lock is held";
    EXPECT_GE(seconds_since(start), 0.2) << "a timed wait that ends sooner than its timeout";
    std::thread unlocker([&] {
      std::this_thread::sleep_for(k_short);
      foreign.unlock();
    });
    kind_lock blocking(kind::read, path);
    EXPECT_TRUE(blocking.acquire()) << "a blocking wait";
    blocking.release();
    unlocker.join();
    // The timed wait that gave up above stays queued until the lock is free, and then lets go of
    // a grant nobody wants: at once, but on a thread of its own, so the foreign lock may have to
    // wait for that a moment.
    const auto until = steady::now() + k_long;
    bool again = foreign.try_lock(true);
    while (!again && steady::now() < until) {
      std::this_thread::sleep_for(1ms);
      again = foreign.try_lock(true);
    }
    ASSERT_TRUE(again) << "a foreign lock again";
    std::thread unlocker2([&] {
      std::this_thread::sleep_for(k_short);
      foreign.unlock();
    });
    EXPECT_TRUE(timed.acquire(true, k_upper)) << "a timed wait that the holder ends in time";
    timed.release();
    unlocker2.join();
  };
  cycle();
  const auto before = count_open_handles();
  for (int i = 0; i < 3; ++i) cycle();
  EXPECT_LT(count_open_handles(), before + 3) << "handles are left behind";
}

}  // namespace
}  // namespace fasteners_test
