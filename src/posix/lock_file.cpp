// The POSIX platform: open-file-description locks (or classic fcntl locks) on the whole file.
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

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

// Open-file-description locks belong to the open file, so threads and objects of one process
// conflict like separate processes and fork() does not share them. Without them (old kernels,
// other systems, or the FASTENERS_CLASSIC_FCNTL build) the classic process-owned locks are used;
// the portable layer makes those safe within the process.
#if defined(F_OFD_SETLK) && !defined(FASTENERS_CLASSIC_FCNTL)
std::atomic<bool> ofd_supported{true};
int set_lock_cmd() { return ofd_supported.load(std::memory_order_relaxed) ? F_OFD_SETLK : F_SETLK; }
int set_lock_wait_cmd() {
  return ofd_supported.load(std::memory_order_relaxed) ? F_OFD_SETLKW : F_SETLKW;
}
bool fall_back_from_ofd(int error) {
  if (error != EINVAL || !ofd_supported.load(std::memory_order_relaxed)) return false;
  ofd_supported.store(false, std::memory_order_relaxed);
  return true;
}
#else
int set_lock_cmd() { return F_SETLK; }
int set_lock_wait_cmd() { return F_SETLKW; }
bool fall_back_from_ofd(int) { return false; }
#endif

// The byte ranges of the protocol. Readers and writers hold the main range; a writer that has to
// wait first takes the gate byte, far beyond any real content, and keeps it until it releases,
// and every reader passes the gate while it takes the main range. So once a writer waits, new
// readers queue behind it instead of starving it. python-fasteners and other whole-file lockers
// cover both ranges, so they conflict with this library in both directions.
struct byte_range {
  off_t start;
  off_t length;  // 0: to the end of the file, however long it grows.
};
constexpr off_t gate = static_cast<off_t>(gate_offset);
constexpr byte_range main_range{0, gate};
constexpr byte_range gate_range{gate, 1};
constexpr byte_range main_and_gate{0, gate + 1};
constexpr byte_range whole_file{0, 0};

// One fcntl lock call on `range`, retried on EINTR; returns 0 or an errno value.
//
// Classic fcntl locks belong to processes, and the kernel reports EDEADLK when the processes
// waiting for each other form a cycle. With several threads in a process such a cycle is no
// deadlock (one thread waits while another of the same process will release), so a waiting call
// waits on, pausing a little between tries; open-file-description locks never report it.
//
// A waiting call interrupted by a signal, or refused with EDEADLK, after `stop_at` returns EINTR
// instead of waiting on: that is how the timer of a timed wait ends it (see take_with_timer()).
int fcntl_lock(int fd, bool wait, short type, byte_range range, deadline stop_at = no_deadline) {
  auto pause = std::chrono::microseconds(500);
  for (;;) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = range.start;
    fl.l_len = range.length;
    fl.l_pid = 0;  // Required for open-file-description locks.
    if (FASTENERS_SYSCALL(fcntl)(fd, wait ? set_lock_wait_cmd() : set_lock_cmd(), &fl) == 0)
      return 0;
    const int error = errno;
    if (fall_back_from_ofd(error)) continue;
    const bool past_stop = stop_at != no_deadline && std::chrono::steady_clock::now() >= stop_at;
    if ((error == EINTR || error == EDEADLK) && past_stop) return EINTR;
    if (error == EINTR) continue;
    if (error == EDEADLK && wait) {
      // Never past the timer's deadline; also a cancellation point for the helper thread's waits.
      auto nap = std::chrono::duration_cast<std::chrono::steady_clock::duration>(pause);
      if (stop_at != no_deadline) nap = std::min(nap, stop_at - std::chrono::steady_clock::now());
      std::this_thread::sleep_for(nap);
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
      continue;
    }
    return error;
  }
}

bool is_contention(int error) { return error == EAGAIN || error == EACCES; }

[[noreturn]] void throw_lock_error(int error, const std::filesystem::path& path) {
  throw_error(std::error_code(error, std::system_category()), "lock", path);
}

// A timed wait blocks in the kernel, not in a sleep-and-retry loop: a helper thread waits in
// F_OFD_SETLKW (F_SETLKW) on the caller's open file while the caller waits on a condition
// variable until the deadline. If the deadline comes first, the helper is cancelled (fcntl with a
// waiting command is a cancellation point). Locks of either kind belong to the open file or to
// the process, never to a thread, so the caller holds whatever the helper took. No signal
// handler or signal number of the application is used: cancellation uses the C library's own.
struct timed_wait {
  timed_wait(int f, short t, byte_range r) : fd(f), type(t), range(r) {}
  const int fd;
  const short type;
  const byte_range range;
  std::mutex mutex;
  std::condition_variable done_changed;
  bool done = false;
  int error = 0;
};

void* wait_in_kernel(void* arg) {
  auto* wait = static_cast<timed_wait*>(arg);
  const int error = fcntl_lock(wait->fd, true, wait->type, wait->range);
  // From here on the result must reach the caller.
  ::pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  {
    std::lock_guard<std::mutex> guard(wait->mutex);
    wait->done = true;
    wait->error = error;
  }
  wait->done_changed.notify_one();
  return nullptr;
}

// Starts `wait_in_kernel` with every signal blocked, so the application's signals never land on
// the helper, and with a small stack, so that many timed waits at once stay cheap.
pthread_t start_helper(timed_wait& wait, const std::filesystem::path& path) {
  sigset_t all;
  sigset_t old;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  ::pthread_attr_init(&attr);
  ::pthread_attr_setstacksize(
      &attr, std::max<std::size_t>(static_cast<std::size_t>(PTHREAD_STACK_MIN), 64 * 1024));
  pthread_t helper;
  const int error = ::pthread_create(&helper, &attr, &wait_in_kernel, &wait);
  ::pthread_attr_destroy(&attr);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (error != 0) throw_error(std::error_code(error, std::system_category()), "wait for", path);
  return helper;
}

// The fast timed wait: the calling thread blocks in F_OFD_SETLKW itself, and a timer of its own
// (timer_create with SIGEV_THREAD_ID) sends it the timed-wait signal at the deadline, which ends
// the call with EINTR; the timer fires again every millisecond after that, so a signal that lands
// just before the call starts cannot leave it waiting. The signal's handler does nothing and is
// installed, without SA_RESTART, only while the signal has no handler of the application's; the
// library never takes a signal over. When the signal is unavailable (set_timed_wait_signal(0),
// the application handles it, or this thread blocks it) timed waits use the helper thread above.
std::atomic<int> wait_signal{-1};  // -1: the default, chosen at the first timed wait.
std::mutex signal_setup;

void on_wait_signal(int) {}

int default_wait_signal() {
  static const int sig = [] {
    const char* setting = std::getenv("FASTENERS_TIMED_WAIT_SIGNAL");
    if (setting == nullptr || *setting == '\0') return SIGRTMAX - 2;
    char* end = nullptr;
    const long value = std::strtol(setting, &end, 10);
    return *end == '\0' && value >= 0 && value < NSIG ? static_cast<int>(value) : SIGRTMAX - 2;
  }();
  return sig;
}

// The signal to use now, with its handler installed; 0 if there is none.
int usable_wait_signal() {
  int sig = wait_signal.load(std::memory_order_acquire);
  if (sig < 0) sig = default_wait_signal();
  if (sig == 0) return 0;
  std::lock_guard<std::mutex> guard(signal_setup);
  struct sigaction current {};
  if (::sigaction(sig, nullptr, &current) != 0) return 0;
  const bool ours = (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == &on_wait_signal;
  if (ours) return sig;
  const bool has_handler = (current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL;
  if (has_handler) return 0;  // The application's, also if it came after ours: never used.
  struct sigaction action {};
  action.sa_handler = &on_wait_signal;
  ::sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // No SA_RESTART: the signal must end the waiting call.
  if (::sigaction(sig, &action, nullptr) != 0) return 0;
  return sig;
}

timespec to_timespec(deadline until) {
  const auto since_epoch = until.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(seconds.count());
  ts.tv_nsec = static_cast<long>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - seconds).count());
  return ts;
}

// Takes `range` as take() does, with a timer signal ending the wait. Nothing if this thread
// cannot use the timed-wait signal now.
std::optional<bool> take_with_timer([[maybe_unused]] int fd, [[maybe_unused]] short type,
                                    [[maybe_unused]] byte_range range,
                                    [[maybe_unused]] deadline until,
                                    [[maybe_unused]] const std::filesystem::path& path) {
#if !defined(SIGEV_THREAD_ID)
  return std::nullopt;  // No thread-directed timers here: the helper thread waits.
#else
  const int sig = usable_wait_signal();
  if (sig == 0) return std::nullopt;
  sigset_t blocked;
  if (::pthread_sigmask(SIG_BLOCK, nullptr, &blocked) != 0 || ::sigismember(&blocked, sig) == 1) {
    return std::nullopt;
  }
  struct sigevent event {};
  event.sigev_notify = SIGEV_THREAD_ID;
  event.sigev_signo = sig;
  event._sigev_un._tid = static_cast<pid_t>(::syscall(SYS_gettid));
  timer_t timer;
  if (::timer_create(CLOCK_MONOTONIC, &event, &timer) != 0) return std::nullopt;
  struct itimerspec when {};
  when.it_value = to_timespec(until);  // steady_clock is CLOCK_MONOTONIC.
  when.it_interval.tv_nsec = 1000 * 1000;
  if (::timer_settime(timer, TIMER_ABSTIME, &when, nullptr) != 0) {
    ::timer_delete(timer);
    return std::nullopt;
  }
  const int error = fcntl_lock(fd, true, type, range, until);
  // A signal still pending reaches the no-op handler on the way out, in no call of the caller.
  ::timer_delete(timer);
  if (error == 0) return true;
  if (error == EINTR) return false;
  throw_lock_error(error, path);
#endif
}

// Takes `range` (which `fd` does not hold yet) in mode `type`, waiting until `until`. Returns
// false if it was not taken by then.
bool take(int fd, short type, byte_range range, deadline until, const std::filesystem::path& path) {
  int error = fcntl_lock(fd, until == no_deadline, type, range);
  if (error == 0) return true;
  if (!is_contention(error)) throw_lock_error(error, path);
  if (until == try_once || std::chrono::steady_clock::now() >= until) return false;
  if (const auto taken = take_with_timer(fd, type, range, until, path)) return *taken;
  timed_wait wait(fd, type, range);
  const pthread_t helper = start_helper(wait, path);
  bool done;
  {
    std::unique_lock<std::mutex> guard(wait.mutex);
    done = wait.done_changed.wait_until(guard, until, [&] { return wait.done; });
  }
  if (!done) ::pthread_cancel(helper);
  void* status = nullptr;
  ::pthread_join(helper, &status);
  if (status == PTHREAD_CANCELED) {
    // The helper stopped before it could say whether the kernel granted the range. The handle
    // held nothing there before this wait, so unlocking is harmless and guarantees none is left.
    fcntl_lock(fd, false, F_UNLCK, range);
    return false;
  }
  error = wait.error;  // The helper finished, possibly after the deadline: a grant counts.
  if (error != 0) throw_lock_error(error, path);
  return true;
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

bool lock(native_handle handle, lock_mode mode, deadline until, const std::filesystem::path& path) {
  const int fd = fd_of(handle);
  if (mode == lock_mode::shared) {
    if (!take(fd, F_RDLCK, main_and_gate, until, path)) return false;
    const int error = fcntl_lock(fd, false, F_UNLCK, gate_range);  // Passed the gate.
    if (error != 0) {
      fcntl_lock(fd, false, F_UNLCK, whole_file);
      throw_lock_error(error, path);
    }
    return true;
  }
  // A free file costs one call. Otherwise announce the wait at the gate, then wait for readers
  // and writers that hold the main range to leave. A writer that holds the lock leaves the gate
  // free, so that the next writer announces itself at once and waits in a single call, which
  // the holder's release ends with the lock granted.
  const int error = fcntl_lock(fd, false, F_WRLCK, main_range);
  if (error == 0) return true;
  if (!is_contention(error)) throw_lock_error(error, path);
  if (until == try_once) return false;
  if (!take(fd, F_WRLCK, gate_range, until, path)) return false;
  try {
    if (take(fd, F_WRLCK, main_range, until, path)) return true;
  } catch (...) {
    fcntl_lock(fd, false, F_UNLCK, gate_range);
    throw;
  }
  fcntl_lock(fd, false, F_UNLCK, gate_range);
  return false;
}

bool writer_waiting(native_handle handle) noexcept {
#if defined(F_OFD_GETLK) && !defined(FASTENERS_CLASSIC_FCNTL)
  const int cmd = ofd_supported.load(std::memory_order_relaxed) ? F_OFD_GETLK : F_GETLK;
#else
  const int cmd = F_GETLK;
#endif
  struct flock fl {};
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = gate_range.start;
  fl.l_len = gate_range.length;
  return FASTENERS_SYSCALL(fcntl)(fd_of(handle), cmd, &fl) == 0 && fl.l_type != F_UNLCK;
}

std::error_code unlock(native_handle handle) noexcept {
  const int error = fcntl_lock(fd_of(handle), false, F_UNLCK, whole_file);
  return {error, std::system_category()};
}

bool remove_if_unused(native_handle handle, lock_mode held, const file_identity& id,
                      const std::filesystem::path& path) noexcept {
  const int fd = fd_of(handle);
  // A reader may delete the file only if it can turn its lock into a write lock at once, gate
  // included: other readers, or a writer waiting at the gate, still use the file. Waiters that
  // get the lock after the deletion see that the path names another file, and start again.
  if (held == lock_mode::shared && fcntl_lock(fd, false, F_WRLCK, main_and_gate) != 0) {
    return false;
  }
  // lstat: a symbolic link is never deleted in place of the file it names.
  struct stat st {};
  if (FASTENERS_SYSCALL(lstat)(path.c_str(), &st) != 0 || !(identity_of(st) == id)) return false;
  return FASTENERS_SYSCALL(unlink)(path.c_str()) == 0;
}

void set_timed_wait_signal(int signal_number) {
  if (signal_number < 0 || signal_number >= NSIG) {
    throw std::invalid_argument("fasteners: no such signal: " + std::to_string(signal_number));
  }
  wait_signal.store(signal_number, std::memory_order_release);
}

int timed_wait_signal() noexcept {
  const int sig = wait_signal.load(std::memory_order_acquire);
  return sig < 0 ? default_wait_signal() : sig;
}

void at_fork(void (*prepare)(), void (*parent)(), void (*child)()) {
  ::pthread_atfork(prepare, parent, child);
}

}  // namespace fasteners::detail::platform
