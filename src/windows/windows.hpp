// <windows.h> for the Windows platform's files, without its min/max macros, and a handle owner.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <system_error>
#include <utility>

#include "platform.hpp"

namespace fasteners::detail::platform {

inline std::error_code windows_error(DWORD code) {
  return {static_cast<int>(code), std::system_category()};
}
inline std::error_code last_error() { return windows_error(::GetLastError()); }

inline HANDLE handle_of(native_handle handle) { return reinterpret_cast<HANDLE>(handle); }
inline native_handle native_of(HANDLE handle) { return reinterpret_cast<native_handle>(handle); }

// Owns a kernel handle until the end of its scope unless released.
class scoped_handle {
 public:
  explicit scoped_handle(HANDLE handle) noexcept : handle_(handle) {}
  ~scoped_handle() {
    if (valid()) ::CloseHandle(handle_);
  }
  scoped_handle(const scoped_handle&) = delete;
  scoped_handle& operator=(const scoped_handle&) = delete;
  bool valid() const noexcept { return handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE; }
  HANDLE get() const noexcept { return handle_; }
  HANDLE release() noexcept { return std::exchange(handle_, INVALID_HANDLE_VALUE); }

 private:
  HANDLE handle_;
};

}  // namespace fasteners::detail::platform
