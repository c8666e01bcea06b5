// The three kinds of lock the tests take, and a lock object of any kind (POSIX and Windows suites).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "fasteners/fasteners.hpp"

namespace fasteners_test {

// The three kinds of lock a test can take on a file.
enum class kind { lock, read, write };  // interprocess_lock, or one side of the reader-writer lock
inline const std::vector<kind> all_kinds = {kind::lock, kind::read, kind::write};
const char* to_string(kind k);
void PrintTo(kind k, std::ostream* out);
kind parse_kind(const std::string& s);
// Whether a lock of kind `a` and one of kind `b` on the same file exclude each other.
bool conflicts(kind a, kind b);
// Names a (first, second) kind pair as "first_then_second" for parameterized tests.
std::string pair_name(const ::testing::TestParamInfo<std::tuple<kind, kind>>& info);
std::string kind_name(const ::testing::TestParamInfo<kind>& info);
// Every (first, second) pair of kinds, and those that conflict.
std::vector<std::tuple<kind, kind>> all_kind_pairs();
std::vector<std::tuple<kind, kind>> conflicting_kind_pairs();

// A lock object of one kind: an interprocess_lock, or the read or write side of an
// interprocess_reader_writer_lock. Thread-safe as the lock objects are.
class kind_lock {
 public:
  kind_lock(kind k, std::filesystem::path path, const fasteners::lock_options& options = {});
  bool acquire(bool blocking = true, fasteners::timeout_type timeout = std::nullopt);
  // try_lock_until / try_lock_shared_until on the system clock.
  bool acquire_until(std::chrono::system_clock::time_point deadline);
  void release();
  bool held() const;
  std::intptr_t native_handle() const;
  kind get_kind() const noexcept { return kind_; }

 private:
  kind kind_;
  std::optional<fasteners::interprocess_lock> lock_;
  std::optional<fasteners::interprocess_reader_writer_lock> rw_;
};

}  // namespace fasteners_test
