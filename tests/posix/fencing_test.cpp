// Fencing tokens on lock files: strictly increasing over every process, killed holders and
// remove_on_release; readers see the latest; errors without the option or without a hold.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/fencing_checks.hpp"
#include "posix/posix_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

fasteners::lock_options fencing(bool remove_on_release = false) {
  fasteners::lock_options options;
  options.fencing = true;
  options.remove_on_release = remove_on_release;
  return options;
}

// Helper "fence_writer PATH LOG N REMOVE": two threads, one with an interprocess_lock and one with
// an interprocess_reader_writer_lock on PATH, each take the lock N times (every way, in turn) and
// append each token to LOG while holding it.
FASTENERS_TEST_HELPER(fence_writer) {
  const fs::path path = path_of(args.at(0));
  const int fd = ::open(args.at(1).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return fail(k_error, "cannot open the log");
  const int n = std::stoi(args.at(2));
  const auto options = fencing(args.at(3) == "1");
  std::atomic<int> failures{0};
  // Made while holding, removed before the release: found there, two holders met.
  const std::string inside = args.at(0) + ".inside";
  auto run = [&](auto& object) {
    try {
      for (int round = 0; round < n; ++round) {
        take_exclusively(object, round);
        const int marker = ::open(inside.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (marker < 0) {
          fail(k_error, "another holder holds the lock too");
          ++failures;
        } else {
          ::close(marker);
        }
        if (!append_token(fd, object.fencing_token())) ++failures;
        if (marker >= 0) ::unlink(inside.c_str());
        object.unlock();
      }
    } catch (const std::exception& e) {
      fail(k_error, e.what());
      ++failures;
    }
  };
  fasteners::interprocess_lock a(path, options);
  fasteners::interprocess_reader_writer_lock b(path, options);
  std::thread other([&] { run(b); });
  run(a);
  other.join();
  ::close(fd);
  return failures == 0 ? 0 : k_error;
}

// Helper "fence_victim PATH LOG REMOVE": takes the lock, logs its token, says "held" and waits (to
// be killed while holding).
FASTENERS_TEST_HELPER(fence_victim) {
  const int fd = ::open(args.at(1).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return fail(k_error, "cannot open the log");
  fasteners::interprocess_lock lock(path_of(args.at(0)), fencing(args.at(2) == "1"));
  lock.lock();
  if (!append_token(fd, lock.fencing_token())) return fail(k_error, "cannot write the log");
  report_and_wait("held");
  return 0;
}

// Helper "fence_once PATH REMOVE": takes the lock once and prints its token.
FASTENERS_TEST_HELPER(fence_once) {
  fasteners::interprocess_lock lock(path_of(args.at(0)), fencing(args.at(1) == "1"));
  lock.lock();
  report_and_wait(std::to_string(lock.fencing_token()));
  return 0;
}

// Helper "fence_read PATH": takes a read lock and prints the token it sees.
FASTENERS_TEST_HELPER(fence_read) {
  fasteners::interprocess_reader_writer_lock lock(path_of(args.at(0)), fencing());
  lock.lock_shared();
  report_and_wait(std::to_string(lock.fencing_token()));
  return 0;
}

std::uint64_t token_of(child_process& child) {
  const auto line = child.read_line();
  EXPECT_TRUE(line.has_value());
  return line ? std::stoull(*line) : 0;
}

using fencing_test = lock_test;

void run_writers_and_victims(const fs::path& path, const fs::path& log, bool remove) {
  std::ofstream(log).close();
  constexpr int processes = 4;
  constexpr int per_thread = 400;  // 4 processes x 2 threads x 400 = 3200 acquisitions.
  constexpr int victims = 8;
  std::vector<child_process> writers;
  for (int i = 0; i < processes; ++i) {
    writers.push_back(
        spawn_helper("fence_writer",
                     {arg_of(path), arg_of(log), std::to_string(per_thread), remove ? "1" : "0"}));
    writers.back().close_stdin();
  }
  // Holders killed while they hold the lock, among the writers.
  for (int i = 0; i < victims; ++i) {
    child_process victim =
        spawn_helper("fence_victim", {arg_of(path), arg_of(log), remove ? "1" : "0"});
    ASSERT_EQ(victim.read_line(), std::optional<std::string>("held"));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    victim.kill();
    EXPECT_EQ(victim.wait(), k_killed);
  }
  for (auto& w : writers) EXPECT_EQ(w.wait(std::chrono::seconds(100)), 0);
  const auto tokens = read_tokens(log);
  EXPECT_EQ(tokens.size(), static_cast<std::size_t>(processes * 2 * per_thread + victims));
  expect_strictly_increasing(tokens);
  EXPECT_EQ(std::set<std::uint64_t>(tokens.begin(), tokens.end()).size(), tokens.size());
}

TEST_F(fencing_test, tokens_strictly_increase_over_processes_threads_and_killed_holders) {
  run_writers_and_victims(lock_path(), dir() / "log", false);
}

TEST_F(fencing_test, tokens_strictly_increase_with_remove_on_release_under_load) {
  run_writers_and_victims(lock_path(), dir() / "log", true);
}

TEST_F(fencing_test, tokens_go_on_across_remove_on_release) {
  const bool deletes = remove_on_release_deletes(dir(), kind::lock);
  fasteners::interprocess_lock lock(lock_path(), fencing(true));
  std::uint64_t last = 0;
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    lock.lock();
    const auto mine = lock.fencing_token();
    EXPECT_GT(mine, last);
    lock.unlock();
    EXPECT_EQ(fs::exists(lock_path()), !deletes);
    child_process other = spawn_helper("fence_once", {arg_of(lock_path()), "1"});
    const auto theirs = token_of(other);
    EXPECT_EQ(other.finish(), 0);
    EXPECT_GT(theirs, mine);
    last = theirs;
  }
  EXPECT_EQ(last, 6u);
  EXPECT_TRUE(fs::exists(fs::path(lock_path()) += ".fence"));
}

TEST_F(fencing_test, the_counter_file_is_a_decimal_line_beside_the_lock_file) {
  fasteners::interprocess_lock lock(lock_path(), fencing());
  lock.lock();
  EXPECT_EQ(lock.fencing_token(), 1u);
  lock.unlock();
  lock.lock();
  EXPECT_EQ(lock.fencing_token(), 2u);
  lock.unlock();
  std::ifstream in(fs::path(lock_path()) += ".fence");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(line, "00000000000000000002");
  EXPECT_EQ(fs::file_size(lock_path()), 0u) << "the lock file's bytes must stay untouched";
}

TEST_F(fencing_test, readers_see_the_latest_exclusive_token_and_zero_before_any) {
  fasteners::interprocess_reader_writer_lock reader(lock_path(), fencing());
  reader.lock_shared();
  EXPECT_EQ(reader.fencing_token(), 0u);
  EXPECT_FALSE(fs::exists(fs::path(lock_path()) += ".fence")) << "a reader made the counter";
  reader.unlock_shared();

  fasteners::interprocess_reader_writer_lock writer(lock_path(), fencing());
  for (int round = 0; round < 2; ++round) {
    writer.lock();
    const auto written = writer.fencing_token();
    writer.unlock();
    {
      child_process other = spawn_helper("fence_once", {arg_of(lock_path()), "0"});
      EXPECT_EQ(token_of(other), written + 1);
      EXPECT_EQ(other.finish(), 0);
    }
    reader.lock_shared();
    EXPECT_EQ(reader.fencing_token(), written + 1);
    // Another object joins this process's shared lock, and another process reads too.
    fasteners::interprocess_reader_writer_lock joiner(lock_path(), fencing());
    std::thread([&] {
      ASSERT_TRUE(joiner.try_lock_shared());
      EXPECT_EQ(joiner.fencing_token(), written + 1);
      joiner.unlock_shared();
    }).join();
    child_process other_reader = spawn_helper("fence_read", {arg_of(lock_path())});
    EXPECT_EQ(token_of(other_reader), written + 1);
    EXPECT_EQ(other_reader.finish(), 0);
    reader.unlock_shared();
  }
}

TEST_F(fencing_test, a_reader_that_joins_a_reader_without_fencing_reads_the_counter) {
  fasteners::interprocess_lock writer(lock_path(), fencing());
  writer.lock();
  writer.unlock();
  fasteners::interprocess_reader_writer_lock plain(lock_path());
  fasteners::interprocess_reader_writer_lock fenced(lock_path(), fencing());
  plain.lock_shared();
  std::thread([&] {
    ASSERT_TRUE(fenced.try_lock_shared());
    EXPECT_EQ(fenced.fencing_token(), 1u);
    fenced.unlock_shared();
  }).join();
  plain.unlock_shared();
}

TEST_F(fencing_test, without_the_option_or_a_hold_there_is_no_token) {
  fasteners::interprocess_lock plain(lock_path());
  plain.lock();
  expect_not_permitted([&] { plain.fencing_token(); });
  plain.unlock();
  EXPECT_FALSE(fs::exists(fs::path(lock_path()) += ".fence"));

  fasteners::interprocess_reader_writer_lock plain_rw(lock_path());
  plain_rw.lock_shared();
  expect_not_permitted([&] { plain_rw.fencing_token(); });
  plain_rw.unlock_shared();

  fasteners::interprocess_reader_writer_lock fenced(lock_path(), fencing());
  expect_not_permitted([&] { fenced.fencing_token(); });
  fenced.lock();
  EXPECT_EQ(fenced.fencing_token(), 1u);
  fenced.unlock();
  expect_not_permitted([&] { fenced.fencing_token(); });
  // Another object holding the lock gives this one no token.
  fasteners::interprocess_reader_writer_lock other(lock_path(), fencing());
  other.lock_shared();
  expect_not_permitted([&] { fenced.fencing_token(); });
  other.unlock_shared();
}

// Helper "fence_read_only PATH": without privileges, where the lock file is writable and its
// counter file only readable, an exclusive acquire fails naming the counter and holds nothing,
// and a reader still reads the token.
FASTENERS_TEST_HELPER(fence_read_only) {
  if (!drop_privileges()) return fail(40, "could not drop privileges to uid/gid 65534");
  const fs::path path = path_of(args.at(0));
  fasteners::interprocess_lock lock(path, fencing());
  try {
    lock.lock();
    return fail(41, "took a token from a counter it cannot write");
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::permission_denied) return fail(42, e.what());
    if (std::string(e.what()).find(".fence") == std::string::npos) return fail(43, e.what());
  }
  if (lock.acquired()) return fail(44, "the failed acquire holds the lock");
  fasteners::interprocess_lock plain(path);
  if (!plain.try_lock()) return fail(45, "the failed acquire kept the lock");
  plain.unlock();
  fasteners::interprocess_reader_writer_lock reader(path, fencing());
  reader.lock_shared();
  if (reader.fencing_token() != 1) return fail(46, "a reader did not read the counter");
  reader.unlock_shared();
  return 0;
}

TEST_F(fencing_test, a_counter_that_cannot_be_written_fails_the_acquire_and_holds_nothing) {
  {
    fasteners::interprocess_lock lock(lock_path(), fencing());
    lock.lock();
    lock.unlock();
  }
  fs::permissions(dir(), fs::perms(0755));
  fs::permissions(lock_path(), fs::perms(0666));
  fs::permissions(fs::path(lock_path()) += ".fence", fs::perms(0444));
  EXPECT_EQ(run_helper("fence_read_only", {arg_of(lock_path())}), 0)
      << "see the helper's message above";
}

}  // namespace
}  // namespace fasteners_test
