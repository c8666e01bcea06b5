// Locks through an open descriptor on POSIX, for --flock and `fasteners run FD`.
#include "posix/descriptor_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <system_error>

#include "errors.hpp"
#include "run_command.hpp"
#include "system.hpp"

namespace fasteners::tool {
namespace {

using std::chrono::steady_clock;

extern "C" void on_alarm(int) {}  // Only interrupts the lock call.

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

#if defined(F_OFD_SETLK)
constexpr bool have_ofd_locks = true;

// An open-file-description lock call of `type` on the whole file, however long it grows.
int ofd_lock(int fd, short type, bool wait) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;
  fl.l_pid = 0;
  return ::fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl) == 0 ? 0 : errno;
}
#else
constexpr bool have_ofd_locks = false;

int ofd_lock(int, short, bool) { return ENOTSUP; }
#endif

// The access mode of descriptor `fd` of this process (O_RDONLY, O_WRONLY or O_RDWR); a
// tool_error when it is not open.
int access_mode(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags == -1) {
    throw tool_error(exit_data_error,
                     "fasteners run: descriptor " + std::to_string(fd) +
                         " is not open: open the lock file on it in the shell, as in '( fasteners "
                         "run " +
                         std::to_string(fd) + " || exit 1; ... ) " + std::to_string(fd) +
                         "<>FILE'");
  }
  return flags & O_ACCMODE;
}

}  // namespace

descriptor_lock::descriptor_lock(int fd, bool shared, bool use_flock, std::string name,
                                 std::filesystem::path path)
    : fd_(fd),
      shared_(shared),
      use_flock_(use_flock),
      name_(std::move(name)),
      path_(std::move(path)) {}

bool descriptor_lock::try_acquire() {
  for (;;) {
    const int error = lock_call(false);
    if (error == 0) return held(true);
    if (error == EWOULDBLOCK || error == EAGAIN || error == EACCES) return false;
    if (error != EINTR) fail(error);
  }
}

bool descriptor_lock::acquire(std::optional<seconds> timeout) {
  if (timeout && timeout->count() <= 0) return try_acquire();
  if (!timeout) {
    for (;;) {
      const int error = lock_call(true);
      if (error == 0) return held(true);
      if (error != EINTR) fail(error);
    }
  }
  const auto deadline = steady_clock::now() + std::chrono::ceil<steady_clock::duration>(std::min(
                                                  *timeout, std::chrono::duration<double>(1e9)));
  alarm_clock alarm(deadline);
  for (;;) {
    const int error = lock_call(true);
    if (error == 0) return held(true);
    if (error != EINTR) fail(error);
    if (steady_clock::now() >= deadline) return false;
  }
}

int descriptor_lock::lock_call(bool wait) const {
  if (use_flock_) {
    return ::flock(fd_, (shared_ ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB)) == 0 ? 0 : errno;
  }
  return ofd_lock(fd_, static_cast<short>(shared_ ? F_RDLCK : F_WRLCK), wait);
}

bool descriptor_lock::held(bool value) {
  held_ = value;
  return value;
}

void descriptor_lock::fail(int error) const {
  throw lock_call_error(std::error_code(error, std::system_category()),
                        "fasteners: cannot lock " + name_);
}

bool descriptor_locks_supported(bool use_flock) { return use_flock || have_ofd_locks; }

std::unique_ptr<run_lock> make_descriptor_lock(int fd, const run_options& o) {
  const bool shared = o.shared;
  const bool use_flock = o.use_flock;
  const int mode = access_mode(fd);
  const std::string n = std::to_string(fd);
  if (!use_flock && shared && mode == O_WRONLY) {
    throw tool_error(exit_data_error, "fasteners run: cannot take a shared fcntl lock through " +
                                          descriptor_name(fd) +
                                          ": it is open for writing only, and a shared lock needs "
                                          "it open for reading: open it with " +
                                          n + "<>FILE (or " + n + "<FILE) instead of " + n +
                                          ">FILE, or use --flock");
  }
  if (!use_flock && !shared && mode == O_RDONLY) {
    throw tool_error(
        exit_data_error,
        "fasteners run: cannot take an exclusive fcntl lock through " + descriptor_name(fd) +
            ": it is open for reading only, and an exclusive lock needs it open for "
            "writing: open it with " +
            n + "<>FILE (or " + n + ">>FILE) instead of " + n + "<FILE, or use -s or --flock");
  }
  return std::make_unique<descriptor_lock>(fd, shared, use_flock, descriptor_name(fd),
                                           descriptor_path(fd));
}

void unlock_descriptor(int fd, bool use_flock) {
  access_mode(fd);
  int error = 0;
  do {
    error = use_flock ? (::flock(fd, LOCK_UN) == 0 ? 0 : errno)
                      : ofd_lock(fd, static_cast<short>(F_UNLCK), false);
  } while (error == EINTR);
  if (error != 0) {
    throw lock_call_error(std::error_code(error, std::system_category()),
                          "fasteners: cannot unlock " + descriptor_name(fd));
  }
}

std::filesystem::path descriptor_path(int fd) {
#if defined(__linux__)
  return "/proc/self/fd/" + std::to_string(fd);
#else
  (void)fd;
  return {};
#endif
}

std::string descriptor_name(int fd) {
  std::string name = "descriptor " + std::to_string(fd);
  std::error_code ec;
  const auto link = descriptor_path(fd);
  const auto target = link.empty() ? link : std::filesystem::read_symlink(link, ec);
  if (!target.empty() && !ec) name += " ('" + utf8_of(target) + "')";
  return name;
}

}  // namespace fasteners::tool
