// System-call failures injected into the POSIX platform: errors surface, nothing is left behind.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <functional>
#include <iostream>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#include "posix/posix_mock.hpp"

namespace fasteners_test {
namespace {

using fasteners::mock::call;

class posix_mock_test : public lock_test {
 protected:
  void SetUp() override { fasteners::mock::reset(); }
  void TearDown() override { fasteners::mock::reset(); }
};

// A file system that refuses locks (ENOLCK, ENOSYS) gives an error at once, never an endless
// retry, and leaves no descriptor open and nothing locked.
TEST_F(posix_mock_test, refused_locks_are_errors_for_every_wait) {
  for (const int error : {ENOLCK, ENOSYS}) {
    for (const int wait : {0, 1, 2}) {  // try, blocking, timed
      const auto before = count_open_handles();
      fasteners::interprocess_lock lock(lock_path());
      fasteners::mock::fail_next(call::fcntl_lock, {error});
      try {
        if (wait == 0) lock.try_lock();
        if (wait == 1) lock.lock();
        if (wait == 2) lock.try_lock_for(k_long);
        ADD_FAILURE() << "no error for errno " << error << ", wait " << wait;
      } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::error_code(error, std::system_category()));
        EXPECT_NE(std::string(e.what()).find(lock_path().string()), std::string::npos) << e.what();
      }
      EXPECT_FALSE(lock.acquired());
      EXPECT_EQ(count_open_handles(), before);
      EXPECT_TRUE(lock.try_lock());  // Nothing was left locked.
      lock.unlock();
    }
  }
}

TEST_F(posix_mock_test, refused_shared_locks_are_errors) {
  fasteners::interprocess_reader_writer_lock lock(lock_path());
  fasteners::mock::fail_next(call::fcntl_lock, {ENOLCK});
  EXPECT_THROW(lock.lock_shared(), std::system_error);
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

// An interrupted lock call is made again; the caller never sees EINTR.
TEST_F(posix_mock_test, interrupted_lock_calls_are_retried) {
  fasteners::interprocess_lock lock(lock_path());
  fasteners::mock::fail_next(call::fcntl_lock, {EINTR, EINTR, EINTR});
  lock.lock();
  EXPECT_TRUE(lock.acquired());
  EXPECT_GE(fasteners::mock::calls(call::fcntl_lock), 4);
  lock.unlock();
}

// close() is never retried, even when it reports EINTR: the descriptor is gone either way, and
// a retry could close a descriptor another thread just opened.
TEST_F(posix_mock_test, close_is_not_retried) {
  fasteners::interprocess_lock lock(lock_path());
  lock.lock();
  fasteners::mock::reset();
  fasteners::mock::fail_next(call::close, {EINTR});
  lock.unlock();
  EXPECT_EQ(fasteners::mock::calls(call::close), 1);
  EXPECT_FALSE(lock.acquired());
}

// A full descriptor table (EMFILE) is an error naming the path, and the next try works.
TEST_F(posix_mock_test, full_descriptor_table_is_an_error) {
  fasteners::interprocess_lock lock(lock_path());
  fasteners::mock::fail_next(call::open, {EMFILE});
  try {
    lock.lock();
    ADD_FAILURE() << "no error";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::error_code(EMFILE, std::system_category()));
    EXPECT_NE(std::string(e.what()).find(lock_path().string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

// An unlock the kernel refuses is reported by release(), yet the object no longer holds the lock
// and the file is free again once its descriptor is closed.
TEST_F(posix_mock_test, failed_unlock_is_reported_and_the_lock_is_gone) {
  {
    fasteners::lock_options keep_open;  // Unlocks without closing, so the unlock call is made.
    keep_open.keep_open = true;
    fasteners::interprocess_lock lock(lock_path(), keep_open);
    lock.lock();
    fasteners::mock::fail_next(call::fcntl_lock, {ENOLCK});
    EXPECT_THROW(lock.unlock(), std::system_error);
    EXPECT_FALSE(lock.acquired());
  }  // Destroying the object closes the file, which releases the lock the kernel kept.
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
}

// A kernel without open-file-description locks answers EINVAL; the library falls back to the
// classic locks and still locks. The fallback is process-wide, so it runs in a child process.
TEST_F(posix_mock_test, kernels_without_ofd_locks_fall_back_to_classic_locks) {
  if (k_classic_fcntl) GTEST_SKIP() << "the classic fcntl build has no OFD locks to fall back from";
  const auto child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    fasteners::interprocess_lock lock(lock_path());
    fasteners::mock::fail_next(call::fcntl_lock, {EINVAL});
    bool ok = lock.try_lock() && lock.acquired();
    if (ok) lock.unlock();
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// No process-wide mutex is held across a system call: while a thread is stuck in open() of one
// lock file, other threads lock and unlock other files, in every way, as often as they like.
TEST_F(posix_mock_test, a_blocked_open_holds_up_no_other_file) {
  const auto x = dir() / "x";
  const auto y = dir() / "y";
  const auto z = dir() / "z";
  fasteners::mock::block_open(x.string());
  fasteners::interprocess_lock stuck(x);  // Default options: each acquire opens the file.
  thread_holder opening(
      [&] {
        stuck.lock();
        return true;
      },
      [&] { stuck.unlock(); });
  const auto give_up = steady::now() + k_long;
  while (fasteners::mock::blocked_opens() == 0 && steady::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  if (fasteners::mock::blocked_opens() != 1) {
    fasteners::mock::unblock_open();
    FAIL() << "the acquire of " << x << " never reached open()";
  }

  fasteners::lock_options keep_open;
  keep_open.keep_open = true;
  fasteners::interprocess_lock y_lock(y);
  fasteners::interprocess_reader_writer_lock y_rw(y);
  fasteners::interprocess_lock z_lock(z, keep_open);
  fasteners::interprocess_reader_writer_lock z_rw(z, keep_open);
  const std::vector<std::function<void()>> rounds = {
      [&] {
        y_lock.lock();
        y_lock.unlock();
      },
      [&] {
        y_rw.lock_shared();
        y_rw.unlock_shared();
        if (!y_rw.try_lock_for(k_long)) throw std::runtime_error("no write lock on y");
        y_rw.unlock();
      },
      [&] {
        if (!z_lock.try_lock_for(k_long)) throw std::runtime_error("no lock on z");
        z_lock.unlock();
      },
      [&] {
        if (!z_rw.try_lock_shared_for(k_long)) throw std::runtime_error("no read lock on z");
        z_rw.unlock_shared();
        z_rw.lock();
        z_rw.unlock();
      }};
  latch done(static_cast<int>(rounds.size()));
  std::atomic<int> errors{0};
  std::vector<std::thread> workers;
  for (const auto& round : rounds) {
    workers.emplace_back([&] {
      try {
        for (int i = 0; i < 200; ++i) round();
      } catch (const std::exception& e) {
        std::cerr << "worker: " << e.what() << std::endl;
        ++errors;
      }
      done.count_down();
    });
  }
  EXPECT_TRUE(done.wait_for(10s))
      << "locks on other files did not complete within 10 s while one open() was blocked";
  EXPECT_EQ(fasteners::mock::blocked_opens(), 1) << "the blocked open() ended too early";
  EXPECT_FALSE(opening.done_acquiring());
  fasteners::mock::unblock_open();
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(errors, 0);
  EXPECT_TRUE(opening.wait_held()) << "the acquire whose open() was blocked did not complete";
  EXPECT_TRUE(opening.release());
}

}  // namespace
}  // namespace fasteners_test
