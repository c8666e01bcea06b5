// The Windows platform's byte-range locks: LockFileEx on byte 0, as python-fasteners locks it.
#include "error.hpp"
#include "platform.hpp"
#include "windows/windows.hpp"

namespace fasteners::detail::platform {
namespace {

DWORD low(std::uint64_t v) { return static_cast<DWORD>(v & 0xffffffffu); }
DWORD high(std::uint64_t v) { return static_cast<DWORD>(v >> 32); }

OVERLAPPED at(std::uint64_t offset) {
  OVERLAPPED ov{};
  ov.Offset = low(offset);
  ov.OffsetHigh = high(offset);
  return ov;
}

DWORD flags_of(lock_mode mode) {
  return mode == lock_mode::exclusive ? DWORD{LOCKFILE_EXCLUSIVE_LOCK} : DWORD{0};
}

// One LockFileEx call; returns 0 or the Windows error (ERROR_LOCK_VIOLATION when taken).
DWORD request(native_handle handle, lock_mode mode, byte_span range, bool wait) {
  OVERLAPPED ov = at(range.start);
  const DWORD flags = flags_of(mode) | (wait ? 0 : DWORD{LOCKFILE_FAIL_IMMEDIATELY});
  return ::LockFileEx(handle_of(handle), flags, 0, low(range.length), high(range.length), &ov)
             ? 0
             : ::GetLastError();
}

}  // namespace

// The regions as byte ranges. Every lock ends up on byte 0, the main region, which is what
// python-fasteners locks (its reader-writer lock locks [0, 1); its InterProcessLock locks one
// byte at the end of the file when it opens it, which is byte 0 of the empty files both create).
// Windows unlocks only exactly the ranges it locked, and never converts a lock.
byte_span span_of(region r) noexcept {
  switch (r) {
    case region::main:
      return {0, 1};
    case region::gate:
      return {gate_offset, 1};
    default:
      return {0, gate_offset + 1};
  }
}

bool handles_own_locks() noexcept { return true; }

bool unlocks_exact_regions() noexcept { return true; }

// Windows serializes the calls on a synchronous handle: an unlock waits while another thread
// blocks in LockFileEx on the same handle.
bool blocked_handle_is_busy() noexcept { return true; }

bool try_lock(native_handle handle, lock_mode mode, byte_span s,
              const std::filesystem::path& path) {
  const DWORD error = request(handle, mode, s, false);
  if (error == 0) return true;
  if (error == ERROR_LOCK_VIOLATION) return false;
  throw_error(windows_error(error), "lock", path);
}

void wait_lock(native_handle handle, lock_mode mode, byte_span s,
               const std::filesystem::path& path) {
  const DWORD error = request(handle, mode, s, true);
  if (error != 0) throw_error(windows_error(error), "lock", path);
}

std::error_code unlock(native_handle handle, byte_span s) noexcept {
  OVERLAPPED ov = at(s.start);
  return ::UnlockFileEx(handle_of(handle), 0, low(s.length), high(s.length), &ov)
             ? std::error_code()
             : last_error();
}

std::error_code unlock_all(native_handle handle) noexcept {
  const auto error = unlock(handle, region::main);
  unlock(handle, region::gate);  // Held only by a writer that waited; fails harmlessly otherwise.
  return error;
}

bool locked_elsewhere(native_handle handle, lock_mode mode, byte_span s) noexcept {
  // A request for it fails while another owner holds a conflicting lock.
  const DWORD error = request(handle, mode, s, false);
  if (error == 0) unlock(handle, s);
  return error == ERROR_LOCK_VIOLATION;
}

}  // namespace fasteners::detail::platform
