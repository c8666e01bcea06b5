// Writers are never starved: once a writer waits, new readers of every process queue behind it.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

// How long each reader holds its read lock, and how long a writer may wait at most among
// readers that keep the lock shared without a break. A writer waits for the reads under way
// to end, about one hold; the bound leaves room for slow sanitizer builds.
constexpr auto k_read_hold = 20ms;
constexpr auto k_writer_bound = 3s;

// Helper "overlapping_readers PATH THREADS": THREADS threads each take and release read locks
// on PATH in a loop, holding each for k_read_hold, so that the lock is shared without a break.
// Prints "reading" once the first read lock is held; runs until killed.
FASTENERS_TEST_HELPER(overlapping_readers) {
  fasteners::interprocess_reader_writer_lock lock(path_of(args.at(0)));
  const int threads = std::stoi(args.at(1));
  latch first(1);
  auto read_forever = [&] {
    for (;;) {
      lock.lock_shared();
      first.count_down();
      std::this_thread::sleep_for(k_read_hold);
      lock.unlock_shared();
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(read_forever);
  if (!first.wait_for()) return fail(2, "no read lock");
  std::cout << "reading" << std::endl;
  for (auto& t : pool) t.join();  // Never returns: the test kills this process.
  return 0;
}

// The property: 4 reader processes keep the lock continuously shared, and a writer still
// gets in within k_writer_bound, again and again.
TEST(writer_preference, a_writer_gets_in_among_four_reader_processes) {
  temp_dir dir;
  const auto path = dir.path() / "lock";
  std::vector<child_process> readers;
  for (int i = 0; i < 4; ++i) {
    readers.push_back(spawn_helper("overlapping_readers", {arg_of(path), "2"}));
  }
  for (auto& reader : readers) ASSERT_EQ(reader.read_line(), std::optional<std::string>("reading"));
  fasteners::interprocess_reader_writer_lock writer(path);
  EXPECT_FALSE(writer.try_lock()) << "the readers do not hold the lock";
  for (int round = 0; round < 5; ++round) {
    const auto start = steady::now();
    ASSERT_TRUE(writer.try_lock_for(k_writer_bound)) << "round " << round;
    std::this_thread::sleep_for(5ms);
    writer.unlock();
    std::cout << "writer waited " << seconds_since(start) * 1000 << " ms\n";
    std::this_thread::sleep_for(50ms);  // The readers take over again.
  }
  for (auto& reader : readers) reader.kill();
}

// The same with the writer blocking in lock() on a thread, and the readers in this process too.
TEST(writer_preference, a_blocking_writer_gets_in_among_readers_of_its_own_process) {
  temp_dir dir;
  const auto path = dir.path() / "lock";
  std::atomic<bool> stop{false};
  fasteners::interprocess_reader_writer_lock shared_object(path);
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
  child_process other_readers = spawn_helper("overlapping_readers", {arg_of(path), "2"});
  ASSERT_EQ(other_readers.read_line(), std::optional<std::string>("reading"));
  fasteners::interprocess_reader_writer_lock writer(path);
  const auto start = steady::now();
  thread_holder writing(
      [&] {
        writer.lock();
        return true;
      },
      [&] { writer.unlock(); });
  EXPECT_TRUE(
      writing.wait_held(std::chrono::duration_cast<std::chrono::milliseconds>(k_writer_bound)));
  EXPECT_LT(seconds_since(start), std::chrono::duration<double>(k_writer_bound).count());
  EXPECT_TRUE(writing.release());
  stop = true;
  for (auto& t : pool) t.join();
  other_readers.kill();
}

// A writer of another process waiting at the gate holds back readers of this process that would
// join a read lock this process already holds.
TEST(writer_preference, readers_do_not_join_their_process_lock_past_a_waiting_writer) {
  temp_dir dir;
  const auto path = dir.path() / "lock";
  fasteners::interprocess_reader_writer_lock first_reader(path);
  ASSERT_TRUE(first_reader.try_lock_shared());
  fasteners::interprocess_reader_writer_lock second_reader(path);
  std::thread([&] {  // Before a writer waits, they join.
    EXPECT_TRUE(second_reader.try_lock_shared());
    second_reader.unlock_shared();
  })
      .join();
  child_process writer = spawn_helper("hold", {"write", arg_of(path)});
  EXPECT_EQ(writer.read_line(k_quiet), std::nullopt) << "the writer got in past a reader";
  ASSERT_TRUE(wait_for_waiting_writer(path));
  std::thread([&] { EXPECT_FALSE(second_reader.try_lock_shared()); }).join();
  first_reader.unlock_shared();
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_TRUE(second_reader.try_lock_shared());
  second_reader.unlock_shared();
}

// Readers of other processes share a lock until a writer waits; then they queue behind it.
TEST(writer_preference, a_waiting_writer_holds_back_new_readers_of_other_processes) {
  temp_dir dir;
  const auto path = dir.path() / "lock";
  child_process reader = hold_in_child(kind::read, path);
  EXPECT_EQ(try_in_child(kind::read, path), k_acquired);
  child_process writer = spawn_helper("hold", {"write", arg_of(path)});
  ASSERT_TRUE(wait_for_waiting_writer(path));
  EXPECT_EQ(try_in_child(kind::read, path), k_busy);
  fasteners::interprocess_reader_writer_lock here(path);
  EXPECT_FALSE(here.try_lock_shared());
  EXPECT_EQ(writer.read_line(10ms), std::nullopt) << "the writer got in past a reader";
  EXPECT_EQ(reader.finish(), 0);
  EXPECT_EQ(writer.read_line(), std::optional<std::string>("held"));
  EXPECT_FALSE(here.try_lock_shared());
  EXPECT_EQ(writer.finish(), 0);
  EXPECT_TRUE(here.try_lock_shared());
  here.unlock_shared();
}

// A writer of this process that gives up a timed wait may leave its wait queued in the kernel,
// but nothing that holds readers back: not in other processes, not in this one through another
// object, the writer's own object or an object that keeps the file open meanwhile.
TEST(writer_preference, a_writer_that_gave_up_holds_back_no_reader) {
  for (const bool keep_open : {false, true}) {
    SCOPED_TRACE(keep_open ? "the writer's object keeps the file open" : "default objects");
    temp_dir dir;
    const auto path = dir.path() / "lock";
    child_process reader = hold_in_child(kind::read, path);
    fasteners::lock_options options;
    options.keep_open = keep_open;
    fasteners::interprocess_reader_writer_lock writer(path, options);
    fasteners::lock_options kept;
    kept.keep_open = true;
    fasteners::interprocess_reader_writer_lock keeper(path, kept);
    ASSERT_TRUE(keeper.try_lock_shared());  // From now on the file stays open in this process.
    keeper.unlock_shared();
    EXPECT_FALSE(writer.try_lock_for(k_short)) << "the writer got in past a reader";
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(writer.try_lock_for(10ms));

    EXPECT_EQ(try_in_child(kind::read, path), k_acquired) << "a reader of another process";
    fasteners::interprocess_reader_writer_lock other(path);
    EXPECT_TRUE(other.try_lock_shared()) << "a reader of this process, another object";
    other.unlock_shared();
    EXPECT_TRUE(writer.try_lock_shared()) << "a reader through the writer's object";
    writer.unlock_shared();
    const auto start = steady::now();
    EXPECT_TRUE(keeper.try_lock_shared_for(k_long)) << "a timed reader, object kept open";
    EXPECT_LT(seconds_since(start), 1.0) << "the timed reader waited";
    keeper.unlock_shared();

    // Once the reader lets go, the lock is free for anyone: whatever the queued wait was granted,
    // it let go of at once.
    EXPECT_EQ(reader.finish(), 0);
    EXPECT_TRUE(writer.try_lock_for(k_long));
    writer.unlock();
    const auto until = steady::now() + k_long;
    int got = k_busy;
    while (got == k_busy && steady::now() < until) got = try_in_child(kind::write, path);
    EXPECT_EQ(got, k_acquired);
  }
}

}  // namespace
}  // namespace fasteners_test
