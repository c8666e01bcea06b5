// The Windows platform: LockFileEx on byte 0 of the lock file, as python-fasteners locks it.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "error.hpp"
#include "platform.hpp"

namespace fasteners::detail::platform {
namespace {

// Every handle lets other programs read, write, rename and delete the file, so python-fasteners
// (which opens it for appending) and this library in other processes can open it too.
constexpr DWORD share_all = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

std::error_code windows_error(DWORD code) {
  return {static_cast<int>(code), std::system_category()};
}
std::error_code last_error() { return windows_error(::GetLastError()); }

HANDLE handle_of(native_handle handle) { return reinterpret_cast<HANDLE>(handle); }
native_handle native_of(HANDLE handle) { return reinterpret_cast<native_handle>(handle); }

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

// How a lock request waits. LockFileEx on a handle opened with FILE_FLAG_OVERLAPPED returns at
// once with ERROR_IO_PENDING while the request stays queued in the kernel; the caller waits on
// its event, with a timeout for a timed wait, and cancels it with CancelIoEx at the deadline.
// Wine (8.0 at least) never completes such a pending request, not even when the holder unlocks
// (its NtLockFile says "Async I/O lock wait not implemented"), and leaves OVERLAPPED.Internal
// unset, so GetOverlappedResult would even report a grant after the cancel; LockFileEx on a
// synchronous handle waits correctly there. So under Wine handles are synchronous, waits without
// a deadline block in LockFileEx, and timed waits retry at growing intervals until the deadline.
// FASTENERS_WINDOWS_LOCK_WAIT=overlapped or =synchronous overrides the choice, for tests.
enum class wait_style { overlapped, synchronous };

bool running_on_wine() {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}

wait_style style() {
  static const wait_style chosen = [] {
    wchar_t value[16] = {};
    const DWORD n = ::GetEnvironmentVariableW(L"FASTENERS_WINDOWS_LOCK_WAIT", value, 16);
    const std::wstring_view v(value, n < 16 ? n : 0);
    if (v == L"overlapped") return wait_style::overlapped;
    if (v == L"synchronous") return wait_style::synchronous;
    return running_on_wine() ? wait_style::synchronous : wait_style::overlapped;
  }();
  return chosen;
}

// The byte ranges of the protocol. Every lock ends up on byte 0, the main range, which is what
// python-fasteners locks (its reader-writer lock locks [0, 1); its InterProcessLock locks one
// byte at the end of the file when it opens it, which is byte 0 of the empty files both create).
// A writer that has to wait first takes the gate byte, far beyond any real content, and keeps it
// until it releases. A reader takes the main range and the gate shared in one request, which a
// writer at the gate makes it wait for, then the main range alone, then drops the first request
// (Windows unlocks only exactly the ranges it locked). So once a writer waits, new readers queue
// behind it instead of starving it, and no reader holds the gate while it waits.
struct byte_range {
  std::uint64_t start;
  std::uint64_t length;
};
constexpr byte_range main_range{0, 1};
constexpr byte_range gate_range{gate_offset, 1};
constexpr byte_range main_and_gate{0, gate_offset + 1};

DWORD low(std::uint64_t v) { return static_cast<DWORD>(v & 0xffffffffu); }
DWORD high(std::uint64_t v) { return static_cast<DWORD>(v >> 32); }

OVERLAPPED overlapped_at(std::uint64_t offset, HANDLE event) {
  OVERLAPPED ov{};
  ov.Offset = low(offset);
  ov.OffsetHigh = high(offset);
  ov.hEvent = event;
  return ov;
}

DWORD lock_flags(lock_mode mode) {
  return mode == lock_mode::exclusive ? DWORD{LOCKFILE_EXCLUSIVE_LOCK} : DWORD{0};
}

[[noreturn]] void throw_lock_error(DWORD error, const std::filesystem::path& path) {
  throw_error(windows_error(error), "lock", path);
}

// Unlocks `range`, which `handle` holds; returns 0 or the Windows error. Unlocking never waits,
// also on an overlapped handle (NtUnlockFile has no event and completes at once).
DWORD unlock_range(HANDLE handle, byte_range range) {
  OVERLAPPED ov = overlapped_at(range.start, nullptr);
  return ::UnlockFileEx(handle, 0, low(range.length), high(range.length), &ov) ? 0
                                                                               : ::GetLastError();
}

// One request for `range` that fails at once if the range is taken; returns 0 or the Windows
// error (ERROR_LOCK_VIOLATION when taken).
DWORD request(HANDLE handle, DWORD flags, byte_range range) noexcept {
  OVERLAPPED ov = overlapped_at(range.start, nullptr);
  if (::LockFileEx(handle, flags | LOCKFILE_FAIL_IMMEDIATELY, 0, low(range.length),
                   high(range.length), &ov)) {
    return 0;
  }
  const DWORD error = ::GetLastError();
  if (error != ERROR_IO_PENDING) return error;
  // An overlapped handle may report even this request as pending; it ends at once. Without an
  // event GetOverlappedResult waits on the handle, which no other thread uses meanwhile.
  DWORD transferred = 0;
  return ::GetOverlappedResult(handle, &ov, &transferred, TRUE) ? 0 : ::GetLastError();
}

// As request(), but returns whether the range was granted and throws for other errors.
bool try_range(HANDLE handle, DWORD flags, byte_range range, const std::filesystem::path& path) {
  const DWORD error = request(handle, flags, range);
  if (error == 0) return true;
  if (error == ERROR_LOCK_VIOLATION) return false;
  throw_lock_error(error, path);
}

// Milliseconds from `now` to `until`, rounded up so a wait never ends before the deadline.
DWORD milliseconds_left(std::chrono::steady_clock::time_point now, deadline until) {
  if (now >= until) return 0;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
  return static_cast<DWORD>(std::min<long long>(left, INFINITE - 1));
}

// Waits until `event` is signaled or `until` passes; returns WAIT_OBJECT_0, WAIT_TIMEOUT or
// WAIT_FAILED. A wait that the system ends early by a clock tick is resumed.
DWORD wait_for(HANDLE event, deadline until) {
  for (;;) {
    const DWORD ms = until == no_deadline
                         ? INFINITE
                         : milliseconds_left(std::chrono::steady_clock::now(), until);
    const DWORD result = ::WaitForSingleObject(event, ms);
    if (result != WAIT_TIMEOUT || ms == 0) return result;
  }
}

// Waits in the kernel for `range` on an overlapped handle: the request stays queued until it is
// granted or cancelled at the deadline. A grant that races the cancel counts.
bool wait_overlapped(HANDLE handle, DWORD flags, byte_range range, deadline until,
                     const std::filesystem::path& path) {
  const scoped_handle event(::CreateEventW(nullptr, TRUE, FALSE, nullptr));
  if (!event.valid()) throw_error(last_error(), "wait for a lock on", path);
  OVERLAPPED ov = overlapped_at(range.start, event.get());
  if (::LockFileEx(handle, flags, 0, low(range.length), high(range.length), &ov)) return true;
  const DWORD error = ::GetLastError();
  if (error != ERROR_IO_PENDING) throw_lock_error(error, path);
  // The kernel owns `ov` until the request ends: leave only after GetOverlappedResult said so.
  const DWORD waited = wait_for(event.get(), until);
  const DWORD wait_error = waited == WAIT_FAILED ? ::GetLastError() : 0;
  // Fails with ERROR_NOT_FOUND when the request has just ended; then its result is final.
  if (waited != WAIT_OBJECT_0) ::CancelIoEx(handle, &ov);
  DWORD transferred = 0;
  if (::GetOverlappedResult(handle, &ov, &transferred, TRUE)) return true;
  const DWORD result = ::GetLastError();
  if (wait_error != 0) throw_error(windows_error(wait_error), "wait for a lock on", path);
  if (result == ERROR_OPERATION_ABORTED) return false;
  throw_lock_error(result, path);
}

// Waits for `range` on a synchronous handle: without a deadline in LockFileEx itself, with one
// by retrying at intervals that grow from 1 ms to 10 ms, which Wine leaves as the only way.
bool wait_synchronous(HANDLE handle, DWORD flags, byte_range range, deadline until,
                      const std::filesystem::path& path) {
  if (until == no_deadline) {
    OVERLAPPED ov = overlapped_at(range.start, nullptr);
    if (::LockFileEx(handle, flags, 0, low(range.length), high(range.length), &ov)) return true;
    throw_lock_error(::GetLastError(), path);
  }
  DWORD pause = 1;
  for (;;) {
    const DWORD left = milliseconds_left(std::chrono::steady_clock::now(), until);
    if (left == 0) return false;
    ::Sleep(std::min(pause, left));
    pause = std::min<DWORD>(pause * 2, 10);
    if (try_range(handle, flags, range, path)) return true;
  }
}

// Takes `range` (which `handle` does not hold yet) in the mode of `flags`, waiting until `until`.
// Returns false if it was not taken by then.
bool take(HANDLE handle, DWORD flags, byte_range range, deadline until,
          const std::filesystem::path& path) {
  if (try_range(handle, flags, range, path)) return true;
  if (until == try_once || std::chrono::steady_clock::now() >= until) return false;
  return style() == wait_style::overlapped ? wait_overlapped(handle, flags, range, until, path)
                                           : wait_synchronous(handle, flags, range, until, path);
}

// Names what a non-regular file is, for the error message.
[[noreturn]] void throw_not_regular(DWORD attributes, DWORD type,
                                    const std::filesystem::path& path) {
  if ((attributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    throw_error(std::errc::is_a_directory, "lock", path, "it is a directory, not a regular file");
  }
  const char* what = type == FILE_TYPE_CHAR   ? "it is a character device, not a regular file"
                     : type == FILE_TYPE_PIPE ? "it is a pipe, not a regular file"
                                              : "it is not a regular file";
  throw_error(std::errc::invalid_argument, "lock", path, what);
}

[[noreturn]] void throw_symlink(std::string_view action, const std::filesystem::path& path) {
  throw_error(std::errc::too_many_symbolic_link_levels, action, path,
              "it is a symbolic link, and symbolic links are not followed");
}

bool is_missing(DWORD error) {
  return error == ERROR_FILE_NOT_FOUND || error == ERROR_PATH_NOT_FOUND;
}

file_identity identity_of(const BY_HANDLE_FILE_INFORMATION& info) {
  return {info.dwVolumeSerialNumber,
          (std::uint64_t{info.nFileIndexHigh} << 32) | std::uint64_t{info.nFileIndexLow}};
}

// What the handle is: throws for anything but a regular file (and for a symbolic link or other
// name surrogate when `reject_links`); returns its identity.
file_identity inspect(HANDLE handle, bool reject_links, std::string_view action,
                      const std::filesystem::path& path) {
  BY_HANDLE_FILE_INFORMATION info{};
  const DWORD type = ::GetFileType(handle);
  if (type == FILE_TYPE_DISK && !::GetFileInformationByHandle(handle, &info)) {
    throw_error(last_error(), action, path);
  }
  if (reject_links && (info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    FILE_ATTRIBUTE_TAG_INFO tag{};
    if (::GetFileInformationByHandleEx(handle, FileAttributeTagInfo, &tag, sizeof tag) &&
        IsReparseTagNameSurrogate(tag.ReparseTag)) {
      throw_symlink(action, path);
    }
  }
  if (type != FILE_TYPE_DISK || (info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY) != 0) {
    throw_not_regular(info.dwFileAttributes, type, path);
  }
  return identity_of(info);
}

// Opens `path` as CreateFileW does, with full sharing and a handle that is not inherited.
HANDLE create_file(const std::filesystem::path& path, DWORD access, DWORD disposition,
                   DWORD flags) {
  return ::CreateFileW(path.c_str(), access, share_all, nullptr, disposition,
                       FILE_ATTRIBUTE_NORMAL | flags, nullptr);
}

// FileDispositionInfoEx with POSIX semantics (Windows 10 1709 and later, NTFS): the name goes at
// once although handles stay open, so the next process creates a new file. Older systems mark
// the file "delete pending" instead, and opening it then fails until every handle is closed.
constexpr auto file_disposition_info_ex = static_cast<FILE_INFO_BY_HANDLE_CLASS>(21);
struct file_disposition_info_ex_flags {
  DWORD flags;
};
constexpr DWORD disposition_delete = 0x1;
constexpr DWORD disposition_posix_semantics = 0x2;

}  // namespace

std::optional<file_identity> identify(const std::filesystem::path& path, bool follow_symlinks) {
  // No read or write access: this open never conflicts with another program's sharing mode.
  const DWORD flags =
      FILE_FLAG_BACKUP_SEMANTICS | (follow_symlinks ? 0 : FILE_FLAG_OPEN_REPARSE_POINT);
  const scoped_handle handle(create_file(path, FILE_READ_ATTRIBUTES, OPEN_EXISTING, flags));
  if (!handle.valid()) {
    const DWORD error = ::GetLastError();
    if (is_missing(error)) return std::nullopt;
    throw_error(windows_error(error), "lock", path);
  }
  return inspect(handle.get(), !follow_symlinks, "lock", path);
}

open_file open(const std::filesystem::path& path, bool follow_symlinks) {
  const DWORD flags = (style() == wait_style::overlapped ? FILE_FLAG_OVERLAPPED : 0) |
                      (follow_symlinks ? 0 : FILE_FLAG_OPEN_REPARSE_POINT);
  const DWORD read_write = GENERIC_READ | GENERIC_WRITE;
  HANDLE handle = create_file(path, read_write, OPEN_ALWAYS, flags);
  if (handle == INVALID_HANDLE_VALUE && ::GetLastError() == ERROR_PATH_NOT_FOUND &&
      !path.parent_path().empty()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw_error(ec, "create the parent directories of lock file", path);
    handle = create_file(path, read_write, OPEN_ALWAYS, flags);
  }
  open_file result;
  result.writable = handle != INVALID_HANDLE_VALUE;
  if (handle == INVALID_HANDLE_VALUE) {
    // A read-only file or medium, or another program that shares the file for reading only.
    DWORD error = ::GetLastError();
    if (error == ERROR_ACCESS_DENIED || error == ERROR_WRITE_PROTECT ||
        error == ERROR_SHARING_VIOLATION) {
      handle = create_file(path, GENERIC_READ, OPEN_EXISTING, flags);
      if (handle == INVALID_HANDLE_VALUE) {
        // Without FILE_FLAG_BACKUP_SEMANTICS a directory cannot be opened: name it.
        const DWORD attributes = ::GetFileAttributesW(path.c_str());
        if (attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY) != 0)
          throw_not_regular(attributes, FILE_TYPE_DISK, path);
      }
    }
    if (handle == INVALID_HANDLE_VALUE) throw_error(windows_error(error), "open lock file", path);
  }
  scoped_handle owner(handle);
  result.id = inspect(handle, !follow_symlinks, "open lock file", path);
  result.handle = native_of(owner.release());
  return result;
}

bool closing_releases_locks() noexcept { return false; }

void close(native_handle handle) noexcept { ::CloseHandle(handle_of(handle)); }

bool lock(native_handle handle, lock_mode mode, deadline until, const std::filesystem::path& path) {
  const HANDLE h = handle_of(handle);
  const DWORD flags = lock_flags(mode);
  if (mode == lock_mode::shared) {
    if (!take(h, flags, main_and_gate, until, path)) return false;
    // Holding the main range shared already, this request cannot conflict with anything.
    DWORD error = request(h, flags, main_range);
    if (error == 0) {
      error = unlock_range(h, main_and_gate);  // Passed the gate.
      if (error != 0) unlock_range(h, main_range);
    } else {
      unlock_range(h, main_and_gate);
    }
    if (error != 0) throw_lock_error(error, path);
    return true;
  }
  // A free file costs one request. Otherwise announce the wait at the gate, then wait for readers
  // and writers that hold the main range to leave.
  if (try_range(h, flags, main_range, path)) return true;
  if (until == try_once) return false;
  if (!take(h, flags, gate_range, until, path)) return false;
  try {
    if (take(h, flags, main_range, until, path)) return true;
  } catch (...) {
    unlock_range(h, gate_range);
    throw;
  }
  unlock_range(h, gate_range);
  return false;
}

bool writer_waiting(native_handle handle) noexcept {
  // A shared request for the gate fails while a writer holds it to wait for the main range.
  const HANDLE h = handle_of(handle);
  const DWORD error = request(h, 0, gate_range);
  if (error == 0) unlock_range(h, gate_range);
  return error == ERROR_LOCK_VIOLATION;
}

std::error_code unlock(native_handle handle) noexcept {
  const HANDLE h = handle_of(handle);
  const DWORD error = unlock_range(h, main_range);
  unlock_range(h, gate_range);  // Held only by a writer that waited; fails harmlessly otherwise.
  return error == 0 ? std::error_code() : windows_error(error);
}

bool remove_if_unused(native_handle, lock_mode held, const file_identity& id,
                      const std::filesystem::path& path) noexcept {
  // A reader cannot tell whether other readers hold the lock without giving up its own (Windows
  // does not convert a shared lock into an exclusive one), so only a writer deletes the file.
  if (held != lock_mode::exclusive) return false;
  // FILE_FLAG_OPEN_REPARSE_POINT: a symbolic link is never deleted in place of the file it names.
  const scoped_handle file(create_file(path, DELETE | FILE_READ_ATTRIBUTES, OPEN_EXISTING,
                                       FILE_FLAG_OPEN_REPARSE_POINT | FILE_FLAG_BACKUP_SEMANTICS));
  if (!file.valid()) return false;
  BY_HANDLE_FILE_INFORMATION info{};
  if (!::GetFileInformationByHandle(file.get(), &info)) return false;
  if (!(identity_of(info) == id)) return false;
  file_disposition_info_ex_flags disposition{disposition_delete | disposition_posix_semantics};
  return ::SetFileInformationByHandle(file.get(), file_disposition_info_ex, &disposition,
                                      sizeof disposition) != 0;
}

void set_timed_wait_signal(int signal_number) {
  if (signal_number < 0) {
    throw std::invalid_argument("fasteners: no such signal: " + std::to_string(signal_number));
  }
}

int timed_wait_signal() noexcept { return 0; }  // Timed waits need no signal on Windows.

void at_fork(void (*)(), void (*)(), void (*)()) {}

}  // namespace fasteners::detail::platform
