// The POSIX platform's files: finding, opening, closing and deleting lock files.
#include <cerrno>

#include "error.hpp"
#include "platform.hpp"
#include "posix/syscalls.hpp"

namespace fasteners::detail::platform {
namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

int fd_of(native_handle handle) { return static_cast<int>(handle); }

file_identity identity_of(const struct stat& st) {
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// Names what a non-regular file is, for the error message.
const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "it is a directory, not a regular file";
  if (S_ISFIFO(mode)) return "it is a FIFO, not a regular file";
  if (S_ISCHR(mode)) return "it is a character device, not a regular file";
  if (S_ISBLK(mode)) return "it is a block device, not a regular file";
  if (S_ISSOCK(mode)) return "it is a socket, not a regular file";
  return "it is not a regular file";
}

[[noreturn]] void throw_not_regular(mode_t mode, const std::filesystem::path& path) {
  const auto e = S_ISDIR(mode) ? std::errc::is_a_directory : std::errc::invalid_argument;
  throw_error(e, "lock", path, kind_of(mode));
}

}  // namespace

std::optional<file_identity> identify(const std::filesystem::path& path, bool follow_symlinks) {
  struct stat st {};
  if ((follow_symlinks ? FASTENERS_SYSCALL(stat)(path.c_str(), &st)
                       : FASTENERS_SYSCALL(lstat)(path.c_str(), &st)) != 0) {
    if (errno == ENOENT) return std::nullopt;
    throw_error(last_error(), "lock", path);
  }
  if (S_ISLNK(st.st_mode)) {
    throw_error(std::errc::too_many_symbolic_link_levels, "lock", path,
                "it is a symbolic link, and symbolic links are not followed");
  }
  if (!S_ISREG(st.st_mode)) throw_not_regular(st.st_mode, path);
  return identity_of(st);
}

open_file open(const std::filesystem::path& path, bool follow_symlinks) {
  // O_NONBLOCK: opening a FIFO that appeared at the path must not hang.
  const int common = O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (follow_symlinks ? 0 : O_NOFOLLOW);
  open_file result;
  int fd = FASTENERS_SYSCALL(open)(path.c_str(), O_RDWR | O_CREAT | common, 0666);
  if (fd < 0 && errno == ENOENT && !path.parent_path().empty()) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) throw_error(ec, "create the parent directories of lock file", path);
    fd = FASTENERS_SYSCALL(open)(path.c_str(), O_RDWR | O_CREAT | common, 0666);
  }
  result.writable = fd >= 0;
  if (fd < 0 && (errno == EACCES || errno == EROFS || errno == EPERM || errno == EISDIR)) {
    const int write_error = errno;
    fd = FASTENERS_SYSCALL(open)(path.c_str(), O_RDONLY | common);
    if (fd < 0) errno = write_error;
  }
  if (fd < 0 && errno == ELOOP && !follow_symlinks) {
    throw_error(std::errc::too_many_symbolic_link_levels, "open lock file", path,
                "it is a symbolic link, and symbolic links are not followed");
  }
  if (fd < 0) throw_error(last_error(), "open lock file", path);
  struct stat st {};
  if (FASTENERS_SYSCALL(fstat)(fd, &st) != 0) {
    const auto ec = last_error();
    FASTENERS_SYSCALL(close)(fd);
    throw_error(ec, "inspect lock file", path);
  }
  if (!S_ISREG(st.st_mode)) {
    FASTENERS_SYSCALL(close)(fd);
    throw_not_regular(st.st_mode, path);
  }
  result.handle = fd;
  result.id = identity_of(st);
  return result;
}

bool closing_releases_locks() noexcept { return true; }

void close(native_handle handle) noexcept { FASTENERS_SYSCALL(close)(fd_of(handle)); }

std::size_t read_start(native_handle handle, char* buffer, std::size_t size,
                       const std::filesystem::path& path) {
  const cancellation_off no_cancel;
  for (;;) {
    const ssize_t n = ::pread(fd_of(handle), buffer, size, 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) throw_error(last_error(), "read", path);
  }
}

void write_start(native_handle handle, const char* data, std::size_t size,
                 const std::filesystem::path& path) {
  const cancellation_off no_cancel;
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd_of(handle), data + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw_error(n < 0 ? last_error() : std::make_error_code(std::errc::io_error), "write", path);
    done += static_cast<std::size_t>(n);
  }
}

bool remove_sole_name(native_handle handle, const file_identity& id,
                      const std::filesystem::path& path) noexcept {
  // A name made by link() between these checks and the unlink cannot be seen; see the README.
  struct stat open_st {};
  if (FASTENERS_SYSCALL(fstat)(fd_of(handle), &open_st) != 0 || open_st.st_nlink != 1) {
    return false;
  }
  // lstat: a symbolic link is never deleted in place of the file it names.
  struct stat st {};
  if (FASTENERS_SYSCALL(lstat)(path.c_str(), &st) != 0 || !(identity_of(st) == id)) return false;
  return FASTENERS_SYSCALL(unlink)(path.c_str()) == 0;
}

}  // namespace fasteners::detail::platform
