// System-call failures injected into the POSIX platform: errors surface, nothing is left behind.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>

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

}  // namespace
}  // namespace fasteners_test
