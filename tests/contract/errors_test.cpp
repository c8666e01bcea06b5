// Tests of the locks' errors: bad lock paths, OS failures naming the path.
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "common/test_support.hpp"

namespace fasteners_test {
namespace {

namespace fs = std::filesystem;

// Runs `f`, which must throw std::system_error naming `path` in what(); returns its code.
template <class F>
std::error_code expect_error_naming(const fs::path& path, F f, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << " returned instead of throwing";
  } catch (const std::system_error& e) {
    EXPECT_TRUE(names(e, path)) << what << ": what() does not name " << path << ": " << e.what();
    EXPECT_TRUE(e.code()) << what << ": no error code";
    return e.code();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw something other than std::system_error: " << e.what();
  }
  return {};
}

// Expects blocking, non-blocking and timed acquires through `lock` to throw std::system_error
// naming `path` with `expected`.
void expect_every_acquire_to_fail(kind_lock& lock, const fs::path& path, std::errc expected) {
  EXPECT_EQ(expect_error_naming(
                path, [&] { lock.acquire(); }, "a blocking acquire"),
            expected);
  EXPECT_EQ(expect_error_naming(
                path, [&] { lock.acquire(false); }, "a try"),
            expected);
  EXPECT_EQ(
      expect_error_naming(
          path, [&] { lock.acquire(true, std::chrono::duration<double>(0.1)); }, "a timed acquire"),
      expected);
  EXPECT_FALSE(lock.held());
}

class errors_test : public lock_test, public ::testing::WithParamInterface<kind> {};

TEST_P(errors_test, a_directory_at_the_path_is_an_error_naming_it) {
  fs::create_directory(lock_path());
  kind_lock lock(GetParam(), lock_path());
  expect_every_acquire_to_fail(lock, lock_path(), std::errc::is_a_directory);
  EXPECT_TRUE(fs::is_directory(lock_path()));
  EXPECT_TRUE(fs::is_empty(lock_path()));
}

TEST_P(errors_test, a_device_at_the_path_is_an_error_naming_it) {
  const fs::path device = null_device();
  // In a child first, so that a lock call that hangs on the device is caught.
  const int code = run_helper("expect_error", {to_string(GetParam()), arg_of(device)}, 20s);
  EXPECT_EQ(code, 0) << (code == -1 ? "locking a device hung" : "see the helper's message above");
  kind_lock lock(GetParam(), device);
  expect_every_acquire_to_fail(lock, device, std::errc::invalid_argument);
  EXPECT_TRUE(is_character_device(device));
}

TEST_P(errors_test, an_empty_path_is_an_error) {
  kind_lock lock(GetParam(), fs::path());
  expect_every_acquire_to_fail(lock, fs::path(), std::errc::invalid_argument);
}

TEST_P(errors_test, an_embedded_nul_is_an_error_and_creates_nothing) {
  fs::path::string_type name = (dir() / "lock").native();
  name.push_back(fs::path::value_type{});
  for (const char c : std::string("tail")) name.push_back(static_cast<fs::path::value_type>(c));
  const fs::path path(name);
  kind_lock lock(GetParam(), path);
  for (const bool blocking : {true, false}) {
    try {
      lock.acquire(blocking);
      ADD_FAILURE() << "a path with a NUL character was locked";
    } catch (const std::system_error& e) {
      EXPECT_EQ(e.code(), std::errc::invalid_argument) << e.what();
      EXPECT_NE(std::string(e.what()).find("NUL"), std::string::npos) << e.what();
    }
  }
  EXPECT_FALSE(lock.held());
  EXPECT_FALSE(fs::exists(dir() / "lock")) << "the part before the NUL must not be created";
}

TEST_P(errors_test, a_regular_file_as_parent_directory_is_an_error_naming_the_path) {
  std::ofstream(dir() / "file") << "not a directory";
  const fs::path path = dir() / "file" / "lock";
  kind_lock lock(GetParam(), path);
  expect_error_naming(
      path, [&] { lock.acquire(); }, "an acquire below a regular file");
  const fs::path deeper = dir() / "file" / "sub" / "lock";
  kind_lock deeper_lock(GetParam(), deeper);
  expect_error_naming(
      deeper, [&] { deeper_lock.acquire(false); }, "an acquire further below");
  EXPECT_TRUE(fs::is_regular_file(dir() / "file"));
}

// Which error depends on the platform (hostile_input_test checks POSIX's ENAMETOOLONG).
TEST_P(errors_test, a_name_too_long_is_an_error_naming_the_path) {
  const fs::path path = dir() / std::string(300, 'x');
  kind_lock lock(GetParam(), path);
  expect_error_naming(
      path, [&] { lock.acquire(); }, "an acquire");
  EXPECT_FALSE(lock.held());
}

INSTANTIATE_TEST_SUITE_P(each_kind, errors_test, ::testing::ValuesIn(all_kinds), kind_name);

}  // namespace
}  // namespace fasteners_test
