// The randomized stress test's shared pieces: options, the shared-memory ledger, reports.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>

namespace fasteners_random {

// Limits of the options. The ledger keeps 8 bits per worker process in one 64-bit word per file,
// so at most 8 processes; a process has at most threads + 1 readers of a file (one lock per file
// per thread, plus a fork child), which must fit in the 6 reader bits.
inline constexpr int k_max_processes = 8;
inline constexpr int k_max_threads = 16;
inline constexpr int k_max_files = 16;
inline constexpr int k_max_objects = 8;

// Hold records of a thread: one per lock object, then the worker-wide objects, then its fork child.
inline constexpr int k_shared_record = k_max_objects;
inline constexpr int k_child_record = k_max_objects + 1;
inline constexpr int k_records = k_max_objects + 2;

// Exit codes of workers and of their fork children.
inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failed = 1;
inline constexpr int k_exit_requested = 3;  // the "exit" operation: _exit() while holding locks

struct options {
  std::uint64_t seed = 0;
  double seconds = 20;
  int processes = 4;
  int threads = 3;
  int files = 3;
  int objects = 3;
  bool remove = false;
  // A blocking waiter that has waited this long while its file had no holder and no activity for
  // this long is a violation (the lock was free, yet it slept).
  double stall_bound = 2;
  // A blocking waiter that has waited this long is reported as a probable deadlock.
  double stuck_bound = 15;
  std::filesystem::path dir;  // Holds locks/lock_<i> and link_<i> -> locks/lock_<i>.
};

enum class mode : std::uint8_t { none = 0, read = 1, write = 2 };
const char* to_string(mode m);

// What the summary counts.
enum counter : int {
  c_ops,
  c_acquire_blocking,
  c_acquire_try,
  c_acquire_try_taken,
  c_acquire_timed,
  c_acquire_timed_taken,
  c_release,
  c_destroy,
  c_guard_scope,
  c_std_lock_scope,
  c_scoped_lock_pair,
  c_shared_object_scope,
  c_hold,
  c_deadlock_probe,
  c_misuse_probe,
  c_move,
  c_fork,
  c_fork_child_lock,
  c_exit,
  c_kill,
  c_respawn,
  c_checkpoint,
  c_count
};
const char* to_string(counter c);

// A waiting (or trying) thread, written by that thread (or by its fork child while the thread
// waits for the child). `seq` is odd while the wait lasts; readers check it did not change.
struct wait_record {
  std::atomic<std::uint64_t> seq{0};
  std::atomic<std::int32_t> pid{0};
  std::atomic<std::uint32_t> files{0};  // Bit mask: std::scoped_lock waits for two.
  std::atomic<std::uint8_t> mode{0};
  std::atomic<std::int64_t> start_ns{0};
  std::atomic<std::int64_t> deadline_ns{0};  // 0: no deadline.
  std::atomic<std::uint8_t> op{0};           // The counter of the operation, for reports.
};

struct thread_state {
  // One per record index: 0, or pid << 16 | file << 8 | mode, stored right after acquiring and
  // cleared right before releasing.
  std::atomic<std::uint64_t> holds[k_records];
  wait_record wait;
};

struct slot_state {
  // Even while the worker in the slot lives; odd from just before it is killed or exits until
  // the coordinator has reaped it and cleared its records. Checkers ignore odd slots.
  std::atomic<std::uint32_t> epoch{0};
  std::atomic<std::int32_t> pid{0};
  std::atomic<std::uint32_t> incarnation{0};
  thread_state threads[k_max_threads];
};

// Lives in an anonymous MAP_SHARED mapping made before any fork; lock-free atomics only.
struct shared_state {
  std::atomic<bool> stop{false};
  // Per file, 8 bits per slot: bits 0-5 count its readers, bits 6-7 its writers.
  std::atomic<std::uint64_t> holders[k_max_files];
  std::atomic<std::int64_t> activity_ns[k_max_files];  // Last acquire or release.
  slot_state slots[k_max_processes];
  std::atomic<std::uint64_t> counters[c_count];
  std::atomic<std::uint64_t> violations{0};
  std::atomic<std::int64_t> max_blocking_wait_ns{0};
  std::atomic<bool> message_taken{false};
  char first_message[1024];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::int64_t>::is_always_lock_free);

std::int64_t now_ns();  // steady_clock (CLOCK_MONOTONIC), the same in every process.

// Only the first violations are printed; one bug can repeat thousands of times.
inline constexpr std::uint64_t k_printed_violations = 20;

// Reports a violation: prints it at once with one write(2) and counts it in shared memory.
void violation(shared_state& s, const char* format, ...) __attribute__((format(printf, 2, 3)));

// The bookkeeping of who holds and who waits, shared by all processes.
class ledger {
 public:
  ledger(shared_state& s, int processes, int files) : s_(s), processes_(processes), files_(files) {}
  shared_state& state() const { return s_; }

  void count(counter c, std::uint64_t n = 1) {
    s_.counters[c].fetch_add(n, std::memory_order_relaxed);
  }
  // Right after a lock of mode `m` on `file` was taken: records it and checks that no live
  // holder conflicts with it.
  void note_acquired(int slot, int thread, int record, int file, mode m, const char* how);
  // Right before that lock is released.
  void note_releasing(int slot, int thread, int record, int file, mode m);
  // Checks that a lock this thread holds still has no conflicting live holder.
  void check_held(int slot, int thread, int file, mode m, const char* when);

  // Marks the thread as waiting for the files in `files` (a bit mask); `deadline_ns` 0 means no
  // deadline.
  void begin_wait(int slot, int thread, std::uint32_t files, mode m, std::int64_t deadline_ns,
                  counter op);
  void end_wait(int slot, int thread);

  // The word's fields of the slots whose epoch was even and unchanged across a read.
  struct epochs {
    std::uint32_t value[k_max_processes];
  };
  epochs read_epochs() const;
  std::uint64_t live_mask(const epochs& before, const epochs& after) const;
  // Text for a report: the file's holder word and hold records.
  std::string describe_file(int file) const;
  // Text for a report: every wait and hold record.
  std::string describe_all() const;

  // Marks `slot` dying; false if it already was.
  bool mark_dying(int slot);

 private:
  shared_state& s_;
  const int processes_;
  const int files_;
};

inline constexpr std::uint64_t reader_unit(int slot) { return std::uint64_t{1} << (8 * slot); }
inline constexpr std::uint64_t writer_unit(int slot) { return std::uint64_t{64} << (8 * slot); }
inline constexpr std::uint64_t k_writer_bits = 0xc0c0c0c0c0c0c0c0;
inline constexpr std::uint64_t unit(int slot, mode m) {
  return m == mode::write ? writer_unit(slot) : reader_unit(slot);
}

// The number of open descriptors of this process.
int count_fds();
// Their targets, for a report.
std::string list_fds();
// This process's descriptors: those of lock files under `lock_dir` (deleted ones included), at
// most how many per file, and the others.
struct fd_census {
  int others = 0;
  int most_per_lock_file = 0;
};
fd_census take_fd_census(const std::filesystem::path& lock_dir);

// Runs one worker process in `slot`; returns its exit code.
int run_worker(const options& opts, shared_state& s, int slot, std::uint64_t seed);
// Runs the whole test; returns the exit code of the program.
int run_coordinator(const options& opts);

}  // namespace fasteners_random
