// Section 3 of the benchmark: uncontended acquire+release cost, with Google Benchmark.
#pragma once

#include <vector>

#include "common.hpp"
#include "report.hpp"

namespace fasteners_bench {

// Runs the in-process benchmarks (Google Benchmark's --benchmark_* flags apply) and returns the
// median nanoseconds per acquire+release pair of each.
std::vector<uncontended_result> measure_uncontended(const settings& config);

}  // namespace fasteners_bench
