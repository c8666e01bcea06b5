// Tests of the locks' errors: bad lock paths, OS failures naming the path, permissions.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"
#include "test_util.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

bool names(const std::exception& e, const fs::path& path) {
  return std::string(e.what()).find(path.string()) != std::string::npos;
}

// Runs `f`, which must throw std::system_error naming `path` in what(); returns its code.
template <class F>
std::error_code expect_error_naming(const fs::path& path, F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(names(e, path)) << what << ": what() does not name " << path << ": " << e.what();
    EXPECT_TRUE(e.code()) << what << ": no error code";
    return e.code();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw something other than std::system_error: " << e.what();
  }
  return {};
}

// In a helper: runs `f`, which must throw std::system_error naming `path` (with `expected` if
// given); returns 0 or a failure code.
template <class F>
int check_error_naming(const fs::path& path, F f, const std::string& what,
                       std::optional<std::errc> expected = std::nullopt) {
  try {
    f();
    return fail(40, what + " returned instead of throwing");
  } catch (const std::system_error& e) {
    if (!names(e, path)) return fail(41, what + ": what() does not name the path: " + e.what());
    if (expected && e.code() != *expected) {
      return fail(42, what + ": unexpected error " + e.code().message() + ": " + e.what());
    }
  }
  return 0;
}

// Helper "expect_error KIND PATH": blocking, non-blocking and timed acquires must all throw
// std::system_error naming PATH (run in a child so that a hang is caught).
FASTENERS_TEST_HELPER(expect_error) {
  const kind k = parse_kind(args.at(0));
  const fs::path path = args.at(1);
  kind_lock lock(k, path);
  int code = check_error_naming(
      path, [&] { lock.acquire(); }, "a blocking acquire");
  if (code == 0)
    code = check_error_naming(
        path, [&] { lock.acquire(false); }, "a try");
  if (code == 0) {
    code = check_error_naming(
        path, [&] { lock.acquire(true, std::chrono::duration<double>(0.1)); }, "a timed acquire");
  }
  if (code == 0 && lock.held()) code = fail(43, "the lock says it is held after errors");
  return code;
}

// Helper "unprivileged_checks READ_ONLY_FILE LOCKED_DIR": drops privileges (when root), then
// checks that read locks on READ_ONLY_FILE work and write locks fail with permission_denied;
// holds a read lock ("read-held") until a line or the end of stdin; and checks that locks in
// LOCKED_DIR (which it cannot write) fail with permission_denied.
FASTENERS_TEST_HELPER(unprivileged_checks) {
  const fs::path read_only = args.at(0);
  const fs::path locked_dir = args.at(1);
  if (!drop_privileges()) return fail(50, "could not drop privileges to uid/gid 65534");
  struct stat st {};
  if (::stat(read_only.c_str(), &st) != 0) {
    return fail(52, "an unprivileged user cannot reach the test directory " +
                        read_only.parent_path().string() +
                        " (set TMPDIR to a world-searchable directory)");
  }
  if (::access(read_only.c_str(), W_OK) == 0) return fail(53, "the read-only file is writable");

  const std::size_t fds = count_open_fds();
  {
    fasteners::interprocess_reader_writer_lock lock(read_only);
    fasteners::interprocess_reader_writer_lock other(read_only);
    if (!lock.acquire_read_lock()) return fail(54, "a read lock on a read-only file failed");
    bool shared = false;
    std::thread([&] {
      shared = other.try_lock_shared();
      if (shared) other.unlock_shared();
    }).join();
    if (!shared) return fail(55, "a second read lock on a read-only file failed");
    lock.release_read_lock();
    if (!lock.acquire_read_lock(true, std::chrono::duration<double>(1.0))) {
      return fail(56, "a timed read lock on a read-only file failed");
    }
    lock.release_read_lock();
  }
  {
    const auto denied = std::errc::permission_denied;
    fasteners::interprocess_reader_writer_lock rw(read_only);
    fasteners::interprocess_lock exclusive(read_only);
    int code = check_error_naming(
        read_only, [&] { rw.acquire_write_lock(); }, "a write lock on a read-only file", denied);
    if (code == 0) {
      code = check_error_naming(
          read_only, [&] { rw.try_lock(); }, "a write try on a read-only file", denied);
    }
    if (code == 0) {
      code = check_error_naming(
          read_only, [&] { rw.try_lock_for(100ms); }, "a timed write lock on a read-only file",
          denied);
    }
    if (code == 0) {
      code = check_error_naming(
          read_only, [&] { exclusive.acquire(); }, "an exclusive lock on a read-only file", denied);
    }
    if (code == 0) {
      code = check_error_naming(
          read_only, [&] { exclusive.try_lock(); }, "an exclusive try on a read-only file", denied);
    }
    if (code != 0) return code;
    if (rw.write_acquired() || exclusive.acquired()) return fail(57, "a failed lock is held");
  }
  if (count_open_fds() != fds) return fail(58, "descriptors leaked on a read-only file");

  {
    fasteners::interprocess_reader_writer_lock holder(read_only);
    if (!holder.acquire_read_lock()) return fail(59, "a read lock on a read-only file failed");
    std::cout << "read-held" << std::endl;
    std::string line;
    std::getline(std::cin, line);
    holder.release_read_lock();
  }

  for (const fs::path& path : {locked_dir / "lock", locked_dir / "sub" / "lock"}) {
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      const int code = check_error_naming(
          path, [&] { lock.acquire(); },
          std::string("a ") + to_string(k) + " lock in a directory the user cannot write",
          std::errc::permission_denied);
      if (code != 0) return code;
    }
  }
  if (count_open_fds() != fds) return fail(60, "descriptors leaked on permission errors");
  return 0;
}

class errors_test : public lock_test, public ::testing::WithParamInterface<kind> {};
using permissions_test = lock_test;

TEST_P(errors_test, a_directory_at_the_path_is_an_error_naming_it) {
  fs::create_directory(lock_path());
  kind_lock lock(GetParam(), lock_path());
  expect_error_naming(
      lock_path(), [&] { lock.acquire(); }, "a blocking acquire");
  expect_error_naming(
      lock_path(), [&] { lock.acquire(false); }, "a try");
  expect_error_naming(
      lock_path(), [&] { lock.acquire(true, std::chrono::duration<double>(0.1)); },
      "a timed acquire");
  EXPECT_FALSE(lock.held());
  EXPECT_TRUE(fs::is_directory(lock_path()));
  EXPECT_TRUE(fs::is_empty(lock_path()));
}

TEST_P(errors_test, a_fifo_at_the_path_is_an_error_naming_it_without_hanging) {
  ASSERT_EQ(::mkfifo(lock_path().c_str(), 0666), 0);
  const auto start = steady::now();
  const int code = run_helper("expect_error", {to_string(GetParam()), lock_path().string()}, 20s);
  EXPECT_EQ(code, 0) << (code == -1 ? "locking a FIFO hung" : "see the helper's message above");
  EXPECT_LT(seconds_since(start), 20.0);
  struct stat st {};
  ASSERT_EQ(::stat(lock_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_P(errors_test, a_device_at_the_path_is_an_error_naming_it) {
  const fs::path device = "/dev/null";
  const int code = run_helper("expect_error", {to_string(GetParam()), device.string()}, 20s);
  EXPECT_EQ(code, 0) << (code == -1 ? "locking a device hung" : "see the helper's message above");
  kind_lock lock(GetParam(), device);
  expect_error_naming(
      device, [&] { lock.acquire(false); }, "a try on /dev/null");
  struct stat st {};
  ASSERT_EQ(::stat(device.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
}

TEST_P(errors_test, an_empty_path_is_an_error) {
  for (const bool blocking : {true, false}) {
    try {
      kind_lock lock(GetParam(), fs::path());
      lock.acquire(blocking);
      ADD_FAILURE() << "an acquire on an empty path returned";
    } catch (const std::system_error&) {
    } catch (const std::invalid_argument&) {
    }
  }
}

TEST_P(errors_test, a_regular_file_as_parent_directory_is_an_error_naming_the_path) {
  std::ofstream(dir() / "file") << "not a directory";
  const fs::path path = dir() / "file" / "lock";
  kind_lock lock(GetParam(), path);
  expect_error_naming(
      path, [&] { lock.acquire(); }, "an acquire below a regular file");
  const fs::path deeper = dir() / "file" / "sub" / "lock";
  kind_lock deeper_lock(GetParam(), deeper);
  expect_error_naming(
      deeper, [&] { deeper_lock.acquire(false); }, "an acquire further below");
  EXPECT_TRUE(fs::is_regular_file(dir() / "file"));
}

TEST_P(errors_test, a_name_too_long_is_an_error_naming_the_path) {
  const fs::path path = dir() / std::string(300, 'x');
  kind_lock lock(GetParam(), path);
  const auto code = expect_error_naming(
      path, [&] { lock.acquire(); }, "an acquire");
  EXPECT_EQ(code, std::errc::filename_too_long) << code.message();
}

TEST_F(permissions_test, a_read_only_lock_file_allows_read_locks_only_for_an_unprivileged_user) {
  fs::permissions(dir(), fs::perms(0755));
  const fs::path read_only_dir = dir() / "ro";
  fs::create_directory(read_only_dir);
  fs::permissions(read_only_dir, fs::perms(0755));
  const fs::path read_only = read_only_dir / "lock";
  std::ofstream(read_only) << "keep\n";
  fs::permissions(read_only, fs::perms(0444));
  const fs::path locked_dir = dir() / "locked";
  fs::create_directory(locked_dir);
  fs::permissions(locked_dir, fs::perms(0555));

  child_process checker =
      spawn_helper("unprivileged_checks", {read_only.string(), locked_dir.string()});
  const auto line = checker.read_line();
  EXPECT_EQ(line, std::optional<std::string>("read-held"));
  if (line && ::geteuid() == 0) {
    // A writer (root can open the file for writing) is kept out by the unprivileged reader.
    fasteners::interprocess_reader_writer_lock writer(read_only);
    EXPECT_FALSE(writer.try_lock());
    fasteners::interprocess_reader_writer_lock reader(read_only);
    EXPECT_TRUE(reader.try_lock_shared());
    reader.unlock_shared();
  }
  EXPECT_EQ(checker.finish(), 0) << "see the helper's message above";

  std::ifstream in(read_only);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()),
            "keep\n");
  EXPECT_FALSE(fs::exists(locked_dir / "lock"));
  EXPECT_FALSE(fs::exists(locked_dir / "sub"));
}

INSTANTIATE_TEST_SUITE_P(each_kind, errors_test, ::testing::ValuesIn(all_kinds), kind_name);

}  // namespace
}  // namespace fasteners_test
