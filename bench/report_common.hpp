// What both benchmarks' reports share: the machine, result rows, targets, and text, JSON and CSV.
#pragma once

#include <cstdio>
#include <memory>
#include <stdexcept>
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

// The machine, the compiler and the build (FASTENERS_BENCH_BUILD_TYPE), with the load average now.
machine_info describe_machine();
// /proc/loadavg's three averages, "A B C".
std::string load_average();

// What every row of a results table starts with.
struct result_row {
  std::string key;
  std::string label;
  bool ran = false;
  std::string note;  // Why it did not run.
};

struct target {
  std::string name;
  std::string figure;  // The measured value and what it was compared with.
  bool evaluated = false;
  bool pass = false;
  bool extra = false;  // Reported beside the targets, not one of them.
};

// What every run's results start and end with; the benchmarks add their sections.
template <class Settings>
struct run_results {
  machine_info machine;
  Settings config;
  std::string fasteners_version;
  std::vector<target> targets;
  double total_seconds = 0;
};

std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));
// "850 ns", "1.25 us", "12.5 us", "3.40 ms", "2.00 s".
std::string duration(double ns);
// "1.23x", or "n/a" without a baseline.
std::string ratio(double value, double baseline);

// The row with this key, if it ran.
template <class T>
const T* find(const std::vector<T>& rows, const std::string& key) {
  for (const auto& row : rows) {
    if (row.key == key && row.ran) return &row;
  }
  return nullptr;
}

// A target met when the median of `value` is at most `limit` times the median of `baseline`;
// not evaluated when either was not measured (null) or the baseline's median is not positive.
target median_target(const std::string& name, const summary* value, const summary* baseline,
                     double limit, bool extra);

// The table: the machine's two lines, a skipped row (true if `row` did not run), the targets.
void print_machine(std::FILE* out, const machine_info& m);
bool print_skipped(std::FILE* out, int width, const result_row& row);
void print_targets(std::FILE* out, const std::vector<target>& targets, bool extra, int width);

std::string json_string(const std::string& s);
std::string json_summary(const summary& s);
// `, "latency_ns": {...}, "release_ns": ..., "wait_wall_ns": ..., "waiter_cpu_ns": ...`.
void json_handoff_times(std::FILE* out, const handoff_times& h);
// `"machine": {...},`, with `extra` (fields, each ending in ", ") after the load averages.
void json_machine(std::FILE* out, const machine_info& m, const std::string& extra = "");
// `"name": [` and the rows: each row's key, label, ran and note, then what `fields(row)` writes.
template <class Row, class Fields>
void json_rows(std::FILE* out, const char* name, const std::vector<Row>& rows, Fields fields) {
  std::fprintf(out, "  \"%s\": [\n", name);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const result_row& head = rows[i];
    std::fprintf(out, "    {\"key\": %s, \"label\": %s, \"ran\": %s, \"note\": %s",
                 json_string(head.key).c_str(), json_string(head.label).c_str(),
                 head.ran ? "true" : "false", json_string(head.note).c_str());
    fields(rows[i]);
    std::fprintf(out, "}%s\n", i + 1 < rows.size() ? "," : "");
  }
  std::fprintf(out, "  ],\n");
}
// The targets, the run's length and the closing brace.
void json_end(std::FILE* out, const std::vector<target>& targets, double total_seconds);

std::string csv_field(const std::string& s);
void csv_header(std::FILE* out);
void csv_row(std::FILE* out, const char* section, const result_row& row, const char* metric,
             double value, const char* unit);
// The rows `name`_median, `name`_p99 and `name`_max, in ns.
void csv_spread(std::FILE* out, const char* section, const result_row& row, const char* name,
                const summary& s);
// A target's value is 1 (pass), 0 (fail) or -1 (not evaluated); its metric names the figures.
void csv_targets(std::FILE* out, const std::vector<target>& targets);

struct file_closer {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

// Throws std::runtime_error if the file cannot be opened.
file_ptr open_for_writing(const std::string& path);
// Writes the file with `write(out)`; throws std::runtime_error if it cannot.
template <class Write>
void write_file(const std::string& path, Write write) {
  const auto f = open_for_writing(path);
  write(f.get());
  if (std::ferror(f.get())) throw std::runtime_error("cannot write " + path);
}

}  // namespace fasteners_bench
