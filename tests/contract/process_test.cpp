// Lock files and child processes: a child inherits no descriptor of a held lock file.
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
