// Stand-ins for the POSIX platform's system calls that fail on request.
#include "posix_mock.hpp"

#include <unistd.h>

#include <cerrno>
#include <deque>
#include <map>
#include <mutex>

namespace fasteners::mock {
namespace {

struct state {
  std::mutex mutex;
  std::map<call, std::deque<int>> failures;
  std::map<call, int> counts;
};

state& the_state() {
  static state s;
  return s;
}

// Counts a call of `c` and returns the errno it must fail with, or 0 to make the real call.
int next_failure(call c) {
  auto& s = the_state();
  std::lock_guard<std::mutex> guard(s.mutex);
  ++s.counts[c];
  auto& queue = s.failures[c];
  if (queue.empty()) return 0;
  const int error = queue.front();
  queue.pop_front();
  return error;
}

bool is_lock_command(int cmd) {
  return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW;
}

}  // namespace

void fail_next(call c, std::vector<int> errors) {
  auto& s = the_state();
  std::lock_guard<std::mutex> guard(s.mutex);
  s.failures[c].insert(s.failures[c].end(), errors.begin(), errors.end());
}

int calls(call c) {
  auto& s = the_state();
  std::lock_guard<std::mutex> guard(s.mutex);
  return s.counts[c];
}

void reset() {
  auto& s = the_state();
  std::lock_guard<std::mutex> guard(s.mutex);
  s.failures.clear();
  s.counts.clear();
}

int fcntl(int fd, int cmd, struct flock* fl) {
  if (is_lock_command(cmd)) {
    if (const int error = next_failure(call::fcntl_lock)) {
      errno = error;
      return -1;
    }
  }
  return ::fcntl(fd, cmd, fl);
}

int open(const char* path, int flags, mode_t mode) {
  if (const int error = next_failure(call::open)) {
    errno = error;
    return -1;
  }
  return ::open(path, flags, mode);
}

int close(int fd) {
  // A failed close still closes the descriptor on Linux: do so, then report the failure.
  const int error = next_failure(call::close);
  const int result = ::close(fd);
  if (error != 0) {
    errno = error;
    return -1;
  }
  return result;
}

int fstat(int fd, struct stat* st) { return ::fstat(fd, st); }
int stat(const char* path, struct stat* st) { return ::stat(path, st); }
int lstat(const char* path, struct stat* st) { return ::lstat(path, st); }
int unlink(const char* path) { return ::unlink(path); }

}  // namespace fasteners::mock
