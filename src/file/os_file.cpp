// The registry of the library's open handles, and how opens, closes and fork() exclude each other.
#include "file/os_file.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <new>
#include <utility>
#include <vector>

#include "thread_safety.hpp"

namespace fasteners::detail::file {
namespace {

// The handles the library has open, as a set of small non-negative integers (descriptors): a
// bit each, set and cleared without a lock. Descriptors past the bits go to a list under a mutex.
class handle_set {
 public:
  // Throws std::bad_alloc if the set cannot grow.
  void insert(platform::native_handle h) {
    if (auto* word = word_of(h, true)) {
      word->fetch_or(bit_of(h), std::memory_order_relaxed);
      return;
    }
    mutex_lock lock(mu_);
    overflow_.push_back(h);
  }
  void erase(platform::native_handle h) noexcept {
    if (auto* word = word_of(h, false)) {
      word->fetch_and(~bit_of(h), std::memory_order_relaxed);
      return;
    }
    mutex_lock lock(mu_);
    const auto it = std::find(overflow_.begin(), overflow_.end(), h);
    if (it != overflow_.end()) overflow_.erase(it);
  }
  // Calls `f` with each handle and empties the set; only while no other thread uses it.
  template <class F>
  void drain(F f) FASTENERS_EXCLUDES(mu_) {
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
      auto* chunk = chunks_[c].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (std::size_t w = 0; w < chunk_words; ++w) {
        auto bits = (*chunk)[w].exchange(0, std::memory_order_relaxed);
        for (std::size_t b = 0; bits != 0; ++b, bits >>= 1) {
          if (bits & 1) f(static_cast<platform::native_handle>((c * chunk_words + w) * 64 + b));
        }
      }
    }
    mutex_lock lock(mu_);
    for (const auto h : overflow_) f(h);
    overflow_.clear();
  }

 private:
  static constexpr std::size_t chunk_words = 64;  // 4096 handles a chunk
  using bit_chunk = std::array<std::atomic<std::uint64_t>, chunk_words>;
  static constexpr std::size_t chunk_count = 256;  // Handles below 2^20 have a bit.

  static std::uint64_t bit_of(platform::native_handle h) {
    return std::uint64_t{1} << (static_cast<std::uint64_t>(h) % 64);
  }
  std::atomic<std::uint64_t>* word_of(platform::native_handle h, bool grow) {
    if (h < 0) return nullptr;
    const auto n = static_cast<std::uint64_t>(h) / 64;
    const auto c = n / chunk_words;
    if (c >= chunk_count) return nullptr;
    auto* found = chunks_[c].load(std::memory_order_acquire);
    if (found == nullptr) {
      if (!grow) return nullptr;
      auto* made = new bit_chunk();
      for (auto& word : *made) word.store(0, std::memory_order_relaxed);
      if (chunks_[c].compare_exchange_strong(found, made, std::memory_order_acq_rel)) {
        found = made;
      } else {
        delete made;
      }
    }
    return &(*found)[n % chunk_words];
  }

  std::array<std::atomic<bit_chunk*>, chunk_count> chunks_{};
  mutex mu_;
  std::vector<platform::native_handle> overflow_ FASTENERS_GUARDED_BY(mu_);
};

// Opens and closes under way, which fork() waits for and holds off (see prepare_fork()), so that
// no handle is ever between its open and its registration, or its unregistration and its close,
// when a child is made. Counted without a lock; the mutex and condition variable serve only
// while a fork() is under way. A slow open stalls fork(), nothing else.
struct fork_gate {
  std::atomic<int> under_way{0};
  std::atomic<bool> forking{false};
  mutex mu;
  std::condition_variable changed;

  void begin() {
    for (;;) {
      under_way.fetch_add(1, std::memory_order_seq_cst);
      if (!forking.load(std::memory_order_seq_cst)) return;
      end();  // A fork is under way: step back until it is done.
      mutex_lock lock(mu);
      while (forking.load(std::memory_order_seq_cst)) mu.wait(changed);
    }
  }
  void end() {
    if (under_way.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        forking.load(std::memory_order_seq_cst)) {
      mutex_lock lock(mu);
      changed.notify_all();
    }
  }
};

// Never destroyed: lock objects may outlive static destruction.
handle_set& open_handles() {
  static auto* const set = new handle_set;
  return *set;
}

fork_gate& gate() {
  static auto* const g = new fork_gate;
  return *g;
}

}  // namespace

os_file os_file::open(const std::filesystem::path& path, bool follow_symlinks,
                      platform::open_file& info) {
  if (!platform::forks()) {
    info = platform::open(path, follow_symlinks);
    os_file file;
    file.handle_ = info.handle;
    return file;
  }
  auto& g = gate();
  g.begin();
  try {
    info = platform::open(path, follow_symlinks);
  } catch (...) {
    g.end();
    throw;
  }
  try {
    open_handles().insert(info.handle);
  } catch (...) {
    platform::close(info.handle);
    g.end();
    throw;
  }
  g.end();
  os_file file;
  file.handle_ = info.handle;
  file.generation_ = engine::fork_generation();
  return file;
}

os_file::os_file(os_file&& other) noexcept
    : handle_(std::exchange(other.handle_, platform::invalid_handle)),
      generation_(other.generation_) {}

os_file& os_file::operator=(os_file&& other) noexcept {
  if (this != &other) {
    reset();
    handle_ = std::exchange(other.handle_, platform::invalid_handle);
    generation_ = other.generation_;
  }
  return *this;
}

void os_file::close() noexcept {
  const auto handle = std::exchange(handle_, platform::invalid_handle);
  if (generation_ != engine::fork_generation()) return;
  if (!platform::forks()) {
    platform::close(handle);
    return;
  }
  auto& g = gate();
  g.begin();
  open_handles().erase(handle);
  platform::close(handle);
  g.end();
}

void os_file::prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& g = gate();
  g.mu.lock();  // Held until after the fork, in the parent and in the child.
  g.forking.store(true, std::memory_order_seq_cst);
  while (g.under_way.load(std::memory_order_seq_cst) > 0) g.mu.wait(g.changed);
}

void os_file::parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& g = gate();
  g.forking.store(false, std::memory_order_seq_cst);
  g.changed.notify_all();
  g.mu.unlock();
}

void os_file::child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  open_handles().drain([](platform::native_handle h) { platform::close(h); });
  auto& g = gate();
  g.under_way.store(0, std::memory_order_relaxed);
  g.forking.store(false, std::memory_order_relaxed);
  // Threads that waited on it in the parent do not exist here.
  new (&g.changed) std::condition_variable();
  g.mu.unlock();
}

}  // namespace fasteners::detail::file
