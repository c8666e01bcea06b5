// A coroutine server on Asio: requests served under an interprocess_lock, each racing a timer.
#include <fasteners/asio.hpp>
#include <fasteners/fasteners.hpp>

#include <asio.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>

using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
namespace fs = std::filesystem;

namespace {

// What the requests did, and whether two were ever inside the critical section at once.
struct tally {
  int served = 0;
  int gave_up = 0;
  int inside = 0;
  int overlaps = 0;
};

long read_ledger(const fs::path& ledger) {
  std::ifstream in(ledger);
  long value = 0;
  in >> value;
  return value;
}

void write_ledger(const fs::path& ledger, long value) {
  std::ofstream out(ledger, std::ios::trunc);
  out << value << '\n';
}

// One request: waits for the lock, but no longer than `patience`; under the lock, reads the
// ledger, works for a while without blocking the thread, and writes the ledger back, one more.
asio::awaitable<void> serve(const std::string& who, fasteners::interprocess_lock& lock,
                            const fs::path& ledger, std::chrono::milliseconds patience, tally& t) {
  asio::steady_timer timer(co_await asio::this_coro::executor, patience);
  const auto first = co_await (fasteners::async_lock(lock, asio::use_awaitable) ||
                               timer.async_wait(asio::use_awaitable));
  if (first.index() == 1) {
    // The timer won, and the acquisition was cancelled. Had the lock been granted meanwhile, the
    // adapter released it: the lock is not held here.
    if (lock.acquired()) throw std::logic_error("a cancelled acquisition left the lock held");
    ++t.gave_up;
    std::cout << who << ": gave up after " << patience.count() << " ms\n";
    co_return;
  }
  if (++t.inside > 1) ++t.overlaps;
  const long value = read_ledger(ledger);
  asio::steady_timer work(co_await asio::this_coro::executor, 2ms);
  co_await work.async_wait(asio::use_awaitable);  // other coroutines run meanwhile
  write_ledger(ledger, value + 1);
  --t.inside;
  lock.unlock();
  ++t.served;
  std::cout << who << ": served, ledger " << value + 1 << '\n';
}

// A worker with its lock object of its own (objects exclude each other as processes do), serving
// `requests` requests one after another; every third is impatient.
asio::awaitable<void> worker(int id, fs::path lock_path, fs::path ledger, int requests, tally& t) {
  fasteners::interprocess_lock lock(lock_path);
  for (int r = 0; r < requests; ++r) {
    const auto patience = r % 3 == 2 ? 1ms : 10s;
    co_await serve("worker " + std::to_string(id) + " request " + std::to_string(r), lock, ledger,
                   patience, t);
  }
}

}  // namespace

int main() {
  constexpr int k_workers = 4;
  constexpr int k_requests = 6;
  const fs::path dir = fs::temp_directory_path() /
                       ("fasteners-asio-example-" + std::to_string(std::random_device{}()));
  fs::create_directories(dir);
  const fs::path lock_path = dir / "ledger.lock";
  const fs::path ledger = dir / "ledger";
  write_ledger(ledger, 0);

  tally t;
  int failures = 0;
  asio::io_context io;  // One thread runs every coroutine.
  for (int id = 0; id < k_workers; ++id) {
    asio::co_spawn(io, worker(id, lock_path, ledger, k_requests, t), [&](std::exception_ptr e) {
      if (!e) return;
      ++failures;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cerr << "a worker failed: " << ex.what() << '\n';
      }
    });
  }
  io.run();

  const long total = read_ledger(ledger);
  std::cout << t.served << " served, " << t.gave_up << " gave up; ledger " << total << '\n';
  // Every request either was served or gave up; each served one added exactly one to the ledger,
  // alone in the critical section; and no lock is left held.
  fasteners::interprocess_lock check(lock_path);
  const bool free = check.try_lock();
  if (free) check.unlock();
  fs::remove_all(dir);
  const bool ok = failures == 0 && t.served + t.gave_up == k_workers * k_requests &&
                  total == t.served && t.overlaps == 0 && free;
  std::cout << (ok ? "invariants hold" : "INVARIANTS VIOLATED") << '\n';
  return ok ? 0 : 1;
}
