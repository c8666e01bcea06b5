// What the semaphore tests of every backend share on POSIX: counters that the processes of a test
// map together, to count who holds a slot at once, and the CPU time a process has used.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <system_error>

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

}  // namespace fasteners_test
