// Asynchronous acquisition, over every backend: handlers, deadlines, cancellation, destruction,
// fork, and many waiters without a thread each.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "contract/backends.hpp"
#include "fasteners/async.hpp"
#include "fasteners/fasteners.hpp"

#ifndef _WIN32
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#endif

namespace fasteners_test {
namespace {

// The outcome of one asynchronous acquisition, as its handler reports it.
class outcome {
 public:
  // A handler that records its error code and thread; it must run once.
  auto handler() {
    return [this](std::error_code ec) {
      std::lock_guard<std::mutex> lock(mu_);
      ++runs_;
      ec_ = ec;
      thread_ = std::this_thread::get_id();
      cv_.notify_all();
    };
  }
  // The error code, once the handler ran (within `timeout`).
  std::optional<std::error_code> wait(std::chrono::milliseconds timeout = k_long) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return runs_ > 0; });
    return ec_;
  }
  bool ran() {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_ > 0;
  }
  int runs() {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  std::thread::id thread() {
    std::lock_guard<std::mutex> lock(mu_);
    return thread_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int runs_ = 0;
  std::optional<std::error_code> ec_;
  std::thread::id thread_;
};

const std::error_code k_granted{};
const std::error_code k_timed_out = std::make_error_code(std::errc::timed_out);
const std::error_code k_canceled = std::make_error_code(std::errc::operation_canceled);

// The helper process "hold" of backend_test::hold_elsewhere(), for each backend: takes the lock,
// prints "held", releases when its stdin ends.
template <class Backend>
int hold_helper(const std::vector<std::string>& args) {
  auto lock = Backend(args.at(0)).make(parse_kind(args.at(1)), args.at(2));
  if (!lock.acquire()) return fail(1, "blocking acquire returned false");
  report_and_wait("held");
  lock.release();
  return 0;
}
template <class... Backends>
bool register_hold_helpers(::testing::Types<Backends...>) {
  return (register_helper(contract_helper<Backends>("hold").c_str(), &hold_helper<Backends>) &&
          ...);
}
[[maybe_unused]] const bool hold_helpers_registered = register_hold_helpers(contract_backends());

template <class Backend>
using async_contract = backend_test<Backend>;
struct backend_index {
  template <class Backend>
  static std::string GetName(int i) {
    return std::to_string(i);
  }
};
TYPED_TEST_SUITE(async_contract, contract_backends, backend_index);

TYPED_TEST(async_contract, a_free_lock_is_granted_on_a_thread_of_the_library) {
  const auto a = this->address();
  auto lock = this->backend().lock(a);
  outcome got;
  auto pending = lock.async_lock(got.handler());
  EXPECT_EQ(got.wait(), k_granted);
  EXPECT_NE(got.thread(), std::this_thread::get_id()) << "the handler ran in the initiating call";
  EXPECT_TRUE(lock.acquired());
  EXPECT_TRUE(this->backend().taken_for_outsider(kind::write, a));
  EXPECT_FALSE(pending.cancel()) << "cancel() after the grant";
  lock.unlock();
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
  EXPECT_EQ(got.runs(), 1);
}

TYPED_TEST(async_contract, a_waiter_is_granted_when_another_process_releases) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  auto lock = this->backend().lock(a);
  outcome got;
  auto pending = lock.async_lock(got.handler());
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.ran()) << "granted while another process held the lock";
  EXPECT_FALSE(lock.acquired());
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(got.wait(), k_granted);
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
}

TYPED_TEST(async_contract, read_locks_are_shared_and_a_write_lock_waits_for_them) {
  const auto a = this->address();
  auto r1 = this->backend().rw(a);
  auto r2 = this->backend().rw(a);
  auto w = this->backend().rw(a);
  outcome got1, got2, gotw;
  auto p1 = r1.async_lock_shared(got1.handler());
  auto p2 = r2.async_lock_shared(got2.handler());
  EXPECT_EQ(got1.wait(), k_granted);
  EXPECT_EQ(got2.wait(), k_granted);
  EXPECT_TRUE(r1.read_acquired() && r2.read_acquired());
  auto pw = w.async_lock(gotw.handler());
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(gotw.ran()) << "a writer was granted among readers";
  r1.unlock_shared();
  std::this_thread::sleep_for(k_short);
  EXPECT_FALSE(gotw.ran()) << "a writer was granted beside a reader";
  r2.unlock_shared();
  EXPECT_EQ(gotw.wait(), k_granted);
  EXPECT_TRUE(w.write_acquired());
  w.unlock();
}

TYPED_TEST(async_contract, a_waiting_writer_holds_back_new_readers) {
  const auto a = this->address();
  auto reader = this->backend().rw(a);
  auto writer = this->backend().rw(a);
  auto late = this->backend().rw(a);
  reader.lock_shared();
  outcome gotw, gotr;
  auto pw = writer.async_lock(gotw.handler());
  std::this_thread::sleep_for(k_short);
  auto pr = late.async_lock_shared(gotr.handler());
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(gotr.ran()) << "a new reader overtook a waiting writer";
  EXPECT_FALSE(late.try_lock_shared()) << "a blocking reader overtook a waiting writer";
  reader.unlock_shared();
  EXPECT_EQ(gotw.wait(), k_granted);
  std::this_thread::sleep_for(k_short);
  EXPECT_FALSE(gotr.ran()) << "a reader was granted beside the writer";
  writer.unlock();
  EXPECT_EQ(gotr.wait(), k_granted);
  late.unlock_shared();
}

TYPED_TEST(async_contract, a_timed_acquisition_times_out_never_early) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  auto lock = this->backend().lock(a);
  for (const auto limit : {std::chrono::milliseconds(0), std::chrono::milliseconds(50),
                           std::chrono::milliseconds(300)}) {
    outcome got;
    const auto start = steady::now();
    auto pending = lock.async_try_lock_for(limit, got.handler());
    EXPECT_EQ(got.wait(), k_timed_out) << limit.count() << " ms";
    const auto elapsed = steady::now() - start;
    EXPECT_GE(elapsed, limit) << "timed out early";
    EXPECT_LT(elapsed, limit + k_upper) << "timed out late";
    EXPECT_FALSE(lock.acquired());
  }
  outcome until;
  const auto start = std::chrono::system_clock::now();
  auto pending = lock.async_try_lock_until(start + 100ms, until.handler());
  EXPECT_EQ(until.wait(), k_timed_out);
  EXPECT_GE(std::chrono::system_clock::now() - start, 100ms);
  EXPECT_EQ(holder.finish(), 0);
  // Once free, a zero timeout is one try that succeeds.
  outcome free;
  auto again = lock.async_try_lock_for(0s, free.handler());
  EXPECT_EQ(free.wait(), k_granted);
  lock.unlock();
}

TYPED_TEST(async_contract, a_timed_waiter_is_granted_within_its_deadline) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  auto lock = this->backend().lock(a);
  outcome got;
  auto pending = lock.async_try_lock_for(k_long, got.handler());
  std::this_thread::sleep_for(k_short);
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(got.wait(), k_granted);
  lock.unlock();
}

TYPED_TEST(async_contract, a_nan_timeout_throws_at_the_call) {
  auto lock = this->backend().lock(this->address());
  outcome got;
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THROW(lock.async_try_lock_for(nan, got.handler()), std::invalid_argument);
  std::this_thread::sleep_for(k_short);
  EXPECT_FALSE(got.ran());
}

TYPED_TEST(async_contract, cancel_ends_a_pending_acquisition_and_the_lock_stays_free) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  auto lock = this->backend().lock(a);
  outcome got;
  auto pending = lock.async_lock(got.handler());
  std::this_thread::sleep_for(k_short);
  EXPECT_TRUE(pending.cancel());
  EXPECT_EQ(got.wait(), k_canceled);
  EXPECT_FALSE(pending.cancel()) << "cancelled twice";
  EXPECT_EQ(holder.finish(), 0);
  std::this_thread::sleep_for(k_short);
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a)) << "a cancelled wait kept it";
  // The object can still acquire.
  outcome again;
  auto next = lock.async_lock(again.handler());
  EXPECT_EQ(again.wait(), k_granted);
  lock.unlock();
  EXPECT_EQ(got.runs(), 1);
}

TYPED_TEST(async_contract, cancel_racing_a_grant_never_leaks_the_lock) {
  const auto a = this->address();
  auto lock = this->backend().lock(a);
  auto other = this->backend().lock(a);
  int granted = 0, cancelled = 0;
  for (int round = 0; round < 100; ++round) {
    other.lock();
    outcome got;
    auto pending = lock.async_lock(got.handler());
    std::thread releaser([&] { other.unlock(); });
    if (round % 3 != 0) std::this_thread::sleep_for(std::chrono::microseconds(50 * (round % 7)));
    const bool withdrawn = pending.cancel();
    releaser.join();
    const auto ec = got.wait();
    ASSERT_TRUE(ec.has_value()) << "round " << round << ": no outcome";
    if (withdrawn) {
      EXPECT_EQ(*ec, k_canceled) << "round " << round;
      ++cancelled;
    } else {
      EXPECT_EQ(*ec, k_granted) << "round " << round;
      ++granted;
    }
    EXPECT_EQ(lock.acquired(), *ec == k_granted) << "round " << round;
    if (lock.acquired()) lock.unlock();
    // Nothing holds it now: a cancelled grant was let go.
    ASSERT_TRUE(other.try_lock()) << "round " << round << ": the lock leaked";
    other.unlock();
  }
  EXPECT_EQ(granted + cancelled, 100);
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
}

TYPED_TEST(async_contract, destruction_cancels_pending_acquisitions_and_waits_for_handlers) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  outcome got;
  std::atomic<bool> handler_done{false};
  fasteners::async_acquisition pending;
  {
    auto lock = this->backend().lock(a);
    pending = lock.async_lock([&](std::error_code ec) {
      std::this_thread::sleep_for(k_short);  // Destruction waits for this.
      handler_done = true;
      got.handler()(ec);
    });
    std::this_thread::sleep_for(k_short);
  }
  EXPECT_TRUE(handler_done.load()) << "destruction returned before the handler finished";
  EXPECT_EQ(got.wait(0ms), k_canceled);
  EXPECT_FALSE(pending.cancel()) << "the acquisition outlived its object";
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
}

TYPED_TEST(async_contract, a_handler_may_release_and_start_another_acquisition) {
  const auto a = this->address();
  auto lock = this->backend().lock(a);
  outcome second;
  std::atomic<int> rounds{0};
  fasteners::async_acquisition next;
  auto first = lock.async_lock([&](std::error_code ec) {
    EXPECT_EQ(ec, k_granted);
    ++rounds;
    lock.unlock();
    next = lock.async_lock(second.handler());
  });
  EXPECT_EQ(second.wait(), k_granted);
  EXPECT_EQ(rounds.load(), 1);
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
}

TYPED_TEST(async_contract, a_handler_may_destroy_its_lock_object) {
  const auto a = this->address();
  auto holder = this->hold_elsewhere(kind::write, a);
  auto lock = std::make_unique<typename TypeParam::lock_type>(this->backend().lock(a));
  outcome first, second;
  // Two pending acquisitions; the first one's handler (a timeout) destroys the object, which
  // cancels the second and must not wait for the handler that destroys it.
  auto p1 = lock->async_try_lock_for(50ms, [&](std::error_code ec) {
    lock.reset();
    first.handler()(ec);
  });
  auto p2 = lock->async_lock(second.handler());
  EXPECT_EQ(first.wait(), k_timed_out);
  EXPECT_EQ(second.wait(), k_canceled);
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
}

TYPED_TEST(async_contract, an_object_that_holds_and_asks_again_waits_until_it_releases) {
  const auto a = this->address();
  auto lock = this->backend().lock(a);
  lock.lock();
  outcome got;
  auto pending = lock.async_lock(got.handler());
  std::this_thread::sleep_for(k_quiet);
  EXPECT_FALSE(got.ran());
  lock.unlock();
  EXPECT_EQ(got.wait(), k_granted);
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
}

TYPED_TEST(async_contract, many_objects_are_granted_one_at_a_time_each_once) {
  const auto a = this->address();
  constexpr int k_objects = 20;
  auto holder = this->backend().lock(a);
  holder.lock();
  std::vector<std::unique_ptr<typename TypeParam::lock_type>> locks;
  std::atomic<int> inside{0}, granted{0}, overlaps{0};
  std::vector<fasteners::async_acquisition> pending;
  latch all(k_objects);
  for (int i = 0; i < k_objects; ++i) {
    locks.push_back(std::make_unique<typename TypeParam::lock_type>(this->backend().lock(a)));
    auto* lock = locks.back().get();
    pending.push_back(lock->async_lock([&, lock](std::error_code ec) {
      EXPECT_EQ(ec, k_granted);
      if (++inside != 1) ++overlaps;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      --inside;
      ++granted;
      lock->unlock();
      all.count_down();
    }));
  }
  // Blocking and asynchronous acquisitions mix: a blocking waiter gets its turn too.
  std::atomic<bool> blocking_done{false};
  std::thread blocking([&] {
    auto mine = this->backend().lock(a);
    mine.lock();
    if (++inside != 1) ++overlaps;
    --inside;
    mine.unlock();
    blocking_done = true;
  });
  std::this_thread::sleep_for(k_short);
  EXPECT_EQ(granted.load(), 0);
  holder.unlock();
  EXPECT_TRUE(all.wait_for(k_long));
  blocking.join();
  EXPECT_TRUE(blocking_done.load());
  EXPECT_EQ(granted.load(), k_objects);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
}

#ifndef _WIN32
TYPED_TEST(async_contract, a_child_of_fork_inherits_no_pending_acquisition) {
  const auto a = this->address();
  auto holder = this->backend().lock(a);
  holder.lock();
  auto lock = this->backend().lock(a);
  outcome got;
  std::atomic<int> runs_in_child{0};
  auto pending = lock.async_lock([&](std::error_code ec) {
    if (ec == k_granted) ++runs_in_child;  // In the parent: counted below, and checked by got.
    got.handler()(ec);
  });
  std::this_thread::sleep_for(k_short);
  const pid_t child = ::fork();
  if (child == 0) {
    // The child: nothing of the parent's acquisition runs here, and destroying the object (which
    // cancels its pending acquisitions) returns at once.
    std::this_thread::sleep_for(k_short);
    const bool quiet = runs_in_child.load() == 0;
    const bool cancelled = !pending.cancel();
    { auto gone = std::move(lock); }
    ::_exit(quiet && cancelled ? 0 : 1);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "the child saw the acquisition";
  holder.unlock();
  EXPECT_EQ(got.wait(), k_granted);
  lock.unlock();
}
#endif

#if defined(__linux__) && !defined(FASTENERS_CONTRACT_POSTGRES)
std::size_t thread_count() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// A thousand objects wait on one file that another process holds: they add at most two threads
// and two descriptors, use next to no CPU, and are then granted one at a time, each once.
TEST(async_files, a_thousand_waiters_need_no_thread_each) {
  temp_dir dir;
  const auto path = dir.path() / "lock";
  constexpr int k_waiters = 1000;
  auto holder = hold_in_child(kind::write, path);
  std::vector<std::unique_ptr<fasteners::interprocess_lock>> locks;
  for (int i = 0; i < k_waiters; ++i) {
    locks.push_back(std::make_unique<fasteners::interprocess_lock>(path));
  }
  // The library's threads that earlier tests left idle end within seconds; count from a quiet
  // start, after one asynchronous round has started the async thread.
  {
    fasteners::interprocess_lock warm(dir.path() / "warm");
    outcome got;
    auto p = warm.async_lock(got.handler());
    ASSERT_EQ(got.wait(), k_granted);
    warm.unlock();
  }
  const auto threads_before = thread_count();
  const auto handles_before = count_open_handles();
  std::atomic<int> inside{0}, granted{0}, overlaps{0};
  latch all(k_waiters);
  std::vector<fasteners::async_acquisition> pending;
  for (auto& lock : locks) {
    auto* l = lock.get();
    pending.push_back(l->async_lock([&, l](std::error_code ec) {
      EXPECT_EQ(ec, k_granted);
      if (++inside != 1) ++overlaps;
      --inside;
      ++granted;
      l->unlock();
      all.count_down();
    }));
  }
  std::this_thread::sleep_for(k_short);
  const double cpu_start = cpu_seconds();
  const auto wall_start = steady::now();
  std::this_thread::sleep_for(1s);
  const double cpu_share = (cpu_seconds() - cpu_start) / seconds_since(wall_start);
  const auto threads_waiting = thread_count();
  const auto handles_waiting = count_open_handles();
  std::cout << "[ figures  ] " << k_waiters << " waiting: threads +"
            << static_cast<long>(threads_waiting) - static_cast<long>(threads_before)
            << ", descriptors +"
            << static_cast<long>(handles_waiting) - static_cast<long>(handles_before) << ", CPU "
            << cpu_share * 100 << "% of one core" << std::endl;
  EXPECT_LE(threads_waiting, threads_before + 2);
  EXPECT_LE(handles_waiting, handles_before + 2);
  // With classic fcntl locks nothing can be queued in the kernel: the queue polls (see the
  // README), which costs about 1% of a core in a debug build; the bound there is looser.
  EXPECT_LE(cpu_share, k_classic_fcntl ? 0.05 : 0.02);
  EXPECT_EQ(granted.load(), 0);
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(all.wait_for(k_long));
  EXPECT_EQ(granted.load(), k_waiters);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(try_in_child(kind::write, path), k_acquired);
}

// A failure comes to the handler as the error code the blocking call would throw.
TEST(async_files, a_failure_comes_as_its_error_code) {
  temp_dir dir;
  // A directory is no lock file.
  fasteners::interprocess_lock lock(dir.path());
  outcome got;
  auto pending = lock.async_lock(got.handler());
  const auto ec = got.wait();
  ASSERT_TRUE(ec.has_value());
  EXPECT_TRUE(*ec) << "a directory was locked";
  EXPECT_FALSE(lock.acquired());
}
#endif

}  // namespace
}  // namespace fasteners_test
