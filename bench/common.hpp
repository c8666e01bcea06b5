// Shared pieces of the benchmarks: the run's settings, clocks, statistics and child processes.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
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
  bool same_cpu = true;           // Section 1b: the hand-off with both processes on one CPU.
  std::vector<std::string> only;  // Contender keys to measure; empty: all.
};

// Walks a command line: next() takes each argument in turn, value() the one after it.
class command_line {
 public:
  command_line(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool next(std::string& arg) {
    if (++i_ >= argc_) return false;
    arg = argv_[i_];
    return true;
  }
  // The current option's value; throws std::invalid_argument if there is none.
  std::string value() {
    if (i_ + 1 >= argc_) throw std::invalid_argument(std::string(argv_[i_]) + " needs a value");
    return argv_[++i_];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 0;
};

// The options both benchmarks take, into `o` (json, csv, fail_on_targets) and `o.config`
// (handoff_rounds, hold_min_ms, hold_max_ms, python, use_python); false for any other option.
template <class Options>
bool common_option(const std::string& arg, command_line& line, Options& o, const char* usage) {
  auto& c = o.config;
  if (arg == "--help" || arg == "-h") {
    std::fputs(usage, stdout);
    std::exit(0);
  } else if (arg == "--json") {
    o.json = line.value();
  } else if (arg == "--csv") {
    o.csv = line.value();
  } else if (arg == "--rounds") {
    c.handoff_rounds = std::stoi(line.value());
  } else if (arg == "--hold-min-ms") {
    c.hold_min_ms = std::stod(line.value());
  } else if (arg == "--hold-max-ms") {
    c.hold_max_ms = std::stod(line.value());
  } else if (arg == "--python") {
    c.python = line.value();
  } else if (arg == "--no-python") {
    c.use_python = false;
  } else if (arg == "--fail-on-targets") {
    o.fail_on_targets = true;
  } else {
    return false;
  }
  return true;
}

// CLOCK_MONOTONIC, which every process on the machine shares, in nanoseconds.
std::int64_t now_ns();
// CPU time of the calling process (all its threads, exited ones included), in nanoseconds.
std::int64_t process_cpu_ns();
void sleep_for_ns(std::int64_t ns);
void sleep_until_ns(std::int64_t monotonic_ns);

struct summary {
  std::size_t count = 0;
  double min = 0;
  double p10 = 0;  // Nearest rank, as p90 and p99.
  double median = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
  double mean = 0;
};
summary summarize(std::vector<double> values);

// A shuffled order of 0..n-1, for one round of turns.
std::vector<std::size_t> turn_order(std::size_t n, std::mt19937& rng);
// `s` without its trailing line ends.
std::string trimmed(std::string s);

// A child process whose standard input and output are pipes to this one.
struct child_process {
  pid_t pid = -1;
  int to_child = -1;
  int from_child = -1;
};
// Starts argv[0] (a path, not searched) with argv. Throws std::system_error.
child_process spawn(const std::vector<std::string>& argv);
// One-byte commands and answers; expect_answer() throws if the answer is not `expected`.
void send_command(child_process& child, char command);
void expect_answer(child_process& child, char expected);
// Closes the pipes and waits for the child; returns its exit status, or 128 + signal.
int finish(child_process& child);
// Ends a child on the way out of a failed measurement; it may be blocked on a lock held here.
void abandon(child_process& child);
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

// A waiter's commands and answers: 'g' -> 'w' just before it waits, then a wait_record after it
// released again; 'q' or EOF ends it.
constexpr char k_go = 'g';
constexpr char k_quit = 'q';
constexpr char k_waiting = 'w';

// Asks a waiter to wait once and returns when it says it is about to.
void start_wait(child_process& waiter);
// Reads a waiter's record of a hand-off, which must have acquired (else throws, naming `label`).
wait_record read_handoff(child_process& waiter, const char* label);
// Sends 'q' and waits for the child; throws if it failed, naming it `what` ("the X waiter").
void stop_child(child_process& child, const std::string& what);

// The waiter's side: serves 'g' on stdin with acquire() (true if it acquired) and release(), and
// returns 0 on 'q' or EOF.
template <class Acquire, class Release, class Granted>
int serve_waits(Acquire acquire, Release release, Granted granted_ns) {
  for (;;) {
    char command = 0;
    const ssize_t n = ::read(STDIN_FILENO, &command, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n != 1 || command != k_go) return 0;
    write_all(STDOUT_FILENO, &k_waiting, 1);
    wait_record record{};
    record.start_ns = now_ns();
    const std::int64_t cpu = process_cpu_ns();
    const bool acquired = acquire();
    record.end_ns = now_ns();
    if (const std::int64_t granted = granted_ns()) record.end_ns = granted;
    record.cpu_ns = process_cpu_ns() - cpu;
    record.acquired = acquired ? 1 : 0;
    if (acquired) release();
    write_all(STDOUT_FILENO, &record, sizeof record);
  }
}

template <class Acquire, class Release>
int serve_waits(Acquire acquire, Release release) {
  return serve_waits(acquire, release, [] { return std::int64_t{0}; });
}

// What the counted hand-off rounds measured, in ns.
struct handoff_times {
  summary latency_ns;  // A's release call began -> B's acquire returned.
  summary release_ns;  // A's release call, from its start to its return.
  summary wall_ns;     // B's acquire call, from its start to its return.
  summary cpu_ns;      // B's process CPU time during its acquire call.
};

// The samples of the counted hand-off rounds, in ns.
struct handoff_samples {
  std::vector<double> latency;  // A's release call began -> B's acquire returned.
  std::vector<double> release;  // A's release call.
  std::vector<double> wall;     // B's acquire call.
  std::vector<double> cpu;      // B's process CPU time during its acquire call.
  void add(std::int64_t released, std::int64_t returned, const wait_record& record);
  void summarize_into(handoff_times& times) &&;
};

}  // namespace fasteners_bench
