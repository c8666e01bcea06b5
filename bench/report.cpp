// Turns the measurements into the speed targets' verdicts, a table, and JSON and CSV files.
#include "report.hpp"

#include <string>

namespace fasteners_bench {
namespace {

std::int64_t lost(const throughput_result& t) {
  return static_cast<std::int64_t>(t.total) - static_cast<std::int64_t>(t.counter);
}

target uncontended_target(const results& r, const char* name, const char* key, const char* baseline,
                          double limit, bool extra = false) {
  target t;
  t.name = name;
  t.extra = extra;
  const auto* row = find(r.uncontended, key);
  const auto* base = find(r.uncontended, baseline);
  t.evaluated = row && base && base->ns > 0;
  if (t.evaluated) {
    const double x = row->ns / base->ns;
    t.pass = x <= limit;
    t.figure = format("%.2fx (%.0f ns vs raw %.0f ns)", x, row->ns, base->ns);
  }
  return t;
}

// Met when the median of the row's per-round ratios against raw_ofd is at most `limit`.
target same_cpu_target(const results& r, const char* name, const char* key, double limit,
                       bool extra = false) {
  target t;
  t.name = name;
  t.extra = extra;
  const auto* row = find(r.same_cpu, key);
  const auto* raw = find(r.same_cpu, "raw_ofd");
  t.evaluated = row && raw && row->round_ratio.count > 0;
  if (!t.evaluated) t.figure = format("needs raw_ofd and %s in section 1b", key);
  if (t.evaluated) {
    const auto& q = row->round_ratio;
    t.pass = q.median <= limit;
    t.figure =
        format("%.2fx per round, p10 %.2fx, p90 %.2fx (%s vs raw %s)", q.median, q.p10, q.p90,
               duration(row->latency_ns.median).c_str(), duration(raw->latency_ns.median).c_str());
  }
  return t;
}

target waiter_cpu_target(const results& r) {
  target t;
  t.name = "try_lock_for() waiter CPU <= 2% of its wait (section 2)";
  const auto* timed = find(r.handoff, "fasteners_try_lock_for");
  t.evaluated = timed != nullptr;
  if (timed) {
    t.pass = timed->cpu_fraction <= 0.02;
    t.figure = format("%.2f%% (%s CPU per %s wait)", 100 * timed->cpu_fraction,
                      duration(timed->cpu_ns.mean).c_str(), duration(timed->wall_ns.mean).c_str());
  }
  return t;
}

// try_lock_for's p99 lateness against the plain sleep's, never early, never acquired.
target lateness_target(const results& r) {
  target t;
  t.name = format("try_lock_for(%.0f ms) p99 lateness <= plain sleep's + 0.5 ms, never early",
                  static_cast<double>(r.config.accuracy_timeout_ns) / 1e6);
  const auto* row = find(r.timeout, "fasteners_try_lock_for");
  const auto* sleep = find(r.timeout, "plain_sleep");
  t.evaluated = row && sleep;
  if (!t.evaluated) t.figure = "needs fasteners_try_lock_for and plain_sleep in section 5";
  if (t.evaluated) {
    const double excess = row->lateness_ns.p99 - sleep->lateness_ns.p99;
    t.pass = excess <= 0.5e6 && row->early == 0 && row->acquired == 0;
    t.figure =
        format("p99 %s late vs sleep %s (%s%s), %d early", duration(row->lateness_ns.p99).c_str(),
               duration(sleep->lateness_ns.p99).c_str(), excess < 0 ? "-" : "+",
               duration(excess < 0 ? -excess : excess).c_str(), row->early);
  }
  return t;
}

target throughput_target(const results& r, const std::string& name, const char* key) {
  target t;
  t.name = name;
  t.extra = true;
  const auto* raw_t = find(r.throughput, "raw_ofd");
  const auto* lib_t = find(r.throughput, key);
  t.evaluated = raw_t && lib_t && raw_t->per_second > 0;
  if (t.evaluated) {
    const double x = lib_t->per_second / raw_t->per_second;
    t.pass = lost(*lib_t) == 0 && lost(*raw_t) == 0;
    t.figure = format("%.2fx (%.0f/s vs raw %.0f/s), lost %lld", x, lib_t->per_second,
                      raw_t->per_second, static_cast<long long>(lost(*lib_t)));
  }
  return t;
}

// Reported beside the targets: the unpinned hand-off (section 1) against the same limits.
void unpinned_handoff_targets(results& r) {
  const auto* raw = find(r.handoff, "raw_ofd");
  const auto add = [&](const char* name, const char* key, double limit) {
    const auto* row = find(r.handoff, key);
    r.targets.push_back(median_target(name, row ? &row->latency_ns : nullptr,
                                      raw ? &raw->latency_ns : nullptr, limit, true));
  };
  add("unpinned lock() hand-off median <= 1.25x raw", "fasteners_lock", 1.25);
  add("unpinned keep_open lock() hand-off median <= 1.25x raw", "fasteners_lock_keep_open", 1.25);
  add("unpinned try_lock_for() hand-off median <= 2x raw", "fasteners_try_lock_for", 2.0);
}

}  // namespace

void evaluate_targets(results& r) {
  auto& t = r.targets;
  t.clear();
  t.push_back(same_cpu_target(r, "same-CPU lock() hand-off: median round ratio <= 1.25x raw",
                              "fasteners_lock", 1.25));
  t.push_back(same_cpu_target(r, "same-CPU try_lock_for() hand-off: median round ratio <= 2x raw",
                              "fasteners_try_lock_for", 2.0));
  t.push_back(same_cpu_target(
      r, "same-CPU async_lock() hand-off, release to handler: median round ratio <= 2x raw",
      "fasteners_async_lock", 2.0));
  t.push_back(uncontended_target(r,
                                 "keep_open: uncontended lock()+unlock() <= 1.15x raw fcntl pair",
                                 "fasteners_lock_keep_open", "raw_pair", 1.15));
  t.push_back(uncontended_target(r,
                                 "uncontended lock()+unlock() <= 1.15x raw open+lock+unlock+close",
                                 "fasteners_lock", "raw_open_pair_close", 1.15));
  t.push_back(waiter_cpu_target(r));
  t.push_back(lateness_target(r));

  t.push_back(same_cpu_target(r, "same-CPU keep_open lock() hand-off: median round ratio <= 1.25x",
                              "fasteners_lock_keep_open", 1.25, true));
  unpinned_handoff_targets(r);
  t.push_back(uncontended_target(
      r, "keep_open: uncontended lock_shared()+unlock_shared() <= 1.15x raw pair",
      "fasteners_shared_keep_open", "raw_pair", 1.15, true));
  t.push_back(uncontended_target(
      r, "uncontended lock_shared()+unlock_shared() <= 1.15x raw open+pair+close",
      "fasteners_shared", "raw_open_pair_close", 1.15, true));
  const int n = r.config.processes;
  t.push_back(throughput_target(r, format("%d-process throughput of lock(), no lost update", n),
                                "fasteners_lock"));
  t.push_back(
      throughput_target(r, format("keep_open: %d-process throughput of lock(), no lost update", n),
                        "fasteners_lock_keep_open"));
}

namespace {

// How many rounds, over all rows, waited longer than the hold for the waiter to block.
template <class Row>
void print_kernel_note(std::FILE* out, const std::vector<Row>& rows) {
  int late = 0;
  for (const auto& h : rows) late += h.not_yet_blocked;
  std::fprintf(out,
               "  Kernel waiters were seen blocked in /proc/locks before every release (after "
               "the hold, %d round(s) needed extra waiting).\n",
               late);
}

void print_handoff(std::FILE* out, const results& r) {
  const auto& c = r.config;
  std::fprintf(out,
               "\n1+2. Hand-off: process A holds the lock, process B waits, A releases.\n"
               "     Latency = A's release call -> B holding it; %d rounds; A holds %.0f..%.0f ms "
               "after B starts waiting;\n"
               "     timed waits use a %.0f s timeout. A release = median time A's release call "
               "takes;\n"
               "     waiter CPU = B's process CPU time during its acquire call (mean), and its "
               "share of B's wait.\n",
               c.handoff_rounds, c.hold_min_ms, c.hold_max_ms,
               static_cast<double>(c.handoff_timeout_ns) / 1e9);
  std::fprintf(out, "  %-36s %10s %10s %10s %8s %10s %10s %9s\n", "contender", "median", "p99",
               "max", "vs raw", "A release", "CPU/wait", "CPU/wall");
  const auto* raw = find(r.handoff, "raw_ofd");
  for (const auto& h : r.handoff) {
    if (print_skipped(out, 36, h)) continue;
    std::fprintf(out, "  %-36s %10s %10s %10s %8s %10s %10s %8.2f%%\n", h.label.c_str(),
                 duration(h.latency_ns.median).c_str(), duration(h.latency_ns.p99).c_str(),
                 duration(h.latency_ns.max).c_str(),
                 ratio(h.latency_ns.median, raw ? raw->latency_ns.median : 0).c_str(),
                 duration(h.release_ns.median).c_str(), duration(h.cpu_ns.mean).c_str(),
                 100 * h.cpu_fraction);
  }
  print_kernel_note(out, r.handoff);
}

// A ratio, or "n/a" where there is none (no raw_ofd row in the same rounds).
std::string times(const summary& s, double value) {
  return s.count > 0 ? format("%.2fx", value) : "n/a";
}

void print_same_cpu(std::FILE* out, const results& r) {
  if (!r.config.same_cpu) {
    std::fprintf(out, "\n1b. Same-CPU hand-off: skipped with --no-same-cpu\n");
    return;
  }
  const auto* raw = find(r.same_cpu, "raw_ofd");
  int cpu = -1;
  for (const auto& h : r.same_cpu) cpu = h.ran ? h.cpu : cpu;
  std::fprintf(out,
               "\n1b. Same-CPU hand-off: section 1 with A (this process) and B pinned to CPU %d, "
               "%d rounds.\n"
               "     Round ratio = a round's latency over raw F_OFD_SETLKW's in the same round: "
               "its p10, median and p90.\n",
               cpu, r.config.handoff_rounds);
  std::fprintf(out, "  %-36s %10s %10s %10s %8s %9s %9s %9s %9s\n", "contender", "median", "p99",
               "max", "vs raw", "ratio p10", "ratio med", "ratio p90", "CPU/wall");
  for (const auto& h : r.same_cpu) {
    if (print_skipped(out, 36, h)) continue;
    const auto& q = h.round_ratio;
    std::fprintf(out, "  %-36s %10s %10s %10s %8s %9s %9s %9s %8.2f%%\n", h.label.c_str(),
                 duration(h.latency_ns.median).c_str(), duration(h.latency_ns.p99).c_str(),
                 duration(h.latency_ns.max).c_str(),
                 ratio(h.latency_ns.median, raw ? raw->latency_ns.median : 0).c_str(),
                 times(q, q.p10).c_str(), times(q, q.median).c_str(), times(q, q.p90).c_str(),
                 100 * h.cpu_fraction);
  }
  print_kernel_note(out, r.same_cpu);
}

void print_uncontended(std::FILE* out, const results& r) {
  const auto* pair = find(r.uncontended, "raw_pair");
  const auto* open_pair = find(r.uncontended, "raw_open_pair_close");
  std::fprintf(out,
               "\n3. Uncontended acquire+release in one process (Google Benchmark, median of %d "
               "repetitions)\n",
               r.config.repetitions);
  std::fprintf(out, "  %-48s %10s %14s %22s\n", "operation", "ns/pair", "vs fcntl pair",
               "vs open+pair+close");
  for (const auto& u : r.uncontended) {
    if (print_skipped(out, 48, u)) continue;
    std::fprintf(out, "  %-48s %10.0f %14s %22s\n", u.label.c_str(), u.ns,
                 ratio(u.ns, pair ? pair->ns : 0).c_str(),
                 ratio(u.ns, open_pair ? open_pair->ns : 0).c_str());
  }
}

void print_throughput(std::FILE* out, const results& r) {
  const auto& c = r.config;
  std::fprintf(out,
               "\n4. Throughput: %d processes increment a counter in shared memory under the "
               "lock, %.1f s in %d turns\n",
               c.processes, c.throughput_seconds, c.throughput_slices);
  std::fprintf(out, "  %-36s %14s %8s %14s %8s  %s\n", "contender", "increments/s", "vs raw",
               "increments", "lost", "per process");
  const auto* raw_t = find(r.throughput, "raw_ofd");
  for (const auto& t : r.throughput) {
    if (print_skipped(out, 36, t)) continue;
    std::string shares;
    for (const auto n : t.per_process) {
      shares += (shares.empty() ? "" : " ") + std::to_string(n);
    }
    std::fprintf(out, "  %-36s %14.0f %8s %14llu %8lld  %s\n", t.label.c_str(), t.per_second,
                 ratio(t.per_second, raw_t ? raw_t->per_second : 0).c_str(),
                 static_cast<unsigned long long>(t.counter), static_cast<long long>(lost(t)),
                 shares.c_str());
  }
}

void print_timeout(std::FILE* out, const results& r) {
  std::fprintf(out,
               "\n5. Timeout accuracy: a %.0f ms timed wait on a lock another process holds, %d "
               "rounds;\n"
               "     the plain sleep's waiter sleeps as long (clock_nanosleep), in the same "
               "rounds\n",
               static_cast<double>(r.config.accuracy_timeout_ns) / 1e6, r.config.timeout_rounds);
  std::fprintf(out, "  %-36s %12s %12s %12s %12s %6s\n", "contender", "late median", "late p99",
               "late max", "p99 elapsed", "early");
  for (const auto& t : r.timeout) {
    if (print_skipped(out, 36, t)) continue;
    std::fprintf(out, "  %-36s %12s %12s %12s %12s %6d\n", t.label.c_str(),
                 duration(t.lateness_ns.median).c_str(), duration(t.lateness_ns.p99).c_str(),
                 duration(t.lateness_ns.max).c_str(), duration(t.elapsed_ns.p99).c_str(), t.early);
  }
}

}  // namespace

void print_table(const results& r, std::FILE* out) {
  std::fprintf(out, "fasteners %s benchmark\n", r.fasteners_version.c_str());
  print_machine(out, r.machine);
  std::fprintf(out, "peers: Boost.Interprocess %s, python-fasteners %s\n",
               r.boost_version.empty() ? "(not built in)" : r.boost_version.c_str(),
               r.python_version.empty() ? "(not available)" : r.python_version.c_str());
  print_handoff(out, r);
  print_same_cpu(out, r);
  print_uncontended(out, r);
  print_throughput(out, r);
  print_timeout(out, r);
  std::fprintf(out, "\nTargets, as ratios against the raw baseline of this run:\n");
  print_targets(out, r.targets, false, 76);
  std::fprintf(out, "Beside the targets:\n");
  print_targets(out, r.targets, true, 76);
  std::fprintf(out, "\nThe run took %.0f s.\n", r.total_seconds);
}

namespace {

void json_settings(std::FILE* out, const settings& c) {
  std::fprintf(out,
               "  \"settings\": {\"handoff_rounds\": %d, \"hold_min_ms\": %.3f, \"hold_max_ms\": "
               "%.3f, \"handoff_timeout_ns\": %lld, \"same_cpu\": %s, \"timeout_rounds\": %d, "
               "\"accuracy_timeout_ns\": %lld, \"processes\": %d, \"throughput_seconds\": %.3f, "
               "\"throughput_slices\": %d, "
               "\"repetitions\": %d, \"min_time_s\": %.3f},\n",
               c.handoff_rounds, c.hold_min_ms, c.hold_max_ms,
               static_cast<long long>(c.handoff_timeout_ns), c.same_cpu ? "true" : "false",
               c.timeout_rounds, static_cast<long long>(c.accuracy_timeout_ns), c.processes,
               c.throughput_seconds, c.throughput_slices, c.repetitions, c.min_time);
}

void json_handoff_row(std::FILE* out, const handoff_result& h) {
  json_handoff_times(out, h);
  std::fprintf(out, ", \"cpu_fraction\": %.6f, \"not_yet_blocked\": %d", h.cpu_fraction,
               h.not_yet_blocked);
}

// Section 1b's fields beyond section 1's: the CPU and the per-round ratios.
void json_same_cpu_row(std::FILE* out, const same_cpu_result& h) {
  json_handoff_row(out, h);
  const auto& q = h.round_ratio;
  std::fprintf(out,
               ", \"cpu\": %d, \"round_ratio\": {\"count\": %zu, \"min\": %.4f, \"p10\": %.4f, "
               "\"median\": %.4f, \"p90\": %.4f, \"p99\": %.4f, \"max\": %.4f, \"mean\": %.4f}",
               h.cpu, q.count, q.min, q.p10, q.median, q.p90, q.p99, q.max, q.mean);
}

void json_throughput_row(std::FILE* out, const throughput_result& t) {
  std::string shares;
  for (const auto n : t.per_process) {
    shares += (shares.empty() ? "" : ", ") + std::to_string(n);
  }
  std::fprintf(out,
               ", \"seconds\": %.3f, \"increments\": %llu, \"counter\": %llu, \"lost\": "
               "%lld, \"per_second\": %.1f, \"per_process\": [%s]",
               t.seconds, static_cast<unsigned long long>(t.total),
               static_cast<unsigned long long>(t.counter), static_cast<long long>(lost(t)),
               t.per_second, shares.c_str());
}

}  // namespace

void write_json(const results& r, const std::string& path) {
  write_file(path, [&](std::FILE* out) {
    std::fprintf(out, "{\n");
    json_machine(out, r.machine);
    std::fprintf(out,
                 "  \"versions\": {\"fasteners\": %s, \"boost\": %s, \"python_fasteners\": %s},\n",
                 json_string(r.fasteners_version).c_str(), json_string(r.boost_version).c_str(),
                 json_string(r.python_version).c_str());
    json_settings(out, r.config);
    json_rows(out, "handoff", r.handoff,
              [&](const handoff_result& h) { json_handoff_row(out, h); });
    json_rows(out, "same_cpu_handoff", r.same_cpu,
              [&](const same_cpu_result& h) { json_same_cpu_row(out, h); });
    json_rows(out, "uncontended", r.uncontended, [&](const uncontended_result& u) {
      std::fprintf(out, ", \"ns_per_pair\": %.2f", u.ns);
    });
    json_rows(out, "throughput", r.throughput,
              [&](const throughput_result& t) { json_throughput_row(out, t); });
    json_rows(out, "timeout", r.timeout, [&](const timeout_result& t) {
      std::fprintf(out,
                   ", \"timeout_ns\": %lld, \"elapsed_ns\": %s, \"lateness_ns\": %s, "
                   "\"early\": %d, \"acquired\": %d",
                   static_cast<long long>(t.timeout_ns), json_summary(t.elapsed_ns).c_str(),
                   json_summary(t.lateness_ns).c_str(), t.early, t.acquired);
    });
    json_end(out, r.targets, r.total_seconds);
  });
}

void write_csv(const results& r, const std::string& path) {
  write_file(path, [&](std::FILE* out) {
    csv_header(out);
    for (const auto& h : r.handoff) {
      if (!h.ran) continue;
      csv_spread(out, "handoff", h, "latency", h.latency_ns);
      csv_row(out, "waiter_cpu", h, "cpu_per_wait_mean", h.cpu_ns.mean, "ns");
      csv_row(out, "waiter_cpu", h, "cpu_fraction_of_wall", h.cpu_fraction, "ratio");
    }
    for (const auto& h : r.same_cpu) {
      if (!h.ran) continue;
      csv_spread(out, "same_cpu_handoff", h, "latency", h.latency_ns);
      const auto& q = h.round_ratio;
      if (q.count == 0) continue;
      csv_row(out, "same_cpu_handoff", h, "round_ratio_p10", q.p10, "ratio");
      csv_row(out, "same_cpu_handoff", h, "round_ratio_median", q.median, "ratio");
      csv_row(out, "same_cpu_handoff", h, "round_ratio_p90", q.p90, "ratio");
      csv_row(out, "same_cpu_handoff", h, "round_ratio_min", q.min, "ratio");
      csv_row(out, "same_cpu_handoff", h, "round_ratio_max", q.max, "ratio");
    }
    for (const auto& u : r.uncontended) {
      if (u.ran) csv_row(out, "uncontended", u, "ns_per_pair", u.ns, "ns");
    }
    for (const auto& t : r.throughput) {
      if (!t.ran) continue;
      csv_row(out, "throughput", t, "increments_per_second", t.per_second, "1/s");
      csv_row(out, "throughput", t, "lost_updates", static_cast<double>(lost(t)), "count");
    }
    for (const auto& t : r.timeout) {
      if (!t.ran) continue;
      csv_spread(out, "timeout", t, "lateness", t.lateness_ns);
      csv_row(out, "timeout", t, "early_returns", t.early, "count");
    }
    csv_targets(out, r.targets);
  });
}

}  // namespace fasteners_bench
