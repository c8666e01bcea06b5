// Tests of fasteners::holders(): locks of this process and of forked children, of every kind.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"

namespace fasteners {
namespace {

namespace fs = std::filesystem;

#if defined(FASTENERS_CLASSIC_FCNTL)
constexpr lock_mechanism library_mechanism = lock_mechanism::fcntl_posix;
#else
constexpr lock_mechanism library_mechanism = lock_mechanism::fcntl_ofd;
#endif

class holders_test : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "fasteners_holders_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ / "lock";
  }
  void TearDown() override {
    for (auto& child : children_) finish(child);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  struct child_process {
    pid_t pid = -1;
    int release_fd = -1;  // Closing it tells the child to end.
  };

  // Forks a child that runs `take` (which must lock the file and return true) and then holds
  // until released. Returns once the child holds.
  child_process fork_holder(const std::function<bool()>& take) {
    int ready[2];
    int release[2];
    EXPECT_EQ(::pipe(ready), 0);
    EXPECT_EQ(::pipe(release), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      ::close(release[1]);
      const char ok = take() ? 'y' : 'n';
      if (::write(ready[1], &ok, 1) != 1) ::_exit(2);
      char byte;
      while (::read(release[0], &byte, 1) > 0) {
      }
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(release[0]);
    char ok = 'n';
    EXPECT_EQ(::read(ready[0], &ok, 1), 1);
    ::close(ready[0]);
    EXPECT_EQ(ok, 'y');
    children_.push_back({pid, release[1]});
    return children_.back();
  }

  void finish(child_process& child) {
    if (child.pid <= 0) return;
    ::close(child.release_fd);
    int status = 0;
    ::waitpid(child.pid, &status, 0);
    child.pid = -1;
  }

  std::vector<lock_holder> holders_of(const fs::path& path) {
    std::error_code ec;
    auto result = holders(path, ec);
    EXPECT_FALSE(ec) << ec.message();
    return result;
  }

  fs::path dir_;
  fs::path path_;
  std::vector<child_process> children_;
};

TEST_F(holders_test, missing_file_has_none_and_is_not_created) {
  EXPECT_TRUE(holders(path_).empty());
  EXPECT_TRUE(holders(dir_ / "no" / "such" / "file").empty());
  EXPECT_FALSE(fs::exists(path_));
  std::ofstream(dir_ / "regular");
  EXPECT_TRUE(holders(dir_ / "regular" / "below").empty());  // ENOTDIR: nothing there either.
}

TEST_F(holders_test, free_file_and_directory_have_none) {
  std::ofstream(path_.string());
  EXPECT_TRUE(holders_of(path_).empty());
  EXPECT_TRUE(holders_of(dir_).empty());
}

TEST_F(holders_test, lists_this_process) {
  interprocess_lock lock(path_);
  ASSERT_TRUE(lock.acquire());
  const auto found = holders_of(path_);
  ASSERT_EQ(found.size(), 1u);
  const auto& h = found[0];
  EXPECT_EQ(h.pid, ::getpid());
  EXPECT_EQ(h.kind, lock_kind::exclusive);
  EXPECT_EQ(h.mechanism, library_mechanism);
  EXPECT_NE(h.command.find("holders_test"), std::string::npos) << h.command;
  EXPECT_TRUE(h.inspectable);
  EXPECT_TRUE(h.whole_file);
  EXPECT_FALSE(h.waiting);
  EXPECT_FALSE(h.since.has_value());
  lock.release();
  EXPECT_TRUE(holders_of(path_).empty());
}

TEST_F(holders_test, read_lock_is_shared) {
  interprocess_reader_writer_lock lock(path_);
  auto guard = lock.read_lock();
  const auto found = holders_of(path_);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, lock_kind::shared);
  EXPECT_EQ(found[0].mechanism, library_mechanism);
}

TEST_F(holders_test, flock_of_a_child) {
  const auto path = path_;
  const auto child = fork_holder([&] {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0666);
    return fd >= 0 && ::flock(fd, LOCK_EX) == 0;
  });
  const auto found = holders_of(path_);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].pid, child.pid);
  EXPECT_EQ(found[0].mechanism, lock_mechanism::flock);
  EXPECT_EQ(found[0].kind, lock_kind::exclusive);
  EXPECT_TRUE(found[0].whole_file);
}

TEST_F(holders_test, classic_fcntl_range_of_a_child) {
  const auto path = path_;
  const auto child = fork_holder([&] {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0666);
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 10;
    fl.l_len = 10;
    return fd >= 0 && ::fcntl(fd, F_SETLK, &fl) == 0;
  });
  const auto found = holders_of(path_);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].pid, child.pid);
  EXPECT_EQ(found[0].mechanism, lock_mechanism::fcntl_posix);
  EXPECT_EQ(found[0].kind, lock_kind::shared);
  EXPECT_FALSE(found[0].whole_file);
  EXPECT_EQ(found[0].first_byte, 10u);
  EXPECT_EQ(found[0].last_byte, std::optional<std::uint64_t>(19));
}

TEST_F(holders_test, open_file_shared_with_a_child_lists_both) {
  interprocess_lock lock(path_);
  ASSERT_TRUE(lock.acquire());
  // A child that keeps a copy of the locking descriptor (as `fasteners run` hands it over).
  const int copy = ::fcntl(static_cast<int>(lock.native_handle()), F_DUPFD, 3);
  ASSERT_GE(copy, 0);
  const auto child = fork_holder([] { return true; });
  std::vector<int> pids;
  for (const auto& h : holders_of(path_)) pids.push_back(h.pid);
  if (library_mechanism == lock_mechanism::fcntl_ofd) {
    EXPECT_EQ(pids,
              (std::vector<int>{std::min(::getpid(), child.pid), std::max(::getpid(), child.pid)}));
  } else {
    EXPECT_EQ(pids, std::vector<int>{::getpid()});  // Classic locks belong to one process.
  }
  lock.release();
  ::close(copy);  // Not before: closing it would drop a classic fcntl lock.
}

TEST_F(holders_test, waiting_writer_is_listed_as_waiting) {
  const auto path = path_;
  auto child = fork_holder([&] {
    static interprocess_reader_writer_lock* reader = new interprocess_reader_writer_lock(path);
    return reader->acquire_read_lock();
  });
  interprocess_reader_writer_lock writer(path_);
  std::thread waiting(
      [&] { EXPECT_TRUE(writer.acquire_write_lock(true, std::chrono::seconds(60))); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool seen = false;
  while (!seen && std::chrono::steady_clock::now() < deadline) {
    for (const auto& h : holders_of(path_)) {
      seen = seen || (h.waiting && h.pid == ::getpid() && h.kind == lock_kind::exclusive);
    }
    if (!seen) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(seen);
  bool child_reads = false;
  for (const auto& h : holders_of(path_)) {
    child_reads = child_reads || (h.pid == child.pid && h.kind == lock_kind::shared && !h.waiting);
  }
  EXPECT_TRUE(child_reads);
  finish(children_.back());
  waiting.join();
  EXPECT_TRUE(writer.write_acquired());
}

TEST_F(holders_test, error_code_overload_reports_instead_of_throwing) {
  std::error_code ec = std::make_error_code(std::errc::io_error);
  EXPECT_TRUE(holders(path_, ec).empty());
  EXPECT_FALSE(ec);  // Cleared: a missing file is no error.
}

TEST(lock_holder_names, to_string) {
  EXPECT_EQ(to_string(lock_kind::shared), "shared");
  EXPECT_EQ(to_string(lock_kind::exclusive), "exclusive");
  EXPECT_EQ(to_string(lock_mechanism::fcntl_ofd), "fcntl_ofd");
  EXPECT_EQ(to_string(lock_mechanism::fcntl_posix), "fcntl_posix");
  EXPECT_EQ(to_string(lock_mechanism::flock), "flock");
  EXPECT_EQ(to_string(lock_mechanism::other), "other");
}

}  // namespace
}  // namespace fasteners
