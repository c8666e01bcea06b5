// Shared pieces of the benchmark: the run's settings, clocks, statistics and child processes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fasteners_bench {

constexpr std::int64_t k_ns_per_ms = 1000000;
constexpr std::int64_t k_ns_per_s = 1000000000;

// What one run measures and how; set from the command line.
struct settings {
  int handoff_rounds = 300;  // Hand-off rounds per contender (after the warm-up rounds).
  int warmup_rounds = 5;
  int timeout_rounds = 200;       // try_lock_for(10 ms) rounds per contender.
  double hold_min_ms = 2;         // A holds the lock this long at least after B said it waits,
  double hold_max_ms = 12;        // and at most this long (uniformly random in between).
  double throughput_seconds = 2;  // Wall time of each throughput contest,
  int throughput_slices = 4;      // run in this many turns.
  int processes = 4;              // Processes in the throughput contest.
  int repetitions = 5;            // Google Benchmark repetitions (the median is reported).
  double min_time = 0.2;          // Google Benchmark minimum time per repetition, in seconds.
  std::int64_t handoff_timeout_ns = 10 * k_ns_per_s;  // The timeout of timed hand-off waits.
  std::int64_t accuracy_timeout_ns = 10 * k_ns_per_ms;
  std::string dir;   // Where the lock files go.
  std::string self;  // This program, re-executed for the child processes.
  std::string python = "/usr/bin/python3";
  bool use_python = true;
  bool use_boost = true;
  std::vector<std::string> only;  // Contender keys to measure; empty: all.
};

// CLOCK_MONOTONIC, which every process on the machine shares, in nanoseconds.
std::int64_t now_ns();
// CPU time of the calling process (all its threads, exited ones included), in nanoseconds.
std::int64_t process_cpu_ns();
void sleep_for_ns(std::int64_t ns);
void sleep_until_ns(std::int64_t monotonic_ns);

struct summary {
  std::size_t count = 0;
  double min = 0;
  double median = 0;
  double p99 = 0;  // Nearest rank.
  double max = 0;
  double mean = 0;
};
summary summarize(std::vector<double> values);

// A child process whose standard input and output are pipes to this one.
struct child_process {
  pid_t pid = -1;
  int to_child = -1;
  int from_child = -1;
};
// Starts argv[0] (a path, not searched) with argv. Throws std::system_error.
child_process spawn(const std::vector<std::string>& argv);
// Closes the pipes and waits for the child; returns its exit status, or 128 + signal.
int finish(child_process& child);
// Whole-buffer pipe I/O; throw std::runtime_error on EOF and std::system_error on errors.
void write_all(int fd, const void* data, std::size_t size);
void read_all(int fd, void* data, std::size_t size);
// Runs argv to completion and returns what it printed, or nothing-and-false if it failed.
bool capture_output(const std::vector<std::string>& argv, std::string& output);

// Whether /proc/locks shows a process blocked in the kernel waiting for a lock on this inode.
bool waiter_blocked_in_kernel(std::uint64_t inode);

// What a waiter reports after each wait: monotonic times around the acquire call, the CPU time
// the call took and whether it acquired. python-fasteners' waiter packs the same four int64s.
struct wait_record {
  std::int64_t start_ns;
  std::int64_t end_ns;
  std::int64_t cpu_ns;
  std::int64_t acquired;
};
static_assert(sizeof(wait_record) == 32, "the record layout is shared with the Python waiter");

}  // namespace fasteners_bench
