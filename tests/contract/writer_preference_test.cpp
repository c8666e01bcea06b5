// Writer preference on lock files: a writer that gave up a timed wait holds back no reader.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

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
