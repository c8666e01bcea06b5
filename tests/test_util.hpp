// Shared helpers of the tests: temp directories, helper processes, lock kinds, fd counts, timing.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "common/fixtures.hpp"
#include "fasteners/fasteners.hpp"

namespace fasteners_test {

// Whether the library was built with FASTENERS_CLASSIC_FCNTL (process-owned fcntl locks).
#ifdef FASTENERS_TEST_CLASSIC_FCNTL
inline constexpr bool k_classic_fcntl = true;
#else
inline constexpr bool k_classic_fcntl = false;
#endif

// A child process whose stdin and stdout are pipes to this process. Killed (SIGKILL) and reaped
// on destruction if it still runs.
class child_process {
 public:
  // Starts `argv` (argv[0] is the program's path).
  explicit child_process(const std::vector<std::string>& argv);
  ~child_process();
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&&) = delete;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  pid_t pid() const noexcept { return pid_; }
  // Reads one line of the child's stdout without its newline; nullopt on timeout or end of file.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = k_long);
  // Writes `line` and a newline to the child's stdin; false if that failed.
  bool write_line(const std::string& line);
  // Closes the child's stdin: helpers that wait for it then go on.
  void close_stdin();
  // Whether the child has not exited yet (does not reap it).
  bool running() const;
  void kill(int sig) const;
  // Waits for the child to end and returns its exit code, or 128 + the signal that ended it; kills
  // it and returns -1 if it has not ended within `timeout`.
  int wait(std::chrono::milliseconds timeout = k_long);
  // Closes stdin, then waits.
  int finish(std::chrono::milliseconds timeout = k_long);

 private:
  pid_t pid_ = -1;
  int in_ = -1;   // writes to the child's stdin
  int out_ = -1;  // reads the child's stdout
  std::string buffer_;
};

// Waits for process `pid` (a child of this process) as child_process::wait does.
int wait_for_pid(pid_t pid, std::chrono::milliseconds timeout = k_long);
// Whether process `pid` exists and has not ended (a zombie has ended).
bool process_alive(pid_t pid);

// Re-executes this test binary (/proc/self/exe) as the helper `name` (see FASTENERS_TEST_HELPER).
child_process spawn_helper(const std::string& name, const std::vector<std::string>& args = {});
// Runs a helper with its stdin closed and returns its exit code (as child_process::wait).
int run_helper(const std::string& name, const std::vector<std::string>& args = {},
               std::chrono::milliseconds timeout = k_long);

// Helper "try": another process tries once to take a lock of kind `k` on `path`; returns
// k_acquired or k_busy (or another code for an error).
int try_in_child(kind k, const std::filesystem::path& path);
// Helper "hold": another process takes a lock of kind `k` on `path` (waiting as needed) and holds
// it until its stdin is closed (finish() releases it and returns 0). Adds a test failure if the
// child does not report the lock within k_long.
child_process hold_in_child(kind k, const std::filesystem::path& path);

// The helpers a test binary can run in a child process: `int f(const std::vector<std::string>&)`
// returns the exit code. Register one at namespace scope:
//   FASTENERS_TEST_HELPER(name) { ... return 0; }
using helper_function = int (*)(const std::vector<std::string>& args);
bool register_helper(const char* name, helper_function f);
#define FASTENERS_TEST_HELPER(name)                               \
  static int name##_helper(const std::vector<std::string>& args); \
  [[maybe_unused]] static const bool name##_helper_registered =   \
      ::fasteners_test::register_helper(#name, &name##_helper);   \
  static int name##_helper([[maybe_unused]] const std::vector<std::string>& args)

// In a helper: prints `message` to stderr and returns `code`, for `return fail(code, "...")`.
int fail(int code, const std::string& message);
// In a helper: if running as root, drops to uid/gid 65534 for good (CI runs as root, and
// permission checks mean nothing for root). Returns whether the process now runs unprivileged.
bool drop_privileges();

// Counts the open file descriptors of this process.
std::size_t count_open_fds();
// The descriptors of this process that refer to `path`'s file.
std::vector<int> fds_referring_to(const std::filesystem::path& path);
// The files the descriptors of process `pid` refer to.
std::vector<std::string> fd_targets(pid_t pid);

// The counter file of the increment tests: a number in fixed width, read and written in place.
void write_counter(const std::filesystem::path& path, long value);
long read_counter(const std::filesystem::path& path);
// Helper "count": `processes` processes with `threads` threads each increment the counter at
// `counter` `iterations` times per thread under a lock of kind `k` on `lock`, each thread with
// its own lock object or all threads of a process sharing one. Returns whether all exited 0.
bool run_counting_processes(kind k, const std::filesystem::path& lock,
                            const std::filesystem::path& counter, int processes, int threads,
                            int iterations, bool shared_object);
// Increments the counter in the file open as `fd`, leaving a window for lost updates.
void increment_counter(int fd);

// Records who is inside a critical section, to catch the overlaps a lock must prevent.
class occupancy {
 public:
  void enter_exclusive();
  void leave_exclusive() { writers_.fetch_sub(1); }
  void enter_shared();
  void leave_shared() { readers_.fetch_sub(1); }
  // Whether a writer ever overlapped another writer or a reader.
  bool violated() const { return violated_.load(); }
  // The most readers inside at once.
  int max_shared() const { return max_readers_.load(); }

 private:
  std::atomic<int> writers_{0};
  std::atomic<int> readers_{0};
  std::atomic<int> max_readers_{0};
  std::atomic<bool> violated_{false};
};

// Counts down to zero; waiters give up after a timeout (so a broken lock cannot hang a test).
class latch {
 public:
  explicit latch(int count) : count_(count) {}
  void count_down();
  // Whether the count reached zero within `timeout`.
  bool wait_for(std::chrono::milliseconds timeout = k_long);
  bool arrive_and_wait_for(std::chrono::milliseconds timeout = k_long) {
    count_down();
    return wait_for(timeout);
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_;
};

// Takes a lock on a thread of its own (running `acquire`) and holds it until release() (which
// runs `release` on that thread), so that the testing thread does not itself hold the lock.
class thread_holder {
 public:
  thread_holder(std::function<bool()> acquire, std::function<void()> release);
  explicit thread_holder(kind_lock& lock)
      : thread_holder([&lock] { return lock.acquire(); }, [&lock] { lock.release(); }) {}
  ~thread_holder();
  thread_holder(const thread_holder&) = delete;
  thread_holder& operator=(const thread_holder&) = delete;

  // Whether `acquire` returned true within `timeout`.
  bool wait_held(std::chrono::milliseconds timeout = k_long);
  // Whether `acquire` has returned.
  bool done_acquiring();
  // Makes the thread release (if it acquired) and joins it; true if nothing threw.
  bool release();

 private:
  enum class state { acquiring, held, failed, releasing, done };
  std::mutex mutex_;
  std::condition_variable cv_;
  state state_ = state::acquiring;
  bool ok_ = true;
  std::thread thread_;
};

}  // namespace fasteners_test
