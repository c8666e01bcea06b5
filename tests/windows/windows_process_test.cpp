// Windows tests across processes: exclusion, waits, killed holders, the writers' gate, interop.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "windows_test_util.hpp"

namespace fasteners_windows_test {
namespace {

namespace fs = std::filesystem;

// The gate byte of the library's protocol on Windows: a writer that waits holds it.
constexpr std::uint64_t gate_byte = std::uint64_t{1} << 62;

// Waits until a writer holds the gate of `path`, that is, waits for the lock; false after k_long.
bool wait_for_writer_at_gate(const fs::path& path) {
  foreign_handle probe(path);
  const auto start = steady::now();
  while (steady::now() - start < k_long) {
    if (!probe.try_lock(false, gate_byte)) return true;
    probe.unlock(gate_byte);
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// A helper that waits for a lock of `kind` on `path` (blocking), as held_in_child does, but
// reports nothing until it has the lock: `waiting_in_child(...).ready()` tells when it got it.
using waiting_in_child = held_in_child;

// ---- the read/write matrix between processes ----

class ProcessPairTest : public kind_pair_test {};

TEST_P(ProcessPairTest, ALockHeldByAnotherProcessExcludesAsTheKindsSay) {
  held_in_child holder(first(), lock_path());
  ASSERT_TRUE(holder.ready());
  kind_lock lock(second(), lock_path());
  const bool taken = lock.acquire(false);
  EXPECT_EQ(taken, !conflict());
  if (taken) lock.release();
  EXPECT_EQ(holder.release(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(ProcessPairTest, ALockHeldHereExcludesAnotherProcessAsTheKindsSay) {
  kind_lock lock(first(), lock_path());
  ASSERT_TRUE(lock.acquire());
  EXPECT_EQ(try_in_child(second(), lock_path()), conflict() ? k_busy : k_acquired);
  lock.release();
  EXPECT_EQ(try_in_child(second(), lock_path()), k_acquired);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ProcessPairTest, ::testing::ValuesIn(all_kind_pairs()), pair_name);

// ---- counting: no update lost between processes ----

FASTENERS_WINDOWS_HELPER(count) {
  kind_lock lock(parse_kind(to_narrow(args.at(0))), args.at(1));
  const fs::path counter = args.at(2);
  const int iterations = std::stoi(args.at(3));
  for (int i = 0; i < iterations; ++i) {
    lock.acquire();
    const long value = read_counter(counter);
    ::SwitchToThread();  // Invites another process in, should the lock fail.
    write_counter(counter, value + 1);
    lock.release();
  }
  return 0;
}

class CountingTest : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(CountingTest, ProcessesIncrementingACounterLoseNoUpdate) {
  const auto counter = dir() / "counter";
  write_counter(counter, 0);
  constexpr int processes = 3;
  constexpr int iterations = 100;
  std::vector<std::unique_ptr<child_process>> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(std::make_unique<child_process>(
        "count", std::vector<std::wstring>{to_wide(to_string(GetParam())), lock_path().native(),
                                           counter.native(), std::to_wstring(iterations)}));
  }
  for (auto& child : children) EXPECT_EQ(child->wait(), 0);
  EXPECT_EQ(read_counter(counter), processes * iterations);
}

INSTANTIATE_TEST_SUITE_P(Kinds, CountingTest, ::testing::Values(kind::lock, kind::write),
                         kind_name);

// ---- waits between processes ----

class WindowsProcessTest : public lock_test {};

TEST_F(WindowsProcessTest, ABlockingWaitEndsWhenTheOtherProcessReleases) {
  held_in_child holder(kind::write, lock_path());
  ASSERT_TRUE(holder.ready());
  fasteners::interprocess_lock lock(lock_path());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    lock.acquire();
    got = true;
  });
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.load());
  EXPECT_EQ(holder.release(), 0);
  waiter.join();
  EXPECT_TRUE(got.load());
  lock.release();
}

TEST_F(WindowsProcessTest, ATimedWaitReturnsFalseNoSoonerThanItsTimeout) {
  held_in_child holder(kind::lock, lock_path());
  ASSERT_TRUE(holder.ready());
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    kind_lock lock(k, lock_path());
    const auto start = steady::now();
    EXPECT_FALSE(lock.acquire(true, k_short));
    const double took = seconds_since(start);
    EXPECT_GE(took, 0.2);
    EXPECT_LT(took, 5.0);
  }
  EXPECT_EQ(holder.release(), 0);
}

TEST_F(WindowsProcessTest, ATimedWaitSucceedsWhenTheOtherProcessReleasesInTime) {
  held_in_child holder(kind::write, lock_path());
  ASSERT_TRUE(holder.ready());
  std::thread releaser([&] {
    std::this_thread::sleep_for(k_short);
    EXPECT_EQ(holder.release(), 0);
  });
  fasteners::interprocess_reader_writer_lock lock(lock_path());
  const auto start = steady::now();
  EXPECT_TRUE(lock.try_lock_for(k_upper));
  const double took = seconds_since(start);
  EXPECT_GE(took, 0.15);
  EXPECT_LT(took, 5.0);
  releaser.join();
  lock.unlock();
}

class KilledHolderTest : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(KilledHolderTest, AKilledHolderLosesItsLockAtOnce) {
  held_in_child holder(GetParam(), lock_path());
  ASSERT_TRUE(holder.ready());
  fasteners::interprocess_reader_writer_lock lock(lock_path());
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    lock.acquire_write_lock();
    got = true;
  });
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.load());
  const auto start = steady::now();
  holder.child().terminate();
  waiter.join();
  EXPECT_TRUE(got.load());
  EXPECT_LT(seconds_since(start), 5.0);
  lock.release_write_lock();
}

INSTANTIATE_TEST_SUITE_P(Kinds, KilledHolderTest, ::testing::ValuesIn(all_kinds), kind_name);

TEST_F(WindowsProcessTest, AKilledWaiterLeavesNothingBehind) {
  fasteners::interprocess_reader_writer_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire_read_lock());
  waiting_in_child writer(kind::write, lock_path());
  ASSERT_TRUE(wait_for_writer_at_gate(lock_path()));
  writer.child().terminate();
  lock.release_read_lock();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
}

// ---- writers are not starved by readers ----

TEST_F(WindowsProcessTest, AWaitingWriterMakesNewReadersOfOtherProcessesWait) {
  held_in_child reader(kind::read, lock_path());
  ASSERT_TRUE(reader.ready());
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);  // Readers share...
  waiting_in_child writer(kind::write, lock_path());
  ASSERT_TRUE(wait_for_writer_at_gate(lock_path()));
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_busy);  // ...until a writer waits.
  fasteners::interprocess_reader_writer_lock here(lock_path());
  EXPECT_FALSE(here.acquire_read_lock(false));
  EXPECT_FALSE(writer.ready(10ms));
  EXPECT_EQ(reader.release(), 0);
  EXPECT_TRUE(writer.ready());
  EXPECT_EQ(writer.release(), 0);
  EXPECT_TRUE(here.acquire_read_lock(false));
  here.release_read_lock();
}

TEST_F(WindowsProcessTest, AWaitingWriterMakesNewReadersOfThisProcessWait) {
  fasteners::interprocess_reader_writer_lock first(lock_path());
  ASSERT_TRUE(first.acquire_read_lock());
  fasteners::interprocess_reader_writer_lock second(lock_path());
  std::thread([&] {
    EXPECT_TRUE(second.acquire_read_lock(false));
    second.release_read_lock();
  }).join();
  waiting_in_child writer(kind::write, lock_path());
  ASSERT_TRUE(wait_for_writer_at_gate(lock_path()));
  std::thread([&] { EXPECT_FALSE(second.acquire_read_lock(false)); }).join();
  first.release_read_lock();
  EXPECT_TRUE(writer.ready());
  EXPECT_EQ(writer.release(), 0);
}

// ---- the byte range of python-fasteners, across processes ----

// Locks byte 0 of the file as python-fasteners does, sets the ready event, waits for release.
FASTENERS_WINDOWS_HELPER(foreign_hold) {
  foreign_handle foreign(args.at(0));
  const bool exclusive = args.at(1) == L"exclusive";
  const HANDLE ready = open_event(args.at(2));
  const HANDLE release = open_event(args.at(3));
  if (!foreign.try_lock(exclusive)) return k_busy;
  ::SetEvent(ready);
  if (::WaitForSingleObject(release, 120000) != WAIT_OBJECT_0) return fail("never released");
  foreign.unlock();
  return 0;
}

FASTENERS_WINDOWS_HELPER(foreign_try) {
  foreign_handle foreign(args.at(0));
  if (!foreign.try_lock(args.at(1) == L"exclusive")) return k_busy;
  foreign.unlock();
  return k_acquired;
}

TEST_F(WindowsProcessTest, ForeignLocksOnByteZeroInOtherProcessesExcludeBothWays) {
  for (const bool exclusive : {true, false}) {
    SCOPED_TRACE(exclusive ? "exclusive" : "shared");
    const std::wstring mode = exclusive ? L"exclusive" : L"shared";
    {
      named_event ready;
      named_event release;
      child_process foreign("foreign_hold",
                            {lock_path().native(), mode, ready.name(), release.name()});
      ASSERT_TRUE(ready.wait());
      for (const kind k : all_kinds) {
        kind_lock lock(k, lock_path());
        const bool taken = lock.acquire(false);
        EXPECT_EQ(taken, !exclusive && k == kind::read) << to_string(k);
        if (taken) lock.release();
      }
      release.set();
      EXPECT_EQ(foreign.wait(), 0);
    }
    for (const kind k : all_kinds) {
      kind_lock lock(k, lock_path());
      ASSERT_TRUE(lock.acquire());
      const bool shares = !exclusive && k == kind::read;
      EXPECT_EQ(run_helper("foreign_try", {lock_path().native(), mode}),
                shares ? k_acquired : k_busy)
          << to_string(k);
      lock.release();
    }
  }
}

// ---- paths and handles as other processes see them ----

TEST_F(WindowsProcessTest, NonAsciiPathsWorkAcrossProcesses) {
  const auto path = dir() / L"\u03ba\u03bb\u03b5\u03b9\u03b4\u03b9\u03ac" / L"\u9501.lock";
  held_in_child holder(kind::write, path);
  ASSERT_TRUE(holder.ready());
  fasteners::interprocess_lock lock(path);
  EXPECT_FALSE(lock.acquire(false));
  EXPECT_EQ(holder.release(), 0);
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

// Exits 0 if the handle value in args[0] is not open on the file at args[1] in this process.
FASTENERS_WINDOWS_HELPER(handle_absent) {
  const auto handle = reinterpret_cast<HANDLE>(static_cast<std::intptr_t>(std::stoll(args.at(0))));
  BY_HANDLE_FILE_INFORMATION info{};
  if (::GetFileInformationByHandle(handle, &info) &&
      identity_of(handle) == identity_of(fs::path(args.at(1)))) {
    return fail("the lock file's handle was inherited");
  }
  return 0;
}

TEST_F(WindowsProcessTest, ChildrenDoNotInheritTheLockHandle) {
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(lock.acquire());
  child_process child("handle_absent",
                      {std::to_wstring(lock.native_handle()), lock_path().native()}, {}, true);
  EXPECT_EQ(child.wait(), 0);
  lock.release();
}

}  // namespace
}  // namespace fasteners_windows_test
