// detail::lock_core: the public lock types' entry into the engine.
#include "fasteners/detail/lock_core.hpp"

#include <system_error>

#include "deadline.hpp"
#include "engine/lock_object.hpp"

namespace fasteners::detail {

// Thread cancellation is kept out of every call into the library: none of the calls it makes is a
// cancellation point (see platform::cancellation_off and src/posix/syscalls.hpp), since a cancel
// in the middle would leave its state half changed.
lock_core::lock_core(std::unique_ptr<engine::lock_object> object) noexcept
    : object_(std::move(object)) {}

lock_core::~lock_core() = default;

lock_core::lock_core(lock_core&& other) noexcept = default;

lock_core& lock_core::operator=(lock_core&& other) noexcept = default;

bool lock_core::acquire(lock_mode mode, bool blocking, const timeout_type& timeout) {
  return acquire_until(mode, deadline_of(blocking, timeout));
}

bool lock_core::acquire_until(lock_mode mode, std::chrono::steady_clock::time_point until) {
  return object_of(object_).acquire(mode, until);
}

async_acquisition lock_core::acquire_async(lock_mode mode,
                                           std::chrono::steady_clock::time_point until,
                                           async_handler handler) {
  return object_of(object_).acquire_async(mode, until, std::move(handler));
}

void lock_core::release(lock_mode mode) { object_of(object_).release(mode); }

std::uint64_t lock_core::fencing_token() const { return object_of(object_).fencing_token(); }

bool lock_core::holds(lock_mode mode) const noexcept { return object_ && object_->holds(mode); }

std::intptr_t lock_core::native_handle() const noexcept {
  return object_ ? object_->native_handle() : -1;
}

}  // namespace fasteners::detail

namespace fasteners {

bool async_acquisition::cancel() noexcept {
  const auto request = request_.lock();
  return request && detail::engine::lock_object::cancel_async(request);
}

}  // namespace fasteners
