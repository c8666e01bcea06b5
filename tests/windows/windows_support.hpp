// What only the Windows tests use beyond the portable test support: Wine, raw byte-range locks,
// wide strings and command lines.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/test_support.hpp"

namespace fasteners_test {

// Whether this process runs under Wine rather than Windows.
bool running_on_wine();

// A handle on `path` opened as python-fasteners opens its lock files (for appending, sharing
// reading and writing, not deletion), through which tests lock byte ranges directly.
class foreign_handle {
 public:
  explicit foreign_handle(const std::filesystem::path& path);
  ~foreign_handle();
  foreign_handle(const foreign_handle&) = delete;
  foreign_handle& operator=(const foreign_handle&) = delete;
  // LockFileEx on [offset, offset + 1) without waiting; returns whether it was granted.
  bool try_lock(bool exclusive, std::uint64_t offset = 0);
  void unlock(std::uint64_t offset = 0);
  HANDLE get() const noexcept { return handle_; }

 private:
  HANDLE handle_;
};

// UTF-8 and UTF-16 conversions.
std::wstring to_wide(const std::string& s);
std::string to_narrow(const std::wstring& s);

// Quotes one argument of a command line so that CommandLineToArgvW gives it back unchanged.
std::wstring quote(const std::wstring& arg);

}  // namespace fasteners_test
