// The Windows platform's files: finding, opening, closing and deleting lock files.
#include <string_view>

#include "error.hpp"
#include "platform.hpp"
#include "windows/windows.hpp"

namespace fasteners::detail::platform {
namespace {

// Every handle lets other programs read, write, rename and delete the file, so python-fasteners
// (which opens it for appending) and this library in other processes can open it too.
constexpr DWORD share_all = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;

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
  // Synchronous handles: a lock request that must wait blocks the calling thread in LockFileEx.
  const DWORD flags = follow_symlinks ? 0 : FILE_FLAG_OPEN_REPARSE_POINT;
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

std::size_t read_start(native_handle handle, char* buffer, std::size_t size,
                       const std::filesystem::path& path) {
  OVERLAPPED ov{};
  DWORD n = 0;
  if (!::ReadFile(handle_of(handle), buffer, static_cast<DWORD>(size), &n, &ov)) {
    const DWORD error = ::GetLastError();
    if (error == ERROR_HANDLE_EOF) return 0;
    throw_error(windows_error(error), "read", path);
  }
  return n;
}

void write_start(native_handle handle, const char* data, std::size_t size,
                 const std::filesystem::path& path) {
  OVERLAPPED ov{};
  DWORD n = 0;
  if (!::WriteFile(handle_of(handle), data, static_cast<DWORD>(size), &n, &ov) || n != size) {
    throw_error(last_error(), "write", path);
  }
}

bool remove_sole_name(native_handle held, const file_identity& id,
                      const std::filesystem::path& path) noexcept {
  // Another name (a hard link) would keep the file, and its lock, alive under that name.
  BY_HANDLE_FILE_INFORMATION held_info{};
  if (!::GetFileInformationByHandle(handle_of(held), &held_info) || held_info.nNumberOfLinks != 1) {
    return false;
  }
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

}  // namespace fasteners::detail::platform
