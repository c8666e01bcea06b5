// The semaphore benchmark: fasteners::interprocess_semaphore against raw fcntl locks, measured in
// the same run: the acquire+release of a free slot, and the hand-off of a freed slot to a waiter
// in another process. Prints a Markdown report (bench/semaphore-run.sh adds GNU parallel's sem).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "fasteners/interprocess_semaphore.hpp"

namespace {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Raw open-file-description locks on one byte: the baseline.
class raw_lock {
 public:
  explicit raw_lock(const fs::path& path)
      : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ < 0) throw std::system_error(errno, std::system_category(), "open " + path.string());
  }
  ~raw_lock() { ::close(fd_); }
  raw_lock(const raw_lock&) = delete;
  raw_lock& operator=(const raw_lock&) = delete;
  bool try_lock() { return set(F_OFD_SETLK, F_WRLCK); }
  void lock() {
    if (!set(F_OFD_SETLKW, F_WRLCK)) throw std::runtime_error("F_OFD_SETLKW failed");
  }
  void unlock() { set(F_OFD_SETLK, F_UNLCK); }

 private:
  bool set(int cmd, short type) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return ::fcntl(fd_, cmd, &fl) == 0;
  }
  int fd_;
};

// Nanoseconds per acquire+release of a free slot (of lock+unlock for the baseline), over `n`.
template <class Take, class Give>
double per_pair_ns(int n, Take take, Give give) {
  const auto start = clock_type::now();
  for (int i = 0; i < n; ++i) {
    take();
    give();
  }
  return std::chrono::duration<double, std::nano>(clock_type::now() - start).count() / n;
}

// What the two processes of a hand-off share.
struct handoff_area {
  std::atomic<int> round;  // The round the waiter may start: it waits for the slot.
  std::atomic<int> done;   // The last round the waiter finished.
  std::atomic<long> released_ns;
  std::atomic<long> granted_ns;
};

long now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
      .count();
}

void wait_until(const std::atomic<int>& a, int value) {
  while (a.load() < value) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

// Microseconds from a release in this process to the grant in a waiting child, per round. `Make`
// makes an object with take()/give() (called in each process after fork()).
template <class Make>
std::vector<double> handoff_us(int rounds, Make make) {
  void* mem = ::mmap(nullptr, sizeof(handoff_area), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::system_error(errno, std::system_category(), "mmap");
  auto* area = new (mem) handoff_area{};
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto lock = make();
    for (int r = 1; r <= rounds; ++r) {
      wait_until(area->round, r);
      lock.take();
      area->granted_ns.store(now_ns());
      lock.give();
      area->done.store(r);
    }
    ::_exit(0);
  }
  auto lock = make();
  std::vector<double> result;
  for (int r = 1; r <= rounds; ++r) {
    lock.take();
    area->round.store(r);
    // Long enough for the waiter to be blocked in its wait.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    area->released_ns.store(now_ns());
    lock.give();
    wait_until(area->done, r);
    result.push_back(static_cast<double>(area->granted_ns.load() - area->released_ns.load()) /
                     1000.0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::munmap(mem, sizeof(handoff_area));
  return result;
}

struct semaphore_user {
  fasteners::interprocess_semaphore sem;
  void take() { sem.acquire(); }
  void give() { sem.release(); }
};

struct raw_user {
  std::unique_ptr<raw_lock> lock;
  void take() { lock->lock(); }
  void give() { lock->unlock(); }
};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const fs::path dir =
      fs::temp_directory_path() / ("fasteners-sem-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path sem_path = dir / "sem";
  const fs::path raw_path = dir / "raw";
  const int pairs = quick ? 20000 : 200000;
  const int runs = quick ? 3 : 7;
  const int rounds = quick ? 100 : 500;

  // ---- A free slot: acquire + release, against lock + unlock of a raw fcntl lock. ----
  std::vector<double> sem_ns;
  std::vector<double> raw_ns;
  std::vector<double> ratios;
  {
    fasteners::interprocess_semaphore sem(sem_path, 4);
    raw_lock raw(raw_path);
    per_pair_ns(
        1000, [&] { sem.acquire(); }, [&] { sem.release(); });  // Opens the file.
    for (int run = 0; run < runs; ++run) {
      const double r = per_pair_ns(
          pairs, [&] { raw.try_lock(); }, [&] { raw.unlock(); });
      const double s = per_pair_ns(
          pairs, [&] { sem.acquire(); }, [&] { sem.release(); });
      raw_ns.push_back(r);
      sem_ns.push_back(s);
      ratios.push_back(s / r);
    }
  }

  // ---- A freed slot handed to a waiter of another process (N = 1), against raw fcntl. ----
  std::vector<double> sem_handoff;
  std::vector<double> raw_handoff;
  for (int run = 0; run < 2; ++run) {
    const auto s = handoff_us(rounds, [&] { return semaphore_user{{sem_path.string() + "1", 1}}; });
    const auto r =
        handoff_us(rounds, [&] { return raw_user{std::make_unique<raw_lock>(raw_path)}; });
    sem_handoff.insert(sem_handoff.end(), s.begin(), s.end());
    raw_handoff.insert(raw_handoff.end(), r.begin(), r.end());
  }
  fs::remove_all(dir);

  const auto minmax = [](const std::vector<double>& v) {
    return std::make_pair(*std::min_element(v.begin(), v.end()),
                          *std::max_element(v.begin(), v.end()));
  };
  std::printf("## A free slot: acquire() + release()\n\n");
  std::printf("%d runs of %d pairs each, interleaved; N = 4.\n\n", runs, pairs);
  std::printf("| | median ns per pair | range |\n|---|---:|---:|\n");
  std::printf("| raw fcntl: F_OFD_SETLK lock + unlock | %.0f | %.0f to %.0f |\n", median(raw_ns),
              minmax(raw_ns).first, minmax(raw_ns).second);
  std::printf("| interprocess_semaphore: acquire + release | %.0f | %.0f to %.0f |\n",
              median(sem_ns), minmax(sem_ns).first, minmax(sem_ns).second);
  std::printf("\nRatio to raw, per run: median %.2fx, range %.2fx to %.2fx.\n\n", median(ratios),
              minmax(ratios).first, minmax(ratios).second);
  std::printf("## A freed slot reaches a waiter of another process\n\n");
  std::printf("%zu rounds: the waiter blocks, the holder releases; time from release to grant.\n\n",
              sem_handoff.size());
  std::printf("| | median us | 90th percentile us |\n|---|---:|---:|\n");
  const auto p90 = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() * 9 / 10];
  };
  std::printf("| raw fcntl: F_OFD_SETLKW waiter | %.1f | %.1f |\n", median(raw_handoff),
              p90(raw_handoff));
  std::printf("| interprocess_semaphore (N = 1) | %.1f | %.1f |\n", median(sem_handoff),
              p90(sem_handoff));
  std::printf("\nRatio of medians: %.2fx raw. Target: median under 5 ms: %s.\n",
              median(sem_handoff) / median(raw_handoff),
              median(sem_handoff) < 5000 ? "PASS" : "FAIL");
  return 0;
}
