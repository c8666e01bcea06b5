// The registry of the library's open handles, and how opens, closes and fork() exclude each other.
#include "os_file.hpp"

#include <algorithm>
#include <atomic>
#include <new>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "thread_safety.hpp"

namespace fasteners::detail {
namespace {

// Opens and closes hold the fork gate shared; fork() holds it alone, so no handle is ever between
// its open and its registration, or its unregistration and its close, when a child is made. Held
// across the open() and close() calls, but only shared: a slow open stalls fork(), nothing else.
std::shared_mutex& fork_gate() {
  static auto* const gate = new std::shared_mutex;
  return *gate;
}

struct registry {
  mutex mu;
  std::vector<platform::native_handle> handles FASTENERS_GUARDED_BY(mu);
};

registry& open_handles() {
  static auto* const r = new registry;
  return *r;
}

std::atomic<std::uint64_t> fork_generation{0};

}  // namespace

os_file os_file::open(const std::filesystem::path& path, bool follow_symlinks,
                      platform::open_file& info) {
  std::shared_lock<std::shared_mutex> gate(fork_gate());
  auto& r = open_handles();
  {
    // Room first, so that registering the handle cannot fail once it is open.
    mutex_lock lock(r.mu);
    r.handles.reserve(r.handles.size() + 1);
  }
  info = platform::open(path, follow_symlinks);
  {
    mutex_lock lock(r.mu);
    r.handles.push_back(info.handle);
  }
  os_file file;
  file.handle_ = info.handle;
  file.generation_ = generation();
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

void os_file::reset() noexcept {
  const auto handle = std::exchange(handle_, platform::invalid_handle);
  if (handle == platform::invalid_handle || generation_ != generation()) return;
  std::shared_lock<std::shared_mutex> gate(fork_gate());
  auto& r = open_handles();
  {
    mutex_lock lock(r.mu);
    const auto it = std::find(r.handles.begin(), r.handles.end(), handle);
    if (it != r.handles.end()) {
      *it = r.handles.back();
      r.handles.pop_back();
    }
  }
  platform::close(handle);
}

void os_file::prepare_fork() { fork_gate().lock(); }

void os_file::parent_after_fork() { fork_gate().unlock(); }

void os_file::child_after_fork() {
  auto& r = open_handles();
  // Single-threaded here, and no thread held the registry's mutex: the gate kept them out.
  mutex_lock lock(r.mu);
  for (const auto handle : r.handles) platform::close(handle);
  r.handles.clear();
  fork_generation.fetch_add(1, std::memory_order_relaxed);
  // Made anew rather than unlocked: a read-write lock knows its writer by thread id, and the
  // child's thread has another.
  new (&fork_gate()) std::shared_mutex();
}

std::uint64_t os_file::generation() noexcept {
  return fork_generation.load(std::memory_order_relaxed);
}

}  // namespace fasteners::detail
