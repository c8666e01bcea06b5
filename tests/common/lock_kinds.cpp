// The three kinds of lock the tests take, and a lock object of any kind.
#include "lock_kinds.hpp"

#include <stdexcept>
#include <utility>

namespace fasteners_test {

const char* to_string(kind k) {
  switch (k) {
    case kind::lock:
      return "lock";
    case kind::read:
      return "read";
    case kind::write:
      return "write";
  }
  return "?";
}

void PrintTo(kind k, std::ostream* out) { *out << to_string(k); }

kind parse_kind(const std::string& s) {
  for (const kind k : all_kinds) {
    if (s == to_string(k)) return k;
  }
  throw std::invalid_argument("unknown lock kind " + s);
}

bool conflicts(kind a, kind b) { return !(a == kind::read && b == kind::read); }

std::string pair_name(const ::testing::TestParamInfo<std::tuple<kind, kind>>& info) {
  return std::string(to_string(std::get<0>(info.param))) + "_then_" +
         to_string(std::get<1>(info.param));
}

std::string kind_name(const ::testing::TestParamInfo<kind>& info) { return to_string(info.param); }

std::vector<std::tuple<kind, kind>> all_kind_pairs() {
  std::vector<std::tuple<kind, kind>> pairs;
  for (const kind a : all_kinds) {
    for (const kind b : all_kinds) pairs.emplace_back(a, b);
  }
  return pairs;
}

std::vector<std::tuple<kind, kind>> conflicting_kind_pairs() {
  std::vector<std::tuple<kind, kind>> pairs;
  for (const auto& [a, b] : all_kind_pairs()) {
    if (conflicts(a, b)) pairs.emplace_back(a, b);
  }
  return pairs;
}

kind_lock::kind_lock(kind k, std::filesystem::path path, const fasteners::lock_options& options)
    : kind_(k) {
  if (k == kind::lock) {
    lock_.emplace(std::move(path), options);
  } else {
    rw_.emplace(std::move(path), options);
  }
}

bool kind_lock::acquire(bool blocking, fasteners::timeout_type timeout) {
  switch (kind_) {
    case kind::lock:
      return lock_->acquire(blocking, timeout);
    case kind::read:
      return rw_->acquire_read_lock(blocking, timeout);
    case kind::write:
      return rw_->acquire_write_lock(blocking, timeout);
  }
  return false;
}

bool kind_lock::acquire_until(std::chrono::system_clock::time_point deadline) {
  switch (kind_) {
    case kind::lock:
      return lock_->try_lock_until(deadline);
    case kind::read:
      return rw_->try_lock_shared_until(deadline);
    case kind::write:
      return rw_->try_lock_until(deadline);
  }
  return false;
}

void kind_lock::release() {
  switch (kind_) {
    case kind::lock:
      return lock_->release();
    case kind::read:
      return rw_->release_read_lock();
    case kind::write:
      return rw_->release_write_lock();
  }
}

bool kind_lock::held() const {
  switch (kind_) {
    case kind::lock:
      return lock_->acquired();
    case kind::read:
      return rw_->read_acquired();
    case kind::write:
      return rw_->write_acquired();
  }
  return false;
}

std::intptr_t kind_lock::native_handle() const {
  return kind_ == kind::lock ? lock_->native_handle() : rw_->native_handle();
}

}  // namespace fasteners_test
