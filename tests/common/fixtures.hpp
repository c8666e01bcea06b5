// What the POSIX and Windows test suites share: time bounds, exit codes, the temp-directory
// fixture.
#pragma once

#include <chrono>
#include <filesystem>
#include <tuple>

#include <gtest/gtest.h>

#include "lock_kinds.hpp"

namespace fasteners_test {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Timed waits in the tests last k_short; they must return no sooner, and sooner than k_upper.
inline constexpr auto k_short = 200ms;
inline constexpr auto k_upper = 5s;
// How long a test waits for something that must happen (a child's answer, a thread's lock).
inline constexpr auto k_long = 30s;
// How long a test watches for something that must not happen (a waiter getting a held lock).
inline constexpr auto k_quiet = 300ms;

// Exit codes of the helper processes.
inline constexpr int k_acquired = 0;  // also "all checks passed"
inline constexpr int k_busy = 10;     // a try found the lock taken
inline constexpr int k_error = 3;     // an unexpected exception or a failed check

// Seconds elapsed since `start` on the steady clock.
double seconds_since(steady::time_point start);

// A fresh directory under the temp directory, removed with everything in it on destruction.
// Each platform's test utilities define how.
class temp_dir {
 public:
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

// The base fixture: a temp directory and a lock path in it (not created).
class lock_test : public ::testing::Test {
 protected:
  std::filesystem::path dir() const { return dir_.path(); }
  std::filesystem::path lock_path() const { return dir_.path() / "lock"; }

 private:
  temp_dir dir_;
};

// A fixture parameterized by a pair of kinds: one side holds the first, the other wants the second.
class kind_pair_test : public lock_test,
                       public ::testing::WithParamInterface<std::tuple<kind, kind>> {
 protected:
  kind first() const { return std::get<0>(GetParam()); }
  kind second() const { return std::get<1>(GetParam()); }
  bool conflict() const { return conflicts(first(), second()); }
};

}  // namespace fasteners_test
