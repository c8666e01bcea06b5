// The POSIX platform's byte-range locks: open-file-description locks, or classic fcntl locks.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "error.hpp"
#include "platform.hpp"
#include "posix/syscalls.hpp"

namespace fasteners::detail::platform {
namespace {

int fd_of(native_handle handle) { return static_cast<int>(handle); }

// Open-file-description locks belong to the open file, so threads and objects of one process
// conflict like separate processes and fork() does not share them. Without them (old kernels,
// other systems, or the FASTENERS_CLASSIC_FCNTL build) the classic process-owned locks are used;
// the portable layer makes those safe within the process.
#if defined(F_OFD_SETLK) && !defined(FASTENERS_CLASSIC_FCNTL)
std::atomic<bool> ofd_supported{true};
bool ofd() { return ofd_supported.load(std::memory_order_relaxed); }
int set_lock_cmd(bool wait) {
  if (ofd()) return wait ? F_OFD_SETLKW : F_OFD_SETLK;
  return wait ? F_SETLKW : F_SETLK;
}
int get_lock_cmd() { return ofd() ? F_OFD_GETLK : F_GETLK; }
bool fall_back_from_ofd(int error) {
  if (error != EINVAL || !ofd()) return false;
  ofd_supported.store(false, std::memory_order_relaxed);
  return true;
}
#else
bool ofd() { return false; }
int set_lock_cmd(bool wait) { return wait ? F_SETLKW : F_SETLK; }
int get_lock_cmd() { return F_GETLK; }
bool fall_back_from_ofd(int) { return false; }
#endif

// A span as fcntl takes it.
struct byte_range {
  off_t start;
  off_t length;  // 0: to the end of the file, however long it grows.
};
constexpr byte_range whole_file{0, 0};

byte_range range_of(byte_span s) {
  return {static_cast<off_t>(s.start), static_cast<off_t>(s.length)};
}

short type_of(lock_mode mode) {
  return static_cast<short>(mode == lock_mode::exclusive ? F_WRLCK : F_RDLCK);
}

// One fcntl lock call on `range`, retried on EINTR; returns 0 or an errno value.
//
// Classic fcntl locks belong to processes, and the kernel reports EDEADLK when the processes
// waiting for each other form a cycle. With several threads in a process such a cycle is no
// deadlock (one thread waits while another of the same process will release), so a waiting call
// waits on, pausing a little between tries; open-file-description locks never report it.
int fcntl_lock(int fd, bool wait, short type, byte_range range) {
  auto pause = std::chrono::microseconds(500);
  for (;;) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = range.start;
    fl.l_len = range.length;
    fl.l_pid = 0;  // Required for open-file-description locks.
    if (FASTENERS_SYSCALL(fcntl)(fd, set_lock_cmd(wait), &fl) == 0) return 0;
    const int error = errno;
    if (fall_back_from_ofd(error) || error == EINTR) continue;
    if (error == EDEADLK && wait) {
      {
        const cancellation_off no_cancel;
        std::this_thread::sleep_for(pause);
      }
      pause = std::min(pause * 2, std::chrono::microseconds(20000));
      continue;
    }
    return error;
  }
}

[[noreturn]] void throw_lock_error(int error, const std::filesystem::path& path) {
  throw_error(std::error_code(error, std::system_category()), "lock", path);
}

}  // namespace

bool handles_own_locks() noexcept { return ofd(); }

bool unlocks_exact_regions() noexcept { return false; }

bool blocked_handle_is_busy() noexcept { return false; }

// The regions as byte ranges: the main region is every byte below the gate, far past any real
// content, so that whole-file lockers conflict with it.
byte_span span_of(region r) noexcept {
  switch (r) {
    case region::main:
      return {0, gate_offset};
    case region::gate:
      return {gate_offset, 1};
    default:
      return {0, gate_offset + 1};
  }
}

bool try_lock(native_handle handle, lock_mode mode, byte_span s,
              const std::filesystem::path& path) {
  const int error = fcntl_lock(fd_of(handle), false, type_of(mode), range_of(s));
  if (error == 0) return true;
  if (error == EAGAIN || error == EACCES) return false;
  throw_lock_error(error, path);
}

void wait_lock(native_handle handle, lock_mode mode, byte_span s,
               const std::filesystem::path& path) {
  const int error = fcntl_lock(fd_of(handle), true, type_of(mode), range_of(s));
  if (error != 0) throw_lock_error(error, path);
}

std::error_code unlock(native_handle handle, byte_span s) noexcept {
  return {fcntl_lock(fd_of(handle), false, F_UNLCK, range_of(s)), std::system_category()};
}

std::error_code unlock_all(native_handle handle) noexcept {
  return {fcntl_lock(fd_of(handle), false, F_UNLCK, whole_file), std::system_category()};
}

bool locked_elsewhere(native_handle handle, lock_mode mode, byte_span s) noexcept {
  const auto range = range_of(s);
  struct flock fl {};
  fl.l_type = type_of(mode);
  fl.l_whence = SEEK_SET;
  fl.l_start = range.start;
  fl.l_len = range.length;
  return FASTENERS_SYSCALL(fcntl)(fd_of(handle), get_lock_cmd(), &fl) == 0 && fl.l_type != F_UNLCK;
}

}  // namespace fasteners::detail::platform
