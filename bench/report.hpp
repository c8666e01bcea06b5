// The benchmark's results, the speed targets, and their table, JSON and CSV forms.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "report_common.hpp"

namespace fasteners_bench {

// Sections 1 and 2: hand-off latency and the waiter's CPU.
struct handoff_result : result_row, handoff_times {
  double cpu_fraction = 0;      // Total CPU over total wall time of waiting.
  bool kernel_checked = false;  // /proc/locks was checked before each release.
  int not_yet_blocked = 0;      // Rounds in which B was not yet blocked after the hold.
};

// Section 1b: the hand-off with A and B pinned to one CPU.
struct same_cpu_result : handoff_result {
  int cpu = -1;         // The CPU both processes ran on.
  summary round_ratio;  // Each round's latency over raw F_OFD_SETLKW's in the same round.
};

// Section 3: uncontended acquire+release pairs in one process.
struct uncontended_result : result_row {
  double ns = 0;
};

// Section 4: processes contending for one lock.
struct throughput_result : result_row {
  double seconds = 0;
  std::vector<std::uint64_t> per_process;
  std::uint64_t total = 0;    // Increments the processes counted.
  std::uint64_t counter = 0;  // The counter's final value.
  double per_second = 0;
};

// Section 5: how late a 10 ms timed wait on a held lock returns.
struct timeout_result : result_row {
  std::int64_t timeout_ns = 0;
  summary elapsed_ns;
  summary lateness_ns;
  int early = 0;     // Returned before the timeout.
  int acquired = 0;  // Wrongly acquired a lock that was held.
};

struct results : run_results<settings> {
  std::string boost_version;   // Empty if not built in.
  std::string python_version;  // python-fasteners'; empty if unavailable.
  std::vector<handoff_result> handoff;
  std::vector<same_cpu_result> same_cpu;
  std::vector<uncontended_result> uncontended;
  std::vector<throughput_result> throughput;
  std::vector<timeout_result> timeout;
};

// Fills results.targets from the measurements.
void evaluate_targets(results& r);
void print_table(const results& r, std::FILE* out);
// Throw std::runtime_error if the file cannot be written.
void write_json(const results& r, const std::string& path);
void write_csv(const results& r, const std::string& path);

}  // namespace fasteners_bench
