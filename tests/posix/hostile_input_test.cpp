// Hostile lock paths on POSIX systems: links, FIFOs, unreachable, unreadable or read-only files,
// full descriptor tables, and lock files deleted or replaced under their holders and waiters.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <system_error>
#include <thread>

#include "posix/posix_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

using hostile_input_test = lock_test;

// Takes and releases an exclusive lock through a fresh object; throws what acquiring throws.
bool lock_once(const fs::path& path, const fasteners::lock_options& options = {}) {
  fasteners::interprocess_lock lock(path, options);
  if (!lock.try_lock()) return false;
  lock.unlock();
  return true;
}

// The identity of the file open as `fd` and of the file at `path` agree.
bool same_file(int fd, const fs::path& path) {
  struct stat open_st {};
  struct stat path_st {};
  return ::fstat(fd, &open_st) == 0 && ::stat(path.c_str(), &path_st) == 0 &&
         open_st.st_dev == path_st.st_dev && open_st.st_ino == path_st.st_ino;
}

fasteners::lock_options no_symlinks() {
  fasteners::lock_options options;
  options.follow_symlinks = false;
  return options;
}

fasteners::lock_options removing() {
  fasteners::lock_options options;
  options.remove_on_release = true;
  return options;
}

TEST_F(hostile_input_test, a_symlink_is_followed_by_default) {
  const fs::path target = dir() / "target";
  const fs::path link = dir() / "link";
  fs::create_symlink(target, link);
  fasteners::interprocess_lock through_link(link);
  ASSERT_TRUE(through_link.try_lock());
  EXPECT_TRUE(fs::is_regular_file(target));  // Created where the link points.
  EXPECT_TRUE(fs::is_symlink(link));
  fasteners::interprocess_lock direct(target);
  EXPECT_FALSE(direct.try_lock()) << "the link and its target are one lock";
  through_link.unlock();
  EXPECT_TRUE(lock_once(target));
}

TEST_F(hostile_input_test, a_symlink_is_refused_when_links_are_not_followed) {
  const fs::path target = dir() / "target";
  std::ofstream(target).close();
  const fs::path link = dir() / "link";
  fs::create_symlink(target, link);
  fasteners::interprocess_lock lock(link, no_symlinks());
  try {
    lock.lock();
    ADD_FAILURE() << "a symbolic link was locked";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::too_many_symbolic_link_levels) << e.what();
    EXPECT_NE(std::string(e.what()).find(link.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(lock_once(target, no_symlinks()));  // A regular file is fine.
}

TEST_F(hostile_input_test, a_dangling_symlink_creates_its_target_or_is_refused) {
  const fs::path target = dir() / "missing";
  const fs::path link = dir() / "dangling";
  fs::create_symlink(target, link);
  EXPECT_THROW(lock_once(link, no_symlinks()), std::system_error);
  EXPECT_FALSE(fs::exists(target)) << "a refused link must not create its target";
  EXPECT_TRUE(lock_once(link));  // Followed: like open(O_CREAT), it creates the target.
  EXPECT_TRUE(fs::is_regular_file(target));
}

TEST_F(hostile_input_test, a_symlink_at_the_path_is_never_deleted) {
  const fs::path target = dir() / "target";
  fs::create_symlink(target, lock_path());
  fasteners::interprocess_lock lock(lock_path(), removing());
  ASSERT_TRUE(lock.try_lock());
  lock.unlock();
  EXPECT_TRUE(fs::is_symlink(lock_path()));
  EXPECT_TRUE(fs::exists(target));
}

TEST_F(hostile_input_test, a_symlink_loop_is_an_error_naming_the_path) {
  const fs::path a = dir() / "a";
  const fs::path b = dir() / "b";
  fs::create_symlink(b, a);
  fs::create_symlink(a, b);
  try {
    lock_once(a);
    ADD_FAILURE() << "a symbolic link loop was locked";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::too_many_symbolic_link_levels) << e.what();
    EXPECT_NE(std::string(e.what()).find(a.string()), std::string::npos) << e.what();
  }
}

// A process whose descriptor table is full gets EMFILE naming the path, leaks nothing, and
// locks again once a descriptor is free.
TEST_F(hostile_input_test, a_full_descriptor_table_is_an_error) {
  const int code = run_helper("full_descriptor_table", {lock_path().string()});
  EXPECT_EQ(code, 0) << "see the helper's message above";
}

FASTENERS_TEST_HELPER(full_descriptor_table) {
  const fs::path path = args.at(0);
  std::vector<int> fillers;
  struct rlimit limit {};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = 64;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return fail(20, "setrlimit failed");
  // UBSan checks a virtual call's target with a pipe the first time it meets a type, which a full
  // table would refuse: take the same paths once (a lock, and an error) before filling it.
  {
    fasteners::interprocess_reader_writer_lock warm(path);
    warm.lock();
    warm.unlock();
    fasteners::interprocess_lock through_a_file(path / "lock");
    try {
      through_a_file.lock();
    } catch (const std::system_error& e) {
      (void)std::string(e.what());
    }
  }
  for (int fd; (fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;) fillers.push_back(fd);
  if (errno != EMFILE) return fail(21, "could not fill the descriptor table");
  fasteners::interprocess_reader_writer_lock lock(path);
  // The error is checked once descriptors are free again: sanitizers need some to do their work.
  std::optional<std::system_error> error;
  try {
    lock.lock();
  } catch (const std::system_error& e) {
    error = e;
  }
  if (lock.write_acquired()) return fail(25, "a failed lock is held");
  ::close(fillers.back());
  fillers.pop_back();
  if (!lock.try_lock()) return fail(26, "no lock once a descriptor was free");
  lock.unlock();
  if (::open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) return fail(27, "the descriptor leaked");
  for (const int fd : fillers) ::close(fd);
  if (!error) return fail(22, "locked with a full descriptor table");
  if (error->code() != std::error_code(EMFILE, std::system_category())) {
    return fail(23, std::string("unexpected error: ") + error->what());
  }
  if (std::string(error->what()).find(path.string()) == std::string::npos) {
    return fail(24, std::string("the error does not name the path: ") + error->what());
  }
  return 0;
}

// Unprivileged users: a lock file they can neither read nor write, and a directory they cannot
// search, give permission errors naming the path. Neither grants anything to anyone, the owner
// included, so the helper checks them as uid 65534 under root (which passes every permission
// check) and as the test's own user otherwise.
TEST_F(hostile_input_test, unreadable_files_and_unsearchable_directories_are_permission_errors) {
  fs::permissions(dir(), fs::perms(0755));
  const fs::path unreadable = dir() / "unreadable";
  std::ofstream(unreadable).close();
  fs::permissions(unreadable, fs::perms::none);
  const fs::path closed_dir = dir() / "closed";
  fs::create_directory(closed_dir);
  std::ofstream(closed_dir / "lock").close();
  fs::permissions(closed_dir, fs::perms::owner_read | fs::perms::owner_write);  // no search
  EXPECT_EQ(run_helper("unprivileged_permission_errors",
                       {unreadable.string(), (closed_dir / "lock").string()}),
            0)
      << "see the helper's message above";
}

FASTENERS_TEST_HELPER(unprivileged_permission_errors) {
  if (!drop_privileges()) return fail(30, "could not drop privileges to uid/gid 65534");
  for (const fs::path& path : {fs::path(args.at(0)), fs::path(args.at(1))}) {
    for (const kind k : all_kinds) {
      kind_lock lock(k, path);
      try {
        lock.acquire();
        return fail(31, "locked " + path.string() + " without permission");
      } catch (const std::system_error& e) {
        if (e.code() != std::errc::permission_denied) {
          return fail(32, std::string("unexpected error: ") + e.what());
        }
        if (std::string(e.what()).find(path.string()) == std::string::npos) {
          return fail(33, std::string("the error does not name the path: ") + e.what());
        }
      }
    }
  }
  return 0;
}

// Deleting a lock file that is held does not disturb its holder, but lets a newcomer lock the new
// file at the path: the documented reason never to delete a lock file that may be in use.
TEST_F(hostile_input_test, deleting_a_held_lock_file_keeps_the_holder_and_lets_a_newcomer_in) {
  fasteners::interprocess_lock holder(lock_path());
  ASSERT_TRUE(holder.try_lock());
  fs::remove(lock_path());
  EXPECT_TRUE(holder.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
  EXPECT_NO_THROW(holder.unlock());
  EXPECT_FALSE(holder.acquired());
}

TEST_F(hostile_input_test, replacing_a_held_lock_file_keeps_the_holder) {
  fasteners::interprocess_reader_writer_lock holder(lock_path());
  ASSERT_TRUE(holder.try_lock_shared());
  const fs::path other = dir() / "other";
  std::ofstream(other) << "new\n";
  fs::rename(other, lock_path());
  EXPECT_TRUE(holder.read_acquired());
  EXPECT_NO_THROW(holder.unlock_shared());
  EXPECT_TRUE(lock_once(lock_path()));
}

// With remove_on_release, a waiter whose file was deleted or replaced while it waited locks the
// file now at the path, never the old one.
TEST_F(hostile_input_test, a_waiter_follows_a_lock_file_deleted_or_replaced_while_it_waits) {
  for (const bool replace : {false, true}) {
    fasteners::interprocess_lock holder(lock_path(), removing());
    ASSERT_TRUE(holder.try_lock());
    fasteners::interprocess_lock waiter(lock_path(), removing());
    thread_holder waiting([&] { return waiter.try_lock_for(k_long); }, [&] { waiter.unlock(); });
    std::this_thread::sleep_for(k_quiet);  // Let the waiter open the old file and block on it.
    EXPECT_FALSE(waiting.done_acquiring());
    if (replace) {
      std::ofstream(dir() / "new") << "new\n";
      fs::rename(dir() / "new", lock_path());
    } else {
      fs::remove(lock_path());
    }
    holder.unlock();
    ASSERT_TRUE(waiting.wait_held());
    EXPECT_TRUE(same_file(static_cast<int>(waiter.native_handle()), lock_path()))
        << "the waiter holds a lock on a file no longer at the path";
    EXPECT_TRUE(waiting.release());
  }
}

// Each kind of lock on a FIFO (an error, never a hang: opening a FIFO may block) and on a name
// too long.
class hostile_path_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(hostile_path_test, a_fifo_at_the_path_is_an_error_naming_it_without_hanging) {
  ASSERT_EQ(::mkfifo(lock_path().c_str(), 0666), 0);
  const auto start = steady::now();
  const int code = run_helper("expect_error", {to_string(GetParam()), arg_of(lock_path())}, 20s);
  EXPECT_EQ(code, 0) << (code == -1 ? "locking a FIFO hung" : "see the helper's message above");
  EXPECT_LT(seconds_since(start), 20.0);
  struct stat st {};
  ASSERT_EQ(::stat(lock_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_P(hostile_path_test, a_name_too_long_is_filename_too_long) {
  const fs::path path = dir() / std::string(300, 'x');
  kind_lock lock(GetParam(), path);
  try {
    lock.acquire();
    ADD_FAILURE() << "a name too long was locked";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::filename_too_long) << e.what();
    EXPECT_TRUE(names(e, path)) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(each_kind, hostile_path_test, ::testing::ValuesIn(all_kinds), kind_name);

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

  const std::size_t fds = count_open_handles();
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
  if (count_open_handles() != fds) return fail(58, "descriptors leaked on a read-only file");

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
  if (count_open_handles() != fds) return fail(60, "descriptors leaked on permission errors");
  return 0;
}

using permissions_test = lock_test;

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
      spawn_helper("unprivileged_checks", {arg_of(read_only), arg_of(locked_dir)});
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

}  // namespace
}  // namespace fasteners_test
