// A consumer of the fasteners package: takes and releases each kind of lock, exits 0 on success.
#include <fasteners/fasteners.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <random>
#include <string>

int main() {
  using namespace std::chrono_literals;
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("fasteners-consumer-" + std::to_string(std::random_device{}()));
  int failures = 0;
  const auto check = [&failures](bool ok, const char* what) {
    std::cout << (ok ? "ok:   " : "FAIL: ") << what << '\n';
    if (!ok) ++failures;
  };
  try {
    fasteners::interprocess_lock lock(dir / "consumer.lock");
    check(lock.acquire(true, 5s), "interprocess_lock::acquire");
    check(lock.acquired(), "interprocess_lock::acquired after acquire");
    lock.release();
    check(!lock.acquired(), "interprocess_lock released");
    {
      std::lock_guard<fasteners::interprocess_lock> guard(lock);
      check(lock.acquired(), "std::lock_guard holds the lock");
    }

    fasteners::interprocess_reader_writer_lock rw(dir / "consumer-rw.lock");
    {
      auto reading = rw.read_lock();
      check(rw.read_acquired(), "read_lock");
    }
    {
      auto writing = rw.write_lock();
      check(rw.write_acquired(), "write_lock");
    }
    auto twice =
        fasteners::interprocess_locked(dir / "consumer-fn.lock", [](int x) { return 2 * x; });
    check(twice(21) == 42, "interprocess_locked");
  } catch (const std::exception& e) {
    std::cout << "FAIL: exception: " << e.what() << '\n';
    ++failures;
  }
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  std::cout << "fasteners " << fasteners::version_string << " via " << CONSUMER_MODE << ": "
            << (failures == 0 ? "OK" : "FAILED") << '\n';
  return failures == 0 ? 0 : 1;
}
