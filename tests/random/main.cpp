// fasteners_random_test: the randomized multi-process, multi-thread stress test of the locks.
//
// Usage: fasteners_random_test [--seed N] [--seconds T] [--processes P] [--threads M]
//          [--files F] [--objects K] [--remove] [--stall-bound S] [--stuck-bound S]
// Prints the seed first; --seed N replays a run's random choices (not its interleaving, which
// the scheduler decides). Exits 0 when no invariant was violated, 1 otherwise, 2 for bad
// arguments.
//
// A single-threaded coordinator (coordinator.cpp) forks P workers, SIGKILLs random ones and
// respawns those that die until the budget ends. Each worker (worker.cpp) runs M threads; each
// thread has K lock objects (interprocess_lock or interprocess_reader_writer_lock, on the lock
// file or a symbolic link to it) over F files, plus one reader-writer object per file that all
// threads of the worker share, and runs random operations: blocking, try and timed acquires
// (zero, negative and past deadlines included), releases, destruction, moves, guards, std lock
// holders, std::scoped_lock on two files, deadlock and misuse probes, fork (the child checks its
// inherited objects, then may take a lock of its own without timed waits) and _exit while
// holding. A thread holds at most one lock per file and waits without a deadline only for files
// above every file it holds, so the test itself cannot deadlock.
//
// The invariants live in an anonymous shared mapping (ledger.cpp). A holder adds itself to its
// file's word right after acquiring and removes itself right before releasing, so the word never
// shows more than really holds; an acquirer that finds a conflicting live entry in the word, or a
// holder that sees one after any step, is a violation: two writers, or a writer with readers. A
// worker's slot is marked dying before it is killed or exits, and entries of dying slots are
// ignored until the coordinator has reaped the whole process group and cleared them. The
// coordinator flags a blocking waiter that has waited longer than the stall bound (2 s) while
// its file had no live holder and no acquire or release for as long: the lock was free and it
// slept. It also flags waits longer than the stuck bound (15 s, a deadlock), timed waits still
// running 2 s after their deadline, timed waits that fail before it, and workers still running
// 60 s after the budget. Workers compare their open descriptors with their start at checkpoints
// where all their objects are destroyed, and fork children around their own lock.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

#include "random_test.hpp"

namespace {

using fasteners_random::options;

void usage() {
  std::fprintf(stderr,
               "usage: fasteners_random_test [--seed N] [--seconds T] [--processes P (1-%d)]\n"
               "         [--threads M (1-%d)] [--files F (1-%d)] [--objects K (1-%d)] [--remove]\n"
               "         [--stall-bound S] [--stuck-bound S]\n",
               fasteners_random::k_max_processes, fasteners_random::k_max_threads,
               fasteners_random::k_max_files, fasteners_random::k_max_objects);
}

bool parse_int(const char* text, int lo, int hi, int& out) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value < lo || value > hi) return false;
  out = static_cast<int>(value);
  return true;
}

bool parse_seconds(const char* text, double& out) {
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(value >= 0) || value > 1e6) return false;
  out = value;
  return true;
}

bool parse(int argc, char** argv, options& o, bool& seeded) {
  using fasteners_random::k_max_files;
  using fasteners_random::k_max_objects;
  using fasteners_random::k_max_processes;
  using fasteners_random::k_max_threads;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--remove") {
      o.remove = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    const char* value = argv[++i];
    bool ok = true;
    if (arg == "--seed") {
      char* end = nullptr;
      o.seed = std::strtoull(value, &end, 10);
      ok = end != value && *end == '\0';
      seeded = true;
    } else if (arg == "--seconds") {
      ok = parse_seconds(value, o.seconds);
    } else if (arg == "--processes") {
      ok = parse_int(value, 1, k_max_processes, o.processes);
    } else if (arg == "--threads") {
      ok = parse_int(value, 1, k_max_threads, o.threads);
    } else if (arg == "--files") {
      ok = parse_int(value, 1, k_max_files, o.files);
    } else if (arg == "--objects") {
      ok = parse_int(value, 1, k_max_objects, o.objects);
    } else if (arg == "--stall-bound") {
      ok = parse_seconds(value, o.stall_bound);
    } else if (arg == "--stuck-bound") {
      ok = parse_seconds(value, o.stuck_bound);
    } else {
      ok = false;
    }
    if (!ok) return false;
  }
  return true;
}

// Lock files and symbolic links to them: locks/lock_<i> and link_<i> -> locks/lock_<i>.
bool make_directory(options& o) {
  std::error_code ec;
  std::string pattern = (std::filesystem::temp_directory_path(ec) / "fasteners_random_XXXXXX");
  if (ec || ::mkdtemp(pattern.data()) == nullptr) {
    std::perror("mkdtemp");
    return false;
  }
  o.dir = pattern;
  std::filesystem::create_directory(o.dir / "locks", ec);
  for (int f = 0; f < o.files && !ec; ++f) {
    const auto name = std::to_string(f);
    std::filesystem::create_symlink(std::filesystem::path("locks") / ("lock_" + name),
                                    o.dir / ("link_" + name), ec);
  }
  if (ec) std::fprintf(stderr, "cannot set up %s: %s\n", o.dir.c_str(), ec.message().c_str());
  return !ec;
}

}  // namespace

int main(int argc, char** argv) {
  options o;
  bool seeded = false;
  if (!parse(argc, argv, o, seeded)) {
    usage();
    return 2;
  }
  if (!seeded) {
    std::random_device device;
    o.seed = (static_cast<std::uint64_t>(device()) << 32 | device()) % 1000000000000ULL;
  }
  std::printf("fasteners_random_test: seed %llu (replay with --seed %llu)\n",
              static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.seed));
  if (!make_directory(o)) return 2;
  std::printf(
      "%.1f s, %d processes x %d threads x %d objects, %d files in %s%s; stall bound %.1f s, "
      "stuck bound %.1f s\n",
      o.seconds, o.processes, o.threads, o.objects, o.files, o.dir.c_str(),
      o.remove ? ", remove_on_release" : "", o.stall_bound, o.stuck_bound);
  std::fflush(stdout);
  const int code = fasteners_random::run_coordinator(o);
  std::error_code ec;
  std::filesystem::remove_all(o.dir, ec);
  return code;
}
