// `fasteners run FD` on Windows, where a lock cannot outlive its process: not available.
#include <system_error>

#include "run_lock.hpp"

namespace fasteners::tool {
namespace {

[[noreturn]] void unsupported() {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "fasteners: locks on an inherited descriptor are not available on "
                          "Windows");
}

}  // namespace

bool descriptor_locks_supported(bool) { return false; }

std::unique_ptr<run_lock> make_descriptor_lock(int, const run_options&) { unsupported(); }

void unlock_descriptor(int, bool) { unsupported(); }

std::filesystem::path descriptor_path(int) { return {}; }

std::string descriptor_name(int fd) { return "descriptor " + std::to_string(fd); }

}  // namespace fasteners::tool
