// The --flock lock of `fasteners run` on POSIX: flock(2), the lock util-linux flock(1) takes.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <string>
#include <system_error>

#include "lock_backend.hpp"

namespace fasteners::tool {
namespace {

using std::chrono::steady_clock;

[[noreturn]] void throw_os_error(int error, const std::string& what,
                                 const std::filesystem::path& path) {
  throw std::system_error(std::error_code(error, std::system_category()),
                          "fasteners: cannot " + what + " '" + path.string() + "'");
}

extern "C" void on_alarm(int) {}  // Only interrupts flock(2).

// Interrupts blocking calls with SIGALRM from `deadline` on, every 10 ms (so an alarm that comes
// just before the call cannot be missed), while it lives.
class alarm_clock {
 public:
  explicit alarm_clock(steady_clock::time_point deadline) {
    struct sigaction action {};
    action.sa_handler = &on_alarm;
    ::sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // No SA_RESTART: the blocked call must return EINTR.
    ::sigaction(SIGALRM, &action, &previous_);
    const auto left = std::max(deadline - steady_clock::now(), steady_clock::duration(1000));
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(left).count() + 1;
    struct itimerval timer {};
    timer.it_value.tv_sec = static_cast<time_t>(us / 1000000);
    timer.it_value.tv_usec = static_cast<suseconds_t>(us % 1000000);
    timer.it_interval.tv_usec = 10000;
    ::setitimer(ITIMER_REAL, &timer, nullptr);
  }
  ~alarm_clock() {
    struct itimerval off {};
    ::setitimer(ITIMER_REAL, &off, nullptr);  // An alarm due meanwhile is delivered here.
    ::sigaction(SIGALRM, &previous_, nullptr);
  }
  alarm_clock(const alarm_clock&) = delete;
  alarm_clock& operator=(const alarm_clock&) = delete;

 private:
  struct sigaction previous_ {};
};

class flock_lock final : public lock_backend {
 public:
  flock_lock(const std::filesystem::path& path, bool shared)
      : path_(path), operation_(shared ? LOCK_SH : LOCK_EX) {}
  ~flock_lock() override {
    // Closing, not unlocking: a child that shares the open file keeps the lock.
    if (fd_ >= 0) ::close(fd_);
  }
  flock_lock(const flock_lock&) = delete;
  flock_lock& operator=(const flock_lock&) = delete;

  bool try_acquire() override {
    open_once();
    for (;;) {
      if (::flock(fd_, operation_ | LOCK_NB) == 0) return held(true);
      if (errno == EWOULDBLOCK) return false;
      if (errno != EINTR) throw_os_error(errno, "lock", path_);
    }
  }

  bool acquire(std::optional<std::chrono::duration<double>> timeout) override {
    open_once();
    if (timeout && timeout->count() <= 0) return try_acquire();
    if (!timeout) {
      while (::flock(fd_, operation_) != 0) {
        if (errno != EINTR) throw_os_error(errno, "lock", path_);
      }
      return held(true);
    }
    const auto deadline = steady_clock::now() + std::chrono::ceil<steady_clock::duration>(std::min(
                                                    *timeout, std::chrono::duration<double>(1e9)));
    alarm_clock alarm(deadline);
    for (;;) {
      if (::flock(fd_, operation_) == 0) return held(true);
      if (errno != EINTR) throw_os_error(errno, "lock", path_);
      if (steady_clock::now() >= deadline) return false;
    }
  }

  std::intptr_t native_handle() const override { return held_ ? fd_ : -1; }

 private:
  // Opens the file as flock(1) does: created if missing (not its directory), read-only when it
  // cannot be written (flock(2) does not care) or is a directory.
  void open_once() {
    if (fd_ >= 0) return;
    constexpr int common = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | common, 0666);
    if (fd_ < 0 && (errno == EISDIR || errno == EACCES || errno == EROFS || errno == EPERM)) {
      const int write_error = errno;
      fd_ = ::open(path_.c_str(), O_RDONLY | common);
      if (fd_ < 0) errno = write_error;
    }
    if (fd_ < 0) throw_os_error(errno, "open lock file", path_);
  }
  bool held(bool value) {
    held_ = value;
    return value;
  }

  const std::filesystem::path path_;
  const int operation_;
  int fd_ = -1;
  bool held_ = false;
};

}  // namespace

bool flock_supported() { return true; }

std::unique_ptr<lock_backend> make_flock_lock(const std::filesystem::path& path, bool shared) {
  return std::make_unique<flock_lock>(path, shared);
}

}  // namespace fasteners::tool
