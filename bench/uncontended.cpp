// Section 3: uncontended acquire+release pairs in one process, timed with Google Benchmark.
#include "uncontended.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>

#include "contenders.hpp"
#include "fasteners/interprocess_lock.hpp"
#include "fasteners/interprocess_reader_writer_lock.hpp"

#if FASTENERS_BENCH_HAVE_BOOST
#include <boost/interprocess/sync/file_lock.hpp>
#endif

namespace fasteners_bench {
namespace {

bool ofd_lock(int fd, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  return ::fcntl(fd, F_OFD_SETLK, &fl) == 0;
}

int open_lock_file(const std::string& path) {
  return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
}

void raw_pair(benchmark::State& state, const std::string& path) {
  const int fd = open_lock_file(path);
  if (fd < 0) {
    state.SkipWithError(std::strerror(errno));
    return;
  }
  for (auto _ : state) {
    if (!ofd_lock(fd, F_WRLCK) || !ofd_lock(fd, F_UNLCK)) {
      state.SkipWithError(std::strerror(errno));
      break;
    }
  }
  ::close(fd);
}

void raw_open_pair_close(benchmark::State& state, const std::string& path) {
  for (auto _ : state) {
    const int fd = open_lock_file(path);
    if (fd < 0 || !ofd_lock(fd, F_WRLCK) || !ofd_lock(fd, F_UNLCK)) {
      state.SkipWithError(std::strerror(errno));
      break;
    }
    ::close(fd);
  }
}

fasteners::lock_options options(bool keep_open, bool fencing = false) {
  fasteners::lock_options o;
  o.keep_open = keep_open;
  o.fencing = fencing;
  return o;
}

template <class F>
void guarded(benchmark::State& state, F&& body) {
  try {
    body();
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// With `fencing`, each lock() also takes a fencing token: a read-increment-write of the counter
// file "<path>.fence" beside the lock file.
template <bool keep_open, bool fencing = false>
void fasteners_lock(benchmark::State& state, const std::string& path) {
  guarded(state, [&] {
    fasteners::interprocess_lock lock(path, options(keep_open, fencing));
    for (auto _ : state) {
      lock.lock();
      lock.unlock();
    }
  });
}

template <bool keep_open>
void fasteners_try_lock_for(benchmark::State& state, const std::string& path) {
  guarded(state, [&] {
    fasteners::interprocess_lock lock(path, options(keep_open));
    for (auto _ : state) {
      if (!lock.try_lock_for(std::chrono::seconds(10))) {
        state.SkipWithError("try_lock_for timed out on a free lock");
        break;
      }
      lock.unlock();
    }
  });
}

template <bool keep_open>
void fasteners_shared(benchmark::State& state, const std::string& path) {
  guarded(state, [&] {
    fasteners::interprocess_reader_writer_lock lock(path, options(keep_open));
    for (auto _ : state) {
      lock.lock_shared();
      lock.unlock_shared();
    }
  });
}

#if FASTENERS_BENCH_HAVE_BOOST
void boost_lock(benchmark::State& state, const std::string& path) {
  guarded(state, [&] {
    ::close(open_lock_file(path));
    boost::interprocess::file_lock lock(path.c_str());
    for (auto _ : state) {
      lock.lock();
      lock.unlock();
    }
  });
}
#endif

// Keeps the median (or, with one repetition, the only) real time per iteration of each benchmark.
class collecting_reporter final : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      const bool wanted =
          run.run_type == Run::RT_Aggregate ? run.aggregate_name == "median" : run.repetitions <= 1;
      if (!wanted) continue;
      auto& entry = rows_[run.run_name.function_name];
      if (run.error_occurred) {
        entry = {false, run.error_message, 0};
      } else {
        entry = {true, "", run.GetAdjustedRealTime()};
      }
    }
  }
  struct row {
    bool ok = false;
    std::string error;
    double ns = 0;
  };
  const std::map<std::string, row>& rows() const { return rows_; }

 private:
  std::map<std::string, row> rows_;
};

}  // namespace

std::vector<uncontended_result> measure_uncontended(const settings& config) {
  using body = void (*)(benchmark::State&, const std::string&);
  struct entry {
    const char* key;
    const char* label;
    body run;
  };
  std::vector<entry> entries = {
      {"raw_pair", "raw F_OFD_SETLK lock+unlock on an open fd", &raw_pair},
      {"raw_open_pair_close", "raw open+F_OFD_SETLK lock+unlock+close", &raw_open_pair_close},
      {"fasteners_lock", "fasteners lock()+unlock()", &fasteners_lock<false>},
      {"fasteners_lock_fencing", "fasteners lock()+unlock(), fencing",
       &fasteners_lock<false, true>},
      {"fasteners_try_lock_for", "fasteners try_lock_for(10 s)+unlock()",
       &fasteners_try_lock_for<false>},
      {"fasteners_shared", "fasteners lock_shared()+unlock_shared()", &fasteners_shared<false>},
      {"fasteners_lock_keep_open", "fasteners lock()+unlock(), keep_open", &fasteners_lock<true>},
      {"fasteners_lock_keep_open_fencing", "fasteners lock()+unlock(), keep_open, fencing",
       &fasteners_lock<true, true>},
      {"fasteners_try_lock_for_keep_open", "fasteners try_lock_for(10 s)+unlock(), keep_open",
       &fasteners_try_lock_for<true>},
      {"fasteners_shared_keep_open", "fasteners lock_shared()+unlock_shared(), keep_open",
       &fasteners_shared<true>},
  };
#if FASTENERS_BENCH_HAVE_BOOST
  if (config.use_boost) {
    entries.push_back(
        {"boost_lock", "Boost file_lock lock()+unlock() (classic fcntl)", &boost_lock});
  }
#endif
  for (const auto& e : entries) {
    const std::string path = config.dir + "/uncontended-" + e.key + ".lock";
    benchmark::RegisterBenchmark(e.key,
                                 [run = e.run, path](benchmark::State& state) { run(state, path); })
        ->Unit(benchmark::kNanosecond)
        ->MinTime(config.min_time)
        ->Repetitions(config.repetitions)
        ->ReportAggregatesOnly(true);
  }
  collecting_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::ClearRegisteredBenchmarks();

  std::vector<uncontended_result> results;
  for (const auto& e : entries) {
    uncontended_result r;
    r.key = e.key;
    r.label = e.label;
    const auto it = reporter.rows().find(e.key);
    if (it == reporter.rows().end()) {
      r.note = "not run (filtered out?)";
    } else if (!it->second.ok) {
      r.note = it->second.error;
    } else {
      r.ran = true;
      r.ns = it->second.ns;
    }
    results.push_back(r);
  }
  if (!config.use_boost || !boost_built_in()) {
    uncontended_result r;
    r.key = "boost_lock";
    r.label = "Boost file_lock lock()+unlock() (classic fcntl)";
    r.note = boost_built_in() ? "disabled with --no-boost"
                              : "Boost.Interprocess not found at build time";
    results.push_back(r);
  }
  return results;
}

}  // namespace fasteners_bench
