// The PostgreSQL benchmark's targets, and its table, JSON, CSV and Markdown forms.
#include <cstdlib>
#include <stdexcept>

#include "postgres_bench.hpp"

namespace fasteners_bench {
namespace {

// As duration(), with the micro sign, for the Markdown page.
std::string md_duration(double ns) {
  std::string s = duration(ns);
  const auto us = s.find(" us");
  if (us != std::string::npos) s.replace(us, 3, " µs");
  return s;
}

// The one-minute load average, from machine_info's "A B C".
double load_of(const std::string& averages) { return std::atof(averages.c_str()); }

bool busy(const machine_info& m) {
  return load_of(m.load_before) > 0.5 || load_of(m.load_after) > 0.5;
}

std::string peer_line(const pg_results& r) {
  if (r.psycopg2_version.empty()) return "psycopg2 (not available)";
  return "psycopg2 " + r.psycopg2_version + " (Python " + r.python_version + ")";
}

std::string timeout_text(const pg_settings& c) { return format("%g s", c.timeout_s); }

}  // namespace

void pg_evaluate_targets(pg_results& r) {
  r.targets.clear();
  // The median of `key`'s row against raw libpq's, in one section.
  const auto ratio_target = [&](const std::string& name, const auto& rows, const char* key,
                                auto field, double limit, bool extra) {
    const auto* raw = find(rows, "raw_libpq");
    const auto* lib = find(rows, key);
    r.targets.push_back(median_target(name, lib ? &(lib->*field) : nullptr,
                                      raw ? &(raw->*field) : nullptr, limit, extra));
  };
  const auto handoff_target = [&](const std::string& name, const char* key, double limit) {
    ratio_target(name, r.handoff, key, &pg_handoff_result::latency_ns, limit, false);
  };
  const auto pair_target = [&](const std::string& name, const char* key, double limit, bool extra) {
    ratio_target(name, r.pairs, key, &pg_pair_result::pair_ns, limit, extra);
  };
  handoff_target("blocking lock() hand-off median <= 1.2x raw", "fasteners_lock", 1.2);
  handoff_target("try_lock_for(" + timeout_text(r.config) + ") hand-off median <= 1.5x raw",
                 "fasteners_try_lock_for", 1.5);
  pair_target("uncontended lock()+unlock(), session kept, median <= 1.2x raw pair",
              "fasteners_lock", 1.2, false);
  pair_target("uncontended try_lock()+unlock() median <= 1.2x raw pair", "fasteners_try_lock", 1.2,
              true);
  pair_target(
      "uncontended try_lock_for(" + timeout_text(r.config) + ")+unlock() median <= 1.2x raw pair",
      "fasteners_try_lock_for", 1.2, true);
}

void pg_print_table(const pg_results& r, std::FILE* out) {
  const auto& m = r.machine;
  const auto& c = r.config;
  std::fprintf(out, "fasteners %s PostgreSQL benchmark\n", r.fasteners_version.c_str());
  print_machine(out, m);
  std::fprintf(out, "server: PostgreSQL %s on this machine over %s; libpq %s; peer: %s\n",
               r.server_version.c_str(), r.server_via.c_str(), r.libpq_version.c_str(),
               peer_line(r).c_str());
  std::fprintf(out, "placement: %s\n", r.placement.c_str());

  std::fprintf(out,
               "\n1. Hand-off: A holds the lock, B (another process, its own session) waits in "
               "the server's lock queue,\n"
               "   A releases. Latency = A's release call -> B's acquire returned; %d rounds; A "
               "releases %.0f..%.0f ms\n"
               "   after B starts waiting, once pg_locks shows B queued. A release = median "
               "time A's release call takes;\n"
               "   B CPU = B's process CPU time during its acquire call (mean). Raw: SELECT "
               "pg_advisory_unlock(k) on\n"
               "   A's connection while B blocks in SELECT pg_advisory_lock(k); psycopg2: both "
               "A and B in Python.\n",
               c.handoff_rounds, c.hold_min_ms, c.hold_max_ms);
  std::fprintf(out, "  %-34s %10s %10s %10s %8s %10s %10s\n", "contender", "median", "p99", "max",
               "vs raw", "A release", "B CPU");
  const auto* raw = find(r.handoff, "raw_libpq");
  int not_seen = 0;
  for (const auto& h : r.handoff) {
    if (print_skipped(out, 34, h)) continue;
    not_seen += h.not_seen;
    std::fprintf(out, "  %-34s %10s %10s %10s %8s %10s %10s\n", h.label.c_str(),
                 duration(h.latency_ns.median).c_str(), duration(h.latency_ns.p99).c_str(),
                 duration(h.latency_ns.max).c_str(),
                 ratio(h.latency_ns.median, raw ? raw->latency_ns.median : 0).c_str(),
                 duration(h.release_ns.median).c_str(), duration(h.cpu_ns.mean).c_str());
  }
  if (not_seen == 0) {
    std::fprintf(out, "  B showed as waiting in pg_locks before every release.\n");
  } else {
    std::fprintf(out,
                 "  In %d round(s) B never showed as waiting in pg_locks within %.0f s; A "
                 "released anyway.\n",
                 not_seen, static_cast<double>(c.queued_wait_ns) / 1e9);
  }

  std::fprintf(out,
               "\n2. Uncontended acquire+release through one object (its session kept), or one "
               "connection:\n"
               "   %d pairs each, in turns of %d (the contenders take turns in a shuffled "
               "order).\n",
               c.pairs, c.block);
  std::fprintf(out, "  %-42s %10s %10s %10s %14s %11s\n", "operation", "median", "p99", "mean",
               "vs raw median", "vs raw p99");
  const auto* raw_pair = find(r.pairs, "raw_libpq");
  for (const auto& p : r.pairs) {
    if (print_skipped(out, 42, p)) continue;
    std::fprintf(out, "  %-42s %10s %10s %10s %14s %11s\n", p.label.c_str(),
                 duration(p.pair_ns.median).c_str(), duration(p.pair_ns.p99).c_str(),
                 duration(p.pair_ns.mean).c_str(),
                 ratio(p.pair_ns.median, raw_pair ? raw_pair->pair_ns.median : 0).c_str(),
                 ratio(p.pair_ns.p99, raw_pair ? raw_pair->pair_ns.p99 : 0).c_str());
  }

  std::fprintf(out, "\nTargets, as ratios against the raw libpq figures of this run:\n");
  print_targets(out, r.targets, false, 68);
  std::fprintf(out, "Beside the targets:\n");
  print_targets(out, r.targets, true, 68);
  if (busy(m)) {
    std::fprintf(out,
                 "\nThe machine was busy (load average above 0.5 on %ld cores): other work ran "
                 "beside the benchmark.\n",
                 m.cores);
  }
  std::fprintf(out, "\nThe run took %.0f s.\n", r.total_seconds);
}

void pg_write_json(const pg_results& r, const std::string& path) {
  write_file(path, [&](std::FILE* out) {
    const auto& c = r.config;
    std::fprintf(out, "{\n");
    json_machine(out, r.machine,
                 std::string("\"busy\": ") + (busy(r.machine) ? "true" : "false") + ", ");
    std::fprintf(out,
                 "  \"versions\": {\"fasteners\": %s, \"server\": %s, \"libpq\": %s, "
                 "\"psycopg2\": %s, \"python\": %s},\n",
                 json_string(r.fasteners_version).c_str(), json_string(r.server_version).c_str(),
                 json_string(r.libpq_version).c_str(), json_string(r.psycopg2_version).c_str(),
                 json_string(r.python_version).c_str());
    std::fprintf(out, "  \"server_via\": %s,\n  \"placement\": %s,\n",
                 json_string(r.server_via).c_str(), json_string(r.placement).c_str());
    std::fprintf(out,
                 "  \"settings\": {\"handoff_rounds\": %d, \"warmup_rounds\": %d, "
                 "\"hold_min_ms\": %.3f, \"hold_max_ms\": %.3f, \"timeout_s\": %.3f, "
                 "\"pairs\": %d, \"block\": %d},\n",
                 c.handoff_rounds, c.warmup_rounds, c.hold_min_ms, c.hold_max_ms, c.timeout_s,
                 c.pairs, c.block);
    json_rows(out, "handoff", r.handoff, [&](const pg_handoff_result& h) {
      json_handoff_times(out, h);
      std::fprintf(out, ", \"not_seen\": %d", h.not_seen);
    });
    json_rows(out, "pairs", r.pairs, [&](const pg_pair_result& p) {
      std::fprintf(out, ", \"pair_ns\": %s", json_summary(p.pair_ns).c_str());
    });
    json_end(out, r.targets, r.total_seconds);
  });
}

void pg_write_csv(const pg_results& r, const std::string& path) {
  write_file(path, [&](std::FILE* out) {
    csv_header(out);
    for (const auto& h : r.handoff) {
      if (!h.ran) continue;
      csv_spread(out, "handoff", h, "latency", h.latency_ns);
      csv_row(out, "handoff", h, "release_median", h.release_ns.median, "ns");
      csv_row(out, "handoff", h, "waiter_cpu_mean", h.cpu_ns.mean, "ns");
    }
    for (const auto& p : r.pairs) {
      if (!p.ran) continue;
      csv_row(out, "uncontended", p, "pair_median", p.pair_ns.median, "ns");
      csv_row(out, "uncontended", p, "pair_p99", p.pair_ns.p99, "ns");
      csv_row(out, "uncontended", p, "pair_mean", p.pair_ns.mean, "ns");
    }
    csv_targets(out, r.targets);
  });
}

void pg_write_markdown(const pg_results& r, const std::string& path, const std::string& png) {
  // The full table, as printed.
  char* text = nullptr;
  std::size_t text_size = 0;
  std::FILE* memory = ::open_memstream(&text, &text_size);
  if (memory == nullptr) throw std::runtime_error("open_memstream failed");
  pg_print_table(r, memory);
  std::fclose(memory);
  const std::string table(text, text_size);
  std::free(text);

  const auto f = open_for_writing(path);
  std::FILE* out = f.get();
  const auto& m = r.machine;
  const auto& c = r.config;
  std::fprintf(out, "# PostgreSQL advisory locks: benchmark\n\n");
  std::fprintf(out,
               "Written by `bench/postgres-run.sh` (`fasteners_postgres_bench`, then "
               "`bench/postgres_plot.py`); do not edit by hand.\n\n");
  std::fprintf(out,
               "- **Compared:** `fasteners::postgres_lock` against a raw libpq loop on one "
               "connection (`SELECT pg_advisory_lock(k)` and `SELECT pg_advisory_unlock(k)` with "
               "`PQexec`), and %s running the same SQL with autocommit on. Every ratio is against "
               "the raw figure measured in the same run. The library prepares its statements once "
               "per session, so the uncontended table also shows raw libpq with the same two "
               "statements prepared (`PQexecPrepared`), the tightest baseline.\n",
               peer_line(r).c_str());
  std::fprintf(out,
               "- **Server:** a throwaway PostgreSQL %s on the same machine, over %s; libpq "
               "%s.\n",
               r.server_version.c_str(), r.server_via.c_str(), r.libpq_version.c_str());
  std::fprintf(out, "- **Machine:** %s, %ld cores, %s; %s; %s, %s.\n", m.cpu.c_str(), m.cores,
               m.kernel.c_str(), m.date.c_str(), m.build.c_str(), m.compiler.c_str());
  if (busy(m)) {
    std::fprintf(out,
                 "- **Figures from a busy machine:** the load average was %s before the run and "
                 "%s after it: other work ran beside the benchmark on these %ld cores. The "
                 "ratios hold up better than the absolute figures, and the p99s least.\n",
                 m.load_before.c_str(), m.load_after.c_str(), m.cores);
  } else {
    std::fprintf(out, "- **Load average:** %s before the run, %s after it.\n",
                 m.load_before.c_str(), m.load_after.c_str());
  }
  std::fprintf(out,
               "- **Placement:** %s. Left to the scheduler, a round trip costs several times "
               "more when a client and its server process land on different CPUs, so each figure "
               "would depend on where its session happened to land; `--no-pin` shows it.\n",
               r.placement.c_str());
  std::fprintf(out, "\n![PostgreSQL benchmark](%s)\n\n", png.c_str());

  std::fprintf(out,
               "| | median | p99 | vs raw (median) | target |\n"
               "|---|---|---|---|---|\n");
  const auto verdict = [&](const std::string& name_prefix, const char* limit) -> std::string {
    for (const auto& t : r.targets) {
      if (t.name.rfind(name_prefix, 0) != 0) continue;
      if (!t.evaluated) return std::string(limit) + ": n/a";
      return std::string(limit) + (t.pass ? ": met" : ": **missed**");
    }
    return "";
  };
  const std::string timed = "try_lock_for(" + timeout_text(c) + ")";
  const auto* raw = find(r.handoff, "raw_libpq");
  const auto handoff_label = [&](const std::string& key) -> std::string {
    if (key == "raw_libpq") return "hand-off, raw libpq `pg_advisory_lock`";
    if (key == "fasteners_lock") return "hand-off, `lock()`";
    if (key == "fasteners_try_lock_for") return "hand-off, `" + timed + "`";
    return "hand-off, psycopg2 `pg_advisory_lock`";
  };
  for (const auto& h : r.handoff) {
    if (!h.ran) {
      std::fprintf(out, "| %s | skipped: %s | | | |\n", handoff_label(h.key).c_str(),
                   h.note.c_str());
      continue;
    }
    std::string target_text;
    if (h.key == "fasteners_lock") target_text = verdict("blocking lock() hand-off", "1.2x");
    if (h.key == "fasteners_try_lock_for") target_text = verdict("try_lock_for(", "1.5x");
    std::fprintf(out, "| %s | %s | %s | %s | %s |\n", handoff_label(h.key).c_str(),
                 md_duration(h.latency_ns.median).c_str(), md_duration(h.latency_ns.p99).c_str(),
                 ratio(h.latency_ns.median, raw ? raw->latency_ns.median : 0).c_str(),
                 target_text.c_str());
  }
  const auto* raw_pair = find(r.pairs, "raw_libpq");
  const auto pair_label = [&](const std::string& key) -> std::string {
    if (key == "raw_libpq") return "uncontended pair, raw libpq lock+unlock";
    if (key == "raw_libpq_prepared") return "uncontended pair, raw libpq, prepared statements";
    if (key == "fasteners_lock") return "uncontended `lock()`+`unlock()`";
    if (key == "fasteners_lock_fencing") return "uncontended `lock()`+`unlock()`, `fencing`";
    if (key == "fasteners_try_lock") return "uncontended `try_lock()`+`unlock()`";
    if (key == "fasteners_try_lock_for") return "uncontended `" + timed + "`+`unlock()`";
    return "uncontended pair, psycopg2 lock+unlock";
  };
  for (const auto& p : r.pairs) {
    if (!p.ran) {
      std::fprintf(out, "| %s | skipped: %s | | | |\n", pair_label(p.key).c_str(), p.note.c_str());
      continue;
    }
    std::string target_text;
    if (p.key == "fasteners_lock") target_text = verdict("uncontended lock()+unlock()", "1.2x");
    std::fprintf(out, "| %s | %s | %s | %s | %s |\n", pair_label(p.key).c_str(),
                 md_duration(p.pair_ns.median).c_str(), md_duration(p.pair_ns.p99).c_str(),
                 ratio(p.pair_ns.median, raw_pair ? raw_pair->pair_ns.median : 0).c_str(),
                 target_text.c_str());
  }
  std::fprintf(out,
               "\nHand-off: %d rounds per contender; the waiter B runs in another process with "
               "its own session and blocks in the server's lock queue (the run sees it in "
               "`pg_locks` before each release); the latency runs from just before the "
               "holder's release call to just after B's acquire returns. Uncontended: %d pairs "
               "per contender through one object whose session stays open (the default, "
               "`close_on_release = false`), or one connection. The contenders take turns in a "
               "shuffled order, so that changes in the machine's load hit them alike.\n",
               c.handoff_rounds, c.pairs);
  std::fprintf(out, "\n## Full table\n\n```text\n%s```\n", table.c_str());
  if (std::ferror(out)) throw std::runtime_error("cannot write " + path);
}

}  // namespace fasteners_bench
