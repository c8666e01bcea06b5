// fasteners_bench: this library against raw fcntl locks and its peers, in one run.
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"
#include "contenders.hpp"
#include "cross_process.hpp"
#include "fasteners/version.hpp"
#include "report.hpp"
#include "uncontended.hpp"

namespace fasteners_bench {
namespace {

const char* const k_usage = R"(usage: fasteners_bench [options] [--benchmark_* flags]

Measures, in one run, this library against a raw fcntl baseline and its peers:
hand-off latency (also with both processes on one CPU), the waiter's CPU,
uncontended cost, 4-process throughput and timeout accuracy (against a plain
sleep); prints a table and marks the project's speed targets PASS or FAIL.

  --json FILE            also write the results as JSON (for bench/plot.py)
  --csv FILE             also write the results as CSV
  --quick                few rounds, for a smoke test (figures are rough)
  --rounds N             hand-off rounds per contender (default 300), also in 1b
  --timeout-rounds N     timeout-accuracy rounds per contender (default 200)
  --hold-min-ms X        A holds the lock X..Y ms after B starts waiting
  --hold-max-ms Y          (defaults 2 and 12)
  --no-same-cpu          skip section 1b (the hand-off with both processes
                         pinned to one CPU, which the hand-off targets use)
  --seconds S            length of each throughput contest (default 2)
  --slices N             turns each throughput contest is split into (default 4)
  --processes N          processes in the throughput contest (default 4)
  --repetitions N        Google Benchmark repetitions (default 5)
  --min-time S           Google Benchmark minimum time per repetition (default 0.2)
  --dir DIR              where the lock files go (default: a new directory in /tmp)
  --python PATH          the Python with python-fasteners (default /usr/bin/python3)
  --no-python            skip python-fasteners
  --no-boost             skip Boost.Interprocess
  --only KEY,...         measure only these contenders in sections 1, 1b, 2, 4 and 5
                         (raw_ofd, fasteners_lock, fasteners_lock_keep_open,
                         fasteners_try_lock_for, fasteners_async_lock, boost_lock,
                         boost_timed_lock, python_acquire, python_acquire_timeout,
                         plain_sleep); the targets compare with raw_ofd and, for
                         timeouts, plain_sleep: keep them in the list
  --fail-on-targets      exit with status 2 if a target is missed
)";

struct options {
  settings config;
  std::string json;
  std::string csv;
  bool fail_on_targets = false;
  std::vector<std::string> benchmark_flags;
};

std::vector<std::string> split_keys(const std::string& list) {
  std::vector<std::string> keys;
  std::size_t begin = 0;
  while (begin <= list.size()) {
    const auto end = std::min(list.find(',', begin), list.size());
    const std::string key = list.substr(begin, end - begin);
    contender_by_key(key);  // Throws for an unknown key.
    keys.push_back(key);
    begin = end + 1;
  }
  return keys;
}

options parse(int argc, char** argv) {
  options o;
  command_line line(argc, argv);
  std::string arg;
  while (line.next(arg)) {
    auto& c = o.config;
    if (common_option(arg, line, o, k_usage)) continue;
    if (arg == "--quick") {
      c.handoff_rounds = 40;
      c.timeout_rounds = 40;
      c.throughput_seconds = 0.5;
      c.throughput_slices = 2;
      c.repetitions = 2;
      c.min_time = 0.05;
    } else if (arg == "--timeout-rounds") {
      c.timeout_rounds = std::stoi(line.value());
    } else if (arg == "--seconds") {
      c.throughput_seconds = std::stod(line.value());
    } else if (arg == "--slices") {
      c.throughput_slices = std::stoi(line.value());
    } else if (arg == "--processes") {
      c.processes = std::stoi(line.value());
    } else if (arg == "--repetitions") {
      c.repetitions = std::stoi(line.value());
    } else if (arg == "--min-time") {
      c.min_time = std::stod(line.value());
    } else if (arg == "--dir") {
      c.dir = line.value();
    } else if (arg == "--no-boost") {
      c.use_boost = false;
    } else if (arg == "--no-same-cpu") {
      c.same_cpu = false;
    } else if (arg == "--only") {
      c.only = split_keys(line.value());
    } else if (arg.rfind("--benchmark_", 0) == 0) {
      o.benchmark_flags.push_back(arg);
    } else {
      throw std::invalid_argument("unknown option " + arg + " (see --help)");
    }
  }
  auto& c = o.config;
  if (c.handoff_rounds < 1 || c.timeout_rounds < 1 || c.processes < 1 || c.throughput_slices < 1 ||
      c.repetitions < 1 || !(c.hold_min_ms >= 1) || !(c.hold_max_ms >= c.hold_min_ms) ||
      !(c.throughput_seconds > 0) || !(c.min_time > 0)) {
    throw std::invalid_argument("an option is out of range (see --help)");
  }
  return o;
}

std::string python_fasteners_version(const std::string& python) {
  std::string out;
  if (!capture_output({python, "-c",
                       "import importlib.metadata as m, fasteners; print(m.version('fasteners'))"},
                      out)) {
    return "";
  }
  out = trimmed(out);
  return out.empty() ? "unknown" : out;
}

// Why a contender cannot run here, or "" if it can.
std::string unavailable(const contender& who, const results& r) {
  const auto& only = r.config.only;
  if (!only.empty() && std::find(only.begin(), only.end(), who.key) == only.end()) {
    return "not selected with --only";
  }
  if (who.python) {
    if (!r.config.use_python) return "disabled with --no-python";
    if (r.python_version.empty()) {
      return r.config.python + " cannot import fasteners (install python3-fasteners)";
    }
  }
  if (who.boost) {
    if (!boost_built_in())
      return "Boost.Interprocess not found at build time (install libboost-dev)";
    if (!r.config.use_boost) return "disabled with --no-boost";
  }
  return "";
}

// Measures the contenders of `candidates` that can run here with `measure` (which takes them
// all at once) and lists the others as skipped, in the candidates' order.
template <class Result, class Measure>
std::vector<Result> measure_section(const std::vector<const contender*>& candidates,
                                    const results& r, Measure measure) {
  std::vector<const contender*> available;
  for (const auto* c : candidates) {
    const std::string note = unavailable(*c, r);
    if (note.empty()) {
      available.push_back(c);
      std::fprintf(stderr, "  %s\n", c->label);
    } else {
      std::fprintf(stderr, "  %s: skipped: %s\n", c->label, note.c_str());
    }
  }
  const std::vector<Result> measured =
      available.empty() ? std::vector<Result>() : measure(available);
  std::vector<Result> rows;
  std::size_t next = 0;
  for (const auto* c : candidates) {
    std::string note = unavailable(*c, r);
    if (note.empty()) {
      rows.push_back(measured.at(next++));
      continue;
    }
    Result row;
    row.key = c->key;
    row.label = c->label;
    row.note = std::move(note);
    rows.push_back(row);
  }
  return rows;
}

// The contenders of sections 1 and 2, section 1b and 4 (C++ locks only) and 5 (timed waits).
struct sections {
  std::vector<const contender*> handoff;
  std::vector<const contender*> locks;
  std::vector<const contender*> timed;
};

sections section_contenders() {
  sections s;
  for (const auto& who : all_contenders()) {
    if (who.timed) s.timed.push_back(&who);
    if (who.id != contender_id::plain_sleep) s.handoff.push_back(&who);
  }
  for (const auto id : {contender_id::raw_ofd, contender_id::fasteners_lock,
                        contender_id::fasteners_lock_keep_open, contender_id::fasteners_try_lock,
                        contender_id::fasteners_async_lock, contender_id::boost_lock}) {
    s.locks.push_back(&contender_of(id));
  }
  return s;
}

// Google Benchmark with `flags`; its repetitions take turns too, unless the flags say otherwise.
// It keeps `program` as the executable's name: that must outlive the run.
void initialize_benchmark(char* program, const std::vector<std::string>& flags) {
  std::vector<std::string> args = {"--benchmark_enable_random_interleaving=true"};
  for (const auto& flag : flags) args.push_back(flag);
  std::vector<char*> argv = {program};
  for (auto& arg : args) argv.push_back(arg.data());
  int argc = static_cast<int>(argv.size());
  benchmark::Initialize(&argc, argv.data());
}

// Sections 1, 1b, 2, 4 and 5, into `r`.
void measure_cross_process(results& r) {
  const auto& c = r.config;
  const sections who = section_contenders();
  std::mt19937 rng(20240601);
  std::fprintf(stderr, "1+2. hand-off latency and waiter CPU, %d rounds, contenders taking turns\n",
               c.handoff_rounds);
  r.handoff = measure_section<handoff_result>(
      who.handoff, r, [&](const auto& some) { return measure_handoff(some, c, rng); });
  if (c.same_cpu) {
    std::fprintf(stderr, "1b. hand-off on one CPU, %d rounds, contenders taking turns\n",
                 c.handoff_rounds);
    r.same_cpu = measure_section<same_cpu_result>(
        who.locks, r, [&](const auto& some) { return measure_same_cpu_handoff(some, c, rng); });
  }
  std::fprintf(stderr, "4. throughput of %d processes, %.1f s each in %d turns\n", c.processes,
               c.throughput_seconds, c.throughput_slices);
  r.throughput = measure_section<throughput_result>(
      who.locks, r, [&](const auto& some) { return measure_throughput(some, c, rng); });
  std::fprintf(stderr, "5. timeout accuracy, %d rounds, contenders taking turns\n",
               c.timeout_rounds);
  r.timeout = measure_section<timeout_result>(
      who.timed, r, [&](const auto& some) { return measure_timeout(some, c, rng); });
}

int run(int argc, char** argv) {
  options o = parse(argc, argv);
  const std::int64_t started = now_ns();
  results r;
  r.config = o.config;
  auto& c = r.config;
  r.machine = describe_machine();
  r.fasteners_version = fasteners::version_string;
  r.boost_version = boost_version();
  c.self = std::filesystem::read_symlink("/proc/self/exe").string();
  r.python_version = c.use_python ? python_fasteners_version(c.python) : "";
  bool own_dir = false;
  if (c.dir.empty()) {
    std::string pattern = "/tmp/fasteners-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    c.dir = pattern;
    own_dir = true;
  } else {
    std::filesystem::create_directories(c.dir);
  }

  initialize_benchmark(argv[0], o.benchmark_flags);

  std::fprintf(stderr, "fasteners_bench: lock files in %s\n", c.dir.c_str());
  std::fprintf(stderr, "3. uncontended acquire+release (Google Benchmark)\n");
  r.uncontended = measure_uncontended(c);

  measure_cross_process(r);

  r.machine.load_after = load_average();
  r.total_seconds = static_cast<double>(now_ns() - started) / 1e9;
  evaluate_targets(r);
  print_table(r, stdout);
  std::fflush(stdout);
  if (!o.json.empty()) write_json(r, o.json);
  if (!o.csv.empty()) write_csv(r, o.csv);
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(c.dir, ec);
  }
  if (o.fail_on_targets) {
    for (const auto& b : r.targets) {
      if (!b.extra && (!b.evaluated || !b.pass)) return 2;
    }
  }
  return 0;
}

}  // namespace
}  // namespace fasteners_bench

int main(int argc, char** argv) {
  using namespace fasteners_bench;
  try {
    if (argc >= 2) {
      const std::string mode = argv[1];
      const std::vector<std::string> rest(argv + 2, argv + argc);
      if (mode == "--child-waiter") return child_waiter_main(rest);
      if (mode == "--child-worker") return child_worker_main(rest);
    }
    std::signal(SIGPIPE, SIG_IGN);  // A dead child must show up as an error, not kill the run.
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fasteners_bench: %s\n", e.what());
    return 1;
  }
}
