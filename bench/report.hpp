// The benchmark's results, the speed targets, and their table, JSON and CSV forms.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"

namespace fasteners_bench {

struct machine_info {
  std::string cpu;
  long cores = 0;
  std::string kernel;
  std::string date;         // UTC, ISO 8601.
  std::string load_before;  // /proc/loadavg's three averages.
  std::string load_after;
  std::string compiler;
  std::string build;
};

// Sections 1 and 2: hand-off latency and the waiter's CPU.
struct handoff_result {
  std::string key;
  std::string label;
  bool ran = false;
  std::string note;  // Why it did not run.
  summary latency_ns;
  summary release_ns;           // A's release call, from its start to its return.
  summary wall_ns;              // Of each wait, from B's call to B holding.
  summary cpu_ns;               // B's CPU time per wait.
  double cpu_fraction = 0;      // Total CPU over total wall time of waiting.
  bool kernel_checked = false;  // /proc/locks was checked before each release.
  int not_yet_blocked = 0;      // Rounds in which B was not yet blocked after the hold.
};

// Section 3: uncontended acquire+release pairs in one process.
struct uncontended_result {
  std::string key;
  std::string label;
  bool ran = false;
  std::string note;
  double ns = 0;
};

// Section 4: processes contending for one lock.
struct throughput_result {
  std::string key;
  std::string label;
  bool ran = false;
  std::string note;
  double seconds = 0;
  std::vector<std::uint64_t> per_process;
  std::uint64_t total = 0;    // Increments the processes counted.
  std::uint64_t counter = 0;  // The counter's final value.
  double per_second = 0;
};

// Section 5: how late a 10 ms timed wait on a held lock returns.
struct timeout_result {
  std::string key;
  std::string label;
  bool ran = false;
  std::string note;
  std::int64_t timeout_ns = 0;
  summary elapsed_ns;
  summary lateness_ns;
  int early = 0;     // Returned before the timeout.
  int acquired = 0;  // Wrongly acquired a lock that was held.
};

struct target {
  std::string name;
  std::string figure;  // The measured value and what it was compared with.
  bool evaluated = false;
  bool pass = false;
  bool extra = false;  // Reported beside the targets, not one of them.
};

struct results {
  machine_info machine;
  settings config;
  std::string fasteners_version;
  std::string boost_version;   // Empty if not built in.
  std::string python_version;  // python-fasteners'; empty if unavailable.
  std::vector<handoff_result> handoff;
  std::vector<uncontended_result> uncontended;
  std::vector<throughput_result> throughput;
  std::vector<timeout_result> timeout;
  std::vector<target> targets;
  double total_seconds = 0;
};

// Fills results.targets from the measurements.
void evaluate_targets(results& r);
void print_table(const results& r, std::FILE* out);
// Throw std::runtime_error if the file cannot be written.
void write_json(const results& r, const std::string& path);
void write_csv(const results& r, const std::string& path);

}  // namespace fasteners_bench
