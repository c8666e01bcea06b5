// Builds the library's std::system_error messages.
#include "error.hpp"

#include <string>

namespace fasteners::detail {

void throw_error(std::error_code ec, std::string_view action, const std::filesystem::path& path,
                 std::string_view detail) {
  std::string message = "fasteners: cannot ";
  message += action;
  message += " '";
  // UTF-8 on every platform (string() may throw on Windows), with NUL bytes spelled out so that
  // what() shows the whole path.
  for (const auto c : path.u8string()) {
    if (c == '\0') {
      message += "\\0";
    } else {
      message += static_cast<char>(c);
    }
  }
  message += "'";
  if (!detail.empty()) {
    message += ": ";
    message += detail;
  }
  throw std::system_error(ec, message);
}

}  // namespace fasteners::detail
