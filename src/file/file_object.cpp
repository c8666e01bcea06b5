// A lock object on a lock file, and the public core of the lock-file types (detail::file_lock).
#include "file/file_object.hpp"

#include <string>

#include "error.hpp"
#include "fasteners/detail/file_lock.hpp"
#include "file/inode_state.hpp"
#include "file/lock_table.hpp"

namespace fasteners::detail {
namespace file {

file_object::~file_object() { release_all(); }

bool file_object::still_at_path(const platform::file_identity& id) const {
  try {
    const auto found = platform::identify(path_, options_.follow_symlinks);
    return found && *found == id;
  } catch (...) {
    return false;  // Something else is at the path now; the next lookup reports it.
  }
}

void file_object::fail(std::error_code ec, std::string_view action, std::string_view detail) const {
  throw_error(ec, std::string(action) + " the lock on", path_, detail);
}

std::shared_ptr<engine::lock_state> file_object::find_state() {
  return lock_table::find_or_open(path_, options_);
}

engine::holder& file_object::holder_in(engine::lock_state& state) {
  return static_cast<inode_state&>(state).holder();
}

bool file_object::stays_bound(const engine::lock_state& state) const {
  return options_.keep_open && state.is_current();
}

}  // namespace file

file_lock::file_lock(std::filesystem::path path, const lock_options& options)
    : lock_core(std::make_unique<file::file_object>(std::move(path), options)) {}

const std::filesystem::path& file_lock::path() const noexcept {
  static const std::filesystem::path none;
  const auto* o = object();
  return o != nullptr ? static_cast<const file::file_object*>(o)->path() : none;
}

}  // namespace fasteners::detail
