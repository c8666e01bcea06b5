// The portable test-support layer: what the tests of every platform use (common/test_support.cpp
// and one test_support.cpp per platform implement it).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/fixtures.hpp"
#include "common/lock_kinds.hpp"
#include "fasteners/fasteners.hpp"

namespace fasteners_test {

// Whether the library was built with FASTENERS_CLASSIC_FCNTL (process-owned fcntl locks; POSIX).
#ifdef FASTENERS_TEST_CLASSIC_FCNTL
inline constexpr bool k_classic_fcntl = true;
#else
inline constexpr bool k_classic_fcntl = false;
#endif

// The exit code of a child ended by child_process::kill() (128 + SIGKILL on every platform).
inline constexpr int k_killed = 137;

// Helper arguments are UTF-8 on every platform: a path as an argument, and back.
std::string arg_of(const std::filesystem::path& path);
std::filesystem::path path_of(const std::string& arg);

// A child process whose stdin and stdout are pipes to this process (its stderr is this
// process's). Killed and reaped on destruction if it still runs.
class child_process {
 public:
  // Starts `argv` (argv[0] is the program's path; UTF-8).
  explicit child_process(const std::vector<std::string>& argv);
  ~child_process();
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&&) = delete;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  // The child's process id.
  int id() const noexcept;
  // Reads one line of the child's stdout without its line end; nullopt on timeout or end of file.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout = k_long);
  // Writes `line` and a newline to the child's stdin; false if that failed.
  bool write_line(const std::string& line);
  // Closes the child's stdin: helpers that wait for it then go on.
  void close_stdin();
  // Whether the child has not ended yet.
  bool running() const;
  // Ends the child at once, as a crash would (SIGKILL; TerminateProcess with k_killed).
  void kill();
  // Waits for the child to end and returns its exit code (k_killed after kill()); kills it and
  // returns -1 if it has not ended within `timeout`.
  int wait(std::chrono::milliseconds timeout = k_long);
  // Closes stdin, then waits.
  int finish(std::chrono::milliseconds timeout = k_long);

 private:
  // Appends what the child wrote to its stdout to `output_`; false if nothing came by `deadline`
  // or the child closed its stdout.
  bool read_output(steady::time_point deadline);

  struct state;  // The platform's process and pipes.
  std::unique_ptr<state> state_;
  std::string output_;  // What read_line has not returned yet.
};

// The program and arguments that run this test program as the helper `name` (see
// FASTENERS_TEST_HELPER), for tests that have another program start it.
std::vector<std::string> helper_command(const std::string& name,
                                        const std::vector<std::string>& args = {});
// Runs this test program again as the helper `name`.
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

// Helper "sem_hold": another process takes `k` slots of the semaphore file `path` of `n` slots
// and holds them until its stdin is closed (finish() gives them back and returns 0). Adds a test
// failure if the child does not report them within k_long.
child_process hold_slots_in_child(const std::filesystem::path& path, std::size_t n, std::size_t k);

// Waits until a writer waits for the lock on `path`, which new readers of this process then find
// taken (writers are not starved); false if none does within k_long.
bool wait_for_waiting_writer(const std::filesystem::path& path);

// The helpers a test program can run in a child process: `int f(const std::vector<std::string>&)`
// gets the UTF-8 arguments and returns the exit code. Register one at namespace scope:
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
// In a helper: prints `line` to stdout, then waits until stdin ends (the test's finish()).
void report_and_wait(const std::string& line);

// Whether the message of `e` names `path` (in UTF-8, as the library's errors do).
bool names(const std::exception& e, const std::filesystem::path& path);
// In a helper: runs `f`, which must throw std::system_error naming `path` (with `expected` if
// given); returns 0, or a failure code after printing why.
int check_error_naming(const std::filesystem::path& path, const std::function<void()>& f,
                       const std::string& what, std::optional<std::errc> expected = std::nullopt);
// Helper "expect_error KIND PATH", for run_helper: blocking, non-blocking and timed acquires of a
// lock of kind KIND on PATH must all throw std::system_error naming PATH (in a child process, so
// that a test catches a call that hangs).

// The number of descriptors (handles on Windows) this process has open.
std::size_t count_open_handles();
// The descriptors (handles) of this process that refer to `path`'s file.
std::vector<std::intptr_t> handles_referring_to(const std::filesystem::path& path);
// Whether a child process that this process starts would inherit `handle` (no close-on-exec;
// HANDLE_FLAG_INHERIT).
bool inherited_by_children(std::intptr_t handle);
// The identity of the file at `path` (device and inode; volume and file index), which stays when
// the file is written and changes when another file takes its name.
std::pair<std::uint64_t, std::uint64_t> file_identity(const std::filesystem::path& path);
// A character device every process may open (/dev/null, NUL), and whether `path` is one.
std::filesystem::path null_device();
bool is_character_device(const std::filesystem::path& path);
// Whether lock_options::remove_on_release deletes a lock file in `dir` when the last holder of
// kind `k` releases it: always on POSIX; on Windows after an exclusive or write lock, where the
// file system deletes open files at once.
bool remove_on_release_deletes(const std::filesystem::path& dir, kind k);

// The counter file of the increment tests: a number in fixed width, read and written in place.
void write_counter(const std::filesystem::path& path, long value);
long read_counter(const std::filesystem::path& path);
// The counter file opened for increments in place.
class counter_file {
 public:
  explicit counter_file(const std::filesystem::path& path);
  ~counter_file();
  counter_file(const counter_file&) = delete;
  counter_file& operator=(const counter_file&) = delete;
  // Reads the number, yields the processor (inviting a lost update, should the lock fail), writes
  // the number plus one. Throws std::system_error if the file cannot be read or written.
  void increment();

 private:
  std::intptr_t handle_;
};
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
  // For a lock object of one kind (basic_kind_lock) on any backend.
  template <class KindLock>
  explicit thread_holder(KindLock& lock)
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

// Runs `f` on a thread of its own and returns its result: what another thread of this process,
// one that holds no lock, gets.
template <class F>
auto on_other_thread(F f) {
  decltype(f()) result{};
  std::thread t([&] { result = f(); });
  t.join();
  return result;
}

// The platform's part of main(): the UTF-8 arguments of this process, and its set-up before the
// tests run.
std::vector<std::string> command_line(int argc, char** argv);
void prepare_test_process();
// This test program's path (UTF-8).
std::string this_program();

}  // namespace fasteners_test
