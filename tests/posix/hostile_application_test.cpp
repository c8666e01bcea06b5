// Hostile applications: no signal queue, signal handlers changed mid-wait, fork() at any moment,
// hard links, NaN timeouts and thread cancellation.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"
#include "posix/posix_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

fasteners::lock_options removing() {
  fasteners::lock_options options;
  options.remove_on_release = true;
  return options;
}

// A lock of one kind on a path, through the standard calls of that kind: lock/try_lock_for/
// try_lock_until, or their _shared forms for the read side.
class kind_object {
 public:
  kind_object(kind k, const fs::path& path, const fasteners::lock_options& options = {})
      : kind_(k), lock_(path, options), rw_(path, options) {}

  template <class Rep, class Period>
  bool try_for(const std::chrono::duration<Rep, Period>& d) {
    switch (kind_) {
      case kind::lock:
        return lock_.try_lock_for(d);
      case kind::read:
        return rw_.try_lock_shared_for(d);
      case kind::write:
        return rw_.try_lock_for(d);
    }
    return false;
  }
  template <class Clock, class Duration>
  bool try_until(const std::chrono::time_point<Clock, Duration>& t) {
    switch (kind_) {
      case kind::lock:
        return lock_.try_lock_until(t);
      case kind::read:
        return rw_.try_lock_shared_until(t);
      case kind::write:
        return rw_.try_lock_until(t);
    }
    return false;
  }
  void lock() {
    if (kind_ == kind::lock) lock_.lock();
    if (kind_ == kind::read) rw_.lock_shared();
    if (kind_ == kind::write) rw_.lock();
  }
  void unlock() {
    if (kind_ == kind::lock) lock_.unlock();
    if (kind_ == kind::read) rw_.unlock_shared();
    if (kind_ == kind::write) rw_.unlock();
  }
  bool held() const { return lock_.acquired() || rw_.read_acquired() || rw_.write_acquired(); }

 private:
  kind kind_;
  fasteners::interprocess_lock lock_;
  fasteners::interprocess_reader_writer_lock rw_;
};

// Holds a kind_object's lock for a scope (also while a cancelled thread unwinds).
class scoped_hold {
 public:
  explicit scoped_hold(kind_object& object) : object_(object) { object_.lock(); }
  ~scoped_hold() { object_.unlock(); }
  scoped_hold(const scoped_hold&) = delete;
  scoped_hold& operator=(const scoped_hold&) = delete;

 private:
  kind_object& object_;
};

// In a helper: another process that holds a lock of kind `k` on `path` until finish().
child_process hold_elsewhere(kind k, const fs::path& path) {
  child_process holder = spawn_helper("hold", {to_string(k), path.string()});
  if (holder.read_line() != std::optional<std::string>("held")) {
    throw std::runtime_error("the holding process did not report holding " + path.string());
  }
  return holder;
}

// The POSIX timers of this process, as /proc/self/timers lists them: "" when there are none.
std::string posix_timers() {
  std::ifstream in("/proc/self/timers");
  if (!in) throw std::runtime_error("cannot read /proc/self/timers");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Joins `thread` if it ends within `timeout`; the caller must not go on with the test otherwise.
bool join_within(pthread_t thread, void** status, std::chrono::seconds timeout) {
  timespec deadline{};
  ::clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += static_cast<time_t>(timeout.count());
  return ::pthread_timedjoin_np(thread, status, &deadline) == 0;
}

// In a helper whose thread is stuck in a library call: reports and ends the process at once, as
// returning would destroy objects that thread still uses.
[[noreturn]] void give_up(int code, const std::string& message) {
  fail(code, message);
  ::_exit(code);
}

class hostile_application_test : public lock_test {};
class hostile_kind_test : public lock_test, public ::testing::WithParamInterface<kind> {};

// 1. A timed wait needs no queued signal.

// Helper "wait_without_signal_queue KIND PATH": with RLIMIT_SIGPENDING 0 (no signal can be
// queued), waits 300 ms for a lock another process holds; must get false no sooner and within a
// few seconds. Prints "done" once the object is gone, then lives until stdin closes.
FASTENERS_TEST_HELPER(wait_without_signal_queue) {
  const rlimit none{0, 0};
  if (::setrlimit(RLIMIT_SIGPENDING, &none) != 0) return fail(2, "setrlimit failed");
  {
    kind_object lock(parse_kind(args.at(0)), args.at(1));
    const auto start = steady::now();
    if (lock.try_for(300ms)) return fail(20, "took a lock another process holds");
    const double took = seconds_since(start);
    if (took < 0.3) return fail(21, "gave up after " + std::to_string(took) + " s");
    if (took >= 5.0) return fail(22, "returned only after " + std::to_string(took) + " s");
  }
  std::cout << "done" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  return 0;
}

// The threads of this process, as /proc/self/task lists them.
std::size_t count_threads() {
  std::size_t n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/self/task")) {
    static_cast<void>(entry);
    ++n;
  }
  return n;
}

// A loop of short timed waits on a lock another process holds for long keeps one queued wait: one
// thread and one descriptor, not one per wait.
TEST_P(hostile_kind_test, many_short_timed_waits_keep_one_thread_and_one_descriptor) {
  child_process holder = hold_in_child(kind::write, lock_path());
  // The first thread started may start one of a sanitizer's runtime too: counted before.
  std::thread([] {}).join();
  const auto threads = count_threads();
  const auto fds = count_open_handles();
  {
    kind_object lock(GetParam(), lock_path());
    for (int i = 0; i < 100; ++i) EXPECT_FALSE(lock.try_for(2ms));
    EXPECT_LE(count_threads(), threads + 1);
    EXPECT_LE(count_open_handles(), fds + 1);
  }
  EXPECT_EQ(holder.finish(), 0);
}

// Helper "wait_without_threads KIND PATH": with the file already open (keep_open), forbids this
// process to start threads (RLIMIT_NPROC 0, as an unprivileged user, since root is exempt), then
// checks that a timed wait on the lock another process holds fails with EAGAIN, holding nothing
// and opening nothing, and that it works again once threads may be started. With classic fcntl
// locks, which need no thread, the wait just times out.
FASTENERS_TEST_HELPER(wait_without_threads) {
  fasteners::lock_options options;
  options.keep_open = true;
  kind_object lock(parse_kind(args.at(0)), args.at(1), options);
  if (lock.try_for(0s)) return fail(20, "took a lock another process holds");
  if (!forbid_threads()) return fail(2, "could not forbid threads as an unprivileged user");
  const auto before = count_open_handles();
  if (k_classic_fcntl) {
    // With classic fcntl locks timed waits retry in the calling thread and need none.
    const auto start = steady::now();
    if (lock.try_for(300ms)) return fail(20, "took a lock another process holds");
    if (seconds_since(start) < 0.3) return fail(26, "the timed wait ended early");
    return 0;
  }
  try {
    lock.try_for(300ms);
    return fail(21, "a timed wait without a thread to wait in did not throw");
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::resource_unavailable_try_again) {
      return fail(22, std::string("unexpected error: ") + e.what());
    }
  }
  if (lock.held()) return fail(23, "the object holds a lock after the error");
  if (count_open_handles() != before) return fail(24, "the error left a descriptor open");
  if (!allow_threads()) return fail(2, "could not allow threads again");
  const auto start = steady::now();
  if (lock.try_for(300ms)) return fail(25, "took a lock another process holds");
  if (seconds_since(start) < 0.3) return fail(26, "the timed wait ended early");
  return 0;
}

// Proves that a timed wait that cannot start its thread fails with a clear error and leaves
// nothing behind.
TEST_P(hostile_kind_test, a_timed_wait_without_threads_is_an_error) {
  child_process holder = hold_in_child(kind::write, lock_path());
  EXPECT_EQ(run_helper("wait_without_threads", {to_string(GetParam()), lock_path().string()}), 0)
      << "see the helper's message above";
  EXPECT_EQ(holder.finish(), 0);
}

// Helper "async_without_threads PATH": with the file already open (keep_open), forbids this
// process to start threads (RLIMIT_NPROC 0, as an unprivileged user) before its first
// asynchronous acquisition, which must then throw EAGAIN at the call, holding nothing and starting
// nothing; once threads may be started again, an acquisition on the lock another process holds
// times out as it should.
FASTENERS_TEST_HELPER(async_without_threads) {
  fasteners::lock_options options;
  options.keep_open = true;
  fasteners::interprocess_lock lock(args.at(0), options);
  if (lock.try_lock()) return fail(20, "took a lock another process holds");
  if (!forbid_threads()) return fail(2, "could not forbid threads as an unprivileged user");
  std::atomic<int> ran{0};
  try {
    auto pending = lock.async_lock([&](std::error_code) { ++ran; });
    return fail(21, "an asynchronous acquisition without a thread to run it did not throw");
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::resource_unavailable_try_again) {
      return fail(22, std::string("unexpected error: ") + e.what());
    }
  }
  if (lock.acquired()) return fail(23, "the object holds a lock after the error");
  if (!allow_threads()) return fail(2, "could not allow threads again");
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::error_code> outcome;
  const auto start = steady::now();
  auto pending = lock.async_try_lock_for(300ms, [&](std::error_code ec) {
    std::lock_guard<std::mutex> guard(mu);
    outcome = ec;
    cv.notify_all();
  });
  std::unique_lock<std::mutex> wait(mu);
  if (!cv.wait_for(wait, 10s, [&] { return outcome.has_value(); })) {
    return fail(24, "the acquisition never ended");
  }
  if (*outcome != std::errc::timed_out)
    return fail(25, "it did not time out: " + outcome->message());
  if (seconds_since(start) < 0.3) return fail(26, "it timed out early");
  if (ran.load() != 0) return fail(27, "the refused acquisition's handler ran");
  return 0;
}

// Proves that an asynchronous acquisition that cannot have its thread fails at the call.
TEST_F(hostile_application_test, an_asynchronous_acquisition_without_threads_is_an_error) {
  child_process holder = hold_in_child(kind::write, lock_path());
  EXPECT_EQ(run_helper("async_without_threads", {lock_path().string()}), 0)
      << "see the helper's message above";
  EXPECT_EQ(holder.finish(), 0);
}

// Proves that a timed wait ends at its timeout without signals, and that the waiting process
// keeps nothing: once the holder leaves, a third process takes the lock at once.
TEST_P(hostile_kind_test, a_timed_wait_needs_no_queued_signals) {
  child_process holder = hold_in_child(kind::write, lock_path());
  child_process waiter =
      spawn_helper("wait_without_signal_queue", {to_string(GetParam()), lock_path().string()});
  EXPECT_EQ(waiter.read_line(15s), std::optional<std::string>("done"))
      << "try_lock_for(300ms) with RLIMIT_SIGPENDING 0 did not return within 15 s";
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired)
      << "the process that waited holds the lock after its holder left";
  EXPECT_EQ(waiter.finish(10s), 0);
}

// 2. The application's signal handlers.

std::atomic<int> g_handled{0};
void count_handled(int) { g_handled.fetch_add(1, std::memory_order_relaxed); }

// Helper "change_handlers_mid_wait KIND PATH restart|default": a thread waits 300 ms for a lock
// another process holds; 50 ms in, this thread sets every realtime signal to an SA_RESTART
// handler ("restart") or to SIG_DFL ("default"). The wait must return false after 0.3 to 3 s,
// no handler may run, and the process must live.
FASTENERS_TEST_HELPER(change_handlers_mid_wait) {
  const kind k = parse_kind(args.at(0));
  const fs::path path = args.at(1);
  const bool restart = args.at(2) == "restart";
  child_process holder = hold_elsewhere(kind::write, path);
  kind_object lock(k, path);
  std::atomic<int> got{-1};
  std::atomic<double> took{-1};
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    const auto start = steady::now();
    try {
      got = lock.try_for(300ms) ? 1 : 0;
    } catch (const std::exception& e) {
      std::cerr << "try_lock_for threw: " << e.what() << std::endl;
    }
    took = seconds_since(start);
    returned = true;
  });
  std::this_thread::sleep_for(50ms);
  struct sigaction action {};
  action.sa_handler = restart ? &count_handled : SIG_DFL;
  ::sigemptyset(&action.sa_mask);
  action.sa_flags = restart ? SA_RESTART : 0;
  int refused = 0;
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; ++sig) {
    if (::sigaction(sig, &action, nullptr) != 0) ++refused;
  }
  const auto give_up_at = steady::now() + 5s;
  while (!returned && steady::now() < give_up_at) std::this_thread::sleep_for(10ms);
  if (!returned) {
    give_up(23, "try_lock_for(300ms) has not returned after 5 s; the handler ran " +
                    std::to_string(g_handled.load()) + " times");
  }
  waiter.join();
  if (refused != 0) return fail(2, "sigaction failed");
  if (got != 0) return fail(20, got == 1 ? "took a held lock" : "the wait threw");
  if (took < 0.3 || took >= 3.0) {
    return fail(21, "try_lock_for(300ms) returned after " + std::to_string(took.load()) + " s");
  }
  if (g_handled != 0) {
    return fail(22, "the application's handler ran " + std::to_string(g_handled.load()) + " times");
  }
  if (holder.finish() != 0) return fail(3, "the holder failed");
  return 0;
}

// Proves that the library sends no signal: handlers with SA_RESTART that the application
// installs on every realtime signal during a timed wait neither run nor stretch the wait.
TEST_P(hostile_kind_test, handlers_installed_mid_wait_neither_run_nor_stretch_it) {
  EXPECT_EQ(run_helper("change_handlers_mid_wait",
                       {to_string(GetParam()), lock_path().string(), "restart"}, 20s),
            0);
}

// Proves that the library relies on no handler: resetting every realtime signal to SIG_DFL
// during a timed wait does not kill the process.
TEST_P(hostile_kind_test, default_dispositions_set_mid_wait_do_not_kill_the_process) {
  EXPECT_EQ(run_helper("change_handlers_mid_wait",
                       {to_string(GetParam()), lock_path().string(), "default"}, 20s),
            0);
}

struct disposition {
  int result;
  std::uintptr_t handler;
  int flags;
  std::vector<bool> mask;
  bool operator==(const disposition& o) const {
    return result == o.result && handler == o.handler && flags == o.flags && mask == o.mask;
  }
};

// What sigaction() reports for every signal 1..NSIG-1.
std::vector<disposition> dispositions() {
  std::vector<disposition> all;
  for (int sig = 1; sig < NSIG; ++sig) {
    struct sigaction sa {};
    disposition d{::sigaction(sig, nullptr, &sa), 0, 0, {}};
    d.handler = (sa.sa_flags & SA_SIGINFO) != 0 ? reinterpret_cast<std::uintptr_t>(sa.sa_sigaction)
                                                : reinterpret_cast<std::uintptr_t>(sa.sa_handler);
    d.flags = sa.sa_flags;
    for (int s = 1; s < NSIG; ++s) d.mask.push_back(::sigismember(&sa.sa_mask, s) == 1);
    all.push_back(d);
  }
  return all;
}

// Helper "timed_waits_leave_no_trace FREE HELD": timed waits of every kind and call, on a free
// file and on one another process holds, change no signal disposition and create no POSIX timer.
FASTENERS_TEST_HELPER(timed_waits_leave_no_trace) {
  const fs::path free_path = args.at(0);
  const fs::path held_path = args.at(1);
  child_process holder = hold_elsewhere(kind::write, held_path);
  const auto before = dispositions();
  std::string errors;
  for (const kind k : all_kinds) {
    kind_object free_lock(k, free_path);
    kind_object held_lock(k, held_path);
    kind_lock seed_style(k, held_path);
    const std::string name = to_string(k);
    const bool free_taken[] = {
        free_lock.try_for(10ms) && (free_lock.unlock(), true),
        free_lock.try_until(steady::now() + 10ms) && (free_lock.unlock(), true),
        free_lock.try_until(std::chrono::system_clock::now() + 10ms) && (free_lock.unlock(), true)};
    for (const bool taken : free_taken) {
      if (!taken) errors += name + ": a timed wait did not take a free lock; ";
    }
    const bool held_taken[] = {held_lock.try_for(50ms), held_lock.try_until(steady::now() + 50ms),
                               held_lock.try_until(std::chrono::system_clock::now() + 50ms),
                               seed_style.acquire(true, std::chrono::duration<double>(0.05))};
    for (const bool taken : held_taken) {
      if (taken) errors += name + ": a timed wait took a lock another process holds; ";
    }
  }
  kind_object waiting(kind::lock, held_path);
  std::thread waiter([&] {
    if (waiting.try_for(600ms)) waiting.unlock();
  });
  std::this_thread::sleep_for(200ms);
  const std::string during = posix_timers();
  waiter.join();
  const std::string after = posix_timers();
  const auto later = dispositions();
  for (int sig = 1; sig < NSIG; ++sig) {
    if (!(before[static_cast<std::size_t>(sig - 1)] == later[static_cast<std::size_t>(sig - 1)])) {
      errors += "the disposition of signal " + std::to_string(sig) + " changed; ";
    }
  }
  if (!during.empty()) errors += "timers during a timed wait: " + during + "; ";
  if (!after.empty()) errors += "timers after the timed waits: " + after + "; ";
  if (holder.finish() != 0) errors += "the holder failed; ";
  return errors.empty() ? 0 : fail(20, errors);
}

// Proves that timed waits, contended or not, leave every signal disposition as it was and use
// no POSIX timer.
TEST_F(hostile_application_test, timed_waits_leave_signal_dispositions_and_timers_alone) {
  EXPECT_EQ(run_helper("timed_waits_leave_no_trace",
                       {(dir() / "free").string(), (dir() / "held").string()}, 30s),
            0);
}

// 3. Descriptors in forked children.

// In a child made by fork() in a multithreaded process: whether a descriptor of this process
// refers to a path that starts with `prefix` (also a deleted file's "... (deleted)"); writes the
// first to stderr. Only system calls, so it is async-signal-safe.
int scan_descriptors(const char* prefix, std::size_t prefix_length, bool report) {
  const int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return 2;
  alignas(dirent64) char buffer[8192];
  int code = 0;
  for (;;) {
    const long n = ::syscall(SYS_getdents64, dir, buffer, sizeof buffer);
    if (n <= 0) break;
    for (long offset = 0; offset < n;) {
      const auto* entry = reinterpret_cast<const dirent64*>(buffer + offset);
      offset += entry->d_reclen;
      char target[4096];
      const ssize_t length = ::readlinkat(dir, entry->d_name, target, sizeof target - 1);
      if (length < static_cast<ssize_t>(prefix_length)) continue;
      if (std::memcmp(target, prefix, prefix_length) != 0) continue;
      if (report && code == 0) {
        target[length] = '\n';
        const char what[] = "a forked child holds a descriptor of ";
        [[maybe_unused]] auto w1 = ::write(2, what, sizeof what - 1);
        [[maybe_unused]] auto w2 = ::write(2, target, static_cast<std::size_t>(length) + 1);
      }
      code = 1;
    }
  }
  ::close(dir);
  return code;
}

// Helper "toggle KIND PATH": takes and releases the lock every 10 ms until stdin closes.
FASTENERS_TEST_HELPER(toggle) {
  kind_lock lock(parse_kind(args.at(0)), args.at(1));
  std::cout << "toggling" << std::endl;
  for (;;) {
    pollfd p{0, POLLIN, 0};
    if (::poll(&p, 1, 0) == 1) {
      char c;
      if (::read(0, &c, 1) <= 0) return 0;
    }
    if (!lock.acquire()) return fail(1, "blocking acquire returned false");
    std::this_thread::sleep_for(10ms);
    lock.release();
    std::this_thread::sleep_for(10ms);
  }
}

// Helper "fork_while_locking PATH DIR removing|default|timed": three threads (an exclusive lock,
// a writer, a reader, each its own object on PATH) take and release the lock in a loop, with
// remove_on_release, default options, or as timed waits against another process that holds the
// lock part of the time, while this thread forks 200 children. Each child checks at once that
// it has no descriptor of a file in DIR. Exits 0 if none had one.
FASTENERS_TEST_HELPER(fork_while_locking) {
  const fs::path path = args.at(0);
  const std::string prefix = fs::canonical(args.at(1)).string() + "/";
  const std::string mode = args.at(2);
  const auto options = mode == "removing" ? removing() : fasteners::lock_options{};
  std::optional<child_process> toggler;
  if (mode == "timed") {
    toggler.emplace(spawn_helper("toggle", {"write", path.string()}));
    if (toggler->read_line() != std::optional<std::string>("toggling")) return fail(2, "toggle");
  }
  std::atomic<bool> stop{false};
  std::atomic<long> rounds{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([&, t] {
      try {
        kind_object lock(all_kinds[static_cast<std::size_t>(t)], path, options);
        std::minstd_rand random(static_cast<unsigned>(t + 1));
        while (!stop) {
          if (mode == "timed") {
            if (lock.try_for(std::chrono::milliseconds(1 + static_cast<long>(random() % 20))))
              lock.unlock();
          } else {
            lock.lock();
            lock.unlock();
          }
          ++rounds;
        }
      } catch (const std::exception& e) {
        std::cerr << "locking thread: " << e.what() << std::endl;
        ++errors;
      }
    });
  }
  const auto warm_up = steady::now() + 10s;
  while (rounds < 20 && steady::now() < warm_up) std::this_thread::sleep_for(1ms);
  int leaky = 0;
  int broken = 0;
  for (int i = 0; i < 200; ++i) {
    const pid_t child = ::fork();
    if (child < 0) {
      ++broken;
      break;
    }
    if (child == 0) ::_exit(scan_descriptors(prefix.c_str(), prefix.size(), leaky < 3));
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 1) {
      ++leaky;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      ++broken;
    }
  }
  stop = true;
  for (auto& t : threads) t.join();
  if (toggler && toggler->finish() != 0) ++broken;
  if (leaky != 0 || broken != 0 || errors != 0) {
    return fail(20, std::to_string(leaky) + " of 200 forked children held a lock file's " +
                        "descriptor; " + std::to_string(broken) + " failed otherwise; " +
                        std::to_string(errors.load()) + " locking threads threw; " +
                        std::to_string(rounds.load()) + " rounds");
  }
  return 0;
}

// Proves that a child made by fork() while threads take, release and delete lock files holds no
// descriptor of a lock file.
TEST_F(hostile_application_test, forked_children_hold_no_lock_file_with_remove_on_release) {
  EXPECT_EQ(
      run_helper("fork_while_locking", {lock_path().string(), dir().string(), "removing"}, 60s), 0);
}

// The same with default options.
TEST_F(hostile_application_test, forked_children_hold_no_lock_file_with_default_options) {
  EXPECT_EQ(
      run_helper("fork_while_locking", {lock_path().string(), dir().string(), "default"}, 60s), 0);
}

// The same while the threads are in timed waits for a lock another process keeps taking: a
// timed wait may keep a descriptor of its own, but a forked child never has it.
TEST_F(hostile_application_test, forked_children_hold_no_lock_file_during_timed_waits) {
  EXPECT_EQ(run_helper("fork_while_locking", {lock_path().string(), dir().string(), "timed"}, 60s),
            0);
}

// 4. remove_on_release and hard links.

// Proves that a release never deletes a name of a file that has another link, and still
// deletes the last name.
TEST_F(hostile_application_test, a_release_keeps_a_file_that_has_other_hard_links) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const fs::path a = dir() / "a";
    const fs::path b = dir() / "b";
    std::ofstream(a).close();
    fs::create_hard_link(a, b);
    {
      kind_lock lock(k, a, removing());
      ASSERT_TRUE(lock.acquire(false));
      lock.release();
    }
    EXPECT_TRUE(fs::exists(a)) << "deleted one name while the file had another";
    EXPECT_TRUE(fs::exists(b));
    fs::remove(b);
    {
      kind_lock lock(k, a, removing());
      ASSERT_TRUE(lock.acquire(false));
      lock.release();
    }
    EXPECT_FALSE(fs::exists(a)) << "the file's last name was not deleted";
    fs::remove(a);
  }
}

// Who is inside the critical section of the hard-link stress test, in memory all its processes
// share.
struct shared_occupancy {
  std::atomic<int> inside;
  std::atomic<long> violations;
  std::atomic<long> rounds;
};

// Helper "hard_link_stress A B SHARED SECONDS": two threads, each iteration an exclusive lock
// with remove_on_release through a fresh object on name A or B (at random) of one file, count
// in SHARED whether anyone else was inside. Runs for SECONDS.
FASTENERS_TEST_HELPER(hard_link_stress) {
  const fs::path names[] = {args.at(0), args.at(1)};
  const int fd = ::open(args.at(2).c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail(2, "cannot open the shared file");
  void* memory =
      ::mmap(nullptr, sizeof(shared_occupancy), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (memory == MAP_FAILED) return fail(2, "mmap failed");
  auto* shared = static_cast<shared_occupancy*>(memory);
  const auto end = steady::now() + std::chrono::duration<double>(std::stod(args.at(3)));
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      std::minstd_rand random(static_cast<unsigned>(::getpid() * 2 + t));
      try {
        while (steady::now() < end) {
          fasteners::interprocess_lock lock(names[random() % 2], removing());
          if (!lock.try_lock_for(k_long)) throw std::runtime_error("no lock within 30 s");
          if (shared->inside.fetch_add(1) != 0) ++shared->violations;
          std::this_thread::yield();
          shared->inside.fetch_sub(1);
          ++shared->rounds;
          lock.unlock();
        }
      } catch (const std::exception& e) {
        std::cerr << "hard_link_stress: " << e.what() << std::endl;
        ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  ::munmap(memory, sizeof(shared_occupancy));
  return errors == 0 ? 0 : 1;
}

// Proves that processes locking a file through two hard-linked names with remove_on_release
// exclude each other: no release deletes a name that the file still has another of.
TEST_F(hostile_application_test, hard_linked_names_exclude_each_other_with_remove_on_release) {
  const fs::path a = dir() / "a";
  const fs::path b = dir() / "b";
  std::ofstream(a).close();
  fs::create_hard_link(a, b);
  const fs::path shared_file = dir() / "shared";
  {
    std::ofstream out(shared_file);
    out << std::string(4096, '\0');
  }
  const int fd = ::open(shared_file.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* memory =
      ::mmap(nullptr, sizeof(shared_occupancy), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(memory, MAP_FAILED);
  const auto* shared = static_cast<const shared_occupancy*>(memory);
  std::vector<child_process> workers;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(
        spawn_helper("hard_link_stress", {a.string(), b.string(), shared_file.string(), "2"}));
  }
  for (auto& worker : workers) EXPECT_EQ(worker.finish(60s), 0);
  EXPECT_EQ(shared->violations.load(), 0)
      << "exclusion violations in " << shared->rounds.load() << " rounds";
  EXPECT_GT(shared->rounds.load(), 0);
  EXPECT_TRUE(fs::exists(a) && fs::exists(b) && fs::equivalent(a, b))
      << "a name of the hard-linked file was deleted";
  ::munmap(memory, sizeof(shared_occupancy));
}

// 5. NaN timeouts.

// Makes the timed call `call` with a NaN timeout or deadline.
bool call_with_nan(const std::string& call, fasteners::interprocess_lock& lock,
                   fasteners::interprocess_reader_writer_lock& rw) {
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  const std::chrono::time_point<std::chrono::steady_clock, std::chrono::duration<double>>
      steady_nan(nan);
  const std::chrono::time_point<std::chrono::system_clock, std::chrono::duration<double>>
      system_nan(nan);
  if (call == "lock_try_lock_for") return lock.try_lock_for(nan);
  if (call == "lock_acquire") return lock.acquire(true, nan);
  if (call == "lock_try_lock_until_steady") return lock.try_lock_until(steady_nan);
  if (call == "lock_try_lock_until_system") return lock.try_lock_until(system_nan);
  if (call == "rw_try_lock_for") return rw.try_lock_for(nan);
  if (call == "rw_try_lock_shared_for") return rw.try_lock_shared_for(nan);
  if (call == "rw_acquire_read_lock") return rw.acquire_read_lock(true, nan);
  if (call == "rw_acquire_write_lock") return rw.acquire_write_lock(true, nan);
  if (call == "rw_try_lock_until_steady") return rw.try_lock_until(steady_nan);
  if (call == "rw_try_lock_until_system") return rw.try_lock_until(system_nan);
  if (call == "rw_try_lock_shared_until_steady") return rw.try_lock_shared_until(steady_nan);
  if (call == "rw_try_lock_shared_until_system") return rw.try_lock_shared_until(system_nan);
  throw std::runtime_error("no call named " + call);
}

const std::vector<std::string> nan_calls = {"lock_try_lock_for",
                                            "lock_acquire",
                                            "lock_try_lock_until_steady",
                                            "lock_try_lock_until_system",
                                            "rw_try_lock_for",
                                            "rw_try_lock_shared_for",
                                            "rw_acquire_read_lock",
                                            "rw_acquire_write_lock",
                                            "rw_try_lock_until_steady",
                                            "rw_try_lock_until_system",
                                            "rw_try_lock_shared_until_steady",
                                            "rw_try_lock_shared_until_system"};

// Helper "nan_timeout CALL PATH": makes CALL with NaN on a lock another process holds; it must
// throw std::invalid_argument promptly and leave the object holding nothing.
FASTENERS_TEST_HELPER(nan_timeout) {
  const std::string call = args.at(0);
  const fs::path path = args.at(1);
  child_process holder = hold_elsewhere(kind::write, path);
  fasteners::interprocess_lock lock(path);
  fasteners::interprocess_reader_writer_lock rw(path);
  const auto start = steady::now();
  try {
    const bool got = call_with_nan(call, lock, rw);
    return fail(20, call + " returned " + (got ? "true" : "false") + " after " +
                        std::to_string(seconds_since(start)) + " s instead of throwing");
  } catch (const std::invalid_argument&) {
  }
  if (seconds_since(start) >= 5.0) return fail(21, call + " threw only after seconds");
  if (lock.acquired() || rw.read_acquired() || rw.write_acquired()) {
    return fail(22, call + " threw but the object holds a lock");
  }
  return holder.finish() == 0 ? 0 : fail(3, "the holder failed");
}

std::string call_name(const ::testing::TestParamInfo<std::string>& param) { return param.param; }

class nan_timeout_test : public lock_test, public ::testing::WithParamInterface<std::string> {};

// Proves that every timed call refuses a NaN timeout with std::invalid_argument instead of
// waiting without limit.
TEST_P(nan_timeout_test, throws_invalid_argument_and_holds_nothing) {
  EXPECT_EQ(run_helper("nan_timeout", {GetParam(), lock_path().string()}, 10s), 0)
      << "-1: the call was still waiting after 10 s and was killed";
}

INSTANTIATE_TEST_SUITE_P(each_call, nan_timeout_test, ::testing::ValuesIn(nan_calls), call_name);

// 6. Thread cancellation.

struct cancel_state {
  kind_object* lock = nullptr;
  fasteners::interprocess_reader_writer_lock* rw = nullptr;
  std::atomic<bool> acquired{false};
  std::atomic<bool> returned{false};
  std::atomic<bool> result{false};
  std::atomic<double> took{-1};
  std::atomic<bool> survived{false};  // Passed pthread_testcancel() without being cancelled.
};

// The thread functions below end by cancellation. AddressSanitizer does not clear the poisoned
// redzones of frames that a cancellation unwinds, and the exiting thread reuses that stack; so
// these frames have no instrumented locals (the library calls they make return normally).
#define FASTENERS_CANCELLED_FRAME __attribute__((no_sanitize("address")))

// Takes the write lock through a guard, then meets a cancellation point while holding it.
FASTENERS_CANCELLED_FRAME void* write_then_testcancel(void* arg) {
  auto& s = *static_cast<cancel_state*>(arg);
  {
    std::unique_lock<fasteners::interprocess_reader_writer_lock> guard(*s.rw);
    s.acquired = true;
    ::pthread_testcancel();
    s.survived = true;
  }
  return nullptr;
}

// Waits at most 2 s, records the answer, then meets a cancellation point.
FASTENERS_CANCELLED_FRAME void* wait_then_testcancel(void* arg) {
  auto& s = *static_cast<cancel_state*>(arg);
  const auto start = steady::now();
  s.result = s.lock->try_for(2s);
  s.took = seconds_since(start);
  s.returned = true;
  ::pthread_testcancel();
  s.survived = true;
  return nullptr;
}

// Waits as long as needed through a guard, then meets a cancellation point while holding it.
FASTENERS_CANCELLED_FRAME void* lock_then_testcancel(void* arg) {
  auto& s = *static_cast<cancel_state*>(arg);
  {
    scoped_hold hold(*s.lock);
    s.acquired = true;
    ::pthread_testcancel();
    s.survived = true;
  }
  return nullptr;
}

// Helper "cancel_memory_waiter PATH": a thread waits in memory for the write lock that another
// thread of this process holds and is cancelled meanwhile; it must still get the lock, be
// cancelled at its next cancellation point, and leave the lock free for everyone.
FASTENERS_TEST_HELPER(cancel_memory_waiter) {
  const fs::path path = args.at(0);
  fasteners::interprocess_reader_writer_lock held_rw(path);
  fasteners::interprocess_reader_writer_lock waiting_rw(path);
  // A reader with keep_open keeps this process's state of the file alive across the cancel.
  fasteners::lock_options keep_open;
  keep_open.keep_open = true;
  fasteners::interprocess_reader_writer_lock kept_reader(path, keep_open);
  kept_reader.lock_shared();
  kept_reader.unlock_shared();
  thread_holder holding([&] { return held_rw.try_lock(); }, [&] { held_rw.unlock(); });
  if (!holding.wait_held()) return fail(2, "the holding thread got no lock");
  cancel_state state;
  state.rw = &waiting_rw;
  pthread_t thread;
  if (::pthread_create(&thread, nullptr, &write_then_testcancel, &state) != 0) {
    return fail(2, "pthread_create failed");
  }
  std::this_thread::sleep_for(200ms);
  if (state.acquired) give_up(20, "took the write lock another thread holds");
  ::pthread_cancel(thread);
  std::this_thread::sleep_for(100ms);
  holding.release();
  void* status = nullptr;
  if (!join_within(thread, &status, 10s)) give_up(21, "the cancelled thread did not end");
  std::string errors;
  if (!state.acquired) errors += "the cancel ended the wait inside the library call; ";
  if (status != PTHREAD_CANCELED) errors += "the thread was not cancelled after the call; ";
  if (state.survived) errors += "pthread_testcancel() did not act on the pending cancel; ";
  if (waiting_rw.write_acquired()) errors += "the guard did not release during unwinding; ";
  fasteners::interprocess_reader_writer_lock reader(path);
  for (auto* r : {&kept_reader, &reader}) {
    if (r->try_lock_shared()) {
      r->unlock_shared();
    } else {
      errors += std::string(r == &reader ? "a new" : "the keep_open") +
                " reader of this process cannot take the free lock; ";
    }
  }
  if (try_in_child(kind::write, path) != k_acquired) {
    errors += "another process cannot take the free lock; ";
  }
  return errors.empty() ? 0 : fail(22, errors);
}

// Proves that a cancel cannot break into a wait in memory: the waiting thread gets the lock and
// is cancelled afterwards, and the lock works for this process and others.
TEST_F(hostile_application_test, a_cancelled_memory_waiter_takes_the_lock_then_is_cancelled) {
  EXPECT_EQ(run_helper("cancel_memory_waiter", {lock_path().string()}, 30s), 0);
}

// Helper "cancel_kernel_waiter KIND PATH timed|blocking": a thread waits for a lock another
// process holds, at most 2 s ("timed": the holder stays) or as long as needed ("blocking": the
// holder leaves after about 300 ms), and is cancelled 100 ms in. The call must end as if not
// cancelled, then the thread is cancelled at its next cancellation point; no POSIX timer is left,
// and once the holder is gone another process takes the lock.
FASTENERS_TEST_HELPER(cancel_kernel_waiter) {
  const kind k = parse_kind(args.at(0));
  const fs::path path = args.at(1);
  const bool timed = args.at(2) == "timed";
  child_process holder = hold_elsewhere(kind::write, path);
  std::string errors;
  {
    kind_object lock(k, path);
    cancel_state state;
    state.lock = &lock;
    pthread_t thread;
    if (::pthread_create(&thread, nullptr, timed ? &wait_then_testcancel : &lock_then_testcancel,
                         &state) != 0) {
      return fail(2, "pthread_create failed");
    }
    std::this_thread::sleep_for(100ms);
    ::pthread_cancel(thread);
    if (!timed) {
      std::this_thread::sleep_for(200ms);
      if (holder.finish() != 0) errors += "the holder failed; ";
    }
    void* status = nullptr;
    if (!join_within(thread, &status, 15s)) give_up(21, "the cancelled thread did not end");
    if (timed) {
      if (!state.returned) errors += "the cancel ended the timed wait inside the library call; ";
      if (state.returned && state.result) errors += "took a lock another process holds; ";
      if (state.returned && state.took < 2.0) {
        errors += "the timed wait returned after " + std::to_string(state.took.load()) + " s; ";
      }
      if (holder.finish() != 0) errors += "the holder failed; ";
    } else if (!state.acquired) {
      errors += "the cancel ended the blocking wait inside the library call; ";
    }
    if (status != PTHREAD_CANCELED) errors += "the thread was not cancelled after the call; ";
    if (state.survived) errors += "pthread_testcancel() did not act on the pending cancel; ";
    if (lock.held()) errors += "the object still holds a lock; ";
    const std::string timers = posix_timers();
    if (!timers.empty()) errors += "POSIX timers left: " + timers + "; ";
    if (try_in_child(kind::write, path) != k_acquired) {
      errors += "another process cannot take the free lock; ";
    }
  }  // Destroying the object must be fine too.
  return errors.empty() ? 0 : fail(22, errors);
}

// Proves that a cancel during a timed wait in the kernel takes effect only after the call, which
// returns at its timeout, leaks no timer and leaves the lock usable.
TEST_P(hostile_kind_test, a_cancelled_timed_wait_returns_then_is_cancelled) {
  EXPECT_EQ(run_helper("cancel_kernel_waiter",
                       {to_string(GetParam()), lock_path().string(), "timed"}, 30s),
            0);
}

// Proves the same for a blocking wait: it gets the lock once the holder leaves, then the thread
// is cancelled and its guard releases the lock.
TEST_P(hostile_kind_test, a_cancelled_blocking_wait_takes_the_lock_then_is_cancelled) {
  EXPECT_EQ(run_helper("cancel_kernel_waiter",
                       {to_string(GetParam()), lock_path().string(), "blocking"}, 30s),
            0);
}

INSTANTIATE_TEST_SUITE_P(each_kind, hostile_kind_test, ::testing::ValuesIn(all_kinds), kind_name);

}  // namespace
}  // namespace fasteners_test
