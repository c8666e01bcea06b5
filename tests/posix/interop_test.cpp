// Tests that the locks exclude python-fasteners' locks on the same path, in both directions.
#include <string>
#include <tuple>
#include <vector>

#include "common/test_support.hpp"

#ifndef FASTENERS_PYTHON
#error "FASTENERS_PYTHON must name the Python interpreter that has python-fasteners"
#endif
#ifndef FASTENERS_INTEROP_SCRIPT
#error "FASTENERS_INTEROP_SCRIPT must name tests/interop/py_lock.py"
#endif

namespace fasteners_test {
namespace {

// Starts tests/interop/py_lock.py ACTION KIND PATH [extra...].
child_process python(const std::string& action, kind k, const std::filesystem::path& path,
                     const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {FASTENERS_PYTHON, FASTENERS_INTEROP_SCRIPT, action, to_string(k),
                                   path.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return child_process(argv);
}

// Python tries once (acquire(blocking=False)); returns k_acquired or k_busy.
int python_try(kind k, const std::filesystem::path& path) {
  return python("try", k, path).finish();
}

// Python holds a lock until finish(); adds a failure if it does not report it.
child_process python_hold(kind k, const std::filesystem::path& path) {
  child_process child = python("hold", k, path);
  EXPECT_EQ(child.read_line(), std::optional<std::string>("held"))
      << "python did not take a " << to_string(k) << " lock";
  return child;
}

TEST(interop, python_fasteners_is_installed) {
  child_process check({FASTENERS_PYTHON, "-c", "import fasteners"});
  EXPECT_EQ(check.finish(), 0) << FASTENERS_PYTHON
                               << " cannot import fasteners (Debian: apt-get install "
                                  "python3-fasteners)";
}

using interop_test = kind_pair_test;

TEST_P(interop_test, cpp_holder_and_python_try) {
  kind_lock cpp(first(), lock_path());
  ASSERT_TRUE(cpp.acquire());
  EXPECT_EQ(python_try(second(), lock_path()), conflict() ? k_busy : k_acquired);
  if (conflict()) {
    const auto start = steady::now();
    EXPECT_EQ(python("timed", second(), lock_path(), {"0.2"}).finish(), k_busy);
    EXPECT_GE(seconds_since(start), 0.2);
  }
  cpp.release();
  EXPECT_EQ(python_try(second(), lock_path()), k_acquired);
}

TEST_P(interop_test, python_holder_and_cpp_try) {
  child_process holder = python_hold(first(), lock_path());
  kind_lock cpp(second(), lock_path());
  EXPECT_EQ(cpp.acquire(false), !conflict());
  if (cpp.held()) cpp.release();
  if (conflict()) {
    const auto start = steady::now();
    EXPECT_FALSE(cpp.acquire(true, std::chrono::duration<double>(0.2)));
    EXPECT_GE(seconds_since(start), 0.2);
  }
  EXPECT_EQ(holder.finish(), 0);
  EXPECT_TRUE(cpp.acquire(false));
  cpp.release();
}

INSTANTIATE_TEST_SUITE_P(all_pairs, interop_test, ::testing::ValuesIn(all_kind_pairs()), pair_name);

using interop_wait_test = kind_pair_test;

TEST_P(interop_wait_test, python_waits_for_cpp) {
  kind_lock cpp(first(), lock_path());
  ASSERT_TRUE(cpp.acquire());
  child_process waiter = python("hold", second(), lock_path());
  EXPECT_EQ(waiter.read_line(1s), std::nullopt) << "python took a lock C++ holds";
  cpp.release();
  EXPECT_EQ(waiter.read_line(), std::optional<std::string>("held"));
  EXPECT_FALSE(cpp.acquire(false)) << "C++ took a lock python holds";
  EXPECT_EQ(waiter.finish(), 0);
  EXPECT_TRUE(cpp.acquire(false));
  cpp.release();
}

TEST_P(interop_wait_test, cpp_waits_for_python) {
  child_process holder = python_hold(first(), lock_path());
  kind_lock cpp(second(), lock_path());
  thread_holder waiter(cpp);
  EXPECT_FALSE(waiter.wait_held(k_quiet)) << "C++ took a lock python holds";
  holder.close_stdin();
  EXPECT_TRUE(waiter.wait_held());
  EXPECT_EQ(holder.wait(), 0);
  EXPECT_EQ(python_try(first(), lock_path()), k_busy) << "python took a lock C++ holds";
  EXPECT_TRUE(waiter.release());
}

INSTANTIATE_TEST_SUITE_P(conflicting, interop_wait_test,
                         ::testing::ValuesIn(conflicting_kind_pairs()), pair_name);

using interop_readers_test = lock_test;

TEST_F(interop_readers_test, python_and_cpp_readers_overlap) {
  child_process python_reader = python_hold(kind::read, lock_path());
  fasteners::interprocess_reader_writer_lock cpp(lock_path());
  ASSERT_TRUE(cpp.try_lock_shared());
  // Both hold a read lock now; writers of either language are kept out.
  EXPECT_EQ(python_try(kind::write, lock_path()), k_busy);
  EXPECT_EQ(python_try(kind::read, lock_path()), k_acquired);
  EXPECT_EQ(try_in_child(kind::write, lock_path()), k_busy);
  EXPECT_EQ(python_reader.finish(), 0);
  EXPECT_EQ(python_try(kind::write, lock_path()), k_busy);
  cpp.unlock_shared();
  EXPECT_EQ(python_try(kind::write, lock_path()), k_acquired);
}

}  // namespace
}  // namespace fasteners_test
