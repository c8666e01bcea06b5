// postgres_options::on_lost against the throwaway server: called once, without any call of the
// application, when the server ends a holding session (terminated, restarted, stopped), and never
// otherwise; what the object says afterwards; one watcher thread for many objects; handlers that
// release or destroy; fork.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/test_support.hpp"
#include "fasteners/postgres.hpp"
#include "pg_test_support.hpp"

namespace fasteners_test {
namespace {

namespace pg = fasteners::test::pg;
using fasteners::postgres_lock;
using fasteners::postgres_options;
using fasteners::postgres_reader_writer_lock;

// The calls of one on_lost handler: how many, with which name, and when the first came.
class loss_record {
 public:
  // The handler to put into postgres_options::on_lost.
  std::function<void(const std::string&)> handler() {
    return [this](const std::string& name) {
      std::lock_guard<std::mutex> lock(mu_);
      ++calls_;
      names_.push_back(name);
      if (calls_ == 1) first_ = steady::now();
      changed_.notify_all();
    };
  }
  // Waits until the handler has been called, at most `timeout`; returns whether it was.
  bool wait_for_call(std::chrono::milliseconds timeout = k_long) {
    std::unique_lock<std::mutex> lock(mu_);
    return changed_.wait_for(lock, timeout, [&] { return calls_ > 0; });
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<std::string> names() {
    std::lock_guard<std::mutex> lock(mu_);
    return names_;
  }
  steady::time_point first() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_;
  }

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  int calls_ = 0;
  std::vector<std::string> names_;
  steady::time_point first_{};
};

postgres_options with_handler(loss_record& record) {
  postgres_options options;
  options.on_lost = record.handler();
  return options;
}

// The threads of the process. A thread is started and ended first, so that a sanitizer's helper
// thread (ThreadSanitizer starts one with the first thread) is counted from the start.
std::size_t thread_count() {
  static const bool warmed = [] {
    std::thread([] {}).join();
    return true;
  }();
  static_cast<void>(warmed);
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

// Whether `condition` holds within `timeout`, asked every 5 ms.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = steady::now() + timeout;
  for (;;) {
    if (condition()) return true;
    if (steady::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
}

double ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// The server process that holds `key` ("" if none or several).
std::string holder_pid(std::int64_t key) {
  const auto rows = pg::query_rows(
      "SELECT pid FROM pg_locks WHERE granted AND locktype = 'advisory' AND objsubid = 1 AND "
      "((classid::bigint << 32) | objid::bigint) = " +
      std::to_string(key));
  return rows.size() == 1 ? rows[0].at(0) : "";
}

// What a lost lock looks like afterwards: not held, and its release throws connection_reset.
void expect_lost(postgres_lock& lock) {
  EXPECT_FALSE(lock.acquired());
  try {
    lock.unlock();
    ADD_FAILURE() << "unlock() of a lost lock did not throw";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
  }
}

// The handler is called no more than once: it has had `quiet` to be called again.
void expect_once(loss_record& record, std::chrono::milliseconds quiet = 300ms) {
  std::this_thread::sleep_for(quiet);
  EXPECT_EQ(record.calls(), 1);
}

TEST(postgres_on_lost, a_terminated_holders_handler_runs_within_a_second) {
  loss_record record;
  const std::string name = pg::unique_name();
  postgres_lock lock(pg::conninfo(), name, with_handler(record));
  lock.lock();
  const std::string pid = holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  const auto terminated = steady::now();
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  ASSERT_TRUE(record.wait_for_call(1s)) << "on_lost was not called within 1 s";
  std::cout << "on_lost after pg_terminate_backend: " << ms_between(terminated, record.first())
            << " ms\n";
  EXPECT_EQ(record.names(), std::vector<std::string>{name});
  // Known without a call: the handler ran before any.
  EXPECT_FALSE(lock.acquired());
  expect_once(record);
  expect_lost(lock);
  // The object goes on with a new session, and its next loss is told again.
  lock.lock();
  const std::string second = holder_pid(lock.key());
  ASSERT_FALSE(second.empty());
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + second + ")"), "t");
  ASSERT_TRUE(eventually([&] { return record.calls() == 2; }, 1s));
  expect_lost(lock);
}

TEST(postgres_on_lost, a_readers_handler_runs_once_for_its_shared_lock) {
  loss_record record;
  const std::string name = pg::unique_name();
  postgres_reader_writer_lock lock(pg::conninfo(), name, with_handler(record));
  lock.lock_shared();
  // A second reader of the object, on another thread, joins the session's shared lock.
  std::thread([&] { lock.lock_shared(); }).join();
  const std::string pid = holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  const auto terminated = steady::now();
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  ASSERT_TRUE(record.wait_for_call(1s)) << "on_lost was not called within 1 s";
  std::cout << "on_lost of a reader after pg_terminate_backend: "
            << ms_between(terminated, record.first()) << " ms\n";
  expect_once(record);
  EXPECT_FALSE(lock.read_acquired());
  for (int i = 0; i < 2; ++i) {
    try {
      lock.unlock_shared();
      ADD_FAILURE() << "unlock_shared() of a lost read lock did not throw";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
    }
  }
}

TEST(postgres_on_lost, a_server_restart_calls_every_holders_handler_once) {
  loss_record record;
  postgres_lock lock(pg::conninfo(), pg::unique_name(), with_handler(record));
  lock.lock();
  const auto restarting = steady::now();
  pg::restart_server();
  const auto restarted = steady::now();
  ASSERT_TRUE(record.wait_for_call(1s)) << "on_lost was not called within 1 s of the restart";
  std::cout << "on_lost after a restart: " << ms_between(restarting, record.first())
            << " ms from its start (the restart took " << ms_between(restarting, restarted)
            << " ms)\n";
  expect_once(record);
  expect_lost(lock);
}

TEST(postgres_on_lost, a_stopped_server_calls_the_handler) {
  pg::private_server server;
  loss_record record;
  postgres_lock lock(server.conninfo(), pg::unique_name(), with_handler(record));
  lock.lock();
  const auto stopping = steady::now();
  server.stop();
  const auto stopped = steady::now();
  ASSERT_TRUE(record.wait_for_call(1s)) << "on_lost was not called within 1 s of the stop";
  std::cout << "on_lost after an immediate stop: " << ms_between(stopping, record.first())
            << " ms from its start (the stop took " << ms_between(stopping, stopped) << " ms)\n";
  expect_once(record);
  expect_lost(lock);
}

TEST(postgres_on_lost, no_call_for_a_release_a_destruction_or_a_waiter) {
  loss_record record;
  const std::string name = pg::unique_name();
  {
    postgres_lock lock(pg::conninfo(), name, with_handler(record));
    lock.lock();
    lock.unlock();
    // Its session, idle and holding nothing, ends: nothing was lost.
    const std::string pid =
        pg::query("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'fasteners " +
                  std::to_string(::getpid()) + "@%'");
    ASSERT_FALSE(pid.empty());
    ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
    std::this_thread::sleep_for(300ms);
  }
  {
    postgres_lock lock(pg::conninfo(), name, with_handler(record));
    lock.lock();
  }  // Destroyed while holding.
  postgres_lock holder(pg::conninfo(), name);
  holder.lock();
  postgres_lock waiter(pg::conninfo(), name, with_handler(record));
  std::thread waiting([&] {
    try {
      waiter.lock();
      ADD_FAILURE() << "the waiter whose session ended got the lock";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::connection_reset) << e.what();
    }
  });
  ASSERT_TRUE(pg::wait_for_advisory_locks(holder.key(), 1, false)) << "the waiter never queued";
  EXPECT_EQ(pg::query("SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE NOT granted "
                      "AND locktype = 'advisory' AND objsubid = 1 AND "
                      "((classid::bigint << 32) | objid::bigint) = " +
                      std::to_string(holder.key())),
            "1");
  waiting.join();
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(record.calls(), 0);
  holder.unlock();
}

TEST(postgres_on_lost, no_call_once_the_object_is_destroyed) {
  // The termination races with the destruction: a call may come before the destructor returns,
  // never after.
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    std::atomic<bool> destroyed{false};
    std::atomic<int> late{0};
    std::atomic<int> calls{0};
    postgres_options options;
    options.on_lost = [&](const std::string&) {
      ++calls;
      std::this_thread::sleep_for(20ms);  // A destructor that did not wait would finish meanwhile.
      if (destroyed) ++late;
    };
    auto lock = std::make_unique<postgres_lock>(pg::conninfo(), pg::unique_name(), options);
    lock->lock();
    const std::string pid = holder_pid(lock->key());
    ASSERT_FALSE(pid.empty());
    ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 5));
    lock.reset();
    destroyed = true;
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(late.load(), 0);
    EXPECT_LE(calls.load(), 1);
  }
}

TEST(postgres_on_lost, fifty_holders_terminated_at_once_share_one_thread) {
  constexpr std::size_t n = 50;
  std::vector<loss_record> records(n);
  std::vector<std::unique_ptr<postgres_lock>> locks;
  for (std::size_t i = 0; i < n; ++i) {
    locks.push_back(std::make_unique<postgres_lock>(
        pg::conninfo(), pg::unique_name(std::to_string(i)), with_handler(records[i])));
  }
  const auto threads_before = thread_count();
  for (auto& lock : locks) lock->lock();
  const auto threads_holding = thread_count();
  EXPECT_LE(threads_holding, threads_before + 1) << "more than one thread watches the sessions";
  const auto terminated = steady::now();
  EXPECT_EQ(pg::query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                      "application_name LIKE 'fasteners " +
                      std::to_string(::getpid()) + "@%'"),
            std::to_string(n));
  for (std::size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(records[i].wait_for_call(1s)) << "object " << i << " was not told within 1 s";
  }
  double last = 0;
  for (auto& r : records) last = std::max(last, ms_between(terminated, r.first()));
  std::cout << "on_lost of " << n << " holders terminated at once: the last after " << last
            << " ms\n";
  std::this_thread::sleep_for(300ms);
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(records[i].calls(), 1) << "object " << i;
    EXPECT_EQ(records[i].names(), std::vector<std::string>{locks[i]->name()});
    expect_lost(*locks[i]);
  }
  EXPECT_LE(thread_count(), threads_before + 1);
}

TEST(postgres_on_lost, without_a_handler_nothing_watches) {
  postgres_lock lock(pg::conninfo(), pg::unique_name());
  const auto threads_before = thread_count();
  lock.lock();
  // No async thread was started for it.
  EXPECT_EQ(thread_count(), threads_before);
  lock.unlock();
}

TEST(postgres_on_lost, the_handler_may_release_and_destroy_its_own_object) {
  std::unique_ptr<postgres_lock> lock;
  std::mutex mu;
  std::condition_variable done_cv;
  bool done = false;
  std::string error;
  postgres_options options;
  // The handler takes `mu` first: what the test did with the object before the loss happens
  // before the handler, as the application's own code must see to.
  options.on_lost = [&](const std::string&) {
    std::lock_guard<std::mutex> guard(mu);
    try {
      lock->unlock();
      error = "unlock() did not throw";
    } catch (const std::system_error& e) {
      if (e.code() != std::errc::connection_reset) error = e.what();
    }
    lock.reset();
    done = true;
    done_cv.notify_all();
  };
  std::string pid;
  {
    std::lock_guard<std::mutex> guard(mu);
    lock = std::make_unique<postgres_lock>(pg::conninfo(), pg::unique_name(), options);
    lock->lock();
    pid = holder_pid(lock->key());
  }
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  std::unique_lock<std::mutex> guard(mu);
  ASSERT_TRUE(done_cv.wait_for(guard, 2s, [&] { return done; })) << "the handler did not finish";
  EXPECT_EQ(error, "");
  EXPECT_EQ(lock, nullptr);
}

TEST(postgres_on_lost, calls_on_the_session_meanwhile_do_not_disturb_the_watch) {
  loss_record record;
  postgres_reader_writer_lock lock(pg::conninfo(), pg::unique_name(), with_handler(record));
  lock.lock_shared();
  // Each call uses the session, ending the watch and starting it again.
  for (int i = 0; i < 50; ++i) {
    EXPECT_TRUE(lock.session_alive());
    // Another thread joins the read lock, which asks the server whether a writer waits.
    std::thread([&] { lock.lock_shared(); }).join();
    lock.unlock_shared();
  }
  EXPECT_EQ(record.calls(), 0);
  const std::string pid = holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  ASSERT_TRUE(record.wait_for_call(1s));
  expect_once(record);
}

TEST(postgres_on_lost, a_forked_child_gets_none_of_the_parents_calls) {
  loss_record record;
  postgres_lock lock(pg::conninfo(), pg::unique_name(), with_handler(record));
  lock.lock();
  const std::string pid = holder_pid(lock.key());
  ASSERT_FALSE(pid.empty());
  int to_child[2];
  ASSERT_EQ(::pipe(to_child), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(to_child[1]);
    char byte = 0;
    // Waits until the parent's session was terminated and the parent was told.
    if (::read(to_child[0], &byte, 1) != 1) ::_exit(3);
    std::this_thread::sleep_for(300ms);
    const int status = record.calls() == 0 && !lock.acquired() ? 0 : 4;
    ::_exit(status);
  }
  ::close(to_child[0]);
  ASSERT_EQ(pg::query("SELECT pg_terminate_backend(" + pid + ")"), "t");
  EXPECT_TRUE(record.wait_for_call(1s));
  ASSERT_EQ(::write(to_child[1], "x", 1), 1);
  ::close(to_child[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child saw a call of on_lost, or a lock";
  expect_once(record);
}

}  // namespace
}  // namespace fasteners_test
