// How the library reports failures: std::system_error whose message names the lock file.
#pragma once

#include <filesystem>
#include <string_view>
#include <system_error>

namespace fasteners::detail {

// Throws std::system_error(ec) with the message "fasteners: cannot <action> '<path>'", followed
// by ": <detail>" when a detail is given.
[[noreturn]] void throw_error(std::error_code ec, std::string_view action,
                              const std::filesystem::path& path, std::string_view detail = {});
[[noreturn]] inline void throw_error(std::errc e, std::string_view action,
                                     const std::filesystem::path& path,
                                     std::string_view detail = {}) {
  throw_error(std::make_error_code(e), action, path, detail);
}

}  // namespace fasteners::detail
