// Several processes increment a counter kept in a file, without and with the lock: lost updates.
//
// Usage: counter_demo [--processes N] [--increments M] [--pause-us U] [--dir D]
// Each worker process repeats M times: read the counter, pause U microseconds, write it plus one.
// Without a lock the workers overwrite each other's updates; with fasteners::interprocess_lock
// around each read-modify-write none is lost. Exits 0 only if the locked run lost nothing.
#include <fasteners/fasteners.hpp>

#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

extern char** environ;

namespace {

namespace fs = std::filesystem;

constexpr const char* worker_switch = "--counter-demo-worker";
constexpr int counter_width = 20;  // The counter is stored fixed-width, so writes never truncate.

struct options {
  long processes = 4;
  long increments = 1000;
  long pause_us = 20;
  std::optional<fs::path> dir;
};

long parse_count(const std::string& name, const char* text, long min) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || value < min) {
    throw std::invalid_argument(name + " needs a whole number >= " + std::to_string(min) +
                                ", got '" + text + "'");
  }
  return value;
}

std::int64_t read_counter(std::fstream& file) {
  // A concurrent unlocked writer may leave a torn value behind; read until a number parses.
  for (;;) {
    file.clear();
    file.seekg(0);
    std::string text(counter_width, ' ');
    file.read(text.data(), counter_width);
    try {
      return std::stoll(text);
    } catch (const std::exception&) {
      std::this_thread::yield();
    }
  }
}

void write_counter(std::fstream& file, std::int64_t value) {
  std::ostringstream text;
  text << std::setw(counter_width) << value;
  file.clear();
  file.seekp(0);
  file << text.str() << std::flush;
  if (!file) throw std::runtime_error("cannot write the counter");
}

// One read-modify-write of the counter, with the pause that lets other processes interleave.
void increment(const fs::path& counter, std::chrono::microseconds pause) {
  std::fstream file(counter, std::ios::in | std::ios::out | std::ios::binary);
  if (!file) throw std::runtime_error("cannot open " + counter.string());
  const std::int64_t value = read_counter(file);
  std::this_thread::sleep_for(pause);
  write_counter(file, value + 1);
}

// The hidden worker mode: argv = [self, switch, locked|unlocked, dir, increments, pause_us].
int run_worker(int argc, char** argv) {
  if (argc != 6) throw std::invalid_argument("bad worker arguments");
  const bool locked = std::strcmp(argv[2], "locked") == 0;
  const fs::path dir = argv[3];
  const long increments = parse_count("increments", argv[4], 0);
  const std::chrono::microseconds pause(parse_count("pause", argv[5], 0));
  const fs::path counter = dir / (locked ? "counter-locked" : "counter-unlocked");
  fasteners::interprocess_lock lock(dir / "counter.lock");
  for (long i = 0; i < increments; ++i) {
    if (locked) {
      std::lock_guard<fasteners::interprocess_lock> guard(lock);
      increment(counter, pause);
    } else {
      increment(counter, pause);
    }
  }
  return 0;
}

std::string self_path(const char* argv0) {
  // On Linux re-execute the very same binary; elsewhere trust argv[0] (posix_spawnp searches PATH
  // when it has no slash).
  if (fs::exists("/proc/self/exe")) return "/proc/self/exe";
  return argv0;
}

// Starts all workers at once, waits for them, and returns the final value of the counter.
std::int64_t run(const options& opts, const std::string& self, bool locked) {
  const fs::path counter = *opts.dir / (locked ? "counter-locked" : "counter-unlocked");
  {
    std::fstream file(counter, std::ios::out | std::ios::trunc | std::ios::binary);
    write_counter(file, 0);
  }

  std::vector<std::string> args = {self,
                                   worker_switch,
                                   locked ? "locked" : "unlocked",
                                   opts.dir->string(),
                                   std::to_string(opts.increments),
                                   std::to_string(opts.pause_us)};
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  std::vector<pid_t> children;
  for (long i = 0; i < opts.processes; ++i) {
    pid_t pid = 0;
    const int error = posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ);
    if (error != 0) throw std::system_error(error, std::generic_category(), "posix_spawn " + self);
    children.push_back(pid);
  }
  bool all_ok = true;
  for (const pid_t pid : children) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) throw std::system_error(errno, std::generic_category(), "waitpid");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) all_ok = false;
  }
  if (!all_ok) throw std::runtime_error("a worker process failed");

  std::fstream file(counter, std::ios::in | std::ios::binary);
  return read_counter(file);
}

int run_demo(int argc, char** argv) {
  options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout
          << "usage: counter_demo [--processes N] [--increments M] [--pause-us U] [--dir D]\n";
      return 0;
    }
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + arg);
    const char* value = argv[++i];
    if (arg == "--processes") {
      opts.processes = parse_count(arg, value, 1);
    } else if (arg == "--increments") {
      opts.increments = parse_count(arg, value, 1);
    } else if (arg == "--pause-us") {
      opts.pause_us = parse_count(arg, value, 0);
    } else if (arg == "--dir") {
      opts.dir = fs::path(value);
    } else {
      throw std::invalid_argument("unknown option " + arg);
    }
  }
  const bool own_dir = !opts.dir;
  if (own_dir) {
    opts.dir = fs::temp_directory_path() / ("fasteners-counter-demo-" + std::to_string(getpid()));
  }
  fs::create_directories(*opts.dir);

  const std::string self = self_path(argv[0]);
  const std::int64_t expected = std::int64_t{opts.processes} * opts.increments;
  std::cout << "fasteners counter demo: " << opts.processes
            << (opts.processes == 1 ? " process x " : " processes x ") << opts.increments
            << " increments of a counter kept in a file\n"
            << "(each increment: read the file, pause " << opts.pause_us
            << " us, write the value + 1)\n\n";
  const std::int64_t unlocked = run(opts, self, false);
  const std::int64_t locked = run(opts, self, true);
  if (own_dir) fs::remove_all(*opts.dir);  // Every worker has exited; no one uses the lock file.

  const auto row = [](const char* name, std::int64_t want, std::int64_t got) {
    std::cout << std::left << std::setw(34) << name << std::right << std::setw(10) << want
              << std::setw(10) << got << std::setw(14) << want - got << '\n';
  };
  std::cout << std::left << std::setw(34) << "run" << std::right << std::setw(10) << "expected"
            << std::setw(10) << "observed" << std::setw(14) << "lost updates" << '\n';
  row("without a lock", expected, unlocked);
  row("with fasteners::interprocess_lock", expected, locked);
  std::cout << '\n';

  if (unlocked == expected) {
    std::cout << "note: the unlocked run happened to lose nothing this time (try more processes "
                 "or a longer --pause-us)\n";
  }
  if (locked != expected) {
    std::cout << "FAIL: the locked run lost " << expected - locked << " updates\n";
    return 1;
  }
  std::cout << "OK: with the lock no update was lost\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::strcmp(argv[1], worker_switch) == 0) return run_worker(argc, argv);
    return run_demo(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "counter_demo: " << e.what() << '\n';
    return 2;
  }
}
