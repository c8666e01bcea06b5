// Windows tests within one process: objects and threads, files and errors, handles, wait styles.
#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "windows_test_util.hpp"

namespace fasteners_windows_test {
namespace {

namespace fs = std::filesystem;

// Runs `f` on another thread and returns its result: a lock of this process's other thread.
template <class F>
auto on_other_thread(F f) {
  decltype(f()) result{};
  std::thread t([&] { result = f(); });
  t.join();
  return result;
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

// ---- objects and threads of one process ----

class ObjectPairTest : public kind_pair_test {};

TEST_P(ObjectPairTest, TwoObjectsExcludeEachOtherAsTheKindsSay) {
  kind_lock holder(first(), lock_path());
  ASSERT_TRUE(holder.acquire());
  kind_lock other(second(), lock_path());
  EXPECT_EQ(on_other_thread([&] { return other.acquire(false); }), !conflict());
  if (!conflict())
    on_other_thread([&] {
      other.release();
      return 0;
    });
  holder.release();
  EXPECT_TRUE(on_other_thread([&] { return other.acquire(false); }));
  other.release();
}

INSTANTIATE_TEST_SUITE_P(Kinds, ObjectPairTest, ::testing::ValuesIn(all_kind_pairs()), pair_name);

class ConflictingPairTest : public ObjectPairTest {};

TEST_P(ConflictingPairTest, TimedWaitReturnsFalseNoSoonerThanItsTimeout) {
  kind_lock holder(first(), lock_path());
  ASSERT_TRUE(holder.acquire());
  kind_lock other(second(), lock_path());
  const auto start = steady::now();
  EXPECT_FALSE(on_other_thread([&] { return other.acquire(true, k_short); }));
  const double took = seconds_since(start);
  EXPECT_GE(took, 0.2);
  EXPECT_LT(took, 5.0);
  holder.release();
}

INSTANTIATE_TEST_SUITE_P(Kinds, ConflictingPairTest, ::testing::ValuesIn(conflicting_kind_pairs()),
                         pair_name);

class WindowsLockTest : public lock_test {};

TEST_F(WindowsLockTest, AcquireReleaseAndTheHandleBehindIt) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    kind_lock lock(k, lock_path());
    EXPECT_EQ(lock.native_handle(), -1);
    ASSERT_TRUE(lock.acquire());
    EXPECT_TRUE(lock.held());
    const auto handle = reinterpret_cast<HANDLE>(lock.native_handle());
    ASSERT_NE(lock.native_handle(), -1);
    EXPECT_EQ(identity_of(handle), identity_of(lock_path()));
    DWORD flags = 0;
    ASSERT_TRUE(::GetHandleInformation(handle, &flags));
    EXPECT_EQ(flags & HANDLE_FLAG_INHERIT, 0u) << "the lock handle must not be inheritable";
    lock.release();
    EXPECT_FALSE(lock.held());
    EXPECT_EQ(lock.native_handle(), -1);
    try {
      lock.release();
      ADD_FAILURE() << "releasing a lock that is not held must throw";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::operation_not_permitted);
    }
  }
}

TEST_F(WindowsLockTest, ThreadsAreExcludedWithOwnObjectsAndWithOneSharedObject) {
  for (const bool shared_object : {false, true}) {
    SCOPED_TRACE(shared_object ? "one shared object" : "an object per thread");
    fasteners::interprocess_lock shared(lock_path());
    std::atomic<int> inside{0};
    std::atomic<bool> overlap{false};
    int counter = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        fasteners::interprocess_lock own(lock_path());
        auto& lock = shared_object ? shared : own;
        for (int i = 0; i < 100; ++i) {
          std::lock_guard<fasteners::interprocess_lock> guard(lock);
          if (inside.fetch_add(1) != 0) overlap = true;
          const int seen = counter;
          std::this_thread::yield();
          counter = seen + 1;
          inside.fetch_sub(1);
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_FALSE(overlap.load());
    EXPECT_EQ(counter, 400);
  }
}

TEST_F(WindowsLockTest, ReadersOfOneProcessOverlap) {
  fasteners::interprocess_reader_writer_lock a(lock_path());
  fasteners::interprocess_reader_writer_lock b(lock_path());
  ASSERT_TRUE(a.acquire_read_lock());
  EXPECT_TRUE(on_other_thread([&] { return b.acquire_read_lock(false); }));
  EXPECT_TRUE(a.read_acquired());
  EXPECT_TRUE(b.read_acquired());
  b.release_read_lock();
  a.release_read_lock();
}

TEST_F(WindowsLockTest, BlockingWaitEndsWhenTheHolderReleases) {
  fasteners::interprocess_reader_writer_lock holder(lock_path());
  ASSERT_TRUE(holder.acquire_write_lock());
  fasteners::interprocess_lock waiter(lock_path());
  std::atomic<bool> got{false};
  std::thread t([&] {
    waiter.acquire();
    got = true;
  });
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.load());
  holder.release_write_lock();
  t.join();
  EXPECT_TRUE(got.load());
  waiter.release();
}

TEST_F(WindowsLockTest, TimedWaitSucceedsWhenTheHolderReleasesInTime) {
  fasteners::interprocess_lock holder(lock_path());
  ASSERT_TRUE(holder.acquire());
  std::thread releaser([&] {
    std::this_thread::sleep_for(k_short);
    holder.release();
  });
  fasteners::interprocess_reader_writer_lock waiter(lock_path());
  const auto start = steady::now();
  EXPECT_TRUE(on_other_thread([&] { return waiter.try_lock_shared_for(k_upper); }));
  EXPECT_LT(seconds_since(start), 5.0);
  releaser.join();
  on_other_thread([&] {
    waiter.unlock_shared();
    return 0;
  });
}

TEST_F(WindowsLockTest, WaitingOnALockTheSameThreadHoldsThrowsInsteadOfHanging) {
  fasteners::interprocess_lock a(lock_path());
  fasteners::interprocess_lock b(lock_path());
  ASSERT_TRUE(a.acquire());
  EXPECT_FALSE(b.acquire(false));
  try {
    b.acquire();
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur);
  }
  a.release();
}

TEST_F(WindowsLockTest, NegativeTimeoutIsRefused) {
  fasteners::interprocess_lock lock(lock_path());
  EXPECT_THROW(lock.acquire(true, std::chrono::duration<double>(-1)), std::invalid_argument);
}

TEST_F(WindowsLockTest, StandardLockTypesAndWrappersWork) {
  fasteners::interprocess_lock a(lock_path());
  fasteners::interprocess_lock b(dir() / "second");
  {
    std::scoped_lock both(a, b);
    EXPECT_TRUE(a.acquired());
    EXPECT_TRUE(b.acquired());
  }
  EXPECT_FALSE(a.acquired());
  fasteners::interprocess_reader_writer_lock rw(lock_path());
  {
    std::shared_lock<fasteners::interprocess_reader_writer_lock> reader(rw);
    EXPECT_TRUE(rw.read_acquired());
  }
  {
    std::unique_lock<fasteners::interprocess_reader_writer_lock> writer(rw, std::defer_lock);
    EXPECT_TRUE(writer.try_lock_for(k_short));
  }
  auto increment = fasteners::interprocess_locked(lock_path(), [](int& n) { return ++n; });
  int n = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) increment(n);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(n, 200);
}

// ---- files, paths and errors ----

TEST_F(WindowsLockTest, MissingParentDirectoriesAreCreated) {
  const auto path = dir() / "a" / "b" / "c" / "lock";
  fasteners::interprocess_lock lock(path);
  ASSERT_TRUE(lock.acquire());
  EXPECT_TRUE(fs::is_regular_file(path));
  lock.release();
}

TEST_F(WindowsLockTest, TheFileIsNeverTruncatedOrWritten) {
  write_counter(lock_path(), 12345);
  for (const kind k : all_kinds) {
    kind_lock lock(k, lock_path());
    ASSERT_TRUE(lock.acquire());
    lock.release();
  }
  EXPECT_EQ(read_counter(lock_path()), 12345);
  EXPECT_EQ(fs::file_size(lock_path()), 20u);
}

TEST_F(WindowsLockTest, ADirectoryIsRefusedWithItsPath) {
  fasteners::interprocess_lock lock(dir());
  try {
    lock.acquire();
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::is_a_directory);
    EXPECT_NE(std::string(e.what()).find(dir().u8string()), std::string::npos) << e.what();
  }
}

TEST_F(WindowsLockTest, AnEmptyPathIsRefused) {
  fasteners::interprocess_lock lock{fs::path()};
  try {
    lock.acquire();
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
  }
}

TEST_F(WindowsLockTest, ADeviceIsRefused) {
  fasteners::interprocess_lock lock(fs::path(L"NUL"));
  try {
    lock.acquire(false);
    ADD_FAILURE() << "must throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument) << e.what();
  }
}

TEST_F(WindowsLockTest, ABadPathGivesTheWindowsErrorAndThePath) {
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

TEST_F(WindowsLockTest, NonAsciiPathsWork) {
  // "κλειδιά" (Greek: keys) / "锁文件.lock" (Chinese: lock file).
  const auto path =
      dir() / L"\u03ba\u03bb\u03b5\u03b9\u03b4\u03b9\u03ac" / L"\u9501\u6587\u4ef6.lock";
  for (const kind k : all_kinds) {
    kind_lock lock(k, path);
    ASSERT_TRUE(lock.acquire());
    kind_lock other(kind::write, path);
    EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); }));
    lock.release();
  }
  WIN32_FIND_DATAW found{};
  const HANDLE search = ::FindFirstFileW(path.c_str(), &found);
  ASSERT_NE(search, INVALID_HANDLE_VALUE);
  ::FindClose(search);
  EXPECT_EQ(std::wstring(found.cFileName), L"\u9501\u6587\u4ef6.lock");
  // Errors name such paths in UTF-8.
  const auto directory = dir() / L"\u03ba\u03b1\u03c4\u03ac\u03bb\u03bf\u03b3\u03bf\u03c2";
  fs::create_directory(directory);
  fasteners::interprocess_lock bad(directory);
  const auto message = what_of([&] { bad.acquire(); });
  EXPECT_NE(message.find(directory.u8string()), std::string::npos) << message;
}

TEST_F(WindowsLockTest, AnotherSpellingOfThePathIsTheSameFile) {
  fasteners::interprocess_lock a(lock_path());
  ASSERT_TRUE(a.acquire());
  fs::create_directory(dir() / "sub");
  const std::vector<fs::path> spellings = {
      fs::path(lock_path().generic_wstring()),  // forward slashes
      dir() / "LOCK",                           // another case
      dir() / "sub" / ".." / "lock",
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
  }
  a.release();
}

TEST_F(WindowsLockTest, AFileSharedForReadingOnlyGivesReadLocksOnly) {
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

TEST_F(WindowsLockTest, AReadOnlyFileGivesReadLocksOnly) {
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

TEST_F(WindowsLockTest, OtherProgramsCanOpenTheLockedFile) {
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

TEST_F(WindowsLockTest, NoHandleIsLeft) {
  const auto path = lock_path();
  auto exercise = [&] {
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      EXPECT_TRUE(lock.acquire());
      kind_lock other(kind::write, path);
      EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); }));
      EXPECT_FALSE(on_other_thread([&] { return other.acquire(true, 50ms); }));
      lock.release();
    }
    fasteners::interprocess_lock bad(dir());
    EXPECT_THROW(bad.acquire(), std::system_error);
    fasteners::lock_options keep;
    keep.keep_open = true;
    fasteners::interprocess_lock kept(path, keep);
    EXPECT_TRUE(kept.acquire());
    kept.release();
    EXPECT_TRUE(kept.acquire());
    kept.release();
  };
  exercise();  // Warms up what the runtime creates once (thread pools, locale data).
  // Windows' own worker threads may open or close a handle meanwhile: a leak is a handle or more
  // per round.
  constexpr int rounds = 10;
  const auto before = handle_count();
  for (int i = 0; i < rounds; ++i) exercise();
  const auto after = handle_count();
  EXPECT_LT(after, before + rounds) << before << " handles before, " << after << " after";
  if (running_on_wine()) {
    EXPECT_EQ(after, before);
  }
}

TEST_F(WindowsLockTest, KeepOpenKeepsOneHandle) {
  fasteners::lock_options options;
  options.keep_open = true;
  fasteners::interprocess_lock lock(lock_path(), options);
  ASSERT_TRUE(lock.acquire());
  const auto first = lock.native_handle();
  lock.release();
  ASSERT_TRUE(lock.acquire());
  EXPECT_EQ(lock.native_handle(), first);
  lock.release();
}

// Whether this system deletes a file that is still open at once (POSIX semantics).
bool posix_delete_supported(const fs::path& dir) {
  const auto path = dir / "probe";
  { foreign_handle create(path); }
  const HANDLE file = ::CreateFileW(path.c_str(), DELETE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                                    nullptr, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, nullptr);
  if (file == INVALID_HANDLE_VALUE) return false;
  DWORD flags = 0x1 | 0x2;  // FILE_DISPOSITION_FLAG_DELETE | FILE_DISPOSITION_FLAG_POSIX_SEMANTICS
  const bool deleted = ::SetFileInformationByHandle(
      file, static_cast<FILE_INFO_BY_HANDLE_CLASS>(21), &flags, sizeof flags);
  ::CloseHandle(file);
  if (!deleted) fs::remove(path);
  return deleted;
}

TEST_F(WindowsLockTest, RemoveOnReleaseDeletesWhereWindowsAllows) {
  fasteners::lock_options options;
  options.remove_on_release = true;
  const bool deletes = posix_delete_supported(dir());
  for (int i = 0; i < 3; ++i) {
    fasteners::interprocess_lock lock(lock_path(), options);
    ASSERT_TRUE(lock.acquire());
    fasteners::interprocess_lock other(lock_path(), options);
    EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); }));
    lock.release();
    EXPECT_EQ(fs::exists(lock_path()), !deletes) << "POSIX deletion supported: " << deletes;
  }
}

TEST_F(WindowsLockTest, HoldersIsNotAvailable) {
  EXPECT_THROW(fasteners::holders(lock_path()), std::system_error);
  std::error_code ec;
  EXPECT_TRUE(fasteners::holders(lock_path(), ec).empty());
  EXPECT_EQ(ec, std::errc::function_not_supported);
}

// ---- the byte range that python-fasteners locks ----

TEST_F(WindowsLockTest, AForeignLockOnByteZeroExcludesAsPythonFastenersDoes) {
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

TEST_F(WindowsLockTest, TheLibrarysLocksExcludeForeignLocksOnByteZero) {
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

// ---- waiting for a foreign handle ----

// Checks, in a helper process, tries and waits against a lock held through a foreign handle.
FASTENERS_WINDOWS_HELPER(foreign_wait_checks) {
  const fs::path dir = args.at(0);
  const auto path = dir / "lock";
  auto check = [](bool ok, const char* what) {
    if (!ok) throw std::runtime_error(what);
  };
  auto cycle = [&] {
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      check(lock.acquire(), "an uncontended acquire");
      kind_lock other(kind::write, path);
      check(!on_other_thread([&] { return other.acquire(false); }), "a try while held");
      lock.release();
    }
    foreign_handle foreign(path);
    check(foreign.try_lock(true), "a foreign lock on a free file");
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      check(!lock.acquire(false), "a try while a foreign handle holds the lock");
    }
    {
      kind_lock timed(kind::write, path);
      const auto start = steady::now();
      check(!timed.acquire(true, k_short), "a timed wait while a foreign handle holds the lock");
      check(seconds_since(start) >= 0.2, "a timed wait that ends no sooner than its timeout");
      std::thread unlocker([&] {
        std::this_thread::sleep_for(k_short);
        foreign.unlock();
      });
      kind_lock blocking(kind::read, path);
      check(blocking.acquire(), "a blocking wait");
      blocking.release();
      unlocker.join();
      check(foreign.try_lock(true), "a foreign lock again");
      std::thread unlocker2([&] {
        std::this_thread::sleep_for(k_short);
        foreign.unlock();
      });
      check(timed.acquire(true, k_upper), "a timed wait that the holder ends in time");
      timed.release();
      unlocker2.join();
    }
  };
  try {
    cycle();
    const auto before = handle_count();
    for (int i = 0; i < 3; ++i) cycle();
    check(handle_count() < before + 3, "no handle is left behind");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}

TEST_F(WindowsLockTest, WaitsForAForeignHandle) {
  EXPECT_EQ(run_helper("foreign_wait_checks", {dir().native()}), 0);
}

}  // namespace
}  // namespace fasteners_windows_test
