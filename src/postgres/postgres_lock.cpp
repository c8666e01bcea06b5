// detail::postgres_session_lock: the public PostgreSQL lock types' shared core.
#include <stdexcept>
#include <string>
#include <system_error>

#include "deadline.hpp"
#include "fasteners/postgres.hpp"
#include "postgres/postgres_object.hpp"

namespace fasteners::detail {

postgres_session_lock::postgres_session_lock(std::string conninfo, std::string name,
                                             const postgres_options& options)
    : impl_(std::make_unique<postgres_object>(std::move(conninfo), std::move(name), options)) {}

postgres_session_lock::~postgres_session_lock() = default;
postgres_session_lock::postgres_session_lock(postgres_session_lock&& other) noexcept = default;
postgres_session_lock& postgres_session_lock::operator=(postgres_session_lock&& other) noexcept =
    default;

bool postgres_session_lock::acquire(lock_mode mode, bool blocking, const timeout_type& timeout) {
  return acquire_until(mode, deadline_of(blocking, timeout));
}

bool postgres_session_lock::acquire_until(lock_mode mode,
                                          std::chrono::steady_clock::time_point until) {
  return object_of(impl_).acquire(mode, until);
}

void postgres_session_lock::release(lock_mode mode) { object_of(impl_).release(mode); }

bool postgres_session_lock::holds(lock_mode mode) const noexcept {
  return impl_ && impl_->holds(mode);
}

bool postgres_session_lock::session_alive() const noexcept {
  return impl_ && impl_->session_alive();
}

std::intptr_t postgres_session_lock::native_handle() const noexcept {
  return impl_ ? impl_->native_handle() : -1;
}

const std::string& postgres_session_lock::name() const noexcept {
  static const std::string none;
  return impl_ ? impl_->name() : none;
}

std::int64_t postgres_session_lock::key() const noexcept { return impl_ ? impl_->key() : 0; }

}  // namespace fasteners::detail
