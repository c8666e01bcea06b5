// What the semaphore tests of every backend share on POSIX: counters that the processes of a test
// map together, to count who holds a slot at once, the CPU time a process has used, and the bodies
// of the helper processes, for a semaphore of any type (the members of detail::semaphore_core).
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/semaphore_checks.hpp"
#include "common/test_support.hpp"

namespace fasteners_test {

// Counters in a file mapped by every process of a test: who is inside at once, and the most.
struct shared_counts {
  std::atomic<int> inside;
  std::atomic<int> most;
  std::atomic<long> entries;
};

class shared_memory {
 public:
  // Maps `path`, creating it zeroed when `create`.
  shared_memory(const std::filesystem::path& path, bool create) {
    if (create) {
      std::filesystem::resize_file((std::ofstream(path), path), sizeof(shared_counts));
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "open " + path.string());
    void* p = ::mmap(nullptr, sizeof(shared_counts), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw std::system_error(errno, std::system_category(), "mmap");
    counts_ = static_cast<shared_counts*>(p);
  }
  ~shared_memory() { ::munmap(counts_, sizeof(shared_counts)); }
  shared_memory(const shared_memory&) = delete;
  shared_memory& operator=(const shared_memory&) = delete;
  shared_counts& operator*() const { return *counts_; }
  shared_counts* operator->() const { return counts_; }

 private:
  shared_counts* counts_ = nullptr;
};

// Counts one more holder inside, and the most at once.
inline void enter(shared_counts& c) {
  const int now = c.inside.fetch_add(1) + 1;
  int most = c.most.load();
  while (now > most && !c.most.compare_exchange_weak(most, now)) {
  }
  c.entries.fetch_add(1);
}

// The CPU time this process has used, user and system, in seconds.
inline double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// A helper's argument N or K.
inline std::size_t to_size(const std::string& s) { return static_cast<std::size_t>(std::stoul(s)); }

// A helper's body: takes `k` slots of `sem`, prints "held", and gives them back when stdin ends.
template <class Semaphore>
int hold_until_stdin_ends(Semaphore& sem, std::size_t k) {
  for (std::size_t i = 0; i < k; ++i) sem.acquire();
  if (sem.held() != k) return fail(1, "held() is not the number of slots taken");
  report_and_wait("held");
  for (std::size_t i = 0; i < k; ++i) sem.release();
  return 0;
}

// A helper's body: `threads` threads take a slot of `sem`, stay inside for a moment, give it back,
// again and again for `seconds`; each counts itself in the counters at `shm` while inside.
// Blocking, timed and one-time acquires, mixed.
template <class Semaphore>
int churn(Semaphore& sem, const std::filesystem::path& shm_path, double seconds, int threads) {
  using namespace std::chrono_literals;
  shared_memory shm(shm_path, false);
  const auto end = steady::now() + std::chrono::duration<double>(seconds);
  std::atomic<int> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      try {
        for (unsigned i = 0; steady::now() < end; ++i) {
          bool got = true;
          if (i % 3 == 1) {
            got = sem.try_acquire_for(50ms);
          } else if (i % 3 == 2) {
            got = sem.try_acquire();
          } else {
            sem.acquire();
          }
          if (!got) continue;
          enter(*shm);
          std::this_thread::sleep_for(
              std::chrono::microseconds(200 + 150 * ((i + static_cast<unsigned>(t)) % 7)));
          shm->inside.fetch_sub(1);
          sem.release();
        }
      } catch (const std::exception& e) {
        std::cerr << "churn: " << e.what() << "\n";
        errors.fetch_add(1);
      }
    });
  }
  for (auto& thread : pool) thread.join();
  return errors.load() == 0 ? 0 : fail(2, "a thread failed");
}

// A helper's body: prints "waiting", waits for a slot of `sem`, then prints the CPU seconds and
// the wall seconds the wait took, and gives the slot back.
template <class Semaphore>
int wait_reporting_cpu(Semaphore& sem) {
  std::cout << "waiting" << std::endl;
  const double cpu_before = cpu_seconds();
  const auto start = steady::now();
  sem.acquire();
  const double wall = seconds_since(start);
  std::cout << (cpu_seconds() - cpu_before) << " " << wall << std::endl;
  sem.release();
  return 0;
}

// Has `holder` (a helper running hold_until_stdin_ends) give its slots back after 2 s, which
// `waiter` (a helper running wait_reporting_cpu, past "waiting") waits for; expects the wait to
// have used at most `share` of a core.
inline void expect_a_cheap_wait(child_process& holder, child_process& waiter, double share) {
  using namespace std::chrono_literals;
  std::this_thread::sleep_for(2s);
  holder.close_stdin();
  const auto line = waiter.read_line();
  ASSERT_TRUE(line.has_value());
  double cpu = 0;
  double wall = 0;
  ASSERT_EQ(std::sscanf(line->c_str(), "%lf %lf", &cpu, &wall), 2) << *line;
  std::cout << "waited " << wall << " s using " << cpu << " s of CPU\n";
  EXPECT_GE(wall, 1.5);
  EXPECT_LE(cpu, share * wall) << "a waiter used more than " << share * 100 << "% of a core";
  EXPECT_EQ(waiter.finish(), 0);
  EXPECT_EQ(holder.finish(), 0);
}

}  // namespace fasteners_test
