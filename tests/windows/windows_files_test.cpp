// Windows-only behaviour of lock files: Windows paths and errors, share modes, the read-only
// attribute, and what is not available there.
#include <string>
#include <system_error>
#include <vector>

#include "windows/windows_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

using windows_files_test = lock_test;

TEST_F(windows_files_test, a_bad_name_gives_the_windows_error_and_the_path) {
  const auto path = dir() / L"bad<name>";
  fasteners::interprocess_lock lock(path);
  try {
    lock.acquire();
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code().category(), std::system_category());
    EXPECT_EQ(e.code().value(), static_cast<int>(ERROR_INVALID_NAME)) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad<name>"), std::string::npos) << e.what();
  }
}

TEST_F(windows_files_test, slashes_and_case_spell_the_same_file) {
  fasteners::interprocess_lock a(lock_path());
  ASSERT_TRUE(a.acquire());
  const std::vector<fs::path> spellings = {
      fs::path(lock_path().generic_wstring()),  // forward slashes
      dir() / "LOCK",                           // another case
  };
  for (const auto& spelling : spellings) {
    SCOPED_TRACE(spelling.u8string());
    fasteners::interprocess_lock b(spelling);
    // Only an object on the same file in this process makes this thread's wait a deadlock.
    try {
      b.acquire();
      ADD_FAILURE() << "must throw";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
    }
    EXPECT_FALSE(on_other_thread([&] { return b.acquire(false); }));
    EXPECT_EQ(try_in_child(kind::lock, spelling), k_busy);
  }
  a.release();
}

TEST_F(windows_files_test, a_file_shared_for_reading_only_gives_read_locks_only) {
  // Another program opened the file and lets others read it, not write it.
  const HANDLE reader = ::CreateFileW(lock_path().c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr,
                                      OPEN_ALWAYS, FILE_ATTRIBUTE_NORMAL, nullptr);
  ASSERT_NE(reader, INVALID_HANDLE_VALUE);
  fasteners::interprocess_reader_writer_lock rw(lock_path());
  EXPECT_TRUE(rw.acquire_read_lock());
  rw.release_read_lock();
  try {
    rw.acquire_write_lock();
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::permission_denied) << e.what();
  }
  ::CloseHandle(reader);
}

TEST_F(windows_files_test, a_read_only_file_gives_read_locks_only) {
  { foreign_handle create(lock_path()); }
  ASSERT_TRUE(::SetFileAttributesW(lock_path().c_str(), FILE_ATTRIBUTE_READONLY));
  const HANDLE probe = ::CreateFileW(lock_path().c_str(), GENERIC_WRITE, FILE_SHARE_READ, nullptr,
                                     OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (probe != INVALID_HANDLE_VALUE) {
    ::CloseHandle(probe);
    ::SetFileAttributesW(lock_path().c_str(), FILE_ATTRIBUTE_NORMAL);
    GTEST_SKIP() << "the read-only attribute does not stop writers here (Wine run as root)";
  }
  fasteners::interprocess_reader_writer_lock rw(lock_path());
  EXPECT_TRUE(rw.acquire_read_lock());
  rw.release_read_lock();
  EXPECT_THROW(rw.acquire_write_lock(), std::system_error);
  ::SetFileAttributesW(lock_path().c_str(), FILE_ATTRIBUTE_NORMAL);
}

TEST_F(windows_files_test, other_programs_can_open_the_locked_file) {
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  // As python-fasteners opens it (for appending, sharing reading and writing).
  const HANDLE other = ::CreateFileW(lock_path().c_str(), GENERIC_READ | GENERIC_WRITE,
                                     FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr, OPEN_ALWAYS,
                                     FILE_ATTRIBUTE_NORMAL, nullptr);
  EXPECT_NE(other, INVALID_HANDLE_VALUE) << ::GetLastError();
  if (other != INVALID_HANDLE_VALUE) ::CloseHandle(other);
  lock.release();
}

TEST_F(windows_files_test, holders_is_not_available) {
  EXPECT_THROW(fasteners::holders(lock_path()), std::system_error);
  std::error_code ec;
  EXPECT_TRUE(fasteners::holders(lock_path(), ec).empty());
  EXPECT_EQ(ec, std::errc::function_not_supported);
}

}  // namespace
}  // namespace fasteners_test
