// Stand-ins for the POSIX platform's system calls that fail on request.
#include "posix_mock.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>

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

// The path whose opens wait (see block_open), with its own mutex: a blocked open must not keep
// other mocked calls waiting.
struct open_blocker {
  std::mutex mutex;
  std::condition_variable changed;
  bool active = false;
  std::string path;
  int waiting = 0;
};

open_blocker& the_blocker() {
  static open_blocker b;
  return b;
}

void wait_if_blocked(const char* path) {
  auto& b = the_blocker();
  std::unique_lock<std::mutex> guard(b.mutex);
  if (!b.active || b.path != path) return;
  ++b.waiting;
  b.changed.notify_all();
  b.changed.wait_for(guard, std::chrono::seconds(60), [&] { return !b.active; });
  --b.waiting;
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
  unblock_open();
}

void block_open(const std::string& path) {
  auto& b = the_blocker();
  std::lock_guard<std::mutex> guard(b.mutex);
  b.active = true;
  b.path = path;
}

void unblock_open() {
  auto& b = the_blocker();
  std::lock_guard<std::mutex> guard(b.mutex);
  b.active = false;
  b.changed.notify_all();
}

int blocked_opens() {
  auto& b = the_blocker();
  std::lock_guard<std::mutex> guard(b.mutex);
  return b.waiting;
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
  wait_if_blocked(path);
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
