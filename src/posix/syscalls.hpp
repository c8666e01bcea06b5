// The system calls of the POSIX platform: never cancellation points, and routed through one macro
// so tests can inject failures.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

namespace fasteners::detail::sys {

// open(), close() and fcntl() with a waiting command are cancellation points of the C library. The
// library keeps thread cancellation out of its calls (a cancel in the middle would leave its state
// half changed), so on Linux it makes these calls directly, and elsewhere turns cancellation off
// around them.
#if defined(__linux__)
inline int open(const char* path, int flags, mode_t mode = 0) {
  return static_cast<int>(::syscall(SYS_openat, AT_FDCWD, path, flags, mode));
}
inline int close(int fd) { return static_cast<int>(::syscall(SYS_close, fd)); }
inline int fcntl(int fd, int cmd, struct flock* fl) {
  return static_cast<int>(::syscall(SYS_fcntl, fd, cmd, fl));
}
#else
class no_cancellation {
 public:
  no_cancellation() noexcept { ::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &saved_); }
  ~no_cancellation() { ::pthread_setcancelstate(saved_, nullptr); }
  no_cancellation(const no_cancellation&) = delete;
  no_cancellation& operator=(const no_cancellation&) = delete;

 private:
  int saved_ = 0;
};
inline int open(const char* path, int flags, mode_t mode = 0) {
  const no_cancellation guard;
  return ::open(path, flags, mode);
}
inline int close(int fd) {
  const no_cancellation guard;
  return ::close(fd);
}
inline int fcntl(int fd, int cmd, struct flock* fl) {
  const no_cancellation guard;
  return ::fcntl(fd, cmd, fl);
}
#endif
#if defined(__linux__) && defined(SYS_fstat)
// glibc's fstat() is fstatat(fd, "", AT_EMPTY_PATH), which looks up the empty path first.
inline int fstat(int fd, struct stat* st) { return static_cast<int>(::syscall(SYS_fstat, fd, st)); }
#else
inline int fstat(int fd, struct stat* st) { return ::fstat(fd, st); }
#endif
inline int stat(const char* path, struct stat* st) { return ::stat(path, st); }
inline int lstat(const char* path, struct stat* st) { return ::lstat(path, st); }
inline int unlink(const char* path) { return ::unlink(path); }

}  // namespace fasteners::detail::sys

#if defined(FASTENERS_MOCK_SYSCALLS)
#include "posix_mock.hpp"  // From tests/posix/: the same calls, with failures a test asked for.
#define FASTENERS_SYSCALL(name) ::fasteners::mock::name
#else
#define FASTENERS_SYSCALL(name) ::fasteners::detail::sys::name
#endif
