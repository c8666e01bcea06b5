// fasteners/asio.hpp: completion tokens, executors, per-operation cancellation and timeouts.
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <future>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>
#include <variant>
#include <vector>

#if defined(FASTENERS_ASIO_BOOST)
#include <boost/asio.hpp>
#include <boost/asio/experimental/deferred.hpp>
#if defined(BOOST_ASIO_HAS_CO_AWAIT)
#include <boost/asio/experimental/awaitable_operators.hpp>
#define FASTENERS_TEST_COROUTINES 1
#endif
namespace net = boost::asio;
#else
#include <asio.hpp>
#include <asio/experimental/deferred.hpp>
#if defined(ASIO_HAS_CO_AWAIT)
#include <asio/experimental/awaitable_operators.hpp>
#define FASTENERS_TEST_COROUTINES 1
#endif
namespace net = asio;
#endif

#include "common/test_support.hpp"
#include "fasteners/asio.hpp"
#include "fasteners/fasteners.hpp"
#if defined(FASTENERS_TEST_POSTGRES)
#include "fasteners/postgres.hpp"
#endif

namespace fasteners_test {
namespace {

// The operation_aborted a cancelled operation completes with (see fasteners/asio.hpp).
bool aborted(std::error_code ec) {
#if defined(FASTENERS_ASIO_BOOST)
  return ec == std::error_code(boost::system::error_code(net::error::operation_aborted));
#else
  return ec == net::error::operation_aborted;
#endif
}
const std::error_code k_timed_out = std::make_error_code(std::errc::timed_out);

// What a callback got, from whichever thread it ran on.
class outcome {
 public:
  // A handler that records its error code and thread; it must run once.
  auto handler() {
    return [this](std::error_code ec) {
      std::lock_guard<std::mutex> lock(mu_);
      ++runs_;
      ec_ = ec;
      thread_ = std::this_thread::get_id();
    };
  }
  std::optional<std::error_code> ec() {
    std::lock_guard<std::mutex> lock(mu_);
    return ec_;
  }
  int runs() {
    std::lock_guard<std::mutex> lock(mu_);
    return runs_;
  }
  std::thread::id thread() {
    std::lock_guard<std::mutex> lock(mu_);
    return thread_;
  }
  // Waits for the handler to run (for one that runs on no io_context of the test).
  std::optional<std::error_code> wait(std::chrono::milliseconds timeout = k_long) {
    const auto deadline = steady::now() + timeout;
    while (runs() == 0 && steady::now() < deadline) std::this_thread::sleep_for(1ms);
    return ec();
  }

 private:
  std::mutex mu_;
  int runs_ = 0;
  std::optional<std::error_code> ec_;
  std::thread::id thread_;
};

// Runs `io` until it has no work left (an operation keeps work while pending), at most k_long.
void run(net::io_context& io) {
  io.restart();
  io.run_for(k_long);
}

// Waits until `lock` holds its lock (granted, its handler perhaps not run yet).
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = steady::now() + k_long;
  while (!pred()) {
    if (steady::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

using asio_test = lock_test;

TEST_F(asio_test, a_plain_callback_runs_on_a_thread_of_the_library) {
  fasteners::interprocess_lock lock(lock_path());
  outcome got;
  fasteners::async_lock(lock, got.handler());
  EXPECT_EQ(got.wait(), std::error_code{});
  EXPECT_NE(got.thread(), std::this_thread::get_id()) << "the handler ran in the initiating call";
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.unlock();
  EXPECT_EQ(got.runs(), 1);
}

TEST_F(asio_test, a_callback_runs_on_its_io_context_which_has_work_while_the_lock_is_awaited) {
  fasteners::interprocess_lock holder(lock_path());
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(holder.try_lock());
  net::io_context io;
  outcome got;
  fasteners::async_lock(lock, net::bind_executor(io, got.handler()));
  // Pending: the io_context has work, so run_for() runs out its time.
  io.run_for(k_quiet);
  EXPECT_FALSE(io.stopped()) << "no outstanding work while the lock was awaited";
  EXPECT_EQ(got.runs(), 0) << "granted while another object held the lock";
  holder.unlock();
  run(io);
  EXPECT_TRUE(io.stopped());
  EXPECT_EQ(got.ec(), std::error_code{});
  EXPECT_EQ(got.thread(), std::this_thread::get_id()) << "the handler ran off its io_context";
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
  EXPECT_EQ(got.runs(), 1);
}

TEST_F(asio_test, a_handler_runs_in_its_strand) {
  fasteners::interprocess_lock lock(lock_path());
  net::io_context io;
  auto strand = net::make_strand(io);
  constexpr int k_rounds = 20;
  std::atomic<int> in_strand{0};
  std::atomic<int> granted{0};
  std::function<void(int)> next;  // One acquisition after another, each from the last's handler.
  next = [&](int left) {
    fasteners::async_lock(lock, net::bind_executor(strand, [&, left](std::error_code ec) {
                            if (strand.running_in_this_thread()) ++in_strand;
                            if (!ec) ++granted;
                            lock.unlock();
                            if (left > 1) next(left - 1);
                          }));
  };
  next(k_rounds);
  // Two threads run the io_context: the strand still runs one handler at a time, its own.
  std::thread other([&] { io.run_for(k_long); });
  io.run_for(k_long);
  other.join();
  EXPECT_EQ(granted.load(), k_rounds);
  EXPECT_EQ(in_strand.load(), k_rounds);
  EXPECT_FALSE(lock.acquired());
}

TEST_F(asio_test, use_future_gives_the_outcome_through_a_future) {
  fasteners::interprocess_lock lock(lock_path());
  auto granted = fasteners::async_lock(lock, net::use_future);
  ASSERT_EQ(granted.wait_for(k_long), std::future_status::ready);
#if defined(FASTENERS_ASIO_BOOST)
  EXPECT_EQ(granted.get(), std::error_code{});
#else
  EXPECT_NO_THROW(granted.get());
#endif
  EXPECT_TRUE(lock.acquired());

  // Held by `lock`: another object times out.
  fasteners::interprocess_lock other(lock_path());
  auto timed_out = fasteners::async_try_lock_for(other, k_short, net::use_future);
  ASSERT_EQ(timed_out.wait_for(k_long), std::future_status::ready);
#if defined(FASTENERS_ASIO_BOOST)
  EXPECT_EQ(timed_out.get(), k_timed_out);
#else
  try {
    timed_out.get();
    ADD_FAILURE() << "granted while another object held the lock";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), k_timed_out);
  }
#endif
  EXPECT_FALSE(other.acquired());
  lock.unlock();
}

TEST_F(asio_test, a_timed_acquisition_times_out_never_early) {
  auto holder = hold_in_child(kind::lock, lock_path());
  fasteners::interprocess_lock lock(lock_path());
  net::io_context io;
  outcome got;
  const auto start = steady::now();
  fasteners::async_try_lock_for(lock, k_short, net::bind_executor(io, got.handler()));
  run(io);
  const auto elapsed = steady::now() - start;
  EXPECT_EQ(got.ec(), k_timed_out);
  EXPECT_GE(elapsed, k_short) << "timed out early";
  EXPECT_LT(elapsed, k_upper) << "timed out late";
  EXPECT_FALSE(lock.acquired());

  outcome until;
  const auto t = std::chrono::system_clock::now() + 100ms;
  fasteners::async_try_lock_until(lock, t, net::bind_executor(io, until.handler()));
  run(io);
  EXPECT_EQ(until.ec(), k_timed_out);
  EXPECT_GE(std::chrono::system_clock::now(), t);
  EXPECT_EQ(holder.finish(), 0);
}

TEST_F(asio_test, a_waiter_is_granted_when_another_process_releases) {
  auto holder = hold_in_child(kind::lock, lock_path());
  fasteners::interprocess_lock lock(lock_path());
  net::io_context io;
  outcome got;
  fasteners::async_lock(lock, net::bind_executor(io, got.handler()));
  io.run_for(k_quiet);
  EXPECT_EQ(got.runs(), 0) << "granted while another process held the lock";
  EXPECT_EQ(holder.finish(), 0);
  run(io);
  EXPECT_EQ(got.ec(), std::error_code{});
  EXPECT_TRUE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_busy);
  lock.unlock();
}

TEST_F(asio_test, a_nan_duration_completes_with_invalid_argument) {
  fasteners::interprocess_lock lock(lock_path());
  net::io_context io;
  outcome got;
  const std::chrono::duration<double> nan(std::numeric_limits<double>::quiet_NaN());
  EXPECT_NO_THROW(fasteners::async_try_lock_for(lock, nan, net::bind_executor(io, got.handler())));
  EXPECT_EQ(got.runs(), 0) << "the handler ran in the initiating call";
  run(io);
  EXPECT_EQ(got.ec(), std::make_error_code(std::errc::invalid_argument));
  EXPECT_FALSE(lock.acquired());
}

TEST_F(asio_test, a_deferred_operation_starts_when_launched) {
  fasteners::interprocess_lock lock(lock_path());
  fasteners::interprocess_lock other(lock_path());
  auto op = fasteners::async_lock(lock, net::experimental::deferred);
  std::this_thread::sleep_for(k_short);
  EXPECT_FALSE(lock.acquired()) << "a deferred operation started before it was launched";
  ASSERT_TRUE(other.try_lock());
  other.unlock();
  net::io_context io;
  outcome got;
  std::move(op)(net::bind_executor(io, got.handler()));
  run(io);
  EXPECT_EQ(got.ec(), std::error_code{});
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
}

TEST_F(asio_test, a_cancellation_signal_ends_a_pending_acquisition) {
  fasteners::interprocess_lock holder(lock_path());
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(holder.try_lock());
  net::io_context io;
  net::cancellation_signal signal;
  outcome got;
  fasteners::async_lock(
      lock, net::bind_cancellation_slot(signal.slot(), net::bind_executor(io, got.handler())));
  io.run_for(k_short);
  EXPECT_EQ(got.runs(), 0);
  // Emitted where the handler would run: on the io_context's thread, which runs nothing now.
  signal.emit(net::cancellation_type::terminal);
  run(io);
  ASSERT_TRUE(got.ec().has_value());
  EXPECT_TRUE(aborted(*got.ec())) << got.ec()->message();
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(holder.acquired());
  holder.unlock();
  // Nothing of the cancelled acquisition lingers: the lock is free for a third object.
  fasteners::interprocess_lock third(lock_path());
  EXPECT_TRUE(third.try_lock());
  third.unlock();
  // A signal emitted after completion reaches nothing.
  signal.emit(net::cancellation_type::terminal);
  EXPECT_EQ(got.runs(), 1);
}

TEST_F(asio_test, a_cancellation_after_the_grant_releases_the_lock) {
  fasteners::interprocess_lock lock(lock_path());
  net::io_context io;  // Not running: the completion waits in its queue.
  net::cancellation_signal signal;
  outcome got;
  fasteners::async_lock(
      lock, net::bind_cancellation_slot(signal.slot(), net::bind_executor(io, got.handler())));
  ASSERT_TRUE(eventually([&] { return lock.acquired(); })) << "the free lock was not granted";
  EXPECT_EQ(got.runs(), 0);
  // Too late to cancel in the library: the adapter releases what it was granted.
  signal.emit(net::cancellation_type::total);
  run(io);
  ASSERT_TRUE(got.ec().has_value());
  EXPECT_TRUE(aborted(*got.ec())) << got.ec()->message();
  EXPECT_FALSE(lock.acquired()) << "a cancelled operation left its lock held";
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
}

TEST_F(asio_test, a_cancellation_does_not_change_a_timeout) {
  fasteners::interprocess_lock holder(lock_path());
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(holder.try_lock());
  net::io_context io;
  net::cancellation_signal signal;
  outcome got;
  fasteners::async_try_lock_for(
      lock, 10ms,
      net::bind_cancellation_slot(signal.slot(), net::bind_executor(io, got.handler())));
  std::this_thread::sleep_for(k_short);  // Timed out by now; the completion waits in the queue.
  signal.emit(net::cancellation_type::terminal);
  run(io);
  EXPECT_EQ(got.ec(), k_timed_out);
  EXPECT_FALSE(lock.acquired());
  holder.unlock();
}

TEST_F(asio_test, destroying_the_lock_object_aborts_its_operation) {
  auto lock = std::make_unique<fasteners::interprocess_lock>(lock_path());
  fasteners::interprocess_lock holder(lock_path());
  ASSERT_TRUE(holder.try_lock());
  net::io_context io;
  outcome got;
  fasteners::async_lock(*lock, net::bind_executor(io, got.handler()));
  io.run_for(k_short);
  lock.reset();
  run(io);
  ASSERT_TRUE(got.ec().has_value());
  EXPECT_TRUE(aborted(*got.ec())) << got.ec()->message();
  holder.unlock();
}

TEST_F(asio_test, read_locks_are_shared_and_the_write_lock_waits_for_them) {
  fasteners::interprocess_reader_writer_lock r1(lock_path());
  fasteners::interprocess_reader_writer_lock r2(lock_path());
  fasteners::interprocess_reader_writer_lock w(lock_path());
  net::io_context io;
  outcome got1, got2, gotw, gott;
  fasteners::async_lock_shared(r1, net::bind_executor(io, got1.handler()));
  fasteners::async_try_lock_shared_for(r2, k_long, net::bind_executor(io, got2.handler()));
  run(io);
  EXPECT_EQ(got1.ec(), std::error_code{});
  EXPECT_EQ(got2.ec(), std::error_code{});
  EXPECT_TRUE(r1.read_acquired() && r2.read_acquired());
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);

  fasteners::async_try_lock_for(w, k_short, net::bind_executor(io, gott.handler()));
  run(io);
  EXPECT_EQ(gott.ec(), k_timed_out) << "a writer was granted among readers";

  fasteners::async_lock(w, net::bind_executor(io, gotw.handler()));
  io.run_for(k_short);
  r1.unlock_shared();
  io.run_for(k_short);
  EXPECT_EQ(gotw.runs(), 0) << "a writer was granted beside a reader";
  r2.unlock_shared();
  run(io);
  EXPECT_EQ(gotw.ec(), std::error_code{});
  EXPECT_TRUE(w.write_acquired());

  // A cancelled shared acquisition granted too late gives its read lock back.
  w.unlock();
  net::cancellation_signal signal;
  outcome gotc;
  fasteners::async_lock_shared(
      r1, net::bind_cancellation_slot(signal.slot(), net::bind_executor(io, gotc.handler())));
  ASSERT_TRUE(eventually([&] { return r1.read_acquired(); }));
  signal.emit(net::cancellation_type::terminal);
  run(io);
  ASSERT_TRUE(gotc.ec().has_value());
  EXPECT_TRUE(aborted(*gotc.ec()));
  EXPECT_FALSE(r1.read_acquired());
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
}

#if defined(FASTENERS_TEST_COROUTINES)
using namespace net::experimental::awaitable_operators;

// Takes `lock` with `co_await`, then releases it; failures throw (standalone Asio).
net::awaitable<void> take_and_release(fasteners::interprocess_lock& lock, int& granted) {
#if defined(FASTENERS_ASIO_BOOST)
  const std::error_code ec = co_await fasteners::async_lock(lock, net::use_awaitable);
  if (ec) throw std::system_error(ec);
#else
  co_await fasteners::async_lock(lock, net::use_awaitable);
#endif
  if (lock.acquired()) ++granted;
  net::steady_timer pause(co_await net::this_coro::executor, 1ms);
  co_await pause.async_wait(net::use_awaitable);
  lock.unlock();
}

TEST_F(asio_test, coroutines_take_turns) {
  constexpr int k_coroutines = 5;
  std::vector<std::unique_ptr<fasteners::interprocess_lock>> locks;
  net::io_context io;
  int granted = 0;
  int failed = 0;
  for (int i = 0; i < k_coroutines; ++i) {
    locks.push_back(std::make_unique<fasteners::interprocess_lock>(lock_path()));
    net::co_spawn(io, take_and_release(*locks.back(), granted), [&](std::exception_ptr e) {
      if (e) ++failed;
    });
  }
  run(io);
  EXPECT_EQ(granted, k_coroutines);
  EXPECT_EQ(failed, 0);
}

TEST_F(asio_test, a_coroutine_sees_a_timeout_as_an_exception) {
  fasteners::interprocess_reader_writer_lock holder(lock_path());
  fasteners::interprocess_reader_writer_lock lock(lock_path());
  ASSERT_TRUE(holder.try_lock());
  net::io_context io;
  std::optional<std::error_code> got;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
#if defined(FASTENERS_ASIO_BOOST)
        got = co_await fasteners::async_try_lock_shared_for(lock, k_short, net::use_awaitable);
#else
        try {
          co_await fasteners::async_try_lock_shared_for(lock, k_short, net::use_awaitable);
          got = std::error_code{};
        } catch (const std::system_error& e) {
          got = e.code();
        }
#endif
      },
      net::detached);
  run(io);
  EXPECT_EQ(got, k_timed_out);
  EXPECT_FALSE(lock.read_acquired());
  holder.unlock();
}

// `co_await (lock || timer)`: which won, and whether the lock object then holds the lock.
struct race_result {
  std::size_t winner = 99;
  bool held = false;
};
net::awaitable<race_result> race(fasteners::interprocess_lock& lock,
                                 std::chrono::steady_clock::duration patience) {
  net::steady_timer timer(co_await net::this_coro::executor, patience);
  const auto winner = co_await (fasteners::async_lock(lock, net::use_awaitable) ||
                                timer.async_wait(net::use_awaitable));
  race_result result;
  result.winner = winner.index();
  // When the timer wins, the adapter has released a lock granted too late; a program that does
  // not rely on that (or whose cancellation is emitted off the handler's executor) checks:
  result.held = lock.acquired();
  co_return result;
}

race_result run_race(fasteners::interprocess_lock& lock,
                     std::chrono::steady_clock::duration patience) {
  net::io_context io;
  race_result result;
  net::co_spawn(io, race(lock, patience), [&](std::exception_ptr e, race_result r) {
    if (e) ADD_FAILURE() << "the race threw";
    result = r;
  });
  run(io);
  return result;
}

TEST_F(asio_test, a_timer_racing_the_lock_with_or) {
  fasteners::interprocess_lock holder(lock_path());
  fasteners::interprocess_lock lock(lock_path());
  ASSERT_TRUE(holder.try_lock());
  // Held elsewhere: the timer wins and the lock is not held.
  auto lost = run_race(lock, k_short);
  EXPECT_EQ(lost.winner, 1u);
  EXPECT_FALSE(lost.held);
  holder.unlock();
  // Free: the lock wins and is held.
  auto won = run_race(lock, k_long);
  EXPECT_EQ(won.winner, 0u);
  EXPECT_TRUE(won.held);
  if (won.held) lock.unlock();
}

TEST_F(asio_test, a_close_race_never_leaks_the_lock) {
  // Another object releases the lock about when the timer expires, so that either may win, and a
  // grant may come after the timer won: the lock object holds the lock exactly when the lock won.
  fasteners::interprocess_lock holder(lock_path());
  fasteners::interprocess_lock lock(lock_path());
  int lock_won = 0;
  int timer_won = 0;
  for (int i = 0; i < 100; ++i) {
    // Patience from 0.5 ms to 2.5 ms, the release after 1 ms.
    const auto patience = std::chrono::microseconds(500 + i % 20 * 100);
    ASSERT_TRUE(holder.try_lock());
    std::thread releaser([&] {
      std::this_thread::sleep_for(1ms);
      holder.unlock();
    });
    const auto r = run_race(lock, patience);
    releaser.join();
    ASSERT_TRUE(r.winner == 0 || r.winner == 1);
    EXPECT_EQ(r.held, r.winner == 0) << "round " << i;
    if (r.held) lock.unlock();
    ++(r.winner == 0 ? lock_won : timer_won);
  }
  std::cout << "the lock won " << lock_won << " times, the timer " << timer_won << "\n";
  EXPECT_FALSE(lock.acquired());
  EXPECT_EQ(try_in_child(kind::lock, lock_path()), k_acquired);
}
#else
TEST(asio_test, coroutines) { GTEST_SKIP() << "built without C++20 coroutines for Asio"; }
#endif

#if defined(FASTENERS_TEST_POSTGRES)
// The PostgreSQL locks have the same members: the adapter compiles for them (run elsewhere).
[[maybe_unused]] void compiles_for_postgres(fasteners::postgres_lock& lock,
                                            fasteners::postgres_reader_writer_lock& rw) {
  fasteners::async_lock(lock, [](std::error_code) {});
  static_cast<void>(fasteners::async_try_lock_for(lock, 1s, net::use_future));
  static_cast<void>(fasteners::async_lock_shared(rw, net::experimental::deferred));
  fasteners::async_try_lock_shared_for(rw, 1s, [](std::error_code) {});
}
#endif

}  // namespace
}  // namespace fasteners_test
