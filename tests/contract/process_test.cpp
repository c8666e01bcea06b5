// Tests of the locks' process life cycle: killed holders and waiters, child processes.
#include <optional>
#include <string>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

// Helper "lock_file_not_open PATH": prints "checked" if no descriptor (handle) of this process
// refers to PATH's file, then waits for its stdin to end.
FASTENERS_TEST_HELPER(lock_file_not_open) {
  if (!handles_referring_to(path_of(args.at(0))).empty()) {
    return fail(1, "a child process inherited a descriptor of the lock file");
  }
  report_and_wait("checked");
  return 0;
}

class process_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(process_test, a_killed_holder_frees_the_lock_for_a_waiter_at_once) {
  child_process holder = hold_in_child(GetParam(), lock_path());
  kind_lock waiter_lock(kind::write, lock_path());
  thread_holder waiter(waiter_lock);
  EXPECT_FALSE(waiter.wait_held(k_quiet));
  const auto start = steady::now();
  holder.kill();
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_LT(seconds_since(start), 5.0);
  EXPECT_EQ(holder.wait(), k_killed);
  EXPECT_TRUE(waiter.release());
}

TEST_P(process_test, a_killed_holder_frees_the_lock_for_a_waiting_process) {
  child_process holder = hold_in_child(GetParam(), lock_path());
  child_process waiter = spawn_helper("hold", {"write", arg_of(lock_path())});
  EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt);
  holder.kill();
  EXPECT_EQ(holder.wait(), k_killed);
  EXPECT_EQ(waiter.read_line(5s), std::optional<std::string>("held"));
  EXPECT_EQ(waiter.finish(), 0);
  kind_lock lock(kind::write, lock_path());
  EXPECT_TRUE(lock.acquire(false));
  lock.release();
}

TEST_P(process_test, a_killed_waiter_leaves_nothing_behind) {
  // A writer waits behind a reader (holding the gate that holds back new readers), the other
  // kinds behind a writer.
  const kind waiting = GetParam();
  kind_lock holder(waiting == kind::write ? kind::read : kind::write, lock_path());
  ASSERT_TRUE(holder.acquire());
  child_process waiter = spawn_helper("hold", {to_string(waiting), arg_of(lock_path())});
  EXPECT_EQ(waiter.read_line(k_quiet), std::nullopt) << "the waiter took a held lock";
  if (waiting == kind::write) {
    ASSERT_TRUE(wait_for_waiting_writer(lock_path()));
  }
  waiter.kill();
  EXPECT_EQ(waiter.wait(), k_killed);
  holder.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_EQ(try_in_child(kind::read, lock_path()), k_acquired);
}

TEST_P(process_test, child_processes_do_not_inherit_the_lock_file) {
  kind_lock lock(GetParam(), lock_path());
  ASSERT_TRUE(lock.acquire());
  const auto handles = handles_referring_to(lock_path());
  EXPECT_FALSE(handles.empty()) << "no descriptor of the lock file is open while it is held";
  for (const auto handle : handles) {
    EXPECT_FALSE(inherited_by_children(handle)) << "descriptor " << handle << " is inherited";
  }
  child_process child = spawn_helper("lock_file_not_open", {arg_of(lock_path())});
  EXPECT_EQ(child.read_line(), std::optional<std::string>("checked"));
  // Released here, free although the child lives on.
  lock.release();
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_acquired);
  EXPECT_TRUE(child.running());
  EXPECT_EQ(child.finish(), 0);
}

INSTANTIATE_TEST_SUITE_P(each_kind, process_test, ::testing::ValuesIn(all_kinds), kind_name);

}  // namespace
}  // namespace fasteners_test
