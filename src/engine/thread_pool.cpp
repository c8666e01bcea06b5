// A pool of detached threads that run one job at a time and wait idle a while between jobs.
#include "engine/thread_pool.hpp"

#include <chrono>
#include <condition_variable>
#include <new>

#include "platform.hpp"
#include "thread_safety.hpp"

namespace fasteners::detail::engine {
namespace {

// How long a thread waits idle for another job before it ends.
constexpr auto idle_time = std::chrono::seconds(2);

struct worker {
  void (*job)(void*) = nullptr;  // Set while a job waits for this worker.
  void* arg = nullptr;
  std::condition_variable assigned;
  worker* next = nullptr;  // In the idle list.
};

struct pool {
  mutex mu;
  worker* idle FASTENERS_GUARDED_BY(mu) = nullptr;
};

void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;
void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;
void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS;

// Never destroyed: jobs may run after static destruction.
pool& the_pool() {
  static auto* const p = [] {
    platform::at_fork(&prepare_fork, &parent_after_fork, &child_after_fork);
    return new pool;
  }();
  return *p;
}

void unlink_idle(pool& p, worker* w) FASTENERS_REQUIRES(p.mu) {
  for (worker** link = &p.idle; *link != nullptr; link = &(*link)->next) {
    if (*link == w) {
      *link = w->next;
      return;
    }
  }
}

void work(void* arg) {
  auto* w = static_cast<worker*>(arg);
  auto& p = the_pool();
  for (;;) {
    w->job(w->arg);
    mutex_lock lock(p.mu);
    w->job = nullptr;
    w->next = p.idle;
    p.idle = w;
    const auto until = std::chrono::steady_clock::now() + idle_time;
    while (w->job == nullptr && std::chrono::steady_clock::now() < until) {
      p.mu.wait_until(w->assigned, until);
    }
    if (w->job == nullptr) {
      unlink_idle(p, w);
      break;
    }
  }
  delete w;
}

void prepare_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { the_pool().mu.lock(); }

void parent_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS { the_pool().mu.unlock(); }

void child_after_fork() FASTENERS_NO_THREAD_SAFETY_ANALYSIS {
  // The idle threads are the parent's; their workers stay allocated, unused.
  auto& p = the_pool();
  p.idle = nullptr;
  p.mu.unlock();
}

}  // namespace

std::error_code run_on_pool_thread(void (*job)(void*), void* arg) noexcept {
  auto& p = the_pool();
  {
    mutex_lock lock(p.mu);
    if (worker* w = p.idle) {
      p.idle = w->next;
      w->job = job;
      w->arg = arg;
      w->assigned.notify_one();
      return {};
    }
  }
  auto* w = new (std::nothrow) worker;
  if (w == nullptr) return std::make_error_code(std::errc::not_enough_memory);
  w->job = job;
  w->arg = arg;
  const auto error = platform::start_thread(&work, w);
  if (error) delete w;
  return error;
}

}  // namespace fasteners::detail::engine
