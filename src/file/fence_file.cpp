// A lock file's fencing counter: reading and advancing the file beside the lock file.
#include "file/fence_file.hpp"

#include <array>
#include <cstdio>
#include <limits>

#include "error.hpp"
#include "platform.hpp"

namespace fasteners::detail::file {
namespace {

// 20 digits hold every std::uint64_t; the newline makes the file a text line.
constexpr std::size_t record_size = 21;

}  // namespace

bool fence_file::open(const std::filesystem::path& lock_path, const lock_options& options,
                      bool create) {
  if (file_) return true;
  std::filesystem::path path = lock_path;
  path += ".fence";
  if (!create && !platform::identify(path, options.follow_symlinks)) return false;
  platform::open_file info;
  file_ = os_file::open(path, options.follow_symlinks, info);
  writable_ = info.writable;
  path_ = std::move(path);
  return true;
}

std::uint64_t fence_file::read() const {
  std::array<char, 32> buffer{};
  const std::size_t n = platform::read_start(file_.get(), buffer.data(), buffer.size(), path_);
  if (n == 0) return 0;
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t value = 0;
  bool overflow = false;
  std::size_t i = 0;
  for (; i < n && buffer[i] >= '0' && buffer[i] <= '9'; ++i) {
    const auto digit = static_cast<std::uint64_t>(buffer[i] - '0');
    overflow = overflow || value > (max - digit) / 10;
    value = value * 10 + digit;
  }
  if (i == 0 || overflow || (i < n && buffer[i] != '\n')) {
    throw_error(std::errc::illegal_byte_sequence, "read the fencing counter", path_,
                "it holds no token (a decimal number and a newline)");
  }
  return value;
}

std::uint64_t fence_file::latest(const std::filesystem::path& lock_path,
                                 const lock_options& options) {
  return open(lock_path, options, false) ? read() : 0;
}

std::uint64_t fence_file::advance(const std::filesystem::path& lock_path,
                                  const lock_options& options) {
  open(lock_path, options, true);
  if (!writable_) {
    throw_error(std::errc::permission_denied, "take a fencing token from", path_,
                "the counter file can only be read");
  }
  const std::uint64_t token = read() + 1;
  if (token == 0) {
    throw_error(std::errc::value_too_large, "take a fencing token from", path_,
                "the counter is at its largest value");
  }
  std::array<char, record_size + 1> text{};
  std::snprintf(text.data(), text.size(), "%020llu\n", static_cast<unsigned long long>(token));
  platform::write_start(file_.get(), text.data(), record_size, path_);
  return token;
}

}  // namespace fasteners::detail::file
