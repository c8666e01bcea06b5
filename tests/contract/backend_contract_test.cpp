// The promises every backend keeps, written once and run over each (backends.hpp): exclusion, the
// read/write matrix, writer preference, timed waits, deadlock refusal, killed holders.
#include <atomic>
#include <chrono>
#include <functional>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <vector>

#include "contract/backends.hpp"

namespace fasteners_test {
namespace {

using std::chrono::system_clock;
using seconds_d = std::chrono::duration<double>;

// A call that must be one try returns sooner than this.
constexpr auto k_one_try = 1s;
// How long each reader of the writer-preference tests holds its read lock, and how long a writer
// may wait at most among readers that keep the lock shared without a break (about one hold, with
// room for slow sanitizer builds).
constexpr auto k_read_hold = 20ms;
constexpr auto k_writer_bound = 3s;

// ---------------------------------------------------------------------------------------------
// The helper processes, for each backend: WHERE KIND ADDRESS, then their own arguments.

template <class Backend>
struct contract_helpers {
  static typename Backend::kind_lock lock_of(const std::vector<std::string>& args) {
    return Backend(args.at(0)).make(parse_kind(args.at(1)), args.at(2));
  }
  // "hold": takes the lock (waiting as needed), prints "held", releases when stdin ends.
  static int hold(const std::vector<std::string>& args) {
    auto lock = lock_of(args);
    if (!lock.acquire()) return fail(1, "blocking acquire returned false");
    report_and_wait("held");
    lock.release();
    return 0;
  }
  // "try": tries once; exits k_acquired (after releasing) or k_busy.
  static int try_once(const std::vector<std::string>& args) {
    auto lock = lock_of(args);
    if (!lock.acquire(false)) return k_busy;
    lock.release();
    return k_acquired;
  }
  // "count COUNTER THREADS ITERATIONS shared|own": each thread increments the counter ITERATIONS
  // times under the lock, through the process's one object or an object of its own.
  static int count(const std::vector<std::string>& args) {
    const auto shared = lock_of(args);
    std::atomic<int> errors{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < std::stoi(args.at(4)); ++t) {
      workers.emplace_back([&] {
        try {
          auto lock = args.at(6) == "shared" ? shared : lock_of(args);
          counter_file file(path_of(args.at(3)));
          for (int i = 0; i < std::stoi(args.at(5)); ++i) {
            if (!lock.acquire()) throw std::runtime_error("blocking acquire returned false");
            file.increment();
            lock.release();
          }
        } catch (const std::exception& e) {
          ++errors;
          std::cerr << "count helper: " << e.what() << std::endl;
        }
      });
    }
    for (auto& w : workers) w.join();
    return errors == 0 ? 0 : 1;
  }
  // "read THREADS": THREADS threads take and release read locks through one object in a loop,
  // each holding k_read_hold, so that the lock is shared without a break. Prints "reading" once
  // the first read lock is held; runs until killed.
  static int read(const std::vector<std::string>& args) {
    auto lock = lock_of(args);
    latch first(1);
    std::vector<std::thread> pool;
    for (int i = 0; i < std::stoi(args.at(3)); ++i) {
      pool.emplace_back([&] {
        for (;;) {
          lock.acquire();
          first.count_down();
          std::this_thread::sleep_for(k_read_hold);
          lock.release();
        }
      });
    }
    if (!first.wait_for()) return fail(2, "no read lock");
    std::cout << "reading" << std::endl;
    for (auto& t : pool) t.join();  // Never returns: the test kills this process.
    return 0;
  }
  // "toggle": on each line "lock" takes the lock and prints "locked", on each line "unlock"
  // releases it and prints "unlocked"; ends with stdin.
  static int toggle(const std::vector<std::string>& args) {
    auto lock = lock_of(args);
    for (std::string line; std::getline(std::cin, line);) {
      const bool locking = line == "lock";
      if (locking) lock.acquire();
      if (!locking) lock.release();
      std::cout << (locking ? "locked" : "unlocked") << std::endl;
    }
    return 0;
  }
  static bool register_all() {
    register_helper(contract_helper<Backend>("hold").c_str(), &hold);
    register_helper(contract_helper<Backend>("try").c_str(), &try_once);
    register_helper(contract_helper<Backend>("count").c_str(), &count);
    register_helper(contract_helper<Backend>("read").c_str(), &read);
    return register_helper(contract_helper<Backend>("toggle").c_str(), &toggle);
  }
};

template <class... Backends>
bool register_contract_helpers(::testing::Types<Backends...>) {
  return (contract_helpers<Backends>::register_all() && ...);
}
[[maybe_unused]] const bool contract_helpers_registered =
    register_contract_helpers(contract_backends());

// ---------------------------------------------------------------------------------------------
// What the tests share.

template <class Backend>
using backend_contract = backend_test<Backend>;
// Names each backend's tests by its index, as GoogleTest does by default (CTest's test discovery
// reads the backend's type from that form).
struct backend_index {
  template <class Backend>
  static std::string GetName(int i) {
    return std::to_string(i);
  }
};
TYPED_TEST_SUITE(backend_contract, contract_backends, backend_index);

std::string pair_text(kind first, kind second) {
  return std::string(to_string(first)) + "_then_" + to_string(second);
}

// Expects `wait` to return false no sooner than `at_least` and sooner than k_upper after that.
void expect_gives_up(const std::function<bool()>& wait, seconds_d at_least, const char* form) {
  const auto start = steady::now();
  EXPECT_FALSE(wait()) << form;
  const auto elapsed = steady::now() - start;
  EXPECT_GE(elapsed, at_least) << form << " returned early";
  EXPECT_LT(elapsed, at_least + k_upper) << form << " returned late";
}

// Expects `attempt` to be one quick try that fails.
void expect_one_try(const std::function<bool()>& attempt, const char* form) {
  const auto start = steady::now();
  EXPECT_FALSE(attempt()) << form;
  EXPECT_LT(steady::now() - start, k_one_try) << form << " waited";
}

// Expects `f` to throw std::system_error with resource_deadlock_would_occur.
void expect_deadlock(const std::function<void()>& f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::resource_deadlock_would_occur) << what << ": " << e.what();
  }
}

// Whether a thread that holds nothing gets the exclusive (or, `shared`, the read) lock through
// `lock` with one try; it lets go at once.
template <class Lock>
bool try_on_other_thread(Lock& lock) {
  return on_other_thread([&] {
    const bool got = lock.try_lock();
    if (got) lock.unlock();
    return got;
  });
}
template <class RW>
bool try_shared_on_other_thread(RW& lock) {
  return on_other_thread([&] {
    const bool got = lock.try_lock_shared();
    if (got) lock.unlock_shared();
    return got;
  });
}

// Increments `counter` where no one else may be inside.
void increment_alone(int& counter, occupancy& inside) {
  inside.enter_exclusive();
  const int seen = counter;
  std::this_thread::yield();
  counter = seen + 1;
  inside.leave_exclusive();
}

// Runs `threads` threads that each take the exclusive lock `lock_for(thread)` `iterations` times
// and increment a plain counter under it; returns the counter. An exception is a test failure.
template <class Lock, class LockFor>
int count_in_threads(int threads, int iterations, LockFor lock_for, occupancy& inside) {
  int counter = 0;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        Lock& lock = lock_for(t);
        for (int i = 0; i < iterations; ++i) {
          std::lock_guard<Lock> guard(lock);
          increment_alone(counter, inside);
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
      }
    });
  }
  for (auto& w : workers) w.join();
  return counter;
}

// Has `processes` processes with `threads` threads each increment a counter `iterations` times
// per thread under a lock of kind `k` at `a`; returns the counter.
template <class Test>
long count_in_processes(const Test& test, kind k, const std::string& a, int processes, int threads,
                        int iterations, bool shared) {
  const auto counter = test.scratch() / "counter";
  write_counter(counter, 0);
  std::vector<child_process> children;
  for (int i = 0; i < processes; ++i) {
    children.push_back(test.start("count", k, a,
                                  {arg_of(counter), std::to_string(threads),
                                   std::to_string(iterations), shared ? "shared" : "own"}));
  }
  for (auto& child : children) EXPECT_EQ(child.finish(120s), 0) << "a counting process failed";
  return read_counter(counter);
}

// ---------------------------------------------------------------------------------------------
// 1. Exclusion across objects, threads and processes.

TYPED_TEST(backend_contract, objects_of_one_process_exclude_each_other) {
  const auto& b = this->backend();
  const std::string a = this->address();
  auto holder = b.lock(a);
  auto other = b.lock(a);
  thread_holder held([&] { return holder.acquire(); }, [&] { holder.release(); });
  ASSERT_TRUE(held.wait_held());
  this->expect_holders(a, 1);
  expect_one_try([&] { return other.acquire(false); }, "acquire(false)");
  expect_one_try([&] { return other.try_lock(); }, "try_lock()");
  EXPECT_FALSE(other.acquired());
  EXPECT_TRUE(holder.acquired());
  EXPECT_TRUE(b.taken_for_outsider(kind::lock, a));
  EXPECT_TRUE(b.taken_for_outsider(kind::read, a));
  thread_holder waiting([&] { return other.acquire(); }, [&] { other.release(); });
  EXPECT_FALSE(waiting.wait_held(k_quiet)) << "a blocking acquire took a held lock";
  this->expect_waiters(a, 1);
  ASSERT_TRUE(held.release());
  EXPECT_FALSE(holder.acquired());
  EXPECT_TRUE(waiting.wait_held());
  EXPECT_TRUE(b.taken_for_outsider(kind::lock, a));
  EXPECT_FALSE(try_on_other_thread(holder));
  EXPECT_TRUE(waiting.release());
  EXPECT_TRUE(b.shows_nothing(a));
  EXPECT_TRUE(other.try_lock());
  other.unlock();
  EXPECT_TRUE(b.free_for_outsider(kind::lock, a));
}

TYPED_TEST(backend_contract, threads_sharing_one_object_exclude_each_other) {
  const auto& b = this->backend();
  const std::string a = this->address();
  auto lock = b.lock(a);
  lock.lock();
  EXPECT_FALSE(on_other_thread([&] { return lock.try_lock(); }));
  EXPECT_FALSE(on_other_thread([&] { return lock.try_lock_for(k_short); }));
  thread_holder waiting([&] { return lock.acquire(); }, [&] { lock.release(); });
  EXPECT_FALSE(waiting.wait_held(k_quiet)) << "a second thread got the object's held lock";
  EXPECT_TRUE(lock.acquired());
  lock.unlock();
  EXPECT_TRUE(waiting.wait_held());
  EXPECT_TRUE(lock.acquired());
  EXPECT_TRUE(b.taken_for_outsider(kind::lock, a));
  EXPECT_TRUE(waiting.release());
  EXPECT_FALSE(lock.acquired());
  EXPECT_TRUE(b.shows_nothing(a));
}

// Threads of one process, all sharing one object or each with its own, never overlap.
TYPED_TEST(backend_contract, threads_never_overlap) {
  using lock_t = typename TypeParam::lock_type;
  for (const bool shared_object : {true, false}) {
    SCOPED_TRACE(shared_object ? "one shared object" : "one object per thread");
    const std::string a = this->address(shared_object ? "shared" : "own");
    auto shared = this->backend().lock(a);
    std::vector<std::unique_ptr<lock_t>> own;
    for (int t = 0; t < 4; ++t) own.push_back(std::make_unique<lock_t>(this->backend().lock(a)));
    occupancy inside;
    const int counter = count_in_threads<lock_t>(
        4, 300,
        [&](int t) -> lock_t& {
          return shared_object ? shared : *own[static_cast<std::size_t>(t)];
        },
        inside);
    EXPECT_EQ(counter, 4 * 300);
    EXPECT_FALSE(inside.violated());
    EXPECT_FALSE(shared.acquired());
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

TYPED_TEST(backend_contract, processes_count_without_lost_updates) {
  for (const kind k : {kind::lock, kind::write}) {
    SCOPED_TRACE(to_string(k));
    const std::string a = this->address(to_string(k));
    EXPECT_EQ(count_in_processes(*this, k, a, 4, 1, 200, false), 4 * 200);
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

TYPED_TEST(backend_contract, processes_with_threads_count_without_lost_updates) {
  for (const kind k : {kind::lock, kind::write}) {
    for (const bool shared : {false, true}) {
      SCOPED_TRACE(std::string(to_string(k)) + (shared ? ", threads share an object" : ""));
      const std::string a = this->address(to_string(k) + std::string(shared ? "-shared" : ""));
      EXPECT_EQ(count_in_processes(*this, k, a, 3, 3, 100, shared), 3 * 3 * 100);
      EXPECT_TRUE(this->backend().shows_nothing(a));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The read/write conflict matrix.

TYPED_TEST(backend_contract, conflict_matrix_between_objects_of_one_process) {
  const auto& b = this->backend();
  for (const auto& [first, second] : all_kind_pairs()) {
    SCOPED_TRACE(pair_text(first, second));
    const bool conflict = conflicts(first, second);
    const std::string a = this->address(pair_text(first, second));
    auto holder = b.make(first, a);
    auto other = b.make(second, a);
    thread_holder held(holder);
    ASSERT_TRUE(held.wait_held());
    EXPECT_EQ(other.acquire(false), !conflict);
    if (other.held()) other.release();
    const auto start = steady::now();
    EXPECT_EQ(other.acquire(true, seconds_d(0.2)), !conflict);
    if (conflict) {
      EXPECT_GE(steady::now() - start, 200ms);
    }
    EXPECT_LT(steady::now() - start, k_upper);
    if (other.held()) other.release();
    EXPECT_EQ(other.try_for(k_short), !conflict);
    if (other.held()) other.release();
    EXPECT_EQ(b.free_for_outsider(second, a), !conflict);
    ASSERT_TRUE(held.release());
    EXPECT_TRUE(other.acquire(false));
    other.release();
    EXPECT_TRUE(b.shows_nothing(a));
  }
}

// Another process holds the first kind; this one and a third want the second.
template <class Test>
void expect_matrix_against_a_holding_process(const Test& test, kind first, kind second,
                                             const std::string& a) {
  const bool conflict = conflicts(first, second);
  child_process holder = test.hold_elsewhere(first, a);
  EXPECT_EQ(test.try_elsewhere(second, a), conflict ? k_busy : k_acquired);
  auto here = test.backend().make(second, a);
  EXPECT_EQ(here.acquire(false), !conflict);
  if (here.held()) {
    here.release();
  } else {
    expect_gives_up([&] { return here.acquire(true, seconds_d(0.2)); }, 200ms, "acquire(0.2)");
    expect_gives_up([&] { return here.try_for(k_short); }, k_short, "try_for");
  }
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_EQ(test.try_elsewhere(second, a), k_acquired);
  EXPECT_TRUE(here.acquire(false));
  here.release();
}

TYPED_TEST(backend_contract, conflict_matrix_between_processes) {
  for (const auto& [first, second] : all_kind_pairs()) {
    SCOPED_TRACE(pair_text(first, second));
    const std::string a = this->address(pair_text(first, second));
    expect_matrix_against_a_holding_process(*this, first, second, a);
    // This process holds the first kind, another wants the second.
    auto held = this->backend().make(first, a);
    ASSERT_TRUE(held.acquire());
    EXPECT_EQ(this->try_elsewhere(second, a), conflicts(first, second) ? k_busy : k_acquired);
    held.release();
    EXPECT_EQ(this->try_elsewhere(second, a), k_acquired);
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

// Pairs of kinds that one object can take: both sides of a reader-writer lock, or the exclusive
// lock twice, each taken by another thread.
TYPED_TEST(backend_contract, conflict_matrix_between_threads_sharing_one_object) {
  const auto& b = this->backend();
  for (const auto& [first, second] : all_kind_pairs()) {
    if ((first == kind::lock) != (second == kind::lock)) continue;
    SCOPED_TRACE(pair_text(first, second));
    const std::string a = this->address(pair_text(first, second));
    auto holder = b.make(first, a);
    auto other = holder.side(second);
    thread_holder held(holder);
    ASSERT_TRUE(held.wait_held());
    const bool got = other.acquire(false);
    EXPECT_EQ(got, !conflicts(first, second));
    if (got) other.release();
    EXPECT_TRUE(b.taken_for_outsider(kind::write, a));
    ASSERT_TRUE(held.release());
    EXPECT_TRUE(b.free_for_outsider(kind::write, a));
  }
}

TYPED_TEST(backend_contract, threads_of_one_object_read_together) {
  const auto& b = this->backend();
  const std::string a = this->address();
  constexpr int readers = 4;
  auto lock = b.rw(a);
  latch all_in(readers);
  latch done(1);
  std::atomic<int> together{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < readers; ++i) {
    pool.emplace_back([&] {
      lock.lock_shared();  // Blocking: a reader that waited for another would never get in.
      if (all_in.arrive_and_wait_for()) ++together;
      done.wait_for();
      lock.unlock_shared();
    });
  }
  EXPECT_TRUE(all_in.wait_for()) << "the readers of one object did not get in together";
  EXPECT_TRUE(lock.read_acquired());
  EXPECT_FALSE(lock.write_acquired());
  this->expect_holders(a, 1);  // One object holds once, however many of its threads read.
  EXPECT_TRUE(b.taken_for_outsider(kind::write, a));
  EXPECT_TRUE(b.free_for_outsider(kind::read, a));
  done.count_down();
  for (auto& t : pool) t.join();
  EXPECT_EQ(together, readers);
  EXPECT_FALSE(lock.read_acquired());
  EXPECT_TRUE(b.shows_nothing(a));
}

TYPED_TEST(backend_contract, readers_of_several_objects_share) {
  using rw_t = typename TypeParam::rw_type;
  const auto& b = this->backend();
  const std::string a = this->address();
  constexpr int readers = 4;
  std::vector<std::unique_ptr<rw_t>> objects;
  for (int i = 0; i < readers; ++i) objects.push_back(std::make_unique<rw_t>(b.rw(a)));
  latch all_in(readers);
  latch done(1);
  std::atomic<int> tried{0};
  std::atomic<int> together{0};
  std::vector<std::thread> pool;
  for (auto& object : objects) {
    pool.emplace_back([&, lock = object.get()] {
      if (lock->try_lock_shared()) {
        ++tried;
      } else {
        lock->lock_shared();
      }
      if (all_in.arrive_and_wait_for()) ++together;
      done.wait_for();
      lock->unlock_shared();
    });
  }
  EXPECT_TRUE(all_in.wait_for());
  this->expect_holders(a, readers);
  EXPECT_TRUE(b.taken_for_outsider(kind::lock, a));
  EXPECT_TRUE(b.free_for_outsider(kind::read, a));
  auto writer = b.rw(a);
  EXPECT_FALSE(writer.try_lock());
  done.count_down();
  for (auto& t : pool) t.join();
  EXPECT_EQ(tried, readers) << "a reader's try found the lock taken by readers";
  EXPECT_EQ(together, readers);
  EXPECT_TRUE(b.shows_nothing(a));
  EXPECT_TRUE(writer.try_lock());
  writer.unlock();
}

TYPED_TEST(backend_contract, readers_of_several_processes_share) {
  const std::string a = this->address();
  std::vector<child_process> readers;
  for (int i = 0; i < 4; ++i) readers.push_back(this->hold_elsewhere(kind::read, a));
  // All of them hold it now: none has been told to release.
  for (auto& r : readers) EXPECT_TRUE(r.running());
  this->expect_holders(a, 4);
  EXPECT_EQ(this->try_elsewhere(kind::write, a), k_busy);
  auto lock = this->backend().rw(a);
  EXPECT_TRUE(lock.try_lock_shared());
  lock.unlock_shared();
  EXPECT_FALSE(lock.try_lock());
  for (auto& r : readers) EXPECT_EQ(r.finish(), 0);
  EXPECT_EQ(this->try_elsewhere(kind::write, a), k_acquired);
  EXPECT_TRUE(lock.try_lock());
  lock.unlock();
}

TYPED_TEST(backend_contract, a_writer_excludes_readers_and_writers) {
  const auto& b = this->backend();
  const std::string a = this->address();
  auto writer = b.rw(a);
  auto other = b.rw(a);
  writer.lock();
  EXPECT_TRUE(writer.write_acquired());
  EXPECT_FALSE(writer.read_acquired());
  EXPECT_FALSE(try_shared_on_other_thread(other));
  EXPECT_FALSE(try_on_other_thread(other));
  EXPECT_FALSE(try_shared_on_other_thread(writer)) << "a thread read through the writing object";
  EXPECT_TRUE(b.taken_for_outsider(kind::read, a));
  thread_holder reading([&] { return other.acquire_read_lock(); },
                        [&] { other.release_read_lock(); });
  EXPECT_FALSE(reading.wait_held(k_quiet));
  writer.unlock();
  EXPECT_TRUE(reading.wait_held());
  EXPECT_TRUE(reading.release());
  EXPECT_TRUE(b.shows_nothing(a));
}

// One pass of a thread under a reader-writer lock: a write that increments `counter` or a read,
// through std::lock_guard and std::shared_lock (`adaptors`) or the lock's own guards.
template <class RW>
void write_pass(RW& lock, bool adaptors, int& counter, occupancy& inside) {
  if (adaptors) {
    std::lock_guard<RW> guard(lock);
    increment_alone(counter, inside);
  } else {
    auto guard = lock.write_lock();
    increment_alone(counter, inside);
  }
}
template <class RW>
void read_pass(RW& lock, bool adaptors, occupancy& inside) {
  const auto read = [&] {
    inside.enter_shared();
    std::this_thread::yield();
    inside.leave_shared();
  };
  if (adaptors) {
    std::shared_lock<RW> guard(lock);
    read();
  } else {
    auto guard = lock.read_lock();
    read();
  }
}

TYPED_TEST(backend_contract, writers_are_alone_among_threads) {
  using rw_t = typename TypeParam::rw_type;
  for (const bool shared_object : {false, true}) {
    SCOPED_TRACE(shared_object ? "one shared object" : "one object per thread");
    const std::string a = this->address(shared_object ? "shared" : "own");
    auto shared = this->backend().rw(a);
    occupancy inside;
    int counter = 0;
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; ++t) {
      workers.emplace_back([&, t] {
        std::optional<rw_t> own;
        if (!shared_object) own.emplace(this->backend().rw(a));
        rw_t& lock = own ? *own : shared;
        for (int i = 0; i < 150; ++i) {
          if ((i + t) % 3 == 0) {
            write_pass(lock, shared_object, counter, inside);
          } else {
            read_pass(lock, shared_object, inside);
          }
        }
      });
    }
    for (auto& w : workers) w.join();
    EXPECT_FALSE(inside.violated());
    EXPECT_EQ(counter, 200);
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

// Readers of their own objects and of one shared object all inside at once first, then in a loop
// beside two writers: readers overlap, writers are alone.
TYPED_TEST(backend_contract, readers_overlap_and_writers_are_alone) {
  using rw_t = typename TypeParam::rw_type;
  const std::string a = this->address();
  constexpr int readers = 4;
  occupancy inside;
  latch first_reads(readers);
  std::atomic<int> errors{0};
  auto shared_object = this->backend().rw(a);
  const auto read = [&](int r) {
    std::optional<rw_t> own;
    if (r % 2 == 0) own.emplace(this->backend().rw(a));
    rw_t& lock = own ? *own : shared_object;
    for (int i = 0; i < 31; ++i) {
      std::shared_lock<rw_t> guard(lock);
      inside.enter_shared();
      if (i == 0 && !first_reads.arrive_and_wait_for()) ++errors;
      std::this_thread::sleep_for(1ms);
      inside.leave_shared();
    }
  };
  const auto write = [&] {
    auto lock = this->backend().rw(a);
    // A writer waiting before all readers are in would hold the last ones back.
    if (!first_reads.wait_for()) ++errors;
    for (int i = 0; i < 15; ++i) {
      std::lock_guard<rw_t> guard(lock);
      inside.enter_exclusive();
      std::this_thread::sleep_for(1ms);
      inside.leave_exclusive();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < readers + 2; ++t)
    pool.emplace_back([&, t] { t < readers ? read(t) : write(); });
  for (auto& t : pool) t.join();
  EXPECT_EQ(errors, 0);
  EXPECT_FALSE(inside.violated());
  EXPECT_EQ(inside.max_shared(), readers);
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

// A waiter of the second kind gets the lock once the holder of the first kind, another process,
// lets go; it did not before.
TYPED_TEST(backend_contract, a_waiter_in_another_process_gets_the_lock_after_release) {
  for (const auto& [first, second] : conflicting_kind_pairs()) {
    SCOPED_TRACE(pair_text(first, second));
    const std::string a = this->address(pair_text(first, second));
    auto held = this->backend().make(first, a);
    ASSERT_TRUE(held.acquire());
    child_process waiter = this->wait_elsewhere(second, a);
    EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt) << "the waiter took a held lock";
    held.release();
    EXPECT_EQ(waiter.read_line(), std::optional<std::string>("held"));
    EXPECT_FALSE(held.acquire(false));
    EXPECT_EQ(waiter.finish(), 0);
  }
}

// For each conflicting pair: another process holds the first kind and a thread of this one waits
// for the second, which it does not get; `then(holder, waiter, first, address)` goes on.
template <class Test, class Then>
void with_a_thread_waiting_behind_a_process(const Test& test, Then then) {
  for (const auto& [first, second] : conflicting_kind_pairs()) {
    SCOPED_TRACE(pair_text(first, second));
    const std::string a = test.address(pair_text(first, second));
    child_process holder = test.hold_elsewhere(first, a);
    auto waiting_lock = test.backend().make(second, a);
    thread_holder waiter(waiting_lock);
    EXPECT_FALSE(waiter.wait_held(k_quiet)) << "the waiter took a held lock";
    test.expect_waiters(a, 1);
    then(holder, waiter, first, a);
  }
}

TYPED_TEST(backend_contract, a_blocking_waiter_gets_the_lock_another_process_releases) {
  with_a_thread_waiting_behind_a_process(
      *this, [&](child_process& holder, thread_holder& waiter, kind first, const std::string& a) {
        EXPECT_EQ(holder.finish(), 0);
        EXPECT_TRUE(waiter.wait_held());
        EXPECT_EQ(this->try_elsewhere(first, a), k_busy);
        EXPECT_TRUE(waiter.release());
        EXPECT_EQ(this->try_elsewhere(first, a), k_acquired);
      });
}

TYPED_TEST(backend_contract, a_blocking_waiter_gets_the_lock_another_thread_releases) {
  for (const auto& [first, second] : conflicting_kind_pairs()) {
    SCOPED_TRACE(pair_text(first, second));
    const std::string a = this->address(pair_text(first, second));
    auto held_lock = this->backend().make(first, a);
    thread_holder held(held_lock);
    ASSERT_TRUE(held.wait_held());
    auto waiting_lock = this->backend().make(second, a);
    thread_holder waiter(waiting_lock);
    EXPECT_FALSE(waiter.wait_held(k_quiet));
    this->expect_waiters(a, 1);
    ASSERT_TRUE(held.release());
    EXPECT_TRUE(waiter.wait_held());
    EXPECT_TRUE(this->backend().taken_for_outsider(kind::write, a));
    EXPECT_TRUE(waiter.release());
  }
}

// The timed forms of a wait that the release ends in time, each on a lock of any kind.
template <class KindLock>
std::vector<std::pair<const char*, std::function<bool(KindLock&)>>> timed_waits_of_20s() {
  return {
      {"try_for(20s)", [](KindLock& l) { return l.try_for(20s); }},
      {"acquire(true, 20)", [](KindLock& l) { return l.acquire(true, seconds_d(20)); }},
      {"until(steady + 20s)", [](KindLock& l) { return l.acquire_until(steady::now() + 20s); }},
      {"until(system + 20s)",
       [](KindLock& l) { return l.acquire_until(system_clock::now() + 20s); }},
  };
}

TYPED_TEST(backend_contract, a_timed_waiter_gets_the_lock_another_thread_releases_in_time) {
  using kind_lock = typename TypeParam::kind_lock;
  for (const auto& [first, second] : conflicting_kind_pairs()) {
    const std::string a = this->address(pair_text(first, second));
    for (const auto& [form, wait] : timed_waits_of_20s<kind_lock>()) {
      SCOPED_TRACE(pair_text(first, second) + ", " + form);
      auto held_lock = this->backend().make(first, a);
      thread_holder held(held_lock);
      ASSERT_TRUE(held.wait_held());
      auto waiting = this->backend().make(second, a);
      const auto start = steady::now();
      thread_holder waiter([&, wait = wait] { return wait(waiting); }, [&] { waiting.release(); });
      EXPECT_FALSE(waiter.wait_held(k_short));
      ASSERT_TRUE(held.release());
      EXPECT_TRUE(waiter.wait_held());
      EXPECT_LT(steady::now() - start, k_upper) << "the waiter was not woken by the release";
      this->expect_holders(a, 1);
      EXPECT_TRUE(waiter.release());
    }
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

TYPED_TEST(backend_contract, a_timed_waiter_gets_the_lock_another_process_releases_in_time) {
  using kind_lock = typename TypeParam::kind_lock;
  const auto waits = timed_waits_of_20s<kind_lock>();
  std::size_t i = 0;
  for (const auto& [first, second] : conflicting_kind_pairs()) {
    const auto& [form, wait] = waits[i++ % waits.size()];
    SCOPED_TRACE(pair_text(first, second) + ", " + form);
    const std::string a = this->address(pair_text(first, second));
    child_process holder = this->hold_elsewhere(first, a);
    auto waiting = this->backend().make(second, a);
    const auto start = steady::now();
    thread_holder waiter([&, wait = wait] { return wait(waiting); }, [&] { waiting.release(); });
    EXPECT_FALSE(waiter.wait_held(k_quiet));
    EXPECT_EQ(holder.finish(), 0);
    EXPECT_TRUE(waiter.wait_held());
    EXPECT_LT(steady::now() - start, k_quiet + k_upper)
        << "the waiter was not woken by the release";
    EXPECT_EQ(this->try_elsewhere(first, a), k_busy);
    EXPECT_TRUE(waiter.release());
    EXPECT_EQ(this->try_elsewhere(first, a), k_acquired);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Writer preference.

TYPED_TEST(backend_contract, a_waiting_writer_holds_back_new_readers_of_this_process) {
  const auto& b = this->backend();
  const std::string a = this->address();
  auto reader = b.rw(a);
  auto writer = b.rw(a);
  auto late = b.rw(a);
  thread_holder reading([&] { return reader.acquire_read_lock(); },
                        [&] { reader.release_read_lock(); });
  ASSERT_TRUE(reading.wait_held());
  EXPECT_TRUE(try_shared_on_other_thread(late)) << "before a writer waits, readers join";
  thread_holder writing([&] { return writer.acquire_write_lock(); },
                        [&] { writer.release_write_lock(); });
  EXPECT_FALSE(writing.wait_held(k_quiet)) << "the writer got in past a reader";
  ASSERT_TRUE(b.wait_for_waiting_writer(a));
  EXPECT_FALSE(try_shared_on_other_thread(late));
  EXPECT_FALSE(on_other_thread([&] { return late.try_lock_shared_for(k_short); }));
  EXPECT_FALSE(try_shared_on_other_thread(reader))
      << "a thread joined the read lock of its object past a waiting writer";
  thread_holder late_reading([&] { return late.acquire_read_lock(); },
                             [&] { late.release_read_lock(); });
  EXPECT_FALSE(late_reading.wait_held(k_quiet));
  EXPECT_FALSE(writing.done_acquiring());
  EXPECT_TRUE(reading.release());
  EXPECT_TRUE(writing.wait_held());
  EXPECT_FALSE(late_reading.wait_held(k_quiet)) << "a reader got in while the writer writes";
  EXPECT_TRUE(writing.release());
  EXPECT_TRUE(late_reading.wait_held());
  EXPECT_TRUE(late_reading.release());
  EXPECT_TRUE(b.shows_nothing(a));
}

// The same writer, waiting behind a reader of its own process, holds back readers of others.
TYPED_TEST(backend_contract, a_writer_waiting_behind_its_process_holds_back_other_processes) {
  const std::string a = this->address();
  auto reader = this->backend().rw(a);
  auto writer = this->backend().rw(a);
  thread_holder reading([&] { return reader.acquire_read_lock(); },
                        [&] { reader.release_read_lock(); });
  ASSERT_TRUE(reading.wait_held());
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_acquired) << "readers do not share";
  thread_holder writing([&] { return writer.acquire_write_lock(); },
                        [&] { writer.release_write_lock(); });
  ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
  EXPECT_TRUE(this->backend().taken_for_outsider(kind::read, a));
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_busy) << "a reader of another process got in";
  EXPECT_TRUE(reading.release());
  EXPECT_TRUE(writing.wait_held());
  EXPECT_TRUE(writing.release());
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

// Once that writer gives up, readers of other processes get in again, though the reader here
// still holds the lock.
TYPED_TEST(backend_contract, a_writer_that_gave_up_behind_its_process_lets_others_read) {
  const std::string a = this->address();
  auto reader = this->backend().rw(a);
  auto writer = this->backend().rw(a);
  ASSERT_TRUE(reader.try_lock_shared());
  std::atomic<bool> gave_up{false};
  // Long enough for the outsider's try below, even on a busy machine.
  std::thread timed([&] { gave_up = !writer.try_lock_for(3s); });
  ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_busy) << "a reader of another process got in";
  timed.join();
  EXPECT_TRUE(gave_up);
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_acquired) << "readers stay held back";
  EXPECT_FALSE(this->backend().taken_for_outsider(kind::read, a));
  reader.unlock_shared();
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

TYPED_TEST(backend_contract, a_waiting_writer_holds_back_new_readers_of_other_processes) {
  const std::string a = this->address();
  child_process reader = this->hold_elsewhere(kind::read, a);
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_acquired) << "readers do not share";
  child_process writer = this->wait_elsewhere(kind::write, a);
  ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
  EXPECT_EQ(writer.read_line(10ms), std::nullopt) << "the writer got in past a reader";
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_busy) << "a reader of another process got in";
  EXPECT_TRUE(this->backend().taken_for_outsider(kind::read, a));
  auto here = this->backend().rw(a);
  EXPECT_FALSE(here.try_lock_shared());
  expect_gives_up([&] { return here.try_lock_shared_for(k_short); }, k_short, "shared_for");
  child_process late = this->wait_elsewhere(kind::read, a);
  this->expect_waiters(a, 2);
  EXPECT_EQ(late.read_line(k_quiet), std::nullopt) << "a blocking reader got in past the writer";
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(late.read_line(k_quiet), std::nullopt) << "a reader got in while the writer writes";
  EXPECT_FALSE(here.try_lock_shared());
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_EQ(late.read_line(), std::optional<std::string>("held"));
  EXPECT_TRUE(here.try_lock_shared());
  here.unlock_shared();
  EXPECT_EQ(late.finish(), 0);
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

TYPED_TEST(backend_contract, a_writer_waiting_here_holds_back_readers_of_other_processes) {
  const std::string a = this->address();
  child_process reader = this->hold_elsewhere(kind::read, a);
  auto writer = this->backend().rw(a);
  thread_holder writing([&] { return writer.acquire_write_lock(); },
                        [&] { writer.release_write_lock(); });
  ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_busy);
  EXPECT_FALSE(writing.done_acquiring());
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_TRUE(writing.wait_held());
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_busy);
  EXPECT_TRUE(writing.release());
  EXPECT_EQ(this->try_elsewhere(kind::read, a), k_acquired);
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

// A writer of another process waiting holds back threads of this process that would join the
// read lock this process holds, through the reading object or another.
TYPED_TEST(backend_contract, readers_do_not_join_their_process_lock_past_a_waiting_writer) {
  const std::string a = this->address();
  auto reader = this->backend().rw(a);
  auto second = this->backend().rw(a);
  thread_holder reading([&] { return reader.acquire_read_lock(); },
                        [&] { reader.release_read_lock(); });
  ASSERT_TRUE(reading.wait_held());
  EXPECT_TRUE(try_shared_on_other_thread(reader)) << "before a writer waits, threads join";
  EXPECT_TRUE(try_shared_on_other_thread(second)) << "before a writer waits, objects join";
  child_process writer = this->wait_elsewhere(kind::write, a);
  EXPECT_EQ(writer.read_line(k_quiet), std::nullopt) << "the writer got in past a reader";
  ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
  EXPECT_FALSE(try_shared_on_other_thread(reader)) << "a thread joined its object's read lock";
  EXPECT_FALSE(try_shared_on_other_thread(second)) << "an object joined its process's read lock";
  EXPECT_TRUE(reading.release());
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_TRUE(try_shared_on_other_thread(second));
  EXPECT_TRUE(this->backend().shows_nothing(a));
}

// 4 processes whose 2 threads each keep one object's read lock held without a break, and a writer
// still gets in within k_writer_bound, again and again.
TYPED_TEST(backend_contract, a_writer_gets_in_among_reader_processes) {
  const std::string a = this->address();
  std::vector<child_process> readers;
  for (int i = 0; i < 4; ++i) readers.push_back(this->start("read", kind::read, a, {"2"}));
  for (auto& reader : readers) ASSERT_EQ(reader.read_line(), std::optional<std::string>("reading"));
  auto writer = this->backend().rw(a);
  EXPECT_FALSE(writer.try_lock()) << "the readers do not hold the lock";
  for (int round = 0; round < 5; ++round) {
    const auto start = steady::now();
    ASSERT_TRUE(writer.try_lock_for(k_writer_bound)) << "round " << round << ": the writer starved";
    std::this_thread::sleep_for(5ms);
    writer.unlock();
    std::cout << "writer waited " << seconds_since(start) * 1000 << " ms\n";
    std::this_thread::sleep_for(50ms);  // The readers take over again.
  }
  for (auto& reader : readers) reader.kill();
}

// The same with the writer blocking in lock() on a thread, and readers in this process too.
TYPED_TEST(backend_contract, a_blocking_writer_gets_in_among_readers_of_its_own_process) {
  const std::string a = this->address();
  std::atomic<bool> stop{false};
  auto shared_object = this->backend().rw(a);
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) {
    pool.emplace_back([&] {
      while (!stop) {
        shared_object.lock_shared();
        std::this_thread::sleep_for(k_read_hold);
        shared_object.unlock_shared();
      }
    });
  }
  child_process other_readers = this->start("read", kind::read, a, {"2"});
  ASSERT_EQ(other_readers.read_line(), std::optional<std::string>("reading"));
  auto writer = this->backend().rw(a);
  const auto start = steady::now();
  thread_holder writing(
      [&] {
        writer.lock();
        return true;
      },
      [&] { writer.unlock(); });
  EXPECT_TRUE(writing.wait_held(k_writer_bound));
  EXPECT_LT(steady::now() - start, k_writer_bound);
  EXPECT_TRUE(writing.release());
  stop = true;
  for (auto& t : pool) t.join();
  other_readers.kill();
}

// ---------------------------------------------------------------------------------------------
// 4. Timed waits: never early, soon after; zero and past deadlines try once.

// Every timed form through `waiter`, on a lock held by someone else (no thread of this process
// holds anything through the backend beside `waiter`'s thread).
template <class KindLock>
void expect_timed_waits_to_give_up(KindLock& waiter) {
  expect_gives_up([&] { return waiter.try_for(k_short); }, k_short, "try_for");
  expect_gives_up([&] { return waiter.acquire_until(steady::now() + k_short); }, k_short,
                  "until(steady)");
  system_clock::time_point deadline;
  const auto until_system = [&] {
    deadline = system_clock::now() + k_short;
    return waiter.acquire_until(deadline);
  };
  expect_gives_up(until_system, k_short, "until(system)");
  EXPECT_GE(system_clock::now(), deadline) << "until(system) returned early";
  expect_gives_up([&] { return waiter.acquire(true, seconds_d(0.2)); }, 200ms, "acquire(0.2)");
  expect_one_try([&] { return waiter.acquire(true, seconds_d(0)); }, "acquire(true, 0)");
  expect_one_try([&] { return waiter.try_for(0ms); }, "try_for(0)");
  expect_one_try([&] { return waiter.try_for(-5ms); }, "try_for(-5ms)");
  expect_one_try([&] { return waiter.try_for(-1s); }, "try_for(-1s)");
  expect_one_try([&] { return waiter.acquire_until(steady::now() - 1h); }, "until(steady, past)");
  expect_one_try([&] { return waiter.acquire_until(system_clock::now() - 1s); },
                 "until(system, past)");
  expect_one_try([&] { return waiter.acquire(false, seconds_d(5)); }, "acquire(false, 5)");
  EXPECT_FALSE(waiter.held());
}

TYPED_TEST(backend_contract, timed_waits_against_another_object_time_out_never_early) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const std::string a = this->address(to_string(k));
    auto holder = this->backend().make(k == kind::read ? kind::write : k, a);
    auto waiter = this->backend().make(k, a);
    thread_holder holding(holder);
    ASSERT_TRUE(holding.wait_held());
    expect_timed_waits_to_give_up(waiter);
    // Only the holder holds; no wait of the waiter lingers.
    this->expect_holders(a, 1);
    this->expect_waiters(a, 0);
    EXPECT_TRUE(holding.release());
    // Once the holder let go, nothing the waiter queued is granted to it.
    std::this_thread::sleep_for(k_quiet);
    this->expect_holders(a, 0);
    EXPECT_FALSE(waiter.held());
    EXPECT_TRUE(waiter.acquire(false));
    waiter.release();
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

TYPED_TEST(backend_contract, timed_waits_against_another_process_time_out_never_early) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const std::string a = this->address(to_string(k));
    child_process holder = this->hold_elsewhere(k == kind::read ? kind::write : k, a);
    auto waiter = this->backend().make(k, a);
    expect_timed_waits_to_give_up(waiter);
    this->expect_holders(a, 1);
    this->expect_waiters(a, 0);
    EXPECT_EQ(holder.finish(), 0);
    std::this_thread::sleep_for(k_quiet);
    this->expect_holders(a, 0);
    EXPECT_TRUE(this->backend().free_for_outsider(kind::lock, a));
    EXPECT_TRUE(waiter.try_for(-1s)) << "a negative timeout's try failed";
    waiter.release();
    EXPECT_TRUE(waiter.acquire_until(steady::now() - 1s)) << "a past deadline's try failed";
    waiter.release();
    EXPECT_TRUE(this->backend().shows_nothing(a));
  }
}

// The forms of a timed acquire, each on a free lock of any kind.
template <class KindLock>
std::vector<std::pair<const char*, std::function<bool(KindLock&)>>> acquires_of_a_free_lock() {
  const double inf = std::numeric_limits<double>::infinity();
  return {
      {"acquire(false)", [](KindLock& l) { return l.acquire(false); }},
      {"acquire()", [](KindLock& l) { return l.acquire(); }},
      {"acquire(true, 1.5)", [](KindLock& l) { return l.acquire(true, seconds_d(1.5)); }},
      {"acquire(false, 1.5)", [](KindLock& l) { return l.acquire(false, seconds_d(1.5)); }},
      {"acquire(true, 0)", [](KindLock& l) { return l.acquire(true, seconds_d(0)); }},
      {"acquire(true, inf)", [=](KindLock& l) { return l.acquire(true, seconds_d(inf)); }},
      {"try_for(1s)", [](KindLock& l) { return l.try_for(1s); }},
      {"try_for(0)", [](KindLock& l) { return l.try_for(0ms); }},
      {"try_for(-1s)", [](KindLock& l) { return l.try_for(-1s); }},
      {"until(steady + 1s)", [](KindLock& l) { return l.acquire_until(steady::now() + 1s); }},
      {"until(steady - 1s)", [](KindLock& l) { return l.acquire_until(steady::now() - 1s); }},
      {"until(system + 1s)", [](KindLock& l) { return l.acquire_until(system_clock::now() + 1s); }},
      {"until(system - 1s)", [](KindLock& l) { return l.acquire_until(system_clock::now() - 1s); }},
  };
}

TYPED_TEST(backend_contract, every_acquire_form_takes_a_free_lock) {
  using kind_lock = typename TypeParam::kind_lock;
  for (const kind k : all_kinds) {
    const std::string a = this->address(to_string(k));
    auto lock = this->backend().make(k, a);
    const kind conflicting = k == kind::read ? kind::write : k;
    for (const auto& [form, acquire] : acquires_of_a_free_lock<kind_lock>()) {
      SCOPED_TRACE(std::string(to_string(k)) + " " + form);
      EXPECT_TRUE(acquire(lock));
      EXPECT_TRUE(lock.held());
      EXPECT_TRUE(this->backend().taken_for_outsider(conflicting, a));
      lock.release();
      EXPECT_FALSE(lock.held());
      this->expect_holders(a, 0);
    }
  }
}

// A release that lands right at a waiter's deadline: whatever the waiter answers is true of the
// lock, in this process and, where the backend shows it, on the server.
template <class Test, class Lock>
void expect_a_truthful_answer(const Test& test, const std::string& a, Lock& waiter, bool taken) {
  EXPECT_EQ(waiter.acquired(), taken);
  test.expect_waiters(a, 0);
  test.expect_holders(a, taken ? 1 : 0);
  auto probe = test.backend().lock(a);
  EXPECT_EQ(try_on_other_thread(probe), !taken);
  // A lock file's abandoned wait may hold a grant for an instant (see the README): another
  // process may then fail once, so only a server is asked at once.
  if constexpr (Test::backend_type::sees_sessions) {
    EXPECT_EQ(test.backend().free_for_outsider(kind::lock, a), !taken);
  }
  if (taken) std::thread([&] { waiter.unlock(); }).join();
  test.expect_holders(a, 0);
}

TYPED_TEST(backend_contract, a_release_racing_the_deadline_gives_a_truthful_answer) {
  const std::string a = this->address();
  auto holder = this->backend().lock(a);
  auto waiter = this->backend().lock(a);
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(holder.try_lock());
    const auto wait = std::chrono::milliseconds(5 + round % 10);
    bool taken = false;
    std::thread t([&] { taken = waiter.try_lock_for(wait); });
    std::this_thread::sleep_for(wait);
    std::thread([&] { holder.unlock(); }).join();
    t.join();
    expect_a_truthful_answer(*this, a, waiter, taken);
  }
  this->expect_holders(a, 0);
}

TYPED_TEST(backend_contract, a_release_by_another_process_racing_the_deadline_is_truthful) {
  const std::string a = this->address();
  child_process holder = this->start("toggle", kind::lock, a);
  auto waiter = this->backend().lock(a);
  for (int round = 0; round < 40; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(holder.write_line("lock"));
    ASSERT_EQ(holder.read_line(), std::optional<std::string>("locked"));
    const auto wait = std::chrono::milliseconds(5 + round % 10);
    bool taken = false;
    std::thread t([&] { taken = waiter.try_lock_for(wait); });
    std::this_thread::sleep_for(wait);
    ASSERT_TRUE(holder.write_line("unlock"));
    t.join();
    ASSERT_EQ(holder.read_line(), std::optional<std::string>("unlocked"));
    expect_a_truthful_answer(*this, a, waiter, taken);
  }
  EXPECT_EQ(holder.finish(), 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Deadlock refusal.

TYPED_TEST(backend_contract, a_thread_that_holds_the_lock_and_would_wait_gets_a_deadlock_error) {
  const std::string a = this->address();
  auto holding = this->backend().lock(a);
  auto other = this->backend().lock(a);
  ASSERT_TRUE(holding.acquire());
  for (auto* lock : {&holding, &other}) {
    const std::string which = lock == &holding ? " through the holding object" : " through another";
    expect_deadlock([&] { lock->lock(); }, "lock()" + which);
    expect_deadlock([&] { lock->acquire(); }, "acquire()" + which);
    expect_deadlock([&] { lock->acquire(true, seconds_d(0.2)); }, "acquire(true, 0.2)" + which);
    expect_deadlock([&] { lock->try_lock_for(k_short); }, "try_lock_for" + which);
    expect_deadlock([&] { lock->try_lock_until(steady::now() + 10s); }, "until(steady)" + which);
    expect_deadlock([&] { lock->try_lock_until(system_clock::now() + k_short); },
                    "until(system)" + which);
    EXPECT_FALSE(lock->try_lock()) << "try_lock" << which;
    EXPECT_FALSE(lock->acquire(false)) << "acquire(false)" << which;
  }
  EXPECT_TRUE(holding.acquired());
  EXPECT_FALSE(other.acquired());
  this->expect_holders(a, 1);
  EXPECT_TRUE(this->backend().taken_for_outsider(kind::lock, a));
  holding.unlock();
  // None of the refused calls left a hold or a wait behind.
  EXPECT_TRUE(this->backend().shows_nothing(a));
  EXPECT_TRUE(other.try_lock());
  other.unlock();
}

// Every pair of kinds, through another object and, where one object has both, the same one.
TYPED_TEST(backend_contract, every_kind_held_refuses_a_wait_by_the_holding_thread) {
  const auto& b = this->backend();
  for (const auto& [first, second] : all_kind_pairs()) {
    for (const bool same_object : {false, true}) {
      if (same_object && (first == kind::lock) != (second == kind::lock)) continue;
      SCOPED_TRACE(pair_text(first, second) + (same_object ? ", one object" : ", two objects"));
      const std::string a = this->address(pair_text(first, second) + (same_object ? "1" : "2"));
      auto held = b.make(first, a);
      auto other = same_object ? held.side(second) : b.make(second, a);
      ASSERT_TRUE(held.acquire());
      expect_deadlock([&] { other.acquire(); }, "acquire()");
      expect_deadlock([&] { other.acquire(true, seconds_d(0.2)); }, "acquire(true, 0.2)");
      expect_deadlock([&] { other.try_for(k_short); }, "try_for");
      expect_deadlock([&] { other.acquire_until(system_clock::now() + k_short); }, "until");
      EXPECT_FALSE(other.acquire(false));
      EXPECT_TRUE(held.held());
      EXPECT_EQ(other.held(), same_object && first == second);
      EXPECT_TRUE(b.taken_for_outsider(first == kind::read ? kind::write : kind::read, a));
      held.release();
      EXPECT_FALSE(held.held());
      EXPECT_TRUE(b.shows_nothing(a));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 6. Death of a holder (and of a waiter).

TYPED_TEST(backend_contract, a_killed_holder_frees_the_lock_for_a_waiting_thread_at_once) {
  with_a_thread_waiting_behind_a_process(
      *this, [&](child_process& holder, thread_holder& waiter, kind, const std::string& a) {
        const auto start = steady::now();
        holder.kill();
        EXPECT_TRUE(waiter.wait_held());
        std::cout << "the waiter got the lock " << seconds_since(start) * 1000
                  << " ms after the kill\n";
        EXPECT_LT(steady::now() - start, k_upper);
        EXPECT_EQ(holder.wait(), k_killed);
        EXPECT_TRUE(waiter.release());
        EXPECT_TRUE(this->backend().shows_nothing(a));
      });
}

TYPED_TEST(backend_contract, a_killed_holder_frees_the_lock_for_a_waiting_process) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const std::string a = this->address(to_string(k));
    child_process holder = this->hold_elsewhere(k, a);
    child_process waiter = this->wait_elsewhere(kind::write, a);
    EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt);
    holder.kill();
    EXPECT_EQ(holder.wait(), k_killed);
    EXPECT_EQ(waiter.read_line(k_upper), std::optional<std::string>("held"));
    EXPECT_EQ(waiter.finish(), 0);
    auto lock = this->backend().make(kind::write, a);
    EXPECT_TRUE(lock.acquire(false));
    lock.release();
  }
}

TYPED_TEST(backend_contract, a_holder_killed_during_a_timed_wait_hands_over_at_once) {
  for (const kind k : all_kinds) {
    SCOPED_TRACE(to_string(k));
    const std::string a = this->address(to_string(k));
    child_process holder = this->hold_elsewhere(kind::write, a);
    auto waiter = this->backend().make(k, a);
    const auto start = steady::now();
    thread_holder waiting([&] { return waiter.acquire(true, seconds_d(30)); },
                          [&] { waiter.release(); });
    std::this_thread::sleep_for(k_quiet);
    EXPECT_FALSE(waiting.done_acquiring());
    holder.kill();
    EXPECT_TRUE(waiting.wait_held());
    EXPECT_LT(steady::now() - start, k_quiet + k_upper)
        << "the waiter did not get the lock at once";
    EXPECT_TRUE(waiting.release());
  }
}

TYPED_TEST(backend_contract, a_killed_waiter_leaves_nothing_behind) {
  for (const kind waiting : all_kinds) {
    SCOPED_TRACE(to_string(waiting));
    const std::string a = this->address(to_string(waiting));
    // A writer waits behind a reader (holding back new readers), the other kinds behind a writer.
    auto holder = this->backend().make(waiting == kind::write ? kind::read : kind::write, a);
    ASSERT_TRUE(holder.acquire());
    child_process waiter = this->wait_elsewhere(waiting, a);
    EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt) << "the waiter took a held lock";
    if (waiting == kind::write) {
      ASSERT_TRUE(this->backend().wait_for_waiting_writer(a));
    }
    this->expect_waiters(a, 1);
    waiter.kill();
    EXPECT_EQ(waiter.wait(), k_killed);
    this->expect_waiters(a, 0);
    holder.release();
    std::this_thread::sleep_for(k_quiet);
    this->expect_holders(a, 0);
    EXPECT_TRUE(this->backend().free_for_outsider(kind::write, a));
    EXPECT_TRUE(this->backend().free_for_outsider(kind::read, a));
  }
}

}  // namespace
}  // namespace fasteners_test
