// Helpers of the Windows tests: temp directories, helper processes, events, handle counts.
#pragma once

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "common/fixtures.hpp"
#include "fasteners/fasteners.hpp"

namespace fasteners_windows_test {

// The lock kinds, kind_lock and the fixtures are shared with the POSIX suite.
using fasteners_test::all_kind_pairs;
using fasteners_test::all_kinds;
using fasteners_test::conflicting_kind_pairs;
using fasteners_test::conflicts;
using fasteners_test::kind;
using fasteners_test::kind_lock;
using fasteners_test::kind_name;
using fasteners_test::pair_name;
using fasteners_test::parse_kind;
using fasteners_test::to_string;

using fasteners_test::k_acquired;
using fasteners_test::k_busy;
using fasteners_test::k_error;
using fasteners_test::k_long;
using fasteners_test::k_quiet;
using fasteners_test::k_short;
using fasteners_test::k_upper;
using fasteners_test::kind_pair_test;
using fasteners_test::lock_test;
using fasteners_test::seconds_since;
using fasteners_test::steady;
using fasteners_test::temp_dir;
using namespace std::chrono_literals;

// Whether this process runs under Wine rather than Windows.
bool running_on_wine();

// A manual-reset event with a unique name, so a helper process can open it by name.
class named_event {
 public:
  named_event();
  ~named_event();
  named_event(const named_event&) = delete;
  named_event& operator=(const named_event&) = delete;
  const std::wstring& name() const noexcept { return name_; }
  void set();
  bool wait(std::chrono::milliseconds timeout = k_long) const;

 private:
  std::wstring name_;
  HANDLE handle_;
};

// A helper process: this test program started again with a hidden switch, a helper name and
// arguments. Terminated on destruction if it still runs.
class child_process {
 public:
  // `environment` entries ("NAME=value") are added to this process's environment for the child;
  // with `inherit_handles` the child inherits every inheritable handle of this process.
  child_process(const std::string& helper, const std::vector<std::wstring>& args,
                const std::vector<std::wstring>& environment = {}, bool inherit_handles = false);
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  HANDLE process() const noexcept { return process_; }
  bool running() const;
  void terminate();
  // Waits for the child to end and returns its exit code; terminates it and returns -1 if it has
  // not ended within `timeout`.
  int wait(std::chrono::milliseconds timeout = k_long);

 private:
  HANDLE process_ = nullptr;
};

// The program and arguments that run a helper, for tests that have another program start it.
std::vector<std::wstring> helper_command(const std::string& helper,
                                         const std::vector<std::wstring>& args);

// Quotes one argument of a command line so that CommandLineToArgvW gives it back unchanged.
std::wstring quote(const std::wstring& arg);

// Runs a helper to its end and returns its exit code (as child_process::wait).
int run_helper(const std::string& helper, const std::vector<std::wstring>& args,
               const std::vector<std::wstring>& environment = {});

// Helper "attempt": another process tries once to take a lock of kind `k` on `path`; returns
// k_acquired or k_busy (or another code for an error).
int try_in_child(kind k, const std::filesystem::path& path);

// Helper "hold": another process takes a lock of kind `k` on `path` (waiting as needed), sets
// `ready` and holds the lock until `release` is set; then it releases and exits 0.
class held_in_child {
 public:
  held_in_child(kind k, const std::filesystem::path& path);
  // Whether the child reported the lock within `timeout`.
  bool ready(std::chrono::milliseconds timeout = k_long) const { return ready_.wait(timeout); }
  // Lets the child release; returns its exit code.
  int release();
  child_process& child() { return child_; }

 private:
  named_event ready_;
  named_event release_;
  child_process child_;
};

// The helpers a test program can run in a child process: `int f(const std::vector<std::wstring>&)`
// returns the exit code. Register one at namespace scope:
//   FASTENERS_WINDOWS_HELPER(name) { ... return 0; }
using helper_function = int (*)(const std::vector<std::wstring>& args);
bool register_helper(const char* name, helper_function f);
#define FASTENERS_WINDOWS_HELPER(name)                                  \
  static int name##_helper(const std::vector<std::wstring>& args);      \
  [[maybe_unused]] static const bool name##_helper_registered =         \
      ::fasteners_windows_test::register_helper(#name, &name##_helper); \
  static int name##_helper([[maybe_unused]] const std::vector<std::wstring>& args)

// Runs the helper named on the command line if this process is a helper process; returns its
// exit code, or nothing for the test process itself.
std::optional<int> run_helper_if_asked();

// In a helper: prints `message` to stderr and returns k_error.
int fail(const std::string& message);

// Opens an event of the test process by name for setting and waiting.
HANDLE open_event(const std::wstring& name);

// The number of handles this process has open. GetProcessHandleCount reports 0 under Wine, so
// the system's handle table is read there.
std::size_t handle_count();

// The identity (volume serial number, file index) of the file that `handle` refers to.
std::pair<std::uint64_t, std::uint64_t> identity_of(HANDLE handle);
std::pair<std::uint64_t, std::uint64_t> identity_of(const std::filesystem::path& path);

// A handle on `path` opened as python-fasteners opens its lock files (for appending, sharing
// reading and writing, not deletion), through which tests lock byte ranges directly.
class foreign_handle {
 public:
  explicit foreign_handle(const std::filesystem::path& path);
  ~foreign_handle();
  foreign_handle(const foreign_handle&) = delete;
  foreign_handle& operator=(const foreign_handle&) = delete;
  // LockFileEx on [offset, offset + 1) without waiting; returns whether it was granted.
  bool try_lock(bool exclusive, std::uint64_t offset = 0);
  void unlock(std::uint64_t offset = 0);
  HANDLE get() const noexcept { return handle_; }

 private:
  HANDLE handle_;
};

// The counter file of the increment tests: a number in fixed width, read and written in place.
void write_counter(const std::filesystem::path& path, long value);
long read_counter(const std::filesystem::path& path);

// Command-line argument conversions for helpers.
std::wstring to_wide(const std::string& s);
std::string to_narrow(const std::wstring& s);

}  // namespace fasteners_windows_test
