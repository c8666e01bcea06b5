// Tests of what the locks do to the file system, to paths and to the process's descriptors
// (handles on Windows).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class files_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(files_test, construction_does_not_touch_the_file_system) {
  const fs::path path = dir() / "sub" / "lock";
  kind_lock lock(GetParam(), path);
  fasteners::interprocess_lock exclusive(path);
  fasteners::interprocess_reader_writer_lock rw(path);
  EXPECT_EQ(exclusive.path(), path);
  EXPECT_EQ(rw.path(), path);
  EXPECT_FALSE(fs::exists(dir() / "sub"));
  EXPECT_FALSE(lock.held());
}

TEST_P(files_test, acquire_creates_the_file_and_its_missing_parent_directories) {
  const fs::path path = dir() / "a" / "b" / "c" / "lock";
  kind_lock lock(GetParam(), path);
  ASSERT_TRUE(lock.acquire());
  EXPECT_TRUE(fs::is_directory(dir() / "a" / "b" / "c"));
  EXPECT_TRUE(fs::is_regular_file(path));
  EXPECT_EQ(fs::file_size(path), 0u);
  lock.release();
  EXPECT_TRUE(fs::is_regular_file(path)) << "release deleted the lock file";
}

TEST_P(files_test, a_non_blocking_or_timed_acquire_creates_the_file_too) {
  kind_lock lock(GetParam(), dir() / "x" / "lock");
  ASSERT_TRUE(lock.acquire(false));
  EXPECT_TRUE(fs::is_regular_file(dir() / "x" / "lock"));
  lock.release();
  kind_lock timed(GetParam(), dir() / "y" / "lock");
  ASSERT_TRUE(timed.acquire(true, std::chrono::duration<double>(1.0)));
  EXPECT_TRUE(fs::is_regular_file(dir() / "y" / "lock"));
  timed.release();
}

TEST_P(files_test, an_existing_file_is_never_truncated_or_written) {
  const std::string contents = "precious contents\nthat must survive\n";
  std::ofstream(lock_path(), std::ios::binary) << contents;
  const auto identity = file_identity(lock_path());
  const auto modified = fs::last_write_time(lock_path());
  const auto status = fs::status(lock_path());
  std::this_thread::sleep_for(20ms);  // so that a write would show in the modification time
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
    EXPECT_EQ(read_file(lock_path()), contents);
    lock.release();
    ASSERT_TRUE(lock.acquire(false));
  }
  EXPECT_EQ(read_file(lock_path()), contents);
  EXPECT_EQ(fs::file_size(lock_path()), contents.size());
  EXPECT_EQ(file_identity(lock_path()), identity) << "the lock file was replaced";
  EXPECT_EQ(fs::last_write_time(lock_path()), modified);
  EXPECT_EQ(fs::status(lock_path()).type(), status.type());
  EXPECT_EQ(fs::status(lock_path()).permissions(), status.permissions());
}

TEST_P(files_test, destruction_leaves_the_file_in_place) {
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
  }
  EXPECT_TRUE(fs::is_regular_file(lock_path()));
}

TEST_P(files_test, descriptor_count_returns_to_its_start) {
  const std::size_t start = count_open_handles();
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
    lock.release();
    EXPECT_EQ(count_open_handles(), start) << "after a release";
    ASSERT_TRUE(lock.acquire());
  }
  EXPECT_EQ(count_open_handles(), start) << "after destroying a held lock";

  // Failed acquires, against a holder in this process. The first wait on a file may set up what
  // waits need for as long as objects use the file (on Windows, a condition variable's
  // semaphores), so the count while held is taken after one.
  {
    kind_lock holder(kind::write, lock_path());
    thread_holder held(holder);
    ASSERT_TRUE(held.wait_held());
    kind_lock lock(GetParam(), lock_path());
    EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.05)));
    const std::size_t while_held = count_open_handles();
    EXPECT_FALSE(lock.acquire(false));
    EXPECT_EQ(count_open_handles(), while_held) << "after a failed try";
    EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.05)));
    EXPECT_EQ(count_open_handles(), while_held) << "after a timed out acquire";
    ASSERT_TRUE(held.release());
  }
  EXPECT_EQ(count_open_handles(), start) << "after the holder and the failed object are gone";
}

// A timed wait that gives up stays queued in the kernel until the holder lets go (nothing else can
// end it); later timed waits adopt it instead of adding their own, and once the holder lets go,
// everything it kept is gone. Handles are only counted here, never asked about: on Windows a
// question about a handle on which a thread of the library waits would wait for the lock too.
TEST_P(files_test, descriptor_count_returns_to_its_start_after_failing_against_another_process) {
  // Waits until this process has at most `limit` handles open; returns the count.
  const auto settle_at = [](std::size_t limit) {
    const auto until = steady::now() + k_long;
    while (count_open_handles() > limit && steady::now() < until) {
      std::this_thread::sleep_for(1ms);
    }
    return count_open_handles();
  };
  const auto round = [&] {
    const std::size_t before_holder = count_open_handles();
    child_process holder = hold_in_child(kind::write, lock_path());
    const std::size_t start = count_open_handles();
    {
      kind_lock lock(GetParam(), lock_path());
      EXPECT_FALSE(lock.acquire(false));
      EXPECT_EQ(count_open_handles(), start) << "after a failed try";
      EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.01)));
      const std::size_t queued = count_open_handles();
      for (int i = 0; i < 19; ++i) {
        EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.01)));
      }
      EXPECT_EQ(count_open_handles(), queued) << "later timed waits did not adopt the queued one";
    }
    EXPECT_EQ(holder.finish(), 0);
    return before_holder;
  };
  // The first round may set up what a process keeps for good (on Windows, kernel objects of the
  // runtime's threads); after a second round, once the holder let go, nothing is left. The count
  // may also fall below where it was: the library's idle waiting threads end after a while.
  settle_at(round());
  const std::size_t before = count_open_handles();
  round();
  EXPECT_LE(settle_at(before), before) << "after a second round, once the other process let go";
  EXPECT_TRUE(handles_referring_to(lock_path()).empty()) << "once the other process let go";
}

TEST_P(files_test, descriptor_count_returns_to_its_start_after_errors) {
  fs::create_directory(lock_path());
  const std::size_t start = count_open_handles();
  {
    kind_lock lock(GetParam(), lock_path());
    EXPECT_THROW(lock.acquire(), std::system_error);
    EXPECT_THROW(lock.acquire(false), std::system_error);
    EXPECT_EQ(count_open_handles(), start);
  }
  EXPECT_EQ(count_open_handles(), start);
}

TEST_P(files_test, other_lock_objects_on_the_file_do_not_release_it) {
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  // Another thread, which holds nothing, opens and drops other objects on the file.
  std::thread([&] {
    for (const kind k : all_kinds) {
      kind_lock other(k, lock_path());
      const bool got = other.acquire(false);
      EXPECT_EQ(got, !conflicts(GetParam(), k)) << to_string(k);
      if (got) other.release();
    }
    kind_lock writer(kind::write, lock_path());
    EXPECT_FALSE(writer.acquire(true, std::chrono::duration<double>(0.05)));
  }).join();
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  lock.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_P(files_test, closing_another_descriptor_of_the_file_does_not_release_it) {
  if (k_classic_fcntl) {
    GTEST_SKIP() << "classic fcntl locks belong to the process: any close() of the file drops "
                    "them (a documented caveat of the FASTENERS_CLASSIC_FCNTL build)";
  }
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  {
    std::fstream both(lock_path(), std::ios::in | std::ios::out | std::ios::binary);
    EXPECT_TRUE(both.is_open());
  }
  { std::ifstream in(lock_path()); }
  { std::ofstream out(lock_path(), std::ios::app); }
  EXPECT_TRUE(lock.held());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  lock.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

TEST_P(files_test, a_hard_link_names_the_same_lock) {
  std::ofstream(lock_path()).flush();
  const fs::path link = dir() / "link";
  fs::create_hard_link(lock_path(), link);
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  EXPECT_EQ(try_in_child(kind::write, link), k_busy);
  kind_lock through_link(kind::write, link);
  EXPECT_FALSE(through_link.acquire(false));
  try {
    through_link.acquire();
    ADD_FAILURE() << "a blocking acquire through a link by the holding thread returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << e.what();
  }
  lock.release();
  EXPECT_EQ(try_in_child(kind::write, link), k_acquired);
}

TEST_P(files_test, another_spelling_of_the_path_names_the_same_lock) {
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  fs::create_directory(dir() / "sub");
  for (const fs::path& spelling : {dir() / "sub" / ".." / "lock", dir() / "." / "lock"}) {
    SCOPED_TRACE(spelling.u8string());
    kind_lock other(kind::write, spelling);
    // Only an object on the same file in this process makes this thread's wait a deadlock.
    try {
      other.acquire();
      ADD_FAILURE() << "a blocking acquire by the holding thread returned";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << e.what();
    }
    EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); }));
    EXPECT_EQ(try_in_child(kind::write, spelling), k_busy);
  }
  lock.release();
}

TEST_P(files_test, a_non_ascii_path_works_and_errors_name_it_in_utf8) {
  // "κλειδιά" (Greek: keys) / "锁文件.lock" (Chinese: lock file).
  const auto name = fs::u8path(u8"\u9501\u6587\u4ef6.lock");
  const auto path = dir() / fs::u8path(u8"\u03ba\u03bb\u03b5\u03b9\u03b4\u03b9\u03ac") / name;
  kind_lock lock(GetParam(), path);
  ASSERT_TRUE(lock.acquire());
  kind_lock other(kind::write, path);
  EXPECT_FALSE(on_other_thread([&] { return other.acquire(false); }));
  EXPECT_EQ(try_in_child(kind::write, path), k_busy);
  lock.release();
  {
    child_process holder = hold_in_child(kind::write, path);
    EXPECT_FALSE(lock.acquire(false));
    EXPECT_EQ(holder.finish(), 0);
  }
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
  std::vector<fs::path> names;
  for (const auto& entry : fs::directory_iterator(path.parent_path())) {
    names.push_back(entry.path().filename());
  }
  EXPECT_EQ(names, std::vector<fs::path>{name});
  // "κατάλογος" (Greek: directory).
  const auto directory =
      dir() / fs::u8path(u8"\u03ba\u03b1\u03c4\u03ac\u03bb\u03bf\u03b3\u03bf\u03c2");
  fs::create_directory(directory);
  kind_lock bad(GetParam(), directory);
  try {
    bad.acquire();
    ADD_FAILURE() << "a directory was locked";
  } catch (const std::system_error& e) {
    EXPECT_NE(std::string(e.what()).find(directory.u8string()), std::string::npos) << e.what();
  }
}

TEST_P(files_test, the_native_handle_refers_to_the_lock_file_while_held) {
  kind_lock lock(GetParam(), lock_path());
  EXPECT_EQ(lock.native_handle(), -1);
  ASSERT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.held());
  ASSERT_NE(lock.native_handle(), -1);
  const auto handles = handles_referring_to(lock_path());
  EXPECT_NE(std::find(handles.begin(), handles.end(), lock.native_handle()), handles.end())
      << "the native handle is not open on the lock file";
  lock.release();
  EXPECT_FALSE(lock.held());
  EXPECT_EQ(lock.native_handle(), -1);
  try {
    lock.release();
    ADD_FAILURE() << "releasing a lock that is not held returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::operation_not_permitted);
  }
}

TEST_P(files_test, keep_open_keeps_one_descriptor_until_destruction) {
  const std::size_t start = count_open_handles();
  {
    fasteners::lock_options options;
    options.keep_open = true;
    kind_lock lock(GetParam(), lock_path(), options);
    ASSERT_TRUE(lock.acquire());
    const auto first = lock.native_handle();
    lock.release();
    const std::size_t kept = count_open_handles();
    EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
    ASSERT_TRUE(lock.acquire());
    EXPECT_EQ(lock.native_handle(), first);
    EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
    lock.release();
    EXPECT_EQ(count_open_handles(), kept) << "a second acquire opened the file again";
  }
  EXPECT_EQ(count_open_handles(), start) << "destruction did not close the kept file";
}

INSTANTIATE_TEST_SUITE_P(each_kind, files_test, ::testing::ValuesIn(all_kinds), kind_name);

TEST(files, descriptor_count_returns_to_its_start_after_many_readers) {
  temp_dir dir;
  const auto round = [&] {
    fasteners::interprocess_reader_writer_lock shared(dir.path() / "lock");
    latch all_acquired(4);
    std::vector<std::thread> readers;
    for (int i = 0; i < 4; ++i) {
      readers.emplace_back([&, i] {
        if (i % 2 == 0) {
          EXPECT_TRUE(shared.acquire_read_lock());
          EXPECT_TRUE(all_acquired.arrive_and_wait_for());
        } else {
          fasteners::interprocess_reader_writer_lock own(dir.path() / "lock");
          EXPECT_TRUE(own.acquire_read_lock());
          EXPECT_TRUE(all_acquired.arrive_and_wait_for());
          own.release_read_lock();
        }
      });
    }
    for (auto& r : readers) r.join();
    shared.release_read_lock();
    EXPECT_TRUE(shared.read_acquired());
  };
  // Counted after a first round: the runtime may keep handles of its own from the first threads
  // (Wine does), which a later round reuses.
  round();
  const std::size_t start = count_open_handles();
  for (int i = 0; i < 3; ++i) round();
  EXPECT_EQ(count_open_handles(), start);
}

}  // namespace
}  // namespace fasteners_test
