// The machine's description and the pieces of the reports that both benchmarks write alike.
#include "report_common.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <cstdarg>
#include <ctime>
#include <fstream>

namespace fasteners_bench {

machine_info describe_machine() {
  machine_info m;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      m.cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  if (m.cpu.empty()) m.cpu = "unknown CPU";
  m.cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  utsname name{};
  if (::uname(&name) == 0) m.kernel = std::string(name.sysname) + " " + name.release;
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  m.date = date;
  m.load_before = load_average();
#if defined(__clang__)
  m.compiler = "clang++ " __clang_version__;
#elif defined(__GNUC__)
  m.compiler = "g++ " __VERSION__;
#endif
  m.build = FASTENERS_BENCH_BUILD_TYPE;
#if defined(NDEBUG)
  m.build += " (NDEBUG)";
#else
  m.build += " (assertions on: not a release build)";
#endif
  return m;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string format(const char* pattern, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, pattern);
  std::vsnprintf(buffer, sizeof buffer, pattern, args);
  va_end(args);
  return buffer;
}

std::string duration(double ns) {
  if (ns < 1e3) return format("%.0f ns", ns);
  if (ns < 1e4) return format("%.2f us", ns / 1e3);
  if (ns < 1e6) return format("%.1f us", ns / 1e3);
  if (ns < 1e9) return format("%.2f ms", ns / 1e6);
  return format("%.2f s", ns / 1e9);
}

std::string ratio(double value, double baseline) {
  if (!(baseline > 0)) return "n/a";
  return format("%.2fx", value / baseline);
}

target median_target(const std::string& name, const summary* value, const summary* baseline,
                     double limit, bool extra) {
  target t;
  t.name = name;
  t.extra = extra;
  t.evaluated = value && baseline && baseline->median > 0;
  if (t.evaluated) {
    const double x = value->median / baseline->median;
    t.pass = x <= limit;
    t.figure = format("%.2fx (%s vs raw %s)", x, duration(value->median).c_str(),
                      duration(baseline->median).c_str());
  }
  return t;
}

void print_machine(std::FILE* out, const machine_info& m) {
  std::fprintf(out, "machine: %s, %ld cores, %s; %s\n", m.cpu.c_str(), m.cores, m.kernel.c_str(),
               m.date.c_str());
  std::fprintf(out, "build: %s, %s; load average before %s, after %s\n", m.build.c_str(),
               m.compiler.c_str(), m.load_before.c_str(), m.load_after.c_str());
}

bool print_skipped(std::FILE* out, int width, const result_row& row) {
  if (row.ran) return false;
  std::fprintf(out, "  %-*s skipped: %s\n", width, row.label.c_str(), row.note.c_str());
  return true;
}

void print_targets(std::FILE* out, const std::vector<target>& targets, bool extra, int width) {
  for (const auto& t : targets) {
    if (t.extra != extra) continue;
    std::fprintf(out, "  %-4s  %-*s %s\n",
                 !t.evaluated ? "n/a"
                 : t.pass     ? "PASS"
                              : "FAIL",
                 width, t.name.c_str(), t.figure.c_str());
  }
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += format("\\u%04x", static_cast<unsigned>(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_summary(const summary& s) {
  return format(R"({"count": %zu, "min": %.1f, "median": %.1f, "p99": %.1f, "max": %.1f, )"
                R"("mean": %.1f})",
                s.count, s.min, s.median, s.p99, s.max, s.mean);
}

void json_handoff_times(std::FILE* out, const handoff_times& h) {
  std::fprintf(out,
               ", \"latency_ns\": %s, \"release_ns\": %s, \"wait_wall_ns\": %s, "
               "\"waiter_cpu_ns\": %s",
               json_summary(h.latency_ns).c_str(), json_summary(h.release_ns).c_str(),
               json_summary(h.wall_ns).c_str(), json_summary(h.cpu_ns).c_str());
}

void json_machine(std::FILE* out, const machine_info& m, const std::string& extra) {
  std::fprintf(out, "  \"machine\": {\"cpu\": %s, \"cores\": %ld, \"kernel\": %s, ",
               json_string(m.cpu).c_str(), m.cores, json_string(m.kernel).c_str());
  std::fprintf(out, "\"date\": %s, \"load_before\": %s, \"load_after\": %s, %s",
               json_string(m.date).c_str(), json_string(m.load_before).c_str(),
               json_string(m.load_after).c_str(), extra.c_str());
  std::fprintf(out, "\"compiler\": %s, \"build\": %s},\n", json_string(m.compiler).c_str(),
               json_string(m.build).c_str());
}

void json_end(std::FILE* out, const std::vector<target>& targets, double total_seconds) {
  std::fprintf(out, "  \"targets\": [\n");
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    std::fprintf(out,
                 "    {\"name\": %s, \"figure\": %s, \"evaluated\": %s, \"pass\": %s, "
                 "\"extra\": %s}%s\n",
                 json_string(t.name).c_str(), json_string(t.figure).c_str(),
                 t.evaluated ? "true" : "false", t.pass ? "true" : "false",
                 t.extra ? "true" : "false", i + 1 < targets.size() ? "," : "");
  }
  std::fprintf(out, "  ],\n  \"total_seconds\": %.1f\n}\n", total_seconds);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

void csv_header(std::FILE* out) { std::fprintf(out, "section,key,label,metric,value,unit\n"); }

void csv_row(std::FILE* out, const char* section, const result_row& row, const char* metric,
             double value, const char* unit) {
  std::fprintf(out, "%s,%s,%s,%s,%.6g,%s\n", section, row.key.c_str(), csv_field(row.label).c_str(),
               metric, value, unit);
}

void csv_spread(std::FILE* out, const char* section, const result_row& row, const char* name,
                const summary& s) {
  const std::string n = name;
  csv_row(out, section, row, (n + "_median").c_str(), s.median, "ns");
  csv_row(out, section, row, (n + "_p99").c_str(), s.p99, "ns");
  csv_row(out, section, row, (n + "_max").c_str(), s.max, "ns");
}

void csv_targets(std::FILE* out, const std::vector<target>& targets) {
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& t = targets[i];
    std::fprintf(out, "target,target%zu,%s,%s,%d,pass\n", i + 1, csv_field(t.name).c_str(),
                 csv_field("pass: " + t.figure).c_str(), t.evaluated ? (t.pass ? 1 : 0) : -1);
  }
}

file_ptr open_for_writing(const std::string& path) {
  file_ptr f(std::fopen(path.c_str(), "w"));
  if (!f) throw std::runtime_error("cannot write " + path);
  return f;
}

}  // namespace fasteners_bench
