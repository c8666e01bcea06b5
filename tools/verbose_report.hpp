// What `fasteners run -v` says: flock(1)'s lines where flock(1) writes them, and whom it waits for.
#pragma once

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fasteners::tool {

// The lines of -v, as util-linux flock(1) writes them, each beginning with the name the program
// was invoked by: "NAME: getting lock took S.UUUUUU seconds" and "NAME: executing PROGRAM" on
// stdout, through its C buffer as flock(1) prints them (so when stdout is not a terminal they come
// out as this process exits, after the command's output, and with -F not at all: exec discards
// the buffer); "NAME: failed to get lock" and "NAME: timeout while waiting to get lock" on stderr.
// Only when it waits does it say more, on stderr: whom for. With --slots, "a slot" stands for
// "lock" in these lines ("NAME: getting a slot took S.UUUUUU seconds").
class verbose_report {
 public:
  using seconds = std::chrono::duration<double>;

  // Says nothing unless `verbose`. `taken` is what the lines call what is taken: "lock", as
  // flock(1), or "a slot" (of a semaphore, `run --slots`).
  verbose_report(bool verbose, std::string program_name, std::string taken = "lock")
      : verbose_(verbose), name_(std::move(program_name)), taken_(std::move(taken)) {}

  // "NAME: waiting for WHAT (at most T seconds): HOLDERS" on stderr.
  void waiting(const std::string& what, const std::optional<seconds>& timeout,
               const std::string& holders) const;
  // On stdout: the lock (or with -u, its release) took `took`.
  void took(seconds took) const;
  // On stderr: the lock was not had, after one try or at the timeout.
  void not_taken(bool one_try) const;
  // On stdout: PROGRAM (a command's first word) starts.
  void executing(const std::string& program) const;

  bool verbose() const { return verbose_; }

 private:
  bool verbose_;
  std::string name_;
  std::string taken_;
};

// Whom a lock waits for, for -v: "held exclusive by A, B and 3 more; a writer waits for it first:
// C", from the descriptions of those that hold it (`exclusive` if one holds it so) and of those
// queued ahead of it (all writers with `writers_wait`); `nobody` when both lists are empty.
std::string describe_waits(const std::vector<std::string>& holding, bool exclusive,
                           const std::vector<std::string>& waiting, bool writers_wait,
                           const std::string& nobody);

// Takes `lock` (any type with try_acquire() and acquire(optional<seconds>)) as -n and -w say: one
// try, then unless `one_try`, a wait of at most `timeout` (none: no limit). Returns whether it took
// it. `report` says how it went; `holders()` describes whom it waits for, asked only when it is
// to say so. Throws what the lock throws.
template <class Lock, class Holders>
bool take_and_report(Lock& lock, bool one_try,
                     const std::optional<verbose_report::seconds>& timeout,
                     const verbose_report& report, const std::string& what, Holders&& holders) {
  using seconds = verbose_report::seconds;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return seconds(std::chrono::steady_clock::now() - start); };
  bool taken = lock.try_acquire();
  if (!taken && !one_try) {
    if (report.verbose()) report.waiting(what, timeout, holders());
    std::optional<seconds> left;
    if (timeout) left = std::max(seconds(0), *timeout - elapsed());
    taken = lock.acquire(left);
  }
  if (taken) {
    report.took(elapsed());
  } else {
    report.not_taken(one_try);
  }
  return taken;
}

}  // namespace fasteners::tool
