// The registry of the library's open handles, and how opens, closes and fork() exclude each other.
#include "os_file.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <new>
#include <utility>
#include <vector>

#include "thread_safety.hpp"

namespace fasteners::detail {
namespace {

// Every handle the library has open, and the opens and closes under way. fork() waits until none
// is under way and holds new ones off (see prepare_fork()), so no handle is ever between its open
// and its registration, or its unregistration and its close, when a child is made. The mutex is
// never held across open() or close(): a slow open stalls fork(), nothing else.
struct registry {
  mutex mu;
  std::condition_variable changed;
  std::vector<platform::native_handle> handles FASTENERS_GUARDED_BY(mu);
  int under_way FASTENERS_GUARDED_BY(mu) = 0;  // Opens and closes between begin() and end().
  bool forking FASTENERS_GUARDED_BY(mu) = false;

  // Waits while a fork() is under way, then counts an open or close as under way.
  void begin() FASTENERS_REQUIRES(mu) {
    while (forking) mu.wait(changed);
    ++under_way;
  }
  void end() FASTENERS_REQUIRES(mu) {
    if (--under_way == 0 && forking) changed.notify_all();
  }
};

// Never destroyed: lock objects may outlive static destruction.
registry& open_handles() {
  static auto* const r = new registry;
  return *r;
}

std::atomic<std::uint64_t> fork_generation{0};

}  // namespace

os_file os_file::open(const std::filesystem::path& path, bool follow_symlinks,
                      platform::open_file& info) {
  auto& r = open_handles();
  {
    mutex_lock lock(r.mu);
    r.begin();
    // Room first, so that registering the handle cannot fail once it is open.
    try {
      r.handles.reserve(r.handles.size() + 1);
    } catch (...) {
      r.end();
      throw;
    }
  }
  try {
    info = platform::open(path, follow_symlinks);
  } catch (...) {
    mutex_lock lock(r.mu);
    r.end();
    throw;
  }
  mutex_lock lock(r.mu);
  r.handles.push_back(info.handle);
  r.end();
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
  auto& r = open_handles();
  {
    mutex_lock lock(r.mu);
    r.begin();
    const auto it = std::find(r.handles.begin(), r.handles.end(), handle);
    if (it != r.handles.end()) {
      *it = r.handles.back();
      r.handles.pop_back();
    }
  }
  platform::close(handle);
  mutex_lock lock(r.mu);
  r.end();
}

void os_file::prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& r = open_handles();
  r.mu.lock();  // Held until after the fork, in the parent and in the child.
  r.forking = true;
  while (r.under_way > 0) r.mu.wait(r.changed);
}

void os_file::parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& r = open_handles();
  r.forking = false;
  r.changed.notify_all();
  r.mu.unlock();
}

void os_file::child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  auto& r = open_handles();
  for (const auto handle : r.handles) platform::close(handle);
  r.handles.clear();
  r.forking = false;
  // Threads that waited on it in the parent do not exist here.
  new (&r.changed) std::condition_variable();
  fork_generation.fetch_add(1, std::memory_order_relaxed);
  r.mu.unlock();
}

std::uint64_t os_file::generation() noexcept {
  return fork_generation.load(std::memory_order_relaxed);
}

}  // namespace fasteners::detail
