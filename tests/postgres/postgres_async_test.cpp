// Asynchronous acquisition of fasteners::postgres_lock against a real throwaway server
// (pg_test_support): waits that ride on the sessions' sockets (hundreds of waiters, no thread each,
// no CPU), cancellation and deadlines racing grants, a session ended while it waits, destruction
// and fork with acquisitions pending, close_on_release. What every backend keeps is in
// tests/contract/async_test.cpp (postgres_async_contract_test). The program runs alone (it needs
// 200 of the server's connections at once).
#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/test_support.hpp"
#include "fasteners/async.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"

namespace fasteners_test {
namespace {

namespace pg = fasteners::test::pg;
using fasteners::postgres_key;
using fasteners::postgres_lock;
using fasteners::postgres_options;

const std::error_code k_granted{};
const std::error_code k_timed_out = std::make_error_code(std::errc::timed_out);
const std::error_code k_canceled = std::make_error_code(std::errc::operation_canceled);
const std::error_code k_reset = std::make_error_code(std::errc::connection_reset);

// The outcome of one asynchronous acquisition, as its handler reports it.
class outcome {
 public:
  auto handler() {
    return [this](std::error_code ec) { record(ec); };
  }
  void record(std::error_code ec) {
    std::lock_guard<std::mutex> lock(mu_);
    ++runs_;
    ec_ = ec;
    cv_.notify_all();
  }
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

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int runs_ = 0;
  std::optional<std::error_code> ec_;
};

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

// The condition of pg_locks rows on the advisory lock of a bigint key.
std::string advisory_rows(std::int64_t key) {
  return "locktype = 'advisory' AND objsubid = 1 AND database = (SELECT oid FROM pg_database "
         "WHERE datname = current_database()) AND ((classid::bigint << 32) | objid::bigint) = " +
         std::to_string(key);
}

// What the server shows on `key`: "<granted> <waiting>", asked on `observer`.
std::string server_view(pg::connection& observer, std::int64_t key) {
  const auto rows = observer.query_rows(
      "SELECT count(*) FILTER (WHERE granted), count(*) FILTER "
      "(WHERE NOT granted) FROM pg_locks WHERE " +
      advisory_rows(key));
  return rows.at(0).at(0) + " " + rows.at(0).at(1);
}

// Another client of the server that holds the exclusive lock on `key` until release().
class outside_holder {
 public:
  explicit outside_holder(std::int64_t key) : key_(std::to_string(key)) { take(); }
  void take() { conn_.query("SELECT pg_advisory_lock(" + key_ + ")"); }
  void release() { conn_.query("SELECT pg_advisory_unlock(" + key_ + ")"); }

 private:
  std::string key_;
  pg::connection conn_;
};

// Starts the async thread, so that counting threads afterwards sees it already.
void warm_up() {
  postgres_lock warm(pg::conninfo(), pg::unique_name("warm"));
  outcome got;
  auto pending = warm.async_lock(got.handler());
  ASSERT_EQ(got.wait(), k_granted);
  warm.unlock();
}

// 200 objects wait for one name that another session holds: the server shows 200 waiters, the
// process gains at most two threads and next to no CPU, and once the lock is let go each object
// is granted in turn, one at a time, each handler once.
TEST(postgres_async, two_hundred_waiters_ride_on_their_sessions_sockets) {
  constexpr int k_waiters = 200;
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  std::vector<std::unique_ptr<postgres_lock>> locks;
  for (int i = 0; i < k_waiters; ++i) {
    locks.push_back(std::make_unique<postgres_lock>(pg::conninfo(), name));
    ASSERT_FALSE(locks.back()->try_lock());  // Connects it.
  }
  warm_up();
  const auto threads_before = thread_count();
  std::atomic<int> inside{0}, granted{0}, overlaps{0}, not_alone{0};
  std::vector<std::atomic<int>> runs(k_waiters);
  std::vector<std::error_code> codes(k_waiters);
  latch all(k_waiters);
  std::vector<fasteners::async_acquisition> pending;
  steady::time_point released_at{};
  std::atomic<std::int64_t> first_hand_off_ns{0};
  for (int i = 0; i < k_waiters; ++i) {
    auto* lock = locks[static_cast<std::size_t>(i)].get();
    pending.push_back(lock->async_lock([&, lock, i](std::error_code ec) {
      const auto at = static_cast<std::size_t>(i);
      if (granted.load() == 0) {
        first_hand_off_ns =
            std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - released_at)
                .count();
      }
      ++runs[at];
      codes[at] = ec;
      if (++inside != 1) ++overlaps;
      // Handlers run one at a time on the library's thread: the observer is theirs meanwhile.
      if (server_view(observer, key).rfind("1 ", 0) != 0) ++not_alone;
      --inside;
      ++granted;
      if (ec == k_granted) lock->unlock();
      all.count_down();
    }));
  }
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, k_waiters, false))
      << "the server does not show " << k_waiters << " waiters";
  const double cpu_start = cpu_seconds();
  const auto wall_start = steady::now();
  std::this_thread::sleep_for(1s);
  const double cpu_share = (cpu_seconds() - cpu_start) / seconds_since(wall_start);
  const auto threads_waiting = thread_count();
  EXPECT_LE(threads_waiting, threads_before + 2);
  EXPECT_LE(cpu_share, 0.02);
  EXPECT_EQ(granted.load(), 0);
  released_at = steady::now();
  other.release();
  EXPECT_TRUE(all.wait_for(k_long));
  const double hand_off = seconds_since(released_at);
  std::cout << "[ figures  ] " << k_waiters << " waiting: threads +"
            << static_cast<long>(threads_waiting) - static_cast<long>(threads_before) << ", CPU "
            << cpu_share * 100 << "% of one core; all granted in turn in " << hand_off * 1000
            << " ms (" << hand_off * 1e6 / k_waiters
            << " us a hand-off, with a pg_locks query in each handler); the first handler "
            << static_cast<double>(first_hand_off_ns.load()) / 1000
            << " us after the other session sent its unlock" << std::endl;
  EXPECT_EQ(granted.load(), k_waiters);
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(not_alone.load(), 0) << "the server showed another holder or none during a handler";
  for (int i = 0; i < k_waiters; ++i) {
    EXPECT_EQ(runs[static_cast<std::size_t>(i)].load(), 1) << i;
    EXPECT_EQ(codes[static_cast<std::size_t>(i)], k_granted) << i;
  }
  EXPECT_EQ(server_view(observer, key), "0 0");
}

// The library's threads (the async thread, the drain threads) end once nothing is pending: a wait
// in the server keeps the async thread, and nothing else does.
TEST(postgres_async, the_librarys_threads_end_once_nothing_is_pending) {
  // A first thread started and ended, for the runtime's own (ThreadSanitizer starts one then).
  std::thread([] {}).join();
  const auto threads_at_start = thread_count();
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  postgres_lock lock(pg::conninfo(), name);
  outcome granted;
  auto first = lock.async_lock(granted.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_GT(thread_count(), threads_at_start);
  other.release();
  EXPECT_EQ(granted.wait(), k_granted);
  lock.unlock();
  other.take();
  // Last, a wait that ends from another thread than the async thread, which sleeps meanwhile.
  outcome cancelled;
  auto pending = lock.async_lock(cancelled.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_TRUE(pending.cancel());
  EXPECT_EQ(cancelled.wait(), k_canceled);
  const auto deadline = steady::now() + 10s;
  while (thread_count() > threads_at_start && steady::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(thread_count(), threads_at_start) << "a thread of the library outlived its work";
}

// A cancel or a deadline that races the grant leaves the lock either held by the object (and
// reported so) or let go: never held by nobody's account, never still waited for.
TEST(postgres_async, cancel_or_deadline_racing_a_grant_never_leaks) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  postgres_lock lock(pg::conninfo(), name);
  int granted = 0, cancelled = 0, timed_out = 0;
  constexpr int k_rounds = 160;
  for (int round = 0; round < k_rounds; ++round) {
    const auto jitter = std::chrono::microseconds((round * 137) % 1500);
    const bool by_deadline = round % 4 == 3;
    outcome got;
    auto pending =
        by_deadline ? lock.async_try_lock_for(std::chrono::milliseconds(1) + jitter, got.handler())
                    : lock.async_lock(got.handler());
    if (round % 2 == 0) {
      // Let the wait reach the server first, most rounds.
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
    std::thread releaser([&] {
      std::this_thread::sleep_for(jitter);
      other.release();
    });
    bool withdrawn = false;
    if (!by_deadline) {
      std::this_thread::sleep_for(std::chrono::microseconds((round * 71) % 1500));
      withdrawn = pending.cancel();
    }
    releaser.join();
    const auto ec = got.wait();
    ASSERT_TRUE(ec.has_value()) << "round " << round << ": no outcome";
    if (withdrawn) {
      EXPECT_EQ(*ec, k_canceled) << "round " << round;
      ++cancelled;
    } else if (*ec == k_timed_out) {
      EXPECT_TRUE(by_deadline) << "round " << round;
      ++timed_out;
    } else {
      EXPECT_EQ(*ec, k_granted) << "round " << round;
      ++granted;
    }
    EXPECT_EQ(lock.acquired(), *ec == k_granted) << "round " << round;
    if (*ec == k_granted) {
      EXPECT_EQ(server_view(observer, key), "1 0") << "round " << round;
      lock.unlock();
    }
    // Once the handler has run, nothing of the acquisition is left on the server.
    ASSERT_EQ(server_view(observer, key), "0 0") << "round " << round << ": leaked";
    EXPECT_EQ(got.runs(), 1);
    other.take();
  }
  std::cout << "[ figures  ] " << k_rounds << " rounds: granted " << granted << ", cancelled "
            << cancelled << ", timed out " << timed_out << std::endl;
  EXPECT_EQ(granted + cancelled + timed_out, k_rounds);
  other.release();
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// A cancel that reaches the server process before it runs the statement (while it still reads
// it) is dropped by the server: the library sends it again until the statement ends, instead of
// waiting for a reply that would never come. The object's server process is stopped and resumed
// every few milliseconds meanwhile, so that cancels often come while it is not yet running.
TEST(postgres_async, a_cancel_that_comes_before_the_statement_runs_is_sent_again) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  postgres_lock lock(pg::conninfo(), name);
  ASSERT_FALSE(lock.try_lock());  // Connects the object's session.
  const std::string backend =
      observer.query("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'fasteners " +
                     std::to_string(::getpid()) + "@%' AND pid <> pg_backend_pid()");
  ASSERT_FALSE(backend.empty());
  const pid_t pid = std::stoi(backend);
  std::atomic<bool> done{false};
  std::thread staller([&] {
    for (unsigned i = 0; !done.load(); ++i) {
      ::kill(pid, SIGSTOP);
      std::this_thread::sleep_for(std::chrono::microseconds(500 + 700 * (i % 5)));
      ::kill(pid, SIGCONT);
      std::this_thread::sleep_for(std::chrono::microseconds(300 + 400 * (i % 3)));
    }
    ::kill(pid, SIGCONT);
  });
  int late = 0;
  for (int round = 0; round < 100 && late == 0; ++round) {
    outcome got;
    const auto start = steady::now();
    auto pending = lock.async_try_lock_for(1ms, got.handler());
    const auto ec = got.wait(10s);
    if (ec != k_timed_out || steady::now() - start > k_upper) {
      ++late;
      ADD_FAILURE() << "round " << round << ": the acquisition did not time out in time";
    }
  }
  done = true;
  staller.join();
  EXPECT_FALSE(lock.acquired());
  EXPECT_EQ(server_view(observer, key), "1 0") << "a wait was left on the server";
}

// A timed acquisition times out at its deadline, never before, and leaves no wait on the server.
TEST(postgres_async, timeouts_are_never_early_and_leave_nothing_behind) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  postgres_lock lock(pg::conninfo(), name);
  for (const auto limit : {1ms, 10ms, 50ms, 200ms}) {
    for (int i = 0; i < 3; ++i) {
      outcome got;
      const auto start = steady::now();
      auto pending = lock.async_try_lock_for(limit, got.handler());
      EXPECT_EQ(got.wait(), k_timed_out) << limit.count() << " ms";
      const auto elapsed = steady::now() - start;
      EXPECT_GE(elapsed, limit) << "timed out early";
      EXPECT_LT(elapsed, limit + k_upper) << "timed out late";
      EXPECT_FALSE(lock.acquired());
      EXPECT_EQ(server_view(observer, key), "1 0") << "a wait was left on the server";
    }
  }
  outcome until;
  const auto start = std::chrono::system_clock::now();
  auto pending = lock.async_try_lock_until(start + 100ms, until.handler());
  EXPECT_EQ(until.wait(), k_timed_out);
  EXPECT_GE(std::chrono::system_clock::now() - start, 100ms);
  // Many at once, from as many objects, all timing out together.
  std::vector<std::unique_ptr<postgres_lock>> locks;
  std::vector<outcome> outcomes(20);
  std::vector<fasteners::async_acquisition> many;
  for (auto& got : outcomes) {
    locks.push_back(std::make_unique<postgres_lock>(pg::conninfo(), name));
    many.push_back(locks.back()->async_try_lock_for(100ms, got.handler()));
  }
  for (auto& got : outcomes) EXPECT_EQ(got.wait(), k_timed_out);
  EXPECT_EQ(server_view(observer, key), "1 0");
  // Once free, the same object is granted at once.
  other.release();
  outcome free;
  auto again = lock.async_try_lock_for(0s, free.handler());
  EXPECT_EQ(free.wait(), k_granted);
  lock.unlock();
}

// Acquisitions started together on an object not connected yet bind on threads of the library's
// own, each in turn: one whose wait has a deadline times out on time even when another, without
// one, binds first and waits in the server. (It once waited for that wait to end, here forever.)
TEST(postgres_async, a_deadline_holds_while_another_acquisition_of_the_object_binds_and_waits) {
  const std::string name = pg::unique_name();
  outside_holder other(postgres_key(name));
  for (int round = 0; round < 30; ++round) {
    outcome waiting, timed;  // Outlive the object, whose destruction cancels `forever`.
    {
      postgres_lock lock(pg::conninfo(), name);
      auto forever = lock.async_lock(waiting.handler());
      const auto start = steady::now();
      auto limited = lock.async_try_lock_for(20ms, timed.handler());
      ASSERT_EQ(timed.wait(), k_timed_out) << "round " << round;
      EXPECT_LT(steady::now() - start, 20ms + k_upper) << "timed out late, round " << round;
      EXPECT_FALSE(waiting.ran());
    }
    EXPECT_EQ(waiting.wait(0ms), k_canceled) << "round " << round;
  }
}

// A waiting session that the server ends (pg_terminate_backend) fails its acquisition with
// connection_reset, as the blocking call throws; the object connects anew afterwards.
TEST(postgres_async, a_waiting_session_ended_by_the_server_reports_connection_reset) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  postgres_lock lock(pg::conninfo(), name);
  outcome got;
  auto pending = lock.async_lock(got.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_EQ(observer.query("SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE NOT "
                           "granted AND " +
                           advisory_rows(key)),
            "1");
  EXPECT_EQ(got.wait(), k_reset);
  EXPECT_EQ(got.runs(), 1);
  EXPECT_FALSE(lock.acquired());
  EXPECT_FALSE(lock.session_alive());
  // A new session waits anew, and is granted.
  outcome again;
  auto next = lock.async_lock(again.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  other.release();
  EXPECT_EQ(again.wait(), k_granted);
  EXPECT_EQ(server_view(observer, key), "1 0");
  lock.unlock();
  EXPECT_EQ(server_view(observer, key), "0 0");
}

// Destroying objects with acquisitions pending cancels them: each handler runs once, with
// operation_canceled, before the destructor returns, and the server shows none of their waits.
TEST(postgres_async, destruction_cancels_waits_in_the_server) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  constexpr int k_objects = 20;
  std::vector<std::unique_ptr<postgres_lock>> locks;
  std::vector<outcome> outcomes(k_objects);
  std::vector<fasteners::async_acquisition> pending;
  for (auto& got : outcomes) {
    locks.push_back(std::make_unique<postgres_lock>(pg::conninfo(), name));
    pending.push_back(locks.back()->async_lock(got.handler()));
  }
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, k_objects, false));
  for (std::size_t i = 0; i < locks.size(); ++i) {
    locks[i].reset();
    EXPECT_EQ(outcomes[i].runs(), 1) << i << ": the handler had not run when destruction returned";
    EXPECT_EQ(outcomes[i].wait(0ms), k_canceled) << i;
  }
  EXPECT_EQ(server_view(observer, key), "1 0");
  // The same while the lock is let go: each is granted (and released by its destruction) or
  // cancelled, and nothing is left.
  std::vector<outcome> racing(k_objects);
  for (auto& got : racing) {
    locks.push_back(std::make_unique<postgres_lock>(pg::conninfo(), name));
    pending.push_back(locks.back()->async_lock(got.handler()));
  }
  locks.erase(locks.begin(), locks.begin() + k_objects);
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, k_objects, false));
  std::thread releaser([&] { other.release(); });
  locks.clear();
  releaser.join();
  for (auto& got : racing) {
    EXPECT_EQ(got.runs(), 1);
    const auto ec = got.wait(0ms);
    EXPECT_TRUE(ec == k_granted || ec == k_canceled) << ec->message();
  }
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// A handler (on the library's thread) destroys another object whose wait is in the server: the
// destruction cancels it there and waits for its handler, which the same thread runs.
TEST(postgres_async, a_handler_destroys_an_object_waiting_in_the_server) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  auto waiting = std::make_unique<postgres_lock>(pg::conninfo(), name);
  outcome waited;
  auto pending = waiting->async_lock(waited.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  postgres_lock trigger(pg::conninfo(), pg::unique_name("trigger"));
  outcome triggered;
  auto started = trigger.async_lock([&](std::error_code ec) {
    waiting.reset();
    EXPECT_EQ(waited.runs(), 1);
    triggered.record(ec);
  });
  EXPECT_EQ(triggered.wait(), k_granted);
  EXPECT_EQ(waited.wait(0ms), k_canceled);
  trigger.unlock();
  other.release();
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// A child of fork() inherits none of the waits: destroying its copies of the objects touches
// nothing of the parent's sessions, whose waits go on and are granted in the parent.
TEST(postgres_async, a_child_of_fork_leaves_the_parents_waits_alone) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  constexpr int k_objects = 5;
  std::vector<std::unique_ptr<postgres_lock>> locks;
  std::vector<outcome> outcomes(k_objects);
  std::vector<fasteners::async_acquisition> pending;
  for (std::size_t i = 0; i < k_objects; ++i) {
    locks.push_back(std::make_unique<postgres_lock>(pg::conninfo(), name));
    auto* lock = locks.back().get();
    auto* got = &outcomes[i];
    pending.push_back(lock->async_lock([got, lock](std::error_code ec) {
      if (ec == k_granted) lock->unlock();
      got->record(ec);
    }));
  }
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, k_objects, false));
  const std::string conninfo = pg::conninfo();
  const pid_t child = ::fork();
  if (child == 0) {
    int code = 0;
    for (auto& p : pending) {
      if (p.cancel()) code |= 1;  // The parent's acquisitions are not the child's to cancel.
    }
    const auto start = steady::now();
    locks.clear();
    if (steady::now() - start > k_upper) code |= 2;
    for (auto& got : outcomes) {
      if (got.ran()) code |= 4;
    }
    try {
      pg::connection mine(conninfo);
      const auto waiting =
          mine.query("SELECT count(*) FROM pg_locks WHERE NOT granted AND " + advisory_rows(key));
      if (waiting != std::to_string(k_objects)) code |= 8;
    } catch (...) {
      code |= 16;
    }
    ::_exit(code);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: cancelled, 2: slow, 4: a handler ran, 8: waits gone";
  EXPECT_TRUE(pg::wait_for_advisory_locks(key, k_objects, false));
  for (auto& got : outcomes) EXPECT_FALSE(got.ran());
  other.release();
  for (auto& got : outcomes) EXPECT_EQ(got.wait(), k_granted);
  locks.clear();
  EXPECT_TRUE(pg::server_shows_nothing(key));
}

// With close_on_release, the session ends once an acquisition that was given up has been settled
// (and once a granted lock is released); the next acquisition connects anew.
TEST(postgres_async, close_on_release_ends_the_session_after_a_wait_given_up) {
  const std::string name = pg::unique_name();
  const std::int64_t key = postgres_key(name);
  outside_holder other(key);
  pg::connection observer;
  postgres_options options;
  options.close_on_release = true;
  postgres_lock lock(pg::conninfo(), name, options);
  outcome timed;
  auto pending = lock.async_try_lock_for(50ms, timed.handler());
  EXPECT_EQ(timed.wait(), k_timed_out);
  EXPECT_EQ(server_view(observer, key), "1 0");
  EXPECT_FALSE(lock.session_alive()) << "the session outlived the acquisition";
  outcome cancelled;
  auto again = lock.async_lock(cancelled.handler());
  ASSERT_TRUE(pg::wait_for_advisory_locks(key, 1, false));
  EXPECT_TRUE(again.cancel());
  EXPECT_EQ(cancelled.wait(), k_canceled);
  EXPECT_EQ(server_view(observer, key), "1 0");
  EXPECT_FALSE(lock.session_alive());
  other.release();
  outcome granted;
  auto last = lock.async_lock(granted.handler());
  EXPECT_EQ(granted.wait(), k_granted);
  EXPECT_TRUE(lock.session_alive());
  lock.unlock();
  EXPECT_FALSE(lock.session_alive());
  EXPECT_EQ(server_view(observer, key), "0 0");
}

}  // namespace
}  // namespace fasteners_test
