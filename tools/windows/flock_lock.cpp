// The --flock lock of `fasteners run` on Windows, which has no flock(2): not available.
#include <system_error>

#include "run_lock.hpp"

namespace fasteners::tool {

bool flock_supported() { return false; }

std::unique_ptr<run_lock> make_flock_lock(const std::filesystem::path&, bool) {
  throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                          "fasteners: --flock is not available on Windows, which has no flock(2)");
}

}  // namespace fasteners::tool
