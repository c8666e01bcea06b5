// The public lock types' shared core: argument checks, cancellation, and the lock object.
#include "fasteners/detail/file_lock.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "deadline.hpp"
#include "error.hpp"
#include "lock_object.hpp"
#include "platform.hpp"

namespace fasteners::detail {

file_lock::file_lock(std::filesystem::path path, const lock_options& options)
    : impl_(std::make_unique<lock_object>(std::move(path), options)) {}

// Thread cancellation is kept out of every call into the library: none of the calls it makes is a
// cancellation point (see platform::cancellation_off and src/posix/syscalls.hpp), since a cancel
// in the middle would leave its state half changed.
file_lock::~file_lock() = default;

file_lock::file_lock(file_lock&& other) noexcept = default;

file_lock& file_lock::operator=(file_lock&& other) noexcept = default;

bool file_lock::acquire(lock_mode mode, bool blocking, const timeout_type& timeout) {
  return acquire_until(mode, deadline_of(blocking, timeout));
}

bool file_lock::acquire_until(lock_mode mode, std::chrono::steady_clock::time_point until) {
  return object_of(impl_).acquire(mode, until);
}

void file_lock::release(lock_mode mode) { object_of(impl_).release(mode); }

bool file_lock::holds(lock_mode mode) const noexcept { return impl_ && impl_->holds(mode); }

std::intptr_t file_lock::native_handle() const noexcept {
  return impl_ ? impl_->native_handle() : platform::invalid_handle;
}

const std::filesystem::path& file_lock::path() const noexcept {
  static const std::filesystem::path none;
  return impl_ ? impl_->path() : none;
}

}  // namespace fasteners::detail
