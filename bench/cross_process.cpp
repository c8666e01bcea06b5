// Hand-off latency, waiter CPU, throughput and timeout accuracy, measured across real processes.
#include "cross_process.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <new>
#include <stdexcept>
#include <system_error>

namespace fasteners_bench {
namespace {

constexpr std::size_t k_counter_bytes = 4096;

std::vector<std::string> waiter_command(const contender& who, const std::string& path,
                                        std::int64_t timeout_ns, const settings& config) {
  if (who.python) {
    return {config.python, "-c", python_waiter_script(), path, std::to_string(timeout_ns)};
  }
  return {config.self, "--child-waiter", who.key, path, std::to_string(timeout_ns)};
}

std::uint64_t inode_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw std::system_error(errno, std::system_category(), "stat " + path);
  }
  return static_cast<std::uint64_t>(st.st_ino);
}

void stop(child_process& child, const contender& who) {
  stop_child(child, std::string("the ") + who.label + " waiter");
}

// The shared-memory counter of a throughput contest.
struct counter_file {
  explicit counter_file(const std::string& path, bool create) {
    const int fd =
        ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "open " + path);
    if (create && ::ftruncate(fd, static_cast<off_t>(k_counter_bytes)) != 0) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::system_category(), "ftruncate " + path);
    }
    memory = ::mmap(nullptr, k_counter_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    const int error = errno;
    ::close(fd);
    if (memory == MAP_FAILED) throw std::system_error(error, std::system_category(), "mmap");
    value = create ? new (memory) std::atomic<std::uint64_t>(0)
                   : static_cast<std::atomic<std::uint64_t>*>(memory);
  }
  ~counter_file() { ::munmap(memory, k_counter_bytes); }
  counter_file(const counter_file&) = delete;
  counter_file& operator=(const counter_file&) = delete;
  void* memory = nullptr;
  std::atomic<std::uint64_t>* value = nullptr;
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
              "the counter must work across processes");

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::system_category(), what);
}

// Pins this process to the CPU it runs on while it lives, then restores its affinity.
class one_cpu {
 public:
  one_cpu() {
    if (::sched_getaffinity(0, sizeof saved_, &saved_) != 0) throw_errno("sched_getaffinity");
    const int now = ::sched_getcpu();
    cpu_ = now < 0 ? 0 : static_cast<std::size_t>(now);
    if (!CPU_ISSET(cpu_, &saved_)) {
      for (cpu_ = 0; cpu_ + 1 < CPU_SETSIZE && !CPU_ISSET(cpu_, &saved_); ++cpu_) {
      }
    }
    pin(0);
  }
  ~one_cpu() { ::sched_setaffinity(0, sizeof saved_, &saved_); }
  one_cpu(const one_cpu&) = delete;
  one_cpu& operator=(const one_cpu&) = delete;
  // Pins process `pid` (0: this one) to this CPU.
  void pin(pid_t pid) const {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu_, &one);
    if (::sched_setaffinity(pid, sizeof one, &one) != 0) throw_errno("sched_setaffinity");
  }
  int cpu() const { return static_cast<int>(cpu_); }

 private:
  cpu_set_t saved_{};
  std::size_t cpu_ = 0;
};

// One contender's hand-off measurement: its holder here, its waiter in a child process (pinned to
// `pin`'s CPU, if given).
class handoff_run {
 public:
  handoff_run(const contender& who, const settings& config, const one_cpu* pin)
      : who_(who),
        path_(config.dir + "/handoff-" + who.key + ".lock"),
        holder_(make_lock(who.id, path_)),
        child_(
            spawn(waiter_command(who, path_, who.timed ? config.handoff_timeout_ns : -1, config))) {
    try {
      if (pin) pin->pin(child_.pid);
    } catch (...) {
      abandon(child_);
      throw;
    }
  }
  ~handoff_run() {
    if (child_.pid >= 0) abandon(child_);
  }
  handoff_run(const handoff_run&) = delete;
  handoff_run& operator=(const handoff_run&) = delete;

  void round(std::int64_t hold_ns, bool counted) {
    holder_->acquire(-1);
    if (inode_ == 0) inode_ = inode_of(path_);
    start_wait(child_);
    sleep_for_ns(hold_ns);
    if (who_.waits_in_kernel) {
      // B said it is about to wait; make sure it really sleeps in the kernel before releasing.
      const std::int64_t give_up = now_ns() + 5 * k_ns_per_s;
      bool late = false;
      while (!waiter_blocked_in_kernel(inode_)) {
        if (now_ns() > give_up) {
          throw std::runtime_error(std::string("the ") + who_.label +
                                   " waiter never showed up blocked in /proc/locks");
        }
        late = true;
        sleep_for_ns(100000);
      }
      if (late && counted) ++not_yet_blocked_;
    }
    const std::int64_t released = now_ns();
    holder_->release();
    const std::int64_t returned = now_ns();
    const wait_record record = read_handoff(child_, who_.label);
    if (counted) samples_.add(released, returned, record);
  }

  // The latency of each counted round so far, in round order.
  const std::vector<double>& latencies() const { return samples_.latency; }

  handoff_result result() {
    stop(child_, who_);
    handoff_result r;
    r.key = who_.key;
    r.label = who_.label;
    r.kernel_checked = who_.waits_in_kernel;
    r.not_yet_blocked = not_yet_blocked_;
    double cpu_total = 0;
    double wall_total = 0;
    for (const double v : samples_.cpu) cpu_total += v;
    for (const double v : samples_.wall) wall_total += v;
    r.cpu_fraction = wall_total > 0 ? cpu_total / wall_total : 0;
    std::move(samples_).summarize_into(r);
    r.ran = true;
    return r;
  }

 private:
  const contender& who_;
  const std::string path_;
  const std::unique_ptr<bench_lock> holder_;
  child_process child_;
  std::uint64_t inode_ = 0;
  int not_yet_blocked_ = 0;
  handoff_samples samples_;
};

// One contender's timeout measurement: the lock held here throughout, timed waits in a child.
class timeout_run {
 public:
  timeout_run(const contender& who, const settings& config)
      : who_(who),
        config_(config),
        path_(config.dir + "/timeout-" + who.key + ".lock"),
        holder_(make_lock(who.id, path_)) {
    holder_->acquire(-1);
    child_ = spawn(waiter_command(who, path_, config.accuracy_timeout_ns, config));
  }
  ~timeout_run() {
    if (child_.pid >= 0) abandon(child_);
  }
  timeout_run(const timeout_run&) = delete;
  timeout_run& operator=(const timeout_run&) = delete;

  void round(bool counted) {
    start_wait(child_);
    wait_record record{};
    read_all(child_.from_child, &record, sizeof record);
    if (!counted) return;
    const std::int64_t took = record.end_ns - record.start_ns;
    if (record.acquired != 0) ++acquired_;
    if (took < config_.accuracy_timeout_ns) ++early_;
    elapsed_.push_back(static_cast<double>(took));
    lateness_.push_back(static_cast<double>(took - config_.accuracy_timeout_ns));
  }

  timeout_result result() {
    stop(child_, who_);
    holder_->release();
    timeout_result r;
    r.key = who_.key;
    r.label = who_.label;
    r.timeout_ns = config_.accuracy_timeout_ns;
    r.early = early_;
    r.acquired = acquired_;
    r.elapsed_ns = summarize(std::move(elapsed_));
    r.lateness_ns = summarize(std::move(lateness_));
    r.ran = true;
    return r;
  }

 private:
  const contender& who_;
  const settings& config_;
  const std::string path_;
  const std::unique_ptr<bench_lock> holder_;
  child_process child_;
  int early_ = 0;
  int acquired_ = 0;
  std::vector<double> elapsed_;
  std::vector<double> lateness_;
};

// One turn of a throughput contest: config.processes workers for `length_ns`.
void contest(const contender& who, const settings& config, std::int64_t length_ns,
             throughput_result& result) {
  const std::string lock_path = config.dir + "/throughput-" + who.key + ".lock";
  const std::string counter_path = config.dir + "/counter-" + who.key;
  counter_file counter(counter_path, true);
  ::close(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666));
  // Leave the children time to start, so that all of them contend from the first moment.
  const std::int64_t start = now_ns() + 300 * k_ns_per_ms;
  std::vector<child_process> children;
  std::uint64_t total = 0;
  try {
    for (int i = 0; i < config.processes; ++i) {
      children.push_back(spawn({config.self, "--child-worker", who.key, lock_path, counter_path,
                                std::to_string(start), std::to_string(start + length_ns)}));
    }
    for (std::size_t i = 0; i < children.size(); ++i) {
      std::uint64_t count = 0;
      read_all(children[i].from_child, &count, sizeof count);
      if (result.per_process.size() <= i) result.per_process.resize(i + 1);
      result.per_process[i] += count;
      total += count;
      if (const int status = finish(children[i]); status != 0) {
        throw std::runtime_error(std::string("a ") + who.label + " worker exited with status " +
                                 std::to_string(status));
      }
    }
  } catch (...) {
    for (auto& child : children) abandon(child);
    throw;
  }
  result.total += total;
  result.counter += counter.value->load();
  result.seconds += static_cast<double>(length_ns) / 1e9;
}

// The hand-off rounds of `who`, taking turns; the waiters pinned to `pin`'s CPU if given.
std::vector<std::unique_ptr<handoff_run>> handoff_rounds(const std::vector<const contender*>& who,
                                                         const settings& config, std::mt19937& rng,
                                                         const one_cpu* pin) {
  std::vector<std::unique_ptr<handoff_run>> runs;
  for (const auto* c : who) runs.push_back(std::make_unique<handoff_run>(*c, config, pin));
  std::uniform_int_distribution<std::int64_t> hold(
      static_cast<std::int64_t>(config.hold_min_ms * 1e6),
      static_cast<std::int64_t>(config.hold_max_ms * 1e6));
  for (int round = 0; round < config.warmup_rounds + config.handoff_rounds; ++round) {
    for (const auto i : turn_order(runs.size(), rng)) {
      runs[i]->round(hold(rng), round >= config.warmup_rounds);
    }
  }
  return runs;
}

// Each round's latency over the baseline's in the same round.
summary round_ratios(const std::vector<double>& latencies, const std::vector<double>& baseline) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < latencies.size() && i < baseline.size(); ++i) {
    if (baseline[i] > 0) ratios.push_back(latencies[i] / baseline[i]);
  }
  return summarize(std::move(ratios));
}

}  // namespace

std::vector<handoff_result> measure_handoff(const std::vector<const contender*>& who,
                                            const settings& config, std::mt19937& rng) {
  auto runs = handoff_rounds(who, config, rng, nullptr);
  std::vector<handoff_result> results;
  for (auto& run : runs) results.push_back(run->result());
  return results;
}

std::vector<same_cpu_result> measure_same_cpu_handoff(const std::vector<const contender*>& who,
                                                      const settings& config, std::mt19937& rng) {
  const one_cpu pin;
  auto runs = handoff_rounds(who, config, rng, &pin);
  const handoff_run* raw = nullptr;
  for (std::size_t i = 0; i < who.size(); ++i) {
    if (who[i]->id == contender_id::raw_ofd) raw = runs[i].get();
  }
  std::vector<same_cpu_result> results(runs.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    results[i].cpu = pin.cpu();
    if (raw) results[i].round_ratio = round_ratios(runs[i]->latencies(), raw->latencies());
  }
  for (std::size_t i = 0; i < runs.size(); ++i) {
    static_cast<handoff_result&>(results[i]) = runs[i]->result();
  }
  return results;
}

std::vector<throughput_result> measure_throughput(const std::vector<const contender*>& who,
                                                  const settings& config, std::mt19937& rng) {
  std::vector<throughput_result> results(who.size());
  const auto slice =
      static_cast<std::int64_t>(config.throughput_seconds * 1e9 / config.throughput_slices);
  for (int turn = 0; turn < config.throughput_slices; ++turn) {
    for (const auto i : turn_order(who.size(), rng)) contest(*who[i], config, slice, results[i]);
  }
  for (std::size_t i = 0; i < who.size(); ++i) {
    auto& r = results[i];
    r.key = who[i]->key;
    r.label = who[i]->label;
    r.per_second = static_cast<double>(r.total) / r.seconds;
    r.ran = true;
  }
  return results;
}

std::vector<timeout_result> measure_timeout(const std::vector<const contender*>& who,
                                            const settings& config, std::mt19937& rng) {
  std::vector<std::unique_ptr<timeout_run>> runs;
  for (const auto* c : who) runs.push_back(std::make_unique<timeout_run>(*c, config));
  for (int round = 0; round < config.warmup_rounds + config.timeout_rounds; ++round) {
    for (const auto i : turn_order(runs.size(), rng)) {
      runs[i]->round(round >= config.warmup_rounds);
    }
  }
  std::vector<timeout_result> results;
  for (auto& run : runs) results.push_back(run->result());
  return results;
}

int child_waiter_main(const std::vector<std::string>& args) {
  if (args.size() != 3) throw std::invalid_argument("--child-waiter KEY PATH TIMEOUT_NS");
  const auto& who = contender_by_key(args[0]);
  const auto lock = make_lock(who.id, args[1]);
  const std::int64_t timeout = std::stoll(args[2]);
  return serve_waits([&] { return lock->acquire(timeout); }, [&] { lock->release(); },
                     [&] { return lock->granted_ns(); });
}

int child_worker_main(const std::vector<std::string>& args) {
  if (args.size() != 5) {
    throw std::invalid_argument("--child-worker KEY LOCK_PATH COUNTER_PATH START_NS END_NS");
  }
  const auto& who = contender_by_key(args[0]);
  const auto lock = make_lock(who.id, args[1]);
  counter_file counter(args[2], false);
  const std::int64_t start = std::stoll(args[3]);
  const std::int64_t end = std::stoll(args[4]);
  const std::int64_t timeout = who.timed ? 10 * k_ns_per_s : -1;
  sleep_until_ns(start);
  std::uint64_t count = 0;
  while (now_ns() < end) {
    if (!lock->acquire(timeout)) throw std::runtime_error("a worker's timed wait timed out");
    // A read and a separate write, not an atomic increment: without mutual exclusion, updates
    // would be lost and the final count would show it.
    const std::uint64_t value = counter.value->load(std::memory_order_relaxed);
    counter.value->store(value + 1, std::memory_order_relaxed);
    lock->release();
    ++count;
  }
  write_all(STDOUT_FILENO, &count, sizeof count);
  return 0;
}

}  // namespace fasteners_bench
