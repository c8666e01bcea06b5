// Turns the measurements into the speed targets' verdicts, a table, and JSON and CSV files.
#include "report.hpp"

#include <string>

namespace fasteners_bench {
namespace {

std::int64_t lost(const throughput_result& t) {
  return static_cast<std::int64_t>(t.total) - static_cast<std::int64_t>(t.counter);
}

}  // namespace

void evaluate_targets(results& r) {
  r.targets.clear();
  const auto* raw = find(r.handoff, "raw_ofd");
  const auto* timed = find(r.handoff, "fasteners_try_lock_for");

  const auto handoff_target = [&](const char* name, const char* key, double limit,
                                  bool extra = false) {
    const auto* row = find(r.handoff, key);
    r.targets.push_back(median_target(name, row ? &row->latency_ns : nullptr,
                                      raw ? &raw->latency_ns : nullptr, limit, extra));
  };
  // `baseline` is the raw_pair row (lock+unlock on an open descriptor) or raw_open_pair_close.
  const auto uncontended_target = [&](const char* name, const char* key, const char* baseline,
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
    r.targets.push_back(t);
  };

  handoff_target("timed try_lock_for() hand-off median <= 2x raw", "fasteners_try_lock_for", 2.0);
  {
    target t;
    t.name = "timed try_lock_for() waiter CPU <= 2% of its wall time";
    t.evaluated = timed != nullptr;
    if (timed) {
      t.pass = timed->cpu_fraction <= 0.02;
      t.figure =
          format("%.2f%% (%s CPU per %s wait)", 100 * timed->cpu_fraction,
                 duration(timed->cpu_ns.mean).c_str(), duration(timed->wall_ns.mean).c_str());
    }
    r.targets.push_back(t);
  }
  {
    target t;
    t.name = "try_lock_for(10 ms) returns within 10..11 ms at p99";
    const auto* row = find(r.timeout, "fasteners_try_lock_for");
    t.evaluated = row != nullptr;
    if (row) {
      const double limit = static_cast<double>(row->timeout_ns);
      t.pass = row->elapsed_ns.p99 <= limit * 1.1 && row->early == 0 && row->acquired == 0;
      t.figure = format("p99 %s, min %s, max %s, %d early", duration(row->elapsed_ns.p99).c_str(),
                        duration(row->elapsed_ns.min).c_str(),
                        duration(row->elapsed_ns.max).c_str(), row->early);
    }
    r.targets.push_back(t);
  }
  handoff_target("blocking lock() hand-off median <= 1.25x raw", "fasteners_lock", 1.25);
  uncontended_target("keep_open: uncontended lock()+unlock() <= 1.2x raw fcntl pair",
                     "fasteners_lock_keep_open", "raw_pair", 1.2);
  uncontended_target("uncontended lock()+unlock() <= 1.1x raw open+lock+unlock+close",
                     "fasteners_lock", "raw_open_pair_close", 1.1);

  // Reported beside the targets: the other lock types held to the same limits.
  handoff_target("keep_open: blocking lock() hand-off median <= 1.25x raw",
                 "fasteners_lock_keep_open", 1.25, true);
  uncontended_target("keep_open: uncontended try_lock_for()+unlock() <= 1.2x raw fcntl pair",
                     "fasteners_try_lock_for_keep_open", "raw_pair", 1.2, true);
  uncontended_target("keep_open: uncontended lock_shared()+unlock_shared() <= 1.2x raw pair",
                     "fasteners_shared_keep_open", "raw_pair", 1.2, true);
  uncontended_target("uncontended lock_shared()+unlock_shared() <= 1.1x raw open+pair+close",
                     "fasteners_shared", "raw_open_pair_close", 1.1, true);
  const auto throughput_target = [&](const std::string& name, const char* key) {
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
    r.targets.push_back(t);
  };
  throughput_target(format("%d-process throughput of lock(), no lost update", r.config.processes),
                    "fasteners_lock");
  throughput_target(
      format("keep_open: %d-process throughput of lock(), no lost update", r.config.processes),
      "fasteners_lock_keep_open");
}

void print_table(const results& r, std::FILE* out) {
  const auto& m = r.machine;
  const auto& c = r.config;
  std::fprintf(out, "fasteners %s benchmark\n", r.fasteners_version.c_str());
  print_machine(out, m);
  std::fprintf(out, "peers: Boost.Interprocess %s, python-fasteners %s\n",
               r.boost_version.empty() ? "(not built in)" : r.boost_version.c_str(),
               r.python_version.empty() ? "(not available)" : r.python_version.c_str());

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
  int late = 0;
  for (const auto& h : r.handoff) late += h.not_yet_blocked;
  std::fprintf(out,
               "  Kernel waiters were seen blocked in /proc/locks before every release (after "
               "the hold, %d round(s) needed extra waiting).\n",
               late);

  const auto* pair = find(r.uncontended, "raw_pair");
  const auto* open_pair = find(r.uncontended, "raw_open_pair_close");
  std::fprintf(out,
               "\n3. Uncontended acquire+release in one process (Google Benchmark, median of %d "
               "repetitions)\n",
               c.repetitions);
  std::fprintf(out, "  %-48s %10s %14s %22s\n", "operation", "ns/pair", "vs fcntl pair",
               "vs open+pair+close");
  for (const auto& u : r.uncontended) {
    if (print_skipped(out, 48, u)) continue;
    std::fprintf(out, "  %-48s %10.0f %14s %22s\n", u.label.c_str(), u.ns,
                 ratio(u.ns, pair ? pair->ns : 0).c_str(),
                 ratio(u.ns, open_pair ? open_pair->ns : 0).c_str());
  }

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

  std::fprintf(out,
               "\n5. Timeout accuracy: a %.0f ms timed wait on a lock another process holds, %d "
               "rounds\n",
               static_cast<double>(c.accuracy_timeout_ns) / 1e6, c.timeout_rounds);
  std::fprintf(out, "  %-36s %12s %12s %12s %12s %6s\n", "contender", "late median", "late p99",
               "late max", "p99 elapsed", "early");
  for (const auto& t : r.timeout) {
    if (print_skipped(out, 36, t)) continue;
    std::fprintf(out, "  %-36s %12s %12s %12s %12s %6d\n", t.label.c_str(),
                 duration(t.lateness_ns.median).c_str(), duration(t.lateness_ns.p99).c_str(),
                 duration(t.lateness_ns.max).c_str(), duration(t.elapsed_ns.p99).c_str(), t.early);
  }

  std::fprintf(out, "\nTargets, as ratios against the raw baseline of this run:\n");
  print_targets(out, r.targets, false, 72);
  std::fprintf(out, "Beside the targets (a reader passes the writers' gate, one call more):\n");
  print_targets(out, r.targets, true, 72);
  std::fprintf(out, "\nThe run took %.0f s.\n", r.total_seconds);
}

void write_json(const results& r, const std::string& path) {
  write_file(path, [&](std::FILE* out) {
    const auto& c = r.config;
    std::fprintf(out, "{\n");
    json_machine(out, r.machine);
    std::fprintf(out,
                 "  \"versions\": {\"fasteners\": %s, \"boost\": %s, \"python_fasteners\": %s},\n",
                 json_string(r.fasteners_version).c_str(), json_string(r.boost_version).c_str(),
                 json_string(r.python_version).c_str());
    std::fprintf(out,
                 "  \"settings\": {\"handoff_rounds\": %d, \"hold_min_ms\": %.3f, \"hold_max_ms\": "
                 "%.3f, \"handoff_timeout_ns\": %lld, \"timeout_rounds\": %d, "
                 "\"accuracy_timeout_ns\": %lld, \"processes\": %d, \"throughput_seconds\": %.3f, "
                 "\"throughput_slices\": %d, "
                 "\"repetitions\": %d, \"min_time_s\": %.3f},\n",
                 c.handoff_rounds, c.hold_min_ms, c.hold_max_ms,
                 static_cast<long long>(c.handoff_timeout_ns), c.timeout_rounds,
                 static_cast<long long>(c.accuracy_timeout_ns), c.processes, c.throughput_seconds,
                 c.throughput_slices, c.repetitions, c.min_time);
    json_rows(out, "handoff", r.handoff, [&](const handoff_result& h) {
      json_handoff_times(out, h);
      std::fprintf(out, ", \"cpu_fraction\": %.6f, \"not_yet_blocked\": %d", h.cpu_fraction,
                   h.not_yet_blocked);
    });
    json_rows(out, "uncontended", r.uncontended, [&](const uncontended_result& u) {
      std::fprintf(out, ", \"ns_per_pair\": %.2f", u.ns);
    });
    json_rows(out, "throughput", r.throughput, [&](const throughput_result& t) {
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
    });
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
