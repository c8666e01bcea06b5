// The randomized test's coordinator: forks the workers, kills and respawns them, watches waiters.
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "random_test.hpp"

namespace fasteners_random {
namespace {

// How long the workers may take to finish after the budget ends before they count as hung.
constexpr double k_finish_limit_seconds = 60;

std::int64_t seconds_to_ns(double s) { return static_cast<std::int64_t>(s * 1e9); }

std::string describe_status(int status) {
  char text[64];
  if (WIFEXITED(status)) {
    std::snprintf(text, sizeof text, "exit code %d", WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    std::snprintf(text, sizeof text, "signal %d (%s)", WTERMSIG(status),
                  ::strsignal(WTERMSIG(status)));
  } else {
    std::snprintf(text, sizeof text, "status 0x%x", status);
  }
  return text;
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finalizer
  x += std::uint64_t{0x9e3779b97f4a7c15};
  x = (x ^ (x >> 30)) * std::uint64_t{0xbf58476d1ce4e5b9};
  x = (x ^ (x >> 27)) * std::uint64_t{0x94d049bb133111eb};
  return x ^ (x >> 31);
}

enum class phase { idle, running, reaping };

struct slot_info {
  phase state = phase::idle;
  pid_t pid = 0;  // Also the process group of the worker and its fork children.
  bool killed = false;
  std::int64_t started_ns = 0;
};

// Single-threaded: it forks the workers, so it must never start a thread.
class coordinator {
 public:
  coordinator(const options& opts, shared_state& s)
      : opts_(opts),
        s_(s),
        book_(s, opts.processes, opts.files),
        rng_(mix(opts.seed)),
        slots_(static_cast<std::size_t>(opts.processes)),
        parent_(::getpid()) {}

  int run() {
    const auto start = now_ns();
    const auto end = start + seconds_to_ns(opts_.seconds);
    last_live_.assign(static_cast<std::size_t>(opts_.files), start);
    next_kill_ns_ = start + uniform_ns(0.02, 0.4);
    for (int slot = 0; slot < opts_.processes; ++slot) spawn(slot);
    while (now_ns() < end) {
      step(true);
    }
    budget_elapsed_ = static_cast<double>(now_ns() - start) / 1e9;
    s_.stop.store(true);
    stopping_ = true;
    const auto finish_limit = now_ns() + seconds_to_ns(k_finish_limit_seconds);
    while (any_left() && now_ns() < finish_limit) step(false);
    if (any_left()) {
      violation(s_, "workers still run %.0f s after the end of the budget (a hang?):%s",
                k_finish_limit_seconds, book_.describe_all().c_str());
      for (int slot = 0; slot < opts_.processes; ++slot) {
        auto& info = slots_[static_cast<std::size_t>(slot)];
        if (info.state == phase::running) {
          book_.mark_dying(slot);
          info.killed = true;
          ::kill(-info.pid, SIGKILL);
        }
      }
      while (any_left()) step(false);
    }
    elapsed_ = static_cast<double>(now_ns() - start) / 1e9;
    return 0;
  }

  double elapsed() const { return elapsed_; }
  double budget_elapsed() const { return budget_elapsed_; }

 private:
  std::int64_t uniform_ns(double lo, double hi) {
    return seconds_to_ns(std::uniform_real_distribution<double>(lo, hi)(rng_));
  }

  bool any_left() const {
    return std::any_of(slots_.begin(), slots_.end(),
                       [](const slot_info& i) { return i.state != phase::idle; });
  }

  void step(bool may_kill) {
    reap();
    finish_reaping();
    if (may_kill) maybe_kill();
    check_waiters();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }

  void spawn(int slot) {
    auto& st = s_.slots[slot];
    const auto incarnation = st.incarnation.fetch_add(1);
    const auto seed = mix(opts_.seed ^ mix(static_cast<std::uint64_t>(slot) << 32 | incarnation));
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      // A worker must not outlive a coordinator that was killed (a test timeout, say).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent_) ::_exit(k_exit_failed);
      int code = k_exit_failed;
      try {
        code = run_worker(opts_, s_, slot, seed);
      } catch (const std::exception& e) {
        violation(s_, "slot %d: worker failed: %s", slot, e.what());
      }
      std::exit(code);
    }
    if (pid < 0) {
      violation(s_, "fork failed: %s", std::strerror(errno));
      return;
    }
    ::setpgid(pid, pid);
    auto& info = slots_[static_cast<std::size_t>(slot)];
    info = slot_info{phase::running, pid, false, now_ns()};
    st.pid.store(pid);
    if (incarnation > 0) book_.count(c_respawn);
  }

  void reap() {
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      const auto it = std::find_if(slots_.begin(), slots_.end(), [&](const slot_info& i) {
        return i.state == phase::running && i.pid == pid;
      });
      if (it != slots_.end()) {
        worker_ended(static_cast<int>(it - slots_.begin()), status);
        continue;
      }
      // A worker's fork child whose worker died first (this process is their subreaper). Exit
      // code 1 means it reported its failures already; SIGKILL came from this coordinator.
      const bool fine = (WIFEXITED(status) && (WEXITSTATUS(status) == k_exit_ok ||
                                               WEXITSTATUS(status) == k_exit_failed)) ||
                        (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
      if (!fine) {
        violation(s_, "an orphaned fork child (pid %d) ended with %s", static_cast<int>(pid),
                  describe_status(status).c_str());
      }
    }
  }

  void worker_ended(int slot, int status) {
    auto& info = slots_[static_cast<std::size_t>(slot)];
    const bool dying = s_.slots[slot].epoch.load() % 2 == 1;
    const bool expected = (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL && info.killed) ||
                          (WIFEXITED(status) && WEXITSTATUS(status) == k_exit_requested && dying) ||
                          (WIFEXITED(status) && WEXITSTATUS(status) == k_exit_ok && stopping_);
    if (!expected) {
      violation(s_, "the worker in slot %d (pid %d) ended unexpectedly with %s", slot,
                static_cast<int>(info.pid), describe_status(status).c_str());
    }
    // Its fork children go with it; its records are cleared once the whole group is gone.
    book_.mark_dying(slot);
    ::kill(-info.pid, SIGKILL);
    info.state = phase::reaping;
  }

  void finish_reaping() {
    for (int slot = 0; slot < opts_.processes; ++slot) {
      auto& info = slots_[static_cast<std::size_t>(slot)];
      if (info.state != phase::reaping) continue;
      if (::kill(-info.pid, 0) == 0 || errno != ESRCH) continue;  // Some are still alive.
      clear(slot);
      info.state = phase::idle;
      if (!stopping_) spawn(slot);
    }
  }

  // Forgets what a dead worker held and waited for; then its slot is live again.
  void clear(int slot) {
    const auto mask = ~(std::uint64_t{0xff} << (8 * slot));
    for (int file = 0; file < opts_.files; ++file) s_.holders[file].fetch_and(mask);
    for (auto& t : s_.slots[slot].threads) {
      for (auto& h : t.holds) h.store(0);
      if (t.wait.seq.load() % 2 == 1) t.wait.seq.fetch_add(1);
    }
    s_.slots[slot].pid.store(0);
    s_.slots[slot].epoch.fetch_add(1);  // Even again.
  }

  bool busy(int slot) const {
    for (const auto& t : s_.slots[slot].threads) {
      if (t.wait.seq.load() % 2 == 1) return true;
      for (const auto& h : t.holds) {
        if (h.load() != 0) return true;
      }
    }
    return false;
  }

  // SIGKILLs a random worker now and then, preferring one that holds or waits for a lock.
  void maybe_kill() {
    const auto now = now_ns();
    if (now < next_kill_ns_) return;
    next_kill_ns_ = now + uniform_ns(0.02, 0.4);
    std::vector<int> all;
    std::vector<int> busy_ones;
    for (int slot = 0; slot < opts_.processes; ++slot) {
      const auto& info = slots_[static_cast<std::size_t>(slot)];
      if (info.state != phase::running || now - info.started_ns < seconds_to_ns(0.005)) continue;
      all.push_back(slot);
      if (busy(slot)) busy_ones.push_back(slot);
    }
    const auto& from = !busy_ones.empty() && rng_() % 2 == 0 ? busy_ones : all;
    if (from.empty()) return;
    const int slot = from[rng_() % from.size()];
    if (!book_.mark_dying(slot)) return;  // It is exiting on its own.
    auto& info = slots_[static_cast<std::size_t>(slot)];
    info.killed = true;
    ::kill(-info.pid, SIGKILL);
    book_.count(c_kill);
  }

  // A blocking waiter must not sleep while its lock is free: flags a waiter that has waited
  // longer than the stall bound while its file had no live holder and no acquire or release for
  // as long. Also flags waits longer than the stuck bound (a deadlock) and timed waits that last
  // longer than their deadline plus the stall bound.
  void check_waiters() {
    const auto now = now_ns();
    const auto before = book_.read_epochs();
    std::vector<std::uint64_t> words;
    for (int file = 0; file < opts_.files; ++file) words.push_back(s_.holders[file].load());
    const auto after = book_.read_epochs();
    const auto live = book_.live_mask(before, after);
    std::vector<std::int64_t> quiet_since(static_cast<std::size_t>(opts_.files));
    for (int file = 0; file < opts_.files; ++file) {
      const auto f = static_cast<std::size_t>(file);
      if ((words[f] & live) != 0) last_live_[f] = now;
      quiet_since[f] = std::max(last_live_[f], s_.activity_ns[file].load());
    }
    const auto stall = seconds_to_ns(opts_.stall_bound);
    const auto stuck = seconds_to_ns(opts_.stuck_bound);
    for (int slot = 0; slot < opts_.processes; ++slot) {
      const auto epoch = s_.slots[slot].epoch.load();
      if (epoch % 2 == 1) continue;
      for (int thread = 0; thread < opts_.threads; ++thread) {
        const auto& w = s_.slots[slot].threads[thread].wait;
        const auto seq = w.seq.load();
        if (seq % 2 == 0) continue;
        const auto pid = w.pid.load();
        const auto files = w.files.load();
        const auto m = static_cast<mode>(w.mode.load());
        const auto start = w.start_ns.load();
        const auto deadline = w.deadline_ns.load();
        const auto op = static_cast<counter>(w.op.load());
        if (w.seq.load() != seq || s_.slots[slot].epoch.load() != epoch) continue;
        auto& flagged = flagged_[{slot, thread}];
        if (flagged == seq) continue;
        const double waited = static_cast<double>(now - start) / 1e9;
        if (deadline != 0) {
          if (now > deadline + stall) {
            flagged = seq;
            violation(s_,
                      "slot %d thread %d (pid %d, %s) is still in a timed %s wait for files 0x%x "
                      "%.3f s after its deadline:%s",
                      slot, thread, pid, to_string(op), to_string(m), files,
                      static_cast<double>(now - deadline) / 1e9, book_.describe_all().c_str());
          }
          continue;
        }
        std::int64_t free_for = stall + 1;
        for (int file = 0; file < opts_.files; ++file) {
          if (files & (1u << file)) {
            free_for = std::min(free_for, now - quiet_since[static_cast<std::size_t>(file)]);
          }
        }
        if (now - start > stall && free_for > stall) {
          flagged = seq;
          violation(s_,
                    "slot %d thread %d (pid %d, %s) has waited %.3f s for a %s lock on files 0x%x "
                    "that had no holder and no activity for %.3f s:%s",
                    slot, thread, pid, to_string(op), waited, to_string(m), files,
                    static_cast<double>(free_for) / 1e9, book_.describe_all().c_str());
        } else if (now - start > stuck) {
          flagged = seq;
          violation(s_,
                    "slot %d thread %d (pid %d, %s) has waited %.3f s for a %s lock on files 0x%x "
                    "(a deadlock?):%s",
                    slot, thread, pid, to_string(op), waited, to_string(m), files,
                    book_.describe_all().c_str());
        }
      }
    }
  }

  const options& opts_;
  shared_state& s_;
  ledger book_;
  std::mt19937_64 rng_;
  std::vector<slot_info> slots_;
  std::vector<std::int64_t> last_live_;                   // When each file last had a live holder.
  std::map<std::pair<int, int>, std::uint64_t> flagged_;  // The last wait reported per thread.
  const pid_t parent_;
  std::int64_t next_kill_ns_ = 0;
  bool stopping_ = false;
  double elapsed_ = 0;
  double budget_elapsed_ = 0;
};

void print_summary(const options& opts, const shared_state& s, const coordinator& run) {
  std::printf("summary (seed %llu, %.1f s of operations, %.1f s in all):\n",
              static_cast<unsigned long long>(opts.seed), run.budget_elapsed(), run.elapsed());
  for (int c = 0; c < c_count; ++c) {
    std::printf("  %-22s %llu\n", to_string(static_cast<counter>(c)),
                static_cast<unsigned long long>(s.counters[c].load()));
  }
  const auto ops = s.counters[c_ops].load();
  std::printf("  ops per second         %.0f\n",
              static_cast<double>(ops) / std::max(run.budget_elapsed(), 1e-3));
  std::printf("  longest blocking wait  %.3f s\n",
              static_cast<double>(s.max_blocking_wait_ns.load()) / 1e9);
  std::printf("  violations             %llu\n",
              static_cast<unsigned long long>(s.violations.load()));
  if (s.violations.load() != 0) std::printf("first violation: %s", s.first_message);
  if (s.violations.load() > k_printed_violations) {
    std::printf("(only the first %llu violations were printed)\n",
                static_cast<unsigned long long>(k_printed_violations));
  }
  std::fflush(stdout);
}

}  // namespace

int run_coordinator(const options& opts) {
  void* memory = ::mmap(nullptr, sizeof(shared_state), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  auto* s = new (memory) shared_state();
  // Fork children of a worker that dies become this process's children, so it can wait for them.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  coordinator c(opts, *s);
  c.run();
  print_summary(opts, *s, c);
  const bool failed = s->violations.load() != 0;
  s->~shared_state();
  ::munmap(memory, sizeof(shared_state));
  return failed ? 1 : 0;
}

}  // namespace fasteners_random
