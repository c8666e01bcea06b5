// The lock protocol's steps: which regions each kind of holder takes, in which order.
#include "file/gate_protocol.hpp"

#include "error.hpp"

namespace fasteners::detail::file::gate_protocol {
namespace {

using platform::region;

// A reader that holds the main region and the gate shared keeps only the main region.
void pass_gate(native_handle handle, const std::filesystem::path& path) {
  std::error_code ec;
  if (platform::unlocks_exact_regions()) {
    // Holding main_and_gate shared already, this request cannot conflict with anything.
    if (platform::try_lock(handle, lock_mode::shared, region::main, path)) {
      ec = platform::unlock(handle, region::main_and_gate);
    } else {
      ec = std::make_error_code(std::errc::resource_unavailable_try_again);
    }
  } else {
    ec = platform::unlock(handle, region::gate);
  }
  if (ec) {
    platform::unlock_all(handle);
    throw_error(ec, "lock", path);
  }
}

}  // namespace

bool try_lock(native_handle handle, lock_mode mode, const std::filesystem::path& path) {
  if (mode == lock_mode::exclusive) {
    return platform::try_lock(handle, lock_mode::exclusive, region::main, path);
  }
  if (!platform::try_lock(handle, lock_mode::shared, region::main_and_gate, path)) return false;
  pass_gate(handle, path);
  return true;
}

void wait_gate(native_handle handle, const std::filesystem::path& path) {
  platform::wait_lock(handle, lock_mode::exclusive, region::gate, path);
}

bool try_gate(native_handle handle, const std::filesystem::path& path) {
  return platform::try_lock(handle, lock_mode::exclusive, region::gate, path);
}

void release_gate(native_handle handle) noexcept { platform::unlock(handle, region::gate); }

void wait_main(native_handle handle, lock_mode mode, const std::filesystem::path& path) {
  if (mode == lock_mode::exclusive) {
    platform::wait_lock(handle, lock_mode::exclusive, region::main, path);
    return;
  }
  platform::wait_lock(handle, lock_mode::shared, region::main_and_gate, path);
  pass_gate(handle, path);
}

bool writer_waiting(native_handle held) noexcept {
  return platform::locked_elsewhere(held, lock_mode::shared, region::gate);
}

std::error_code release(native_handle handle) noexcept { return platform::unlock_all(handle); }

bool remove_if_unused(native_handle handle, lock_mode held, const platform::file_identity& id,
                      const std::filesystem::path& path) noexcept {
  if (held == lock_mode::shared) {
    // Other readers, or a writer at the gate, still use the file. Where locks do not convert
    // (Windows), a reader cannot tell without letting go, so only writers delete.
    if (platform::unlocks_exact_regions()) return false;
    try {
      if (!platform::try_lock(handle, lock_mode::exclusive, region::main_and_gate, path)) {
        return false;
      }
    } catch (const std::system_error&) {
      return false;
    }
  }
  return platform::remove_sole_name(handle, id, path);
}

}  // namespace fasteners::detail::file::gate_protocol
