// fasteners::holders() on Windows: not available, as Windows does not tell who holds a byte range.
#include "fasteners/holders.hpp"

#include "error.hpp"

namespace fasteners {

std::vector<lock_holder> holders(const std::filesystem::path& path) {
  detail::throw_error(std::errc::function_not_supported, "list the lock holders of", path,
                      "fasteners::holders() is only available on Linux, where /proc tells");
}

std::vector<lock_holder> holders(const std::filesystem::path&, std::error_code& ec) {
  ec = std::make_error_code(std::errc::function_not_supported);
  return {};
}

}  // namespace fasteners
