// Signals and lock waits: the application's signals neither break nor shorten a wait, and timed
// waits never take over the application's signal handlers.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "posix/posix_support.hpp"

namespace fasteners_test {
namespace {

volatile std::sig_atomic_t g_signals = 0;

extern "C" void count_signal(int) { g_signals = g_signals + 1; }

// Helper "wait_through_signals KIND PATH restart|norestart none|acquire|until SECONDS": installs
// a SIGUSR1 handler (with or without SA_RESTART), prints "ready", then waits for the lock: as
// long as needed ("none"), or at most SECONDS through acquire(true, timeout) or try_lock_until on
// the system clock. Prints "held N" or "timed-out N" with the number of signals it caught.
FASTENERS_TEST_HELPER(wait_through_signals) {
  const kind k = parse_kind(args.at(0));
  const bool restart = args.at(2) == "restart";
  const std::string mode = args.at(3);
  struct sigaction action {};
  action.sa_handler = count_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = restart ? SA_RESTART : 0;
  if (::sigaction(SIGUSR1, &action, nullptr) != 0) return fail(2, "sigaction failed");
  kind_lock lock(k, path_of(args.at(1)));
  std::cout << "ready" << std::endl;
  if (mode == "none") {
    if (!lock.acquire()) return fail(20, "a blocking acquire returned false");
    std::cout << "held " << g_signals << std::endl;
    lock.release();
    return 0;
  }
  const double seconds = std::stod(args.at(4));
  const auto system_deadline = std::chrono::system_clock::now() +
                               std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                   std::chrono::duration<double>(seconds));
  const auto start = steady::now();
  const bool got = mode == "until" ? lock.acquire_until(system_deadline)
                                   : lock.acquire(true, std::chrono::duration<double>(seconds));
  const double elapsed = seconds_since(start);
  if (got) return fail(21, "a timed wait took a lock that was held throughout");
  if (elapsed < seconds) {
    return fail(22, "a timed wait returned after " + std::to_string(elapsed) + " s");
  }
  if (mode == "until" && std::chrono::system_clock::now() < system_deadline) {
    return fail(23, "try_lock_until returned before its deadline");
  }
  std::cout << "timed-out " << g_signals << std::endl;
  return 0;
}

// The number after `prefix` in `line`, or -1.
long number_after(const std::optional<std::string>& line, const std::string& prefix) {
  if (!line || line->rfind(prefix, 0) != 0) return -1;
  return std::stol(line->substr(prefix.size()));
}

// Signals during waits: (waiting kind, SA_RESTART).
class signal_test : public lock_test, public ::testing::WithParamInterface<std::tuple<kind, bool>> {
 protected:
  kind waiting_kind() const { return std::get<0>(GetParam()); }
  std::string restart() const { return std::get<1>(GetParam()) ? "restart" : "norestart"; }
};

std::string signal_test_name(const ::testing::TestParamInfo<std::tuple<kind, bool>>& info) {
  return std::string(to_string(std::get<0>(info.param))) +
         (std::get<1>(info.param) ? "_sa_restart" : "_no_sa_restart");
}

TEST_P(signal_test, signals_do_not_break_a_blocking_wait) {
  kind_lock holder(kind::write, lock_path());
  ASSERT_TRUE(holder.acquire());
  child_process waiter = spawn_helper(
      "wait_through_signals", {to_string(waiting_kind()), arg_of(lock_path()), restart(), "none"});
  ASSERT_EQ(waiter.read_line(), std::optional<std::string>("ready"));
  for (int i = 0; i < 60; ++i) {
    ::kill(waiter.id(), SIGUSR1);
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(waiter.running()) << "the waiter ended while the lock was held";
  holder.release();
  const auto line = waiter.read_line();
  EXPECT_GT(number_after(line, "held "), 0) << line.value_or("(nothing)");
  EXPECT_EQ(waiter.finish(), 0);
}

TEST_P(signal_test, signals_do_not_shorten_a_timed_wait) {
  kind_lock holder(kind::write, lock_path());
  ASSERT_TRUE(holder.acquire());
  for (const char* mode : {"acquire", "until"}) {
    child_process waiter =
        spawn_helper("wait_through_signals",
                     {to_string(waiting_kind()), arg_of(lock_path()), restart(), mode, "0.3"});
    ASSERT_EQ(waiter.read_line(), std::optional<std::string>("ready"));
    const auto deadline = steady::now() + 10s;
    while (waiter.running() && steady::now() < deadline) {
      ::kill(waiter.id(), SIGUSR1);
      std::this_thread::sleep_for(5ms);
    }
    const auto line = waiter.read_line();
    EXPECT_GT(number_after(line, "timed-out "), 0) << mode << ": " << line.value_or("(nothing)");
    EXPECT_EQ(waiter.finish(), 0) << mode;
  }
  holder.release();
}

INSTANTIATE_TEST_SUITE_P(kinds_and_flags, signal_test,
                         ::testing::Combine(::testing::ValuesIn(all_kinds), ::testing::Bool()),
                         signal_test_name);

using timed_wait_signal_test = lock_test;

TEST_F(timed_wait_signal_test, the_applications_signals_do_not_end_the_wait_early) {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  ::sigemptyset(&action.sa_mask);
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR2, &action, &old), 0);
  child_process holder = hold_in_child(kind::lock, lock_path());
  fasteners::interprocess_lock lock(lock_path());
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    const auto start = steady::now();
    EXPECT_FALSE(lock.try_lock_for(k_short));
    EXPECT_GE(seconds_since(start), std::chrono::duration<double>(k_short).count());
    done = true;
  });
  while (!done) {
    ::pthread_kill(waiter.native_handle(), SIGUSR2);
    std::this_thread::sleep_for(5ms);
  }
  waiter.join();
  EXPECT_EQ(holder.finish(), 0);
  ::sigaction(SIGUSR2, &old, nullptr);
}

// Timed waits neither replace the application's signal handlers nor raise its signals: with a
// handler of the application on every real-time signal and on SIGALRM, SIGUSR1 and SIGUSR2, a
// timed wait leaves each handler in place and calls none.
TEST_F(timed_wait_signal_test, an_application_handler_is_never_replaced) {
  static std::atomic<int> calls{0};
  struct sigaction action {};
  action.sa_handler = [](int) { ++calls; };
  ::sigemptyset(&action.sa_mask);
  std::vector<int> signals = {SIGALRM, SIGUSR1, SIGUSR2};
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) signals.push_back(sig);
  std::vector<struct sigaction> old(signals.size());
  for (std::size_t i = 0; i < signals.size(); ++i) {
    ASSERT_EQ(::sigaction(signals[i], &action, &old[i]), 0) << "signal " << signals[i];
  }
  child_process holder = hold_in_child(kind::lock, lock_path());
  fasteners::interprocess_lock lock(lock_path());
  EXPECT_FALSE(lock.try_lock_for(50ms));
  for (const int sig : signals) {
    struct sigaction now {};
    ASSERT_EQ(::sigaction(sig, nullptr, &now), 0);
    EXPECT_EQ(now.sa_handler, action.sa_handler) << "the handler of signal " << sig << " changed";
  }
  EXPECT_EQ(calls, 0) << "the library raised one of the application's signals";
  EXPECT_EQ(holder.finish(), 0);
  for (std::size_t i = 0; i < signals.size(); ++i) ::sigaction(signals[i], &old[i], nullptr);
}

}  // namespace
}  // namespace fasteners_test
