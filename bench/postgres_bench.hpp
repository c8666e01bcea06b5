// The PostgreSQL benchmark (fasteners_postgres_bench): its settings, results and report.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "report_common.hpp"

namespace fasteners_bench {

struct pg_settings {
  std::string conninfo;      // libpq connection string of the server; empty: libpq's defaults.
  int handoff_rounds = 300;  // Hand-off rounds per contender (after the warm-up rounds).
  int warmup_rounds = 5;     // Hand-off rounds not counted (the first acquire connects).
  int pairs = 2000;          // Uncontended acquire+release pairs per contender,
  int block = 50;            // measured in turns of this many pairs.
  double hold_min_ms = 2;    // A holds the lock this long at least after B said it waits,
  double hold_max_ms = 12;   // and at most this long (uniformly random in between).
  double timeout_s = 10;     // The timeout of try_lock_for() in both measurements.
  std::int64_t queued_wait_ns = 2 * k_ns_per_s;  // How long to wait for B to show in pg_locks.
  std::string self;                              // This program, re-executed for the waiters.
  std::string python = "/usr/bin/python3";
  bool use_python = true;
  // Each client process and its session's server process run on one CPU: the holders' (and the
  // uncontended loops') on cpu_holder, the waiters' on cpu_waiter. Left to the scheduler, a
  // session's round trip costs several times more when the two land on different CPUs, which
  // would make the figures depend on where each session happens to land.
  bool pin = true;
  int cpu_holder = 0;
  int cpu_waiter = 0;
};

// Section 1: a holder releases, a waiter blocked in another process gets the lock.
struct pg_handoff_result : result_row, handoff_times {
  int not_seen = 0;  // Rounds in which B never showed as a waiter in pg_locks before the release.
};

// Section 2: uncontended acquire+release pairs through one session.
struct pg_pair_result : result_row {
  summary pair_ns;
};

struct pg_results : run_results<pg_settings> {
  std::string server_version;    // The server's server_version.
  std::string server_via;        // "a Unix socket" or "TCP to HOST".
  std::string libpq_version;     // PQlibVersion().
  std::string psycopg2_version;  // Empty if unavailable.
  std::string python_version;
  std::string placement;  // Where the processes ran, and whether pinning them worked.
  std::vector<pg_handoff_result> handoff;
  std::vector<pg_pair_result> pairs;
};

// Fills results.targets from the measurements.
void pg_evaluate_targets(pg_results& r);
void pg_print_table(const pg_results& r, std::FILE* out);
// Throw std::runtime_error if the file cannot be written.
void pg_write_json(const pg_results& r, const std::string& path);
void pg_write_csv(const pg_results& r, const std::string& path);
// A Markdown page with the summary table, the full table and the plot `png` (relative to it).
void pg_write_markdown(const pg_results& r, const std::string& path, const std::string& png);

}  // namespace fasteners_bench
