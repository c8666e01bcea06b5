// The README's quick start, compiled (and run by the tests) so that it cannot rot.
#include <fasteners/fasteners.hpp>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <string>
#ifndef _WIN32
#include <unistd.h>  // getuid
#endif

int main() {
  using namespace std::chrono_literals;
  // A directory of this user's own: lock files that another user made may be read-only for this
  // one. (Windows gives every user a temporary directory; /tmp is shared.)
#ifdef _WIN32
  const auto dir = std::filesystem::temp_directory_path() / "fasteners-quick-start";
#else
  const auto dir = std::filesystem::temp_directory_path() /
                   ("fasteners-quick-start-" + std::to_string(getuid()));
#endif

  // An exclusive lock: one holder at a time among all processes and threads. The lock file and
  // its directory are created on first use.
  fasteners::interprocess_lock lock(dir / "app.lock");
  {
    std::lock_guard<fasteners::interprocess_lock> guard(lock);  // waits as long as needed
    std::cout << "holding " << lock.path() << '\n';
  }  // released here

  // Wait at most 10 seconds (python-fasteners: lock.acquire(timeout=10)).
  if (lock.acquire(true, 10s)) {
    std::cout << "acquired within the timeout\n";
    lock.release();
  } else {
    std::cout << "timed out\n";
  }

  // A reader-writer lock: any number of readers at once, or one writer alone.
  fasteners::interprocess_reader_writer_lock rw(dir / "data.lock");
  {
    auto reading = rw.read_lock();  // shared until `reading` is destroyed
    std::cout << "reading\n";
  }
  {
    auto writing = rw.write_lock();  // exclusive until `writing` is destroyed
    std::cout << "writing\n";
  }

  // A function that always runs under the lock (python-fasteners: @interprocess_locked).
  auto add = fasteners::interprocess_locked(dir / "add.lock", [](int a, int b) { return a + b; });
  std::cout << "2 + 3 = " << add(2, 3) << '\n';
}
