// The measurements that need several processes, and the child programs they run.
#pragma once

#include <random>
#include <string>
#include <vector>

#include "common.hpp"
#include "contenders.hpp"
#include "report.hpp"

namespace fasteners_bench {

// The contenders of one section take turns round by round (in a shuffled order each round), so
// that a change in the machine's load hits all of them alike. Results come in the given order.
// They throw on failures (a child that dies, a timed hand-off wait that times out).

// Sections 1 and 2: hand-off latency and the waiter's CPU.
std::vector<handoff_result> measure_handoff(const std::vector<const contender*>& who,
                                            const settings& config, std::mt19937& rng);
// Section 1b: the same with this process and the waiters pinned to one CPU (this process's CPU
// affinity is restored after). Round ratios are against the raw_ofd contender of `who`, if any.
std::vector<same_cpu_result> measure_same_cpu_handoff(const std::vector<const contender*>& who,
                                                      const settings& config, std::mt19937& rng);
// Section 4, for contenders that are C++ locks, in config.throughput_slices turns each.
std::vector<throughput_result> measure_throughput(const std::vector<const contender*>& who,
                                                  const settings& config, std::mt19937& rng);
// Section 5, for timed contenders.
std::vector<timeout_result> measure_timeout(const std::vector<const contender*>& who,
                                            const settings& config, std::mt19937& rng);

// The hidden child modes of this program; `args` are the arguments after the switch.
// --child-waiter KEY PATH TIMEOUT_NS: waits once per 'g' on stdin, as the Python waiter does.
int child_waiter_main(const std::vector<std::string>& args);
// --child-worker KEY LOCK_PATH COUNTER_PATH START_NS END_NS: increments the shared counter under
// the lock from START_NS to END_NS (monotonic), then writes its count (a uint64) to stdout.
int child_worker_main(const std::vector<std::string>& args);

}  // namespace fasteners_bench
