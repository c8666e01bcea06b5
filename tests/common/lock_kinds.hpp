// The three kinds of lock the tests take, and a lock object of any kind on any backend.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
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

// A lock object of one kind on any backend: a `Lock` (kind::lock), or the read or write side of
// an `RW` (a reader-writer lock). Copies share the object. Thread-safe as the lock objects are.
template <class Lock, class RW>
class basic_kind_lock {
 public:
  // Makes the object from the arguments of Lock's or RW's constructor.
  template <class... Args>
  explicit basic_kind_lock(kind k, const Args&... args) : kind_(k) {
    if (k == kind::lock) {
      lock_ = std::make_shared<Lock>(args...);
    } else {
      rw_ = std::make_shared<RW>(args...);
    }
  }
  // Side `k` of the same object (read or write of a reader-writer lock; lock of an exclusive one).
  basic_kind_lock side(kind k) const {
    if ((k == kind::lock) != (kind_ == kind::lock)) throw std::logic_error("no such side");
    return basic_kind_lock(k, lock_, rw_);
  }
  bool acquire(bool blocking = true, fasteners::timeout_type timeout = std::nullopt) {
    if (kind_ == kind::lock) return lock_->acquire(blocking, timeout);
    return kind_ == kind::read ? rw_->acquire_read_lock(blocking, timeout)
                               : rw_->acquire_write_lock(blocking, timeout);
  }
  // try_lock_for / try_lock_shared_for.
  template <class Rep, class Period>
  bool try_for(const std::chrono::duration<Rep, Period>& d) {
    if (kind_ == kind::lock) return lock_->try_lock_for(d);
    return kind_ == kind::read ? rw_->try_lock_shared_for(d) : rw_->try_lock_for(d);
  }
  // try_lock_until / try_lock_shared_until.
  template <class Clock, class Duration>
  bool acquire_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    if (kind_ == kind::lock) return lock_->try_lock_until(deadline);
    return kind_ == kind::read ? rw_->try_lock_shared_until(deadline)
                               : rw_->try_lock_until(deadline);
  }
  void release() {
    if (kind_ == kind::lock) return lock_->release();
    return kind_ == kind::read ? rw_->release_read_lock() : rw_->release_write_lock();
  }
  bool held() const {
    if (kind_ == kind::lock) return lock_->acquired();
    return kind_ == kind::read ? rw_->read_acquired() : rw_->write_acquired();
  }
  std::intptr_t native_handle() const {
    return kind_ == kind::lock ? lock_->native_handle() : rw_->native_handle();
  }
  kind get_kind() const noexcept { return kind_; }

 private:
  basic_kind_lock(kind k, std::shared_ptr<Lock> lock, std::shared_ptr<RW> rw)
      : kind_(k), lock_(std::move(lock)), rw_(std::move(rw)) {}

  kind kind_;
  std::shared_ptr<Lock> lock_;
  std::shared_ptr<RW> rw_;
};

// A lock object of one kind on a lock file.
using kind_lock =
    basic_kind_lock<fasteners::interprocess_lock, fasteners::interprocess_reader_writer_lock>;

}  // namespace fasteners_test
