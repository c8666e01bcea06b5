// detail::postgres_session_lock: the core of the public PostgreSQL lock types.
#include <string>

#include "fasteners/postgres.hpp"
#include "postgres/postgres_object.hpp"

namespace fasteners::detail {
namespace {

postgres::postgres_object* pg(engine::lock_object* object) {
  return static_cast<postgres::postgres_object*>(object);
}

}  // namespace

postgres_session_lock::postgres_session_lock(std::string conninfo, std::string name,
                                             const postgres_options& options)
    : lock_core(std::make_unique<postgres::postgres_object>(std::move(conninfo), std::move(name),
                                                            options)) {}

bool postgres_session_lock::session_alive() const noexcept {
  return object() != nullptr && pg(object())->session_alive();
}

const std::string& postgres_session_lock::name() const noexcept {
  static const std::string none;
  return object() != nullptr ? pg(object())->name() : none;
}

std::int64_t postgres_session_lock::key() const noexcept {
  return object() != nullptr ? pg(object())->key() : 0;
}

}  // namespace fasteners::detail
