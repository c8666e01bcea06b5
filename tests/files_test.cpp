// Tests of what the locks do to the file system and to the process's descriptors.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"
#include "test_util.hpp"

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
  struct stat before {};
  ASSERT_EQ(::stat(lock_path().c_str(), &before), 0);
  std::this_thread::sleep_for(20ms);  // so that a write would show in the modification time
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
    EXPECT_EQ(read_file(lock_path()), contents);
    lock.release();
    ASSERT_TRUE(lock.acquire(false));
  }
  EXPECT_EQ(read_file(lock_path()), contents);
  struct stat after {};
  ASSERT_EQ(::stat(lock_path().c_str(), &after), 0);
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_EQ(after.st_ino, before.st_ino) << "the lock file was replaced";
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  EXPECT_EQ(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
  EXPECT_EQ(after.st_mode, before.st_mode);
}

TEST_P(files_test, destruction_leaves_the_file_in_place) {
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
  }
  EXPECT_TRUE(fs::is_regular_file(lock_path()));
}

TEST_P(files_test, descriptor_count_returns_to_its_start) {
  const std::size_t start = count_open_fds();
  {
    kind_lock lock(GetParam(), lock_path());
    ASSERT_TRUE(lock.acquire());
    lock.release();
    EXPECT_EQ(count_open_fds(), start) << "after a release";
    ASSERT_TRUE(lock.acquire());
  }
  EXPECT_EQ(count_open_fds(), start) << "after destroying a held lock";

  // Failed acquires, against a holder in this process.
  kind_lock holder(kind::write, lock_path());
  thread_holder held(holder);
  ASSERT_TRUE(held.wait_held());
  const std::size_t while_held = count_open_fds();
  {
    kind_lock lock(GetParam(), lock_path());
    EXPECT_FALSE(lock.acquire(false));
    EXPECT_EQ(count_open_fds(), while_held) << "after a failed try";
    EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.05)));
    EXPECT_EQ(count_open_fds(), while_held) << "after a timed out acquire";
  }
  ASSERT_TRUE(held.release());
  EXPECT_EQ(count_open_fds(), start);
}

// A timed wait that gives up stays queued in the kernel, with one descriptor, until the holder
// lets go; later timed waits adopt it instead of adding their own.
TEST_P(files_test, descriptor_count_returns_to_its_start_after_failing_against_another_process) {
  const std::size_t before = count_open_fds();
  {
    child_process holder = hold_in_child(kind::write, lock_path());
    const std::size_t start = count_open_fds();
    {
      kind_lock lock(GetParam(), lock_path());
      EXPECT_FALSE(lock.acquire(false));
      EXPECT_EQ(count_open_fds(), start) << "after a failed try";
      for (int i = 0; i < 20; ++i) {
        EXPECT_FALSE(lock.acquire(true, std::chrono::duration<double>(0.01)));
      }
      EXPECT_LE(count_open_fds(), start + 1) << "after timed out acquires";
    }
    EXPECT_LE(count_open_fds(), start + 1) << "after destruction, while the other process holds";
    EXPECT_EQ(holder.finish(), 0);
  }
  const auto until = steady::now() + k_long;
  while (count_open_fds() != before && steady::now() < until) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(count_open_fds(), before) << "once the other process released";
}

TEST_P(files_test, descriptor_count_returns_to_its_start_after_errors) {
  fs::create_directory(lock_path());
  const std::size_t start = count_open_fds();
  {
    kind_lock lock(GetParam(), lock_path());
    EXPECT_THROW(lock.acquire(), std::system_error);
    EXPECT_THROW(lock.acquire(false), std::system_error);
    EXPECT_EQ(count_open_fds(), start);
  }
  EXPECT_EQ(count_open_fds(), start);
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
  const int fd = ::open(lock_path().c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::close(fd);
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

INSTANTIATE_TEST_SUITE_P(each_kind, files_test, ::testing::ValuesIn(all_kinds), kind_name);

TEST(files, descriptor_count_returns_to_its_start_after_many_readers) {
  temp_dir dir;
  const std::size_t start = count_open_fds();
  {
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
  }
  EXPECT_EQ(count_open_fds(), start);
}

}  // namespace
}  // namespace fasteners_test
